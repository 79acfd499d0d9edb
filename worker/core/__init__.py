"""The bottom layer: what every part of the worker shares and nothing above it owns.

Settings, the database (connections, the pool, start-up), the SQL loaded from
``sql/``, logs and redaction, metric declarations, the handler interface, the
consumer's vital signs and the watchdog that reads them, errors and waits.
Nothing here imports any other package of ``worker``.
"""
