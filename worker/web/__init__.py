"""The HTTP side, in the worker's own process: ``/health``, ``/metrics``, the operator
API and the console at ``/admin``, plus the gauge refresher they report from.

It sees the running worker only through :class:`~worker.core.status.WorkerView`.
"""
