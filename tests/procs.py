"""Real processes for the end-to-end and fault tests, talking over loopback.

Fixtures (session scoped, registered for the whole suite by ``tests/conftest.py``):

- ``embedded_service``: ``backprop up`` itself (SQLite + Celery's SQLAlchemy transport in a fresh
  data dir; uvicorn and a Celery worker as its children, restarted by its supervisor when killed).
- ``production_service``: a fresh PostgreSQL database on the server at 127.0.0.1:5432, a Redis
  server of its own (``redis-server`` on a free port, so that a test can restart it), one uvicorn
  process and one Celery worker process started as in production (``backprop api`` /
  ``backprop worker``).
- ``svc``: parametrized over both (ids ``embedded`` and ``production``).

Reliability knobs are turned down (heartbeat timeout 3 s, reconcile every 0.5 s) so that recovery
tests take seconds, not minutes; ``max_attempts`` is 12 so that a job survives ten kills (a test
that wants fewer lowers the job's own ``max_attempts`` in the database).

Plus the workload the tests share: the digits dataset as CSV, an MLP, and helpers to start, watch
and compare jobs (``create_model``, ``start_job``, ``wait_job``, ``weights``...).
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest

# The process helpers are shared with the benchmarks; the fault tests import ``free_port`` and ``wait_for``
# from here too.
from benchmarks._procs import (PG_ADMIN_URL, child_pids, clean_env, create_database, drop_database,
                               free_port, migrate_and_create_key, spawn, spawn_api, spawn_worker,
                               start_up, stop, tail, wait_for, wait_ready)

FAST_RECOVERY = {
    "BACKPROP_HEARTBEAT_TIMEOUT_S": "3",
    "BACKPROP_HEARTBEAT_INTERVAL_S": "0.5",
    "BACKPROP_RECONCILE_INTERVAL_S": "0.5",
    "BACKPROP_QUEUED_RESEND_S": "3",
    "BACKPROP_MAX_ATTEMPTS": "12",
}


def base_env(**extra: str) -> dict[str, str]:
    return clean_env(**{**FAST_RECOVERY, **extra})


# --------------------------------------------------------------------------------------------------
# A Redis server of our own (restartable without disturbing anyone else's)
# --------------------------------------------------------------------------------------------------


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.dir)]
        self.proc = spawn(argv, os.environ.copy(), self.dir / "redis.log")
        import redis

        def up() -> bool:
            try:
                return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping())
            except Exception:
                return False

        wait_for(up, timeout, "redis-server answers", poll=0.05,
                 on_timeout=lambda: tail([self.dir / "redis.log"]))

    def kill(self) -> None:
        """SIGKILL: the queue and every unacknowledged message are gone (no persistence)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        stop(self.proc, timeout=5)
        self.proc = None


# --------------------------------------------------------------------------------------------------
# The service under test
# --------------------------------------------------------------------------------------------------


@dataclass
class Service:
    mode: str
    url: str
    key: str
    env: dict[str, str]
    logs: list[Path]
    data_dir: Path
    #: SIGKILL the whole worker (main process and pool child); it comes back (supervisor/orchestrator).
    kill_worker: Callable[[], None]
    #: The worker's main (Celery) process id.
    worker_pid: Callable[[], int]
    #: SIGKILL the API process and start it again on the same port; returns once it is ready.
    restart_api: Callable[[], None]
    #: SIGTERM the worker's main process (a planned stop) and wait until it has exited; returns the seconds
    #: that took. Embedded, the supervisor starts a new one a second later; production waits for start_worker.
    stop_worker: Callable[[], float] = lambda: 0.0
    #: Production: start a worker again after stop_worker (embedded: nothing to do).
    start_worker: Callable[[], None] = lambda: None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    redis: RedisServer | None = None
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30,
                                   headers={"Authorization": f"Bearer {self.key}"})

    @property
    def hooks_dir(self) -> Path:
        return Path(self.env["BACKPROP_TEST_HOOKS_DIR"])

    def settings(self):
        from service.config import Settings

        env = {k[len("BACKPROP_"):].lower(): v for k, v in self.env.items()
               if k.startswith("BACKPROP_") and k != "BACKPROP_TEST_HOOKS_DIR"}
        return Settings(**env)

    def send_task(self, job_id: str) -> None:
        """Send one more ``backprop.train`` message for ``job_id``, as a duplicate delivery would."""
        from service.celery_client import get_celery

        s = self.settings()
        get_celery(s).send_task("backprop.train", args=[job_id], queue=s.queue_name)

    def pool_child_pids(self) -> list[int]:
        return child_pids(self.worker_pid())

    def kill_pool_child(self, timeout: float = 20) -> int:
        """SIGKILL the worker's pool child (the process running the job); its main process stays
        and forks a new one. Returns the killed pid."""
        pid = wait_for(self.pool_child_pids, timeout, "the worker has a pool child",
                       on_timeout=self.log_tail)[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def db_engine(self):
        from sqlalchemy import create_engine

        if not hasattr(self, "_engine"):
            self._engine = create_engine(self.settings().resolved_database_url,
                                         pool_pre_ping=True)  # survives a database restart
        return self._engine

    def sql(self, query: str, **params: Any) -> list[tuple]:
        from sqlalchemy import text

        with self.db_engine().connect() as conn:
            return [tuple(r) for r in conn.execute(text(query), params)]

    def sql_exec(self, query: str, **params: Any) -> int:
        from sqlalchemy import text

        with self.db_engine().begin() as conn:
            return conn.execute(text(query), params).rowcount

    def orphans(self) -> dict[str, int]:
        """Rows whose parent is gone (each must be 0: a deletion never leaves one)."""
        checks = {
            "checkpoints without job": "SELECT COUNT(*) FROM checkpoints c WHERE NOT EXISTS "
                                       "(SELECT 1 FROM jobs j WHERE j.id = c.job_id)",
            "history rows without job": "SELECT COUNT(*) FROM job_epochs e WHERE NOT EXISTS "
                                        "(SELECT 1 FROM jobs j WHERE j.id = e.job_id)",
            "versions without model": "SELECT COUNT(*) FROM model_versions v WHERE NOT EXISTS "
                                      "(SELECT 1 FROM models m WHERE m.id = v.model_id)",
            "jobs without model": "SELECT COUNT(*) FROM jobs j WHERE NOT EXISTS "
                                  "(SELECT 1 FROM models m WHERE m.id = j.model_id)",
            "jobs with a missing dataset": "SELECT COUNT(*) FROM jobs j WHERE j.dataset_id IS NOT NULL "
                                           "AND NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = j.dataset_id)",
            "models without owner": "SELECT COUNT(*) FROM models m WHERE NOT EXISTS "
                                    "(SELECT 1 FROM owners o WHERE o.id = m.owner_id)",
            "datasets without owner": "SELECT COUNT(*) FROM datasets d WHERE NOT EXISTS "
                                      "(SELECT 1 FROM owners o WHERE o.id = d.owner_id)",
        }
        return {name: self.sql(q)[0][0] for name, q in checks.items()}

    def log_tail(self) -> str:
        return tail(self.logs)


def alive(pid: int) -> bool:
    """Running, not exited (a zombie its parent has not reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def embedded_service(tmp_path_factory):
    data = tmp_path_factory.mktemp("embedded")
    env = base_env(BACKPROP_DATA_DIR=str(data), BACKPROP_TEST_HOOKS_DIR=str(data / "hooks"))
    (data / "hooks").mkdir()
    log = data / "up.log"
    proc, url, key = start_up(data, env, log, "--log-level", "warning")

    def pid_of(name: str) -> int:
        return int((data / f"{name}.pid").read_text())

    def kill_worker() -> None:
        os.killpg(pid_of("worker"), signal.SIGKILL)  # the worker and its pool child

    def stop_worker() -> float:
        pid = pid_of("worker")
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), 60, "the worker exits", poll=0.01)
        return time.monotonic() - t0

    def restart_api() -> None:
        old = pid_of("api")
        os.killpg(old, signal.SIGKILL)
        wait_for(lambda: pid_of("api") != old, 20, "the supervisor restarts the API")
        wait_ready(url, [proc], [log], timeout=60)

    svc_rc = None
    try:
        yield Service("embedded", url, key, env, [log], data, kill_worker,
                      lambda: pid_of("worker"), restart_api, stop_worker, procs={"up": proc})
    finally:
        svc_rc = stop(proc, timeout=30)
        print(tail([log]))
    assert svc_rc == 0, f"backprop up exited with {svc_rc}"


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def production_service(tmp_path_factory):
    if not pg_available() or shutil.which("redis-server") is None:
        pytest.skip("PostgreSQL and redis-server are needed for the production-mode tests")
    tag = uuid.uuid4().hex[:10]
    dbname = f"backprop_e2e_{tag}"
    db_url = create_database(dbname)
    data = tmp_path_factory.mktemp("production")
    (data / "hooks").mkdir()
    redis_server = RedisServer(data / "redis")
    procs: dict[str, subprocess.Popen] = {}
    try:
        redis_server.start()
        env = base_env(
            BACKPROP_DATA_DIR=str(data),
            BACKPROP_DATABASE_URL=db_url,
            BACKPROP_BROKER_URL=redis_server.url,
            BACKPROP_QUEUE_NAME=f"training-e2e-{tag}",
            BACKPROP_TEST_HOOKS_DIR=str(data / "hooks"),
        )
        key = migrate_and_create_key(env, "e2e")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api_log, worker_log = data / "api.log", data / "worker.log"

        def start_api() -> None:
            procs["api"] = spawn_api(env, port, api_log)

        def start_worker() -> None:
            procs["worker"] = spawn_worker(env, f"e2e-{tag}@%h", worker_log, loglevel="INFO")

        def kill_worker() -> None:
            os.killpg(procs["worker"].pid, signal.SIGKILL)
            procs["worker"].wait(10)
            start_worker()  # production: the orchestrator starts a new one

        def restart_api() -> None:
            os.killpg(procs["api"].pid, signal.SIGKILL)
            procs["api"].wait(10)
            start_api()
            wait_ready(url, [procs["api"]], [api_log])

        def stop_worker() -> float:
            t0 = time.monotonic()
            procs["worker"].send_signal(signal.SIGTERM)
            procs["worker"].wait(60)
            return time.monotonic() - t0

        start_api()
        start_worker()
        wait_ready(url, list(procs.values()), [api_log, worker_log])
        yield Service("production", url, key, env, [api_log, worker_log], data, kill_worker,
                      lambda: procs["worker"].pid, restart_api, stop_worker, start_worker, procs, redis_server)
    finally:
        for p in procs.values():
            stop(p, timeout=20)
        redis_server.stop()
        print(tail([data / "api.log", data / "worker.log"]))
        from service.db.session import engine_for

        engine_for.cache_clear()
        try:
            drop_database(dbname)
        except Exception:
            pass


@pytest.fixture(scope="session", params=["embedded", "production"])
def svc(request) -> Service:
    return request.getfixturevalue(f"{request.param}_service")


# --------------------------------------------------------------------------------------------------
# The workload: digits, an MLP, jobs
# --------------------------------------------------------------------------------------------------

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MLP = {"input_shape": [64], "layers": [
    {"type": "dense", "units": 64, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]}
FIT = {"loss": "sparse_categorical_crossentropy",
       "optimizer": {"type": "adam", "learning_rate": 0.003},
       "epochs": 25, "batch_size": 32, "validation_split": 0.1, "seed": 7,
       "metrics": ["accuracy"]}


@lru_cache(maxsize=1)
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data.astype(np.float32), d.target
    held = np.arange(len(X)) % 5 == 0
    return X[~held], y[~held], X[held], y[held]


def digits_csv(held_out: bool = False) -> bytes:
    X, y, X_held, y_held = digits()
    if held_out:
        X, y = X_held, y_held
    out = io.StringIO()
    out.write(",".join([f"px{i}" for i in range(64)] + ["digit"]) + "\n")
    for row, label in zip(X, y):
        out.write(",".join(str(int(v)) for v in row) + "," + NAMES[label] + "\n")
    return out.getvalue().encode()


_datasets: dict[str, str] = {}


def upload_digits(svc: Service) -> str:
    """A new digits dataset; returns its id."""
    r = svc.client.post("/v1/datasets", files={"file": ("digits.csv", digits_csv(), "text/csv")},
                        data={"name": "digits", "target": "digit"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["task"] == "classification" and sorted(body["classes"]) == sorted(NAMES)
    return body["id"]


def upload_held_out_digits(svc: Service) -> str:
    """The digits rows that digits_csv() leaves out, as a dataset of their own; returns its id."""
    r = svc.client.post("/v1/datasets", files={"file": ("held.csv", digits_csv(held_out=True), "text/csv")},
                        data={"name": "digits-held-out", "target": "digit"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def dataset_id(svc: Service) -> str:
    """The digits dataset the tests share (one per mode)."""
    if svc.mode not in _datasets:
        _datasets[svc.mode] = upload_digits(svc)
    return _datasets[svc.mode]


def create_model(svc: Service, spec=MLP) -> str:
    r = svc.client.post("/v1/models", json={"name": "digits-mlp", **spec})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start_job(svc: Service, model_id: str, dataset: str | None = None, **overrides) -> str:
    body = {"model_id": model_id, "dataset_id": dataset or dataset_id(svc), **FIT, **overrides}
    r = svc.client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    return r.json()["id"]


def get_job(svc: Service, job_id: str) -> dict:
    r = svc.client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(svc: Service, job_id: str, until=("succeeded", "failed", "cancelled"), timeout=90.0,
             poll=0.05) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(svc, job_id)
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s "
                                 f"(epoch {job['progress']}):\n{svc.log_tail()}")
        time.sleep(poll)


def checkpoint_epochs(svc: Service, job_id: str) -> list[int]:
    """The job's stored checkpoints, newest first (straight from the database)."""
    return [r[0] for r in svc.sql("SELECT epoch FROM checkpoints WHERE job_id = :j "
                                  "ORDER BY epoch DESC", j=job_id)]


def weights(svc: Service, model_id: str, version: int) -> dict[str, np.ndarray]:
    r = svc.client.get(f"/v1/models/{model_id}/export", params={"format": "npz", "version": version})
    assert r.status_code == 200, r.text
    with np.load(io.BytesIO(r.content), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype.kind in "fiub":
            assert np.array_equal(a[k], b[k]), k
