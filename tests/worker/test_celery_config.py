"""The Celery apps' configuration: what both ends agree on, and what only the worker sets."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from service.celery_client import broker_ok, celery_config, get_celery, reset_celery_cache
from service.config import Settings

PROBE = r"""
import json
from workers.celery_app import app
c = app.conf
transport = app.connection_for_read().transport
print(json.dumps({
    "acks_late": c.task_acks_late, "prefetch": c.worker_prefetch_multiplier,
    "ignore_result": c.task_ignore_result, "serializer": c.task_serializer,
    "accept": list(c.accept_content), "queue": c.task_default_queue,
    "queues": [q.name for q in c.task_queues], "missing": c.task_create_missing_queues,
    "soft": c.task_soft_time_limit, "hard": c.task_time_limit,
    "transport_options": c.broker_transport_options,
    "transport": type(transport).__module__, "polling": transport.polling_interval,
    "remote_control": c.worker_enable_remote_control,
    "tasks": (app.loader.import_default_modules(),
              sorted(t for t in app.tasks if not t.startswith("celery.")))[1],
}, default=lambda o: f"{o.__module__}.{o.__qualname__}"))
"""


def probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_worker_app_embedded(tmp_path):
    c = probe({"BACKPROP_DATA_DIR": str(tmp_path), "BACKPROP_TASK_SOFT_TIME_LIMIT_S": "100",
               "BACKPROP_TASK_HARD_TIME_LIMIT_S": "130", "BACKPROP_QUEUE_NAME": "q1"})
    assert c["acks_late"] is True and c["prefetch"] == 1 and c["ignore_result"] is True
    assert c["serializer"] == "json" and c["accept"] == ["json"]
    assert c["queue"] == "q1" and c["queues"] == ["q1"] and c["missing"] is False
    assert (c["soft"], c["hard"]) == (100, 130)
    # only create_engine() arguments in the SQLAlchemy transport options; polling on the class
    assert "polling_interval" not in c["transport_options"]
    assert c["transport"] == "workers.sqla_transport" and c["polling"] == pytest.approx(0.1)
    # kombu's engine opens fork-safe SQLite connections (billiard forks beside its poll)
    assert c["transport_options"]["connect_args"] == {
        "timeout": 30, "factory": "service.db.fork_safe_sqlite.ForkSafeConnection"}
    assert c["remote_control"] is False
    assert "backprop.train" in c["tasks"]


def test_worker_app_redis_visibility_timeout_above_longest_job(tmp_path):
    c = probe({"BACKPROP_DATA_DIR": str(tmp_path), "BACKPROP_BROKER_URL": "redis://127.0.0.1:6379/9",
               "BACKPROP_TASK_HARD_TIME_LIMIT_S": "7200"})
    assert c["transport_options"]["visibility_timeout"] > 7200
    assert c["remote_control"] is True


def test_sending_app_shares_the_config(tmp_path):
    s = Settings(data_dir=tmp_path, queue_name="qq")
    conf = celery_config(s)
    assert conf["task_default_queue"] == "qq" and conf["task_create_missing_queues"] is False
    assert conf["accept_content"] == ["json"]
    reset_celery_cache()
    app = get_celery(s)
    assert app is get_celery(s) and app.conf.task_default_queue == "qq"
    reset_celery_cache()


def test_message_is_json_and_lands_in_the_embedded_queue(tmp_path):
    import sqlite3

    s = Settings(data_dir=tmp_path, queue_name="training")
    reset_celery_cache()
    get_celery(s).send_task("backprop.train", args=["job-1"], queue="training")
    con = sqlite3.connect(tmp_path / "broker.db")
    (payload,) = con.execute("SELECT payload FROM kombu_message").fetchone()
    env = json.loads(payload)
    assert env["content-type"] == "application/json" and env["headers"]["task"] == "backprop.train"
    from service.reconciler import pending_job_ids

    assert pending_job_ids(s) == {"job-1"}
    reset_celery_cache()


def test_broker_ok(tmp_path):
    assert broker_ok(Settings(data_dir=tmp_path))
    t0 = time.monotonic()
    assert not broker_ok(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0"),
                         timeout_s=0.5)
    assert time.monotonic() - t0 < 2


@pytest.mark.redis
def test_broker_ok_redis(tmp_path):
    assert broker_ok(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/9"))


def test_embedded_transport_hands_control_back_to_the_consumer_loop_within_a_quarter_second(tmp_path):
    """Celery's loop drains a polling transport with a 2 s timeout and checks for a stop only between drains.
    The worker's transport ends each timed wait after 0.25 s at most (kombu's own waits the whole 2 s, the
    control that shows the measurement can tell them apart); an untimed wait is not cut short."""
    import socket

    from kombu import Connection, Queue
    from kombu.transport import sqlalchemy as kombu_sqla

    from workers.sqla_transport import LONGEST_WAIT_S, Transport

    def timed_drain(transport_cls, timeout: float) -> float:
        with Connection(f"sqlite:///{tmp_path / 'broker.db'}", transport=transport_cls) as conn:
            with conn.Consumer(Queue("q", routing_key="q"), callbacks=[lambda body, message: None]):
                t0 = time.monotonic()
                with pytest.raises(socket.timeout):
                    conn.drain_events(timeout=timeout)
                return time.monotonic() - t0

    assert timed_drain(Transport, 2.0) < 1.0
    assert timed_drain(Transport, 0.05) < 1.0
    assert timed_drain(kombu_sqla.Transport, 2.0) >= 2.0
    assert LONGEST_WAIT_S <= 0.25

    with Connection(f"sqlite:///{tmp_path / 'broker.db'}", transport=Transport) as conn:
        received = []
        with conn.Consumer(Queue("q", routing_key="q"), callbacks=[lambda body, message: received.append(body)]):
            conn.Producer().publish({"n": 1}, routing_key="q", serializer="json")
            conn.drain_events(timeout=None)      # untimed: returns only with the message
    assert received == [{"n": 1}]
