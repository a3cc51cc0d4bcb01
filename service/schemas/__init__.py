"""Pydantic models for the wire, kept apart from the SQLAlchemy tables in ``service.db.models``."""
