"""Unattended operation: ``retention``, one ``leader`` among the replicas, the
``recurring`` jobs it runs on cron schedules (``scheduler``), and the ``alerts``
(dead letters, drift) sent to a webhook."""
