"""Alembic migrations for Backprop's database (``service.migrate.upgrade_to_head`` applies them)."""
