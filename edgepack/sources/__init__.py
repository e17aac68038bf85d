"""Loading what a project points at: the source model and its data."""
