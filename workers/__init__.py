"""Backprop's Celery workers: thin adapters that load a job from the database, run the engine and
persist the outcome. Nothing imports this package except Celery, through task names."""
