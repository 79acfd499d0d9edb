"""The command line, ``stats-worker`` (``python -m worker.cli``): the top layer."""

from worker.cli.main import main

__all__ = ["main"]
