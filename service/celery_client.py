"""The Celery side the API needs: an app configured for *sending* training messages, and a broker probe.

The service never imports ``workers``; it sends ``backprop.train`` by name. The worker app
(``workers/celery_app.py``) starts from the same :func:`celery_config`, so both ends agree on the
serializer, the queue and the broker's transport options.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from service.config import Settings, get_settings
from service.db import fork_safe_sqlite

log = logging.getLogger(__name__)

#: Seconds a Redis message may stay unacknowledged before the broker re-delivers it. It must stay
#: above the longest job (the hard time limit), or Redis would hand a healthy running job to a
#: second worker; prompt recovery from dead workers is the reconciler's job, not the broker's.
VISIBILITY_MARGIN_S = 3600


def is_sqla_broker(url: str) -> bool:
    return url.startswith(("sqla+", "sqlalchemy+"))


def is_redis_broker(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://"))


def sqla_broker_db_url(url: str) -> str:
    """``sqla+sqlite:///x.db`` -> ``sqlite:///x.db`` (the SQLAlchemy URL inside the broker URL)."""
    return url.split("+", 1)[1]


def _sqlite_path(db_url: str) -> Path | None:
    if db_url.startswith("sqlite:///"):
        return Path(db_url[len("sqlite:///"):])
    return None


def prepare_sqla_broker(url: str) -> None:
    """Put the embedded broker's SQLite file in WAL mode (persistent per file), so that the API
    sending and the worker polling every 0.1 s do not block each other."""
    path = _sqlite_path(sqla_broker_db_url(url))
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    con = fork_safe_sqlite.connect(path, timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def transport_options(settings: Settings) -> dict[str, Any]:
    url = settings.resolved_broker_url
    if is_redis_broker(url):
        return {
            "visibility_timeout": settings.task_hard_time_limit_s + VISIBILITY_MARGIN_S,
            "socket_connect_timeout": 2,
            "socket_timeout": 10,
            "socket_keepalive": True,
            "retry_on_timeout": True,
            "health_check_interval": 10,
        }
    if is_sqla_broker(url):
        # kombu passes every transport option straight to sqlalchemy.create_engine(): only engine
        # arguments belong here (a 'polling_interval' would crash the worker; the worker's own transport
        # class, workers.sqla_transport, sets it). A generous SQLite busy timeout rides out brief write locks.
        # Its connections are fork-safe: the worker's main process polls from one thread while
        # billiard forks pool children from another (see service.db.fork_safe_sqlite).
        db_url = sqla_broker_db_url(url)
        if db_url.startswith("sqlite"):
            return {"connect_args": fork_safe_sqlite.connect_args(db_url, timeout=30)}
        return {"pool_pre_ping": True}
    return {}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Configuration shared by the sending app (API) and the worker app."""
    queue = settings.queue_name
    return {
        "broker_url": settings.resolved_broker_url,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 2,
        # JSON only: nothing from the broker ever reaches pickle.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "event_serializer": "json",
        # One explicit queue; a task routed anywhere else is an error, not a silently created queue.
        "task_default_queue": queue,
        "task_default_exchange": queue,
        "task_default_routing_key": queue,
        "task_queues": (Queue(queue, Exchange(queue, type="direct"), routing_key=queue),),
        "task_create_missing_queues": False,
        "task_ignore_result": True,
        "result_backend": None,
        # Sending must not hang a request when the broker is down: the job row is the truth and the
        # reconciler re-sends what did not go out.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "enable_utc": True,
        "timezone": "UTC",
    }


_lock = threading.Lock()
_apps: dict[str, Celery] = {}


def get_celery(settings: Settings | None = None) -> Celery:
    """The sending app, one per broker URL (cached; thread safe)."""
    settings = settings or get_settings()
    url = settings.resolved_broker_url
    app = _apps.get(url)
    if app is not None:
        return app
    with _lock:
        app = _apps.get(url)
        if app is None:
            if is_sqla_broker(url):
                prepare_sqla_broker(url)
            app = Celery("backprop-api", set_as_current=False)
            app.conf.update(celery_config(settings))
            _apps[url] = app
    return app


def reset_celery_cache() -> None:
    """Forget cached sending apps (tests that switch brokers)."""
    with _lock:
        for app in _apps.values():
            try:
                app.close()
            except Exception:  # pragma: no cover - best effort
                pass
        _apps.clear()


def broker_ok(settings: Settings | None = None, timeout_s: float = 1.0) -> bool:
    """True when the broker answers within about ``timeout_s`` (for ``/readyz``)."""
    settings = settings or get_settings()
    url = settings.resolved_broker_url
    try:
        if is_redis_broker(url):
            import redis

            client = redis.Redis.from_url(
                url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
            )
            try:
                return bool(client.ping())
            finally:
                client.close()
        if is_sqla_broker(url):
            db_url = sqla_broker_db_url(url)
            path = _sqlite_path(db_url)
            if path is not None:
                if not path.parent.is_dir():
                    return False
                con = fork_safe_sqlite.connect(path, timeout=timeout_s)
                try:
                    con.execute("SELECT 1").fetchone()
                finally:
                    con.close()
                return True
            from sqlalchemy import create_engine, text

            engine = create_engine(db_url, pool_pre_ping=True,
                                   connect_args=fork_safe_sqlite.connect_args(db_url))
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            finally:
                engine.dispose()
            return True
        with get_celery(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
        return True
    except Exception as exc:  # any failure means "not ready"
        log.info("broker not ready: %s", exc)
        return False
