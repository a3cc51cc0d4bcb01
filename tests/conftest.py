"""Shared fixtures: settings, fresh databases (SQLite and PostgreSQL), an app, API keys, authed clients.

Generic on purpose so that other suites (e2e, faults) can use them:

- ``make_settings(database_url=..., **overrides) -> Settings``: test settings under a temporary data dir.
- ``sqlite_url`` / ``postgres_url``: a fresh database per test module (PostgreSQL: ``CREATE DATABASE``;
  skipped when the server is unreachable), migrated by the app on startup.
- ``db_url``: parametrized over both backends (ids ``sqlite`` and ``postgres``), module-scoped.
- ``app``, ``client``: ``create_app`` on ``db_url`` with a recording ``enqueue`` (``enqueued``: the job ids
  sent), entered with its lifespan (migrations applied).
- ``make_key()``: a new owner and its key; ``auth`` / ``other_auth``: ``Authorization`` headers of two owners.
- ``session_factory``: sessions on the app's database (for service-layer calls in tests).
- ``embedded_service`` / ``production_service`` / ``svc``: real processes (``tests/procs.py``).
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings

# The real-process services (``embedded_service``, ``production_service``, ``svc``) that the e2e and
# fault suites share: one of each per test session.
from procs import embedded_service, production_service, svc  # noqa: E402,F401

PG_ADMIN_URL = os.environ.get("BACKPROP_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=2):
            return True
    except Exception:
        return False


def create_pg_database() -> str:
    """CREATE a fresh database; returns its SQLAlchemy URL."""
    import psycopg

    name = f"bp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _pg_url(name)


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rpartition("/")[2]
    with psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def make_settings(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Settings]:
    def make(database_url: str = "", **overrides: Any) -> Settings:
        data_dir = overrides.pop("data_dir", None) or tmp_path_factory.mktemp("data")
        values: dict[str, Any] = {
            "data_dir": Path(data_dir),
            "database_url": database_url,
            "broker_url": "memory://",
            "auto_migrate": True,
            # one pytest process builds dozens of apps: freezing at each startup would keep every earlier
            # test's objects from the collector (tests/api/test_gc_freeze.py covers the freeze)
            "gc_freeze_at_startup": False,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'backprop.db'}"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not pg_available():
        pytest.skip("PostgreSQL is not reachable at " + PG_ADMIN_URL)
    url = create_pg_database()
    try:
        yield url
    finally:
        from service.db.session import engine_for

        engine_for.cache_clear()
        drop_pg_database(url)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="module")
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the app's settings (limits...)."""
    return {}


@pytest.fixture(scope="module")
def settings(make_settings: Callable[..., Settings], db_url: str, settings_overrides: dict[str, Any]) -> Settings:
    return make_settings(db_url, **settings_overrides)


@pytest.fixture(scope="module")
def enqueued() -> list[str]:
    return []


@pytest.fixture(scope="module")
def app(settings: Settings, enqueued: list[str]):
    from service.app import create_app

    return create_app(settings, enqueue=enqueued.append)


@pytest.fixture(scope="module")
def client(app) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def session_factory(app, client):
    return app.state.session_factory


@pytest.fixture(scope="module")
def make_key(session_factory) -> Callable[..., str]:
    from service.auth import create_api_key

    def make(name: str = "test", owner_id: str | None = None) -> str:
        with session_factory() as s, s.begin():
            return create_api_key(s, name, owner_id)

    return make


@pytest.fixture
def auth(make_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('owner-a')}"}


@pytest.fixture
def other_auth(make_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('owner-b')}"}
