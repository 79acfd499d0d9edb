"""Cache invalidation: the tags a settled batch owes, POSTed to the app until delivered.

``invalidator`` sends what the settler hands it and sweeps what falls due,
``attempts`` says what an answer means, ``posting`` holds the one outgoing
HTTP client and reads answers within bounds (the alerts post through it too).
"""
