"""``python -m tests.engine_process``: a real worker process with the engine test handler."""

from __future__ import annotations

import asyncio
import sys

from tests.support import engine_handlers
from worker.app import run_worker
from worker.core.logs import configure_logging
from worker.core.redact import Redactor
from worker.core.settings import load_settings


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, Redactor.of(settings))
    assert settings.database_url is not None
    asyncio.run(
        run_worker(
            settings,
            settings.database_url.get_secret_value(),
            handlers=engine_handlers,
            until_empty="--until-empty" in sys.argv,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
