"""Migrations: upgrade from empty to head on SQLite and PostgreSQL; autogenerate finds no difference."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.db.models import Base
from service.db.session import make_engine
from service.migrate import upgrade_to_head


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    from tests.conftest import create_pg_database, drop_pg_database, pg_available

    if not pg_available():
        pytest.skip("PostgreSQL is not reachable")
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


def test_upgrade_from_empty_matches_the_models(empty_url):
    upgrade_to_head(empty_url)
    upgrade_to_head(empty_url)  # idempotent
    engine = make_engine(empty_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables and "alembic_version" in tables
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], diff
    finally:
        engine.dispose()


def test_alembic_cli_config_works(tmp_path, monkeypatch):
    """``alembic -c migrations/alembic.ini upgrade head`` takes the URL from the settings."""
    from alembic import command
    from alembic.config import Config

    import migrations
    from pathlib import Path

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("BACKPROP_DATABASE_URL", url)
    from service.config import get_settings

    get_settings.cache_clear()
    try:
        command.upgrade(Config(str(Path(migrations.__file__).parent / "alembic.ini")), "head")
    finally:
        get_settings.cache_clear()
    engine = make_engine(url)
    try:
        assert "jobs" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
