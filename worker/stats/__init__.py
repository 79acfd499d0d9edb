"""The statistics job: what a stats message means and how it is recomputed."""
