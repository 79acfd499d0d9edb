"""The HTTP side, in the worker's own process: ``/health`` and ``/metrics`` (``health``),
the operator API (``operator``) and the console at ``/admin`` (``console``,
``console_pages``, ``console_auth``), assembled by ``http`` and served by
``server``; plus the gauge refresher (``refresher``) they report from.

It sees the running worker only through :class:`~worker.core.status.WorkerView`.
"""
