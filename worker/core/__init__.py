"""The bottom layer: what every part of the worker shares and nothing above it owns.

Settings, the database (where it is, connections, the pool, start-up), the SQL
of ``sql/``, logs and redaction, metric declarations, the handler interface,
the consumer's vital signs and the watchdog that reads them, errors, backoff
and waits. Nothing here imports any other package of ``worker``.
"""
