"""Backprop's HTTP service: API, storage and the glue to the workers."""
