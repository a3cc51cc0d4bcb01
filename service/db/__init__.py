"""The data layer: SQLAlchemy 2 typed models and session handling."""
