"""The queue side of the data path: pgmq access, reading, running and settling messages.

``pgmq`` reads, renews, sends and measures through pgmq's own functions; the
``consumer`` reads what there is room for, ``groups`` runs it (one recompute
per tenant group), ``renewal`` keeps it invisible meanwhile, ``affinity`` keeps
a tenant on one replica, ``listener`` wakes the consumer and ``control`` pauses
it. ``verdicts`` says what became of each run and ``outcomes`` settles it (the
records in ``runs``). ``jobs`` is what operators see of it, ``priorities`` the
bulk queue, ``leftovers`` the trigger messages no commit sent. It knows nothing
of statistics: a handler (``worker.core.handlers``) does the work.
"""
