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


def test_histories_move_to_job_epochs_and_back(empty_url):
    """0001 kept each job's history as one JSON value; 0002 moves it to one job_epochs row per epoch (a
    repeated epoch keeps its later row) and drops the column; downgrading folds the rows back."""
    import json

    from alembic import command
    from sqlalchemy import text

    from service.migrate import alembic_config

    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0001")
    engine = make_engine(empty_url)
    history = [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.7}, {"epoch": 2, "loss": 0.6},
               {"epoch": 3, "loss": 0.5, "grad_norms": {"dense": 0.1}}]
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO owners (id, name, created_at) VALUES ('o', 'o', CURRENT_TIMESTAMP)"))
            conn.execute(text(
                "INSERT INTO models (id, owner_id, name, input_shape, spec, summary, latest_version, created_at) "
                "VALUES ('m', 'o', 'm', '[2]', '{}', '{}', 0, CURRENT_TIMESTAMP)"))
            for job_id, rows in (("j1", history), ("j2", [])):
                conn.execute(text(
                    "INSERT INTO jobs (id, owner_id, model_id, status, config, epoch, epochs, history, attempts, "
                    "max_attempts, cancel_requested, created_at) VALUES (:id, 'o', 'm', 'succeeded', '{}', 3, 3, "
                    ":history, 1, 3, false, CURRENT_TIMESTAMP)"), {"id": job_id, "history": json.dumps(rows)})
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT job_id, epoch, row FROM job_epochs ORDER BY job_id, epoch")).all()
            columns = {c["name"] for c in inspect(conn).get_columns("jobs")}
        assert [(r[0], r[1]) for r in rows] == [("j1", 1), ("j1", 2), ("j1", 3)]
        stored = [r[2] if isinstance(r[2], dict) else json.loads(r[2]) for r in rows]
        assert stored == [history[0], history[2], history[3]]
        assert "history" not in columns
        command.downgrade(cfg, "0001")
        with engine.connect() as conn:
            back = dict(conn.execute(text("SELECT id, history FROM jobs")).all())
        back = {k: v if isinstance(v, list) else json.loads(v) for k, v in back.items()}
        assert back == {"j1": [history[0], history[2], history[3]], "j2": []}
    finally:
        engine.dispose()
