"""End-to-end fixtures: the real processes, talking over loopback.

- ``embedded_service``: ``backprop up`` itself (SQLite + Celery's SQLAlchemy transport in a fresh
  data dir; uvicorn and a Celery worker as its children).
- ``production_service``: a fresh PostgreSQL database, Redis (db 11, a queue name of its own), one
  uvicorn process and one Celery worker process started as in production (``backprop api`` /
  ``backprop worker``).

Reliability knobs are turned down (heartbeat timeout 3 s, reconcile every 0.5 s) so that recovery
tests take seconds, not minutes.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/11"

FAST_RECOVERY = {
    "BACKPROP_HEARTBEAT_TIMEOUT_S": "3",
    "BACKPROP_HEARTBEAT_INTERVAL_S": "0.5",
    "BACKPROP_RECONCILE_INTERVAL_S": "0.5",
    "BACKPROP_QUEUED_RESEND_S": "5",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(FAST_RECOVERY)
    env.update(extra)
    return env


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass
    return proc.returncode


def wait_ready(url: str, procs: list[subprocess.Popen], logs: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a process exited ({p.returncode}):\n" + tail(logs))
        try:
            r = httpx.get(url + "/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout}s: {last}\n" + tail(logs))


def tail(logs: list[Path], n: int = 60) -> str:
    out = []
    for log in logs:
        if log.exists():
            lines = log.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {log.name} ---\n" + "\n".join(lines))
    return "\n".join(out)


@dataclass
class Service:
    mode: str
    url: str
    key: str
    env: dict[str, str]
    logs: list[Path]
    kill_worker: Callable[[], None]
    worker_pid: Callable[[], int]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30,
                                   headers={"Authorization": f"Bearer {self.key}"})

    def settings(self):
        from service.config import Settings

        env = {k[len("BACKPROP_"):].lower(): v for k, v in self.env.items()
               if k.startswith("BACKPROP_")}
        return Settings(**env)

    def send_task(self, job_id: str) -> None:
        """Send one more ``backprop.train`` message for ``job_id``, as a duplicate delivery would."""
        from service.celery_client import get_celery

        s = self.settings()
        get_celery(s).send_task("backprop.train", args=[job_id], queue=s.queue_name)

    def db_engine(self):
        from sqlalchemy import create_engine

        return create_engine(self.settings().resolved_database_url)

    def log_tail(self) -> str:
        return tail(self.logs)


# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def embedded_service(tmp_path_factory):
    data = tmp_path_factory.mktemp("embedded")
    port = free_port()
    env = base_env(BACKPROP_DATA_DIR=str(data))
    log = data / "up.log"
    proc = spawn([sys.executable, "-m", "service.cli", "up", "--port", str(port), "--grace", "3",
                  "--log-level", "warning"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, [proc], [log])
        key_file = data / "api-key"
        deadline = time.monotonic() + 10
        while not key_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        key = key_file.read_text().strip()

        def worker_pid() -> int:
            return int((data / "worker.pid").read_text())

        def kill_worker() -> None:
            os.killpg(worker_pid(), signal.SIGKILL)  # the worker and its pool child

        svc = Service("embedded", url, key, env, [log], kill_worker, worker_pid, {"up": proc})
        svc.data_dir = data  # type: ignore[attr-defined]
        yield svc
    finally:
        rc = stop(proc, timeout=30)
        print(tail([log]))
        svc_rc = rc
    assert svc_rc == 0, f"backprop up exited with {svc_rc}"


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return True
    except Exception:
        return False


def _redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def production_service(tmp_path_factory):
    if not (_pg_available() and _redis_available()):
        pytest.skip("PostgreSQL and Redis are needed for the production-mode end-to-end tests")
    import psycopg
    import redis

    tag = uuid.uuid4().hex[:10]
    dbname = f"backprop_e2e_{tag}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    data = tmp_path_factory.mktemp("production")
    queue = f"training-e2e-{tag}"
    env = base_env(
        BACKPROP_DATA_DIR=str(data),
        BACKPROP_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}",
        BACKPROP_BROKER_URL=REDIS_URL,
        BACKPROP_QUEUE_NAME=queue,
    )
    cli = [sys.executable, "-m", "service.cli"]
    subprocess.run([*cli, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True,
                   timeout=120)
    key = subprocess.run([*cli, "keys", "create", "--name", "e2e"], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[-1]
    port = free_port()
    api_log, worker_log = data / "api.log", data / "worker.log"
    procs: dict[str, subprocess.Popen] = {}
    procs["api"] = spawn([*cli, "api", "--host", "127.0.0.1", "--port", str(port),
                          "--log-level", "warning"], env, api_log)

    def start_worker() -> None:
        procs["worker"] = spawn([*cli, "worker", "-c", "1", "-n", f"e2e-{tag}@%h",
                                 "--loglevel", "INFO"], env, worker_log)

    def kill_worker() -> None:
        os.killpg(procs["worker"].pid, signal.SIGKILL)
        procs["worker"].wait(10)
        start_worker()  # production: the orchestrator starts a new one

    start_worker()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, list(procs.values()), [api_log, worker_log])
        yield Service("production", url, key, env, [api_log, worker_log], kill_worker,
                      lambda: procs["worker"].pid, procs)
    finally:
        for p in procs.values():
            stop(p, timeout=20)
        print(tail([api_log, worker_log]))
        try:
            r = redis.Redis.from_url(REDIS_URL)
            for k in list(r.scan_iter(match=f"*{queue}*")):  # the queue and kombu's bindings
                r.delete(k)
            for tag_, raw in r.hgetall("unacked").items():  # messages of killed workers
                if queue.encode() in raw:
                    r.hdel("unacked", tag_)
                    r.zrem("unacked_index", tag_)
            r.close()
        except Exception:
            pass
        from service.db.session import engine_for

        engine_for.cache_clear()
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        except Exception:
            pass


@pytest.fixture(scope="session", params=["embedded", "production"])
def svc(request) -> Service:
    return request.getfixturevalue(f"{request.param}_service")
