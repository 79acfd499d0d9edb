"""Cache invalidation: the tags a settled batch owes, POSTed to the app until delivered."""
