"""The queue side of the data path: pgmq access, reading, running and settling messages.

``pgmq`` reads, renews, sends and measures through pgmq's own functions; the
``consumer`` reads what there is room for (``groups`` runs it, ``renewal`` keeps
it invisible, ``affinity`` keeps a tenant on one replica, ``listener`` wakes it,
``control`` pauses it); ``outcomes`` settles what ran. ``jobs`` is what
operators see of it, ``priorities`` the bulk queue. It knows nothing of
statistics: a handler (``worker.core.handlers``) does the work.
"""
