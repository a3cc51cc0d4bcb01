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


def add_owner_and_model(conn) -> None:
    """Owner 'o' and its model 'm', as every revision since 0001 stores them (for the data migrations' tests)."""
    from sqlalchemy import text

    conn.execute(text("INSERT INTO owners (id, name, created_at) VALUES ('o', 'o', CURRENT_TIMESTAMP)"))
    conn.execute(text(
        "INSERT INTO models (id, owner_id, name, input_shape, spec, summary, latest_version, created_at) "
        "VALUES ('m', 'o', 'm', '[2]', '{}', '{}', 0, CURRENT_TIMESTAMP)"))


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
            add_owner_and_model(conn)
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


def test_sweeps_migration_keeps_every_job_and_goes_back(empty_url):
    """0004 adds the sweeps table and jobs.sweep_id / jobs.sweep_trial. SQLite can only add the foreign key by
    rebuilding the jobs table: done with foreign keys off, so no job's history or checkpoints cascade away. The
    foreign key then nulls a deleted sweep's jobs; downgrading (a second rebuild on SQLite) keeps every row too."""
    from alembic import command
    from sqlalchemy import text

    from service.migrate import alembic_config

    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0003")
    engine = make_engine(empty_url)

    def counts() -> tuple[int, int, int]:
        with engine.connect() as conn:
            return tuple(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in
                         ("jobs", "job_epochs", "checkpoints"))

    try:
        with engine.begin() as conn:
            add_owner_and_model(conn)
            for job_id in ("j1", "j2"):
                conn.execute(text(
                    "INSERT INTO jobs (id, owner_id, model_id, status, config, epoch, epochs, attempts, max_attempts, "
                    "cancel_requested, created_at) VALUES (:id, 'o', 'm', 'succeeded', '{}', 2, 2, 1, 3, false, "
                    "CURRENT_TIMESTAMP)"), {"id": job_id})
                for epoch in (1, 2):
                    conn.execute(text("INSERT INTO job_epochs (job_id, epoch, row) VALUES (:j, :e, '{}')"),
                                 {"j": job_id, "e": epoch})
                conn.execute(text(
                    "INSERT INTO checkpoints (id, job_id, epoch, metrics, is_best, size_bytes, data, created_at) "
                    "VALUES (:id, :j, 2, '{}', true, 1, :data, CURRENT_TIMESTAMP)"),
                    {"id": f"c-{job_id}", "j": job_id, "data": b"x"})
        assert counts() == (2, 4, 2)

        command.upgrade(cfg, "0004")
        assert counts() == (2, 4, 2)
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO sweeps (id, owner_id, model_id, name, grid, config, objective, mode, created_at) "
                "VALUES ('s', 'o', 'm', 's', '{}', '{}', 'loss', 'min', CURRENT_TIMESTAMP)"))
            conn.execute(text("UPDATE jobs SET sweep_id = 's', sweep_trial = 0 WHERE id = 'j1'"))
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM sweeps WHERE id = 's'"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT sweep_id FROM jobs WHERE id = 'j1'")).scalar() is None
        assert counts() == (2, 4, 2)

        command.downgrade(cfg, "0003")
        assert counts() == (2, 4, 2)
        with engine.connect() as conn:
            assert "sweeps" not in inspect(conn).get_table_names()
            assert {"sweep_id", "sweep_trial"}.isdisjoint(c["name"] for c in inspect(conn).get_columns("jobs"))
        with engine.begin() as conn:            # foreign keys still cascade after the rebuilds
            conn.execute(text("DELETE FROM jobs WHERE id = 'j2'"))
        assert counts() == (1, 2, 1)
        command.upgrade(cfg, "head")
        assert counts() == (1, 2, 1)
    finally:
        engine.dispose()


def test_dataset_profile_migration_keeps_datasets_and_the_jobs_that_use_them(empty_url):
    """0005 adds datasets.profile (NULL for what was uploaded before) and drops it going back, without rebuilding
    the table: on SQLite a rebuild with foreign keys on would null every job's dataset_id (ON DELETE SET NULL)."""
    from alembic import command
    from sqlalchemy import text

    from service.migrate import alembic_config

    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0004")
    engine = make_engine(empty_url)

    def state() -> tuple:
        with engine.connect() as conn:
            return (conn.execute(text("SELECT id, n_samples FROM datasets")).all(),
                    conn.execute(text("SELECT id, dataset_id FROM jobs")).all())

    try:
        with engine.begin() as conn:
            add_owner_and_model(conn)
            conn.execute(text(
                "INSERT INTO datasets (id, owner_id, name, task, n_samples, n_features, input_shape, feature_names, "
                "target_names, classes, size_bytes, data, created_at) VALUES ('d', 'o', 'd', 'regression', 3, 1, "
                "'[1]', '[\"a\"]', '[\"y\"]', NULL, 1, :data, CURRENT_TIMESTAMP)"), {"data": b"x"})
            conn.execute(text(
                "INSERT INTO jobs (id, owner_id, model_id, dataset_id, status, config, epoch, epochs, attempts, "
                "max_attempts, cancel_requested, created_at) VALUES ('j', 'o', 'm', 'd', 'queued', '{}', 0, 1, 0, "
                "3, false, CURRENT_TIMESTAMP)"))
        before = state()
        assert before == ([("d", 3)], [("j", "d")])
        command.upgrade(cfg, "0005")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT profile FROM datasets")).scalar() is None
        assert state() == before
        command.downgrade(cfg, "0004")
        assert state() == before
        with engine.connect() as conn:
            assert "profile" not in {c["name"] for c in inspect(conn).get_columns("datasets")}
    finally:
        engine.dispose()
