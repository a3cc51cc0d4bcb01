"""Real service processes on loopback, shared by the benchmarks (``benchmarks/service.py``,
``benchmarks/load.py``) and the tests (``tests/procs.py``, ``tests/client/conftest.py``).

Standard library and httpx only (no pytest): a free port, a clean environment, spawning and stopping
process groups, waiting for ``/readyz`` and for the first API key, and the production pieces
(``backprop migrate`` + ``keys create``, ``backprop api`` / ``backprop worker``, a scratch PostgreSQL
database). Only 127.0.0.1 is contacted; every wait has a deadline.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import httpx

ROOT = Path(__file__).resolve().parents[1]
#: ``backprop`` as a module of this checkout (not whatever is installed on PATH).
CLI = [sys.executable, "-m", "service.cli"]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ``BACKPROP_*`` setting, with this checkout first on PYTHONPATH and
    unbuffered output (logs are read while the process runs), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``argv`` in the repository root, in a session (process group) of its own, output to ``log``."""
    fh = open(log, "ab")
    try:
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        fh.close()


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> int | None:
    """SIGTERM, up to ``timeout`` seconds for a clean exit, then SIGKILL to the whole process group.
    Returns the exit status (None for no process)."""
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


def tail(logs: Sequence[Path], n: int = 60) -> str:
    out = []
    for log in logs:
        if log.exists():
            lines = log.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {log.name} ---\n" + "\n".join(lines))
    return "\n".join(out)


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(p) for p in fh.read().split()]
        except OSError:  # the thread (or the process) is gone
            pass
    return out


def wait_for(pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.02,
             on_timeout: Callable[[], str] = lambda: "") -> Any:
    """The first truthy ``pred()``; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s\n{on_timeout()}")
        time.sleep(poll)


def wait_ready(url: str, procs: Sequence[subprocess.Popen], logs: Sequence[Path] = (),
               timeout: float = 60, path: str = "/readyz") -> None:
    """Until ``url + path`` answers 200; RuntimeError (with the logs' tails) when one of ``procs`` exits
    first or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a process exited ({p.returncode}) while waiting for {url}{path}:\n"
                                   + tail(logs))
        try:
            r = httpx.get(url + path, timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url}{path} not ready after {timeout}s: {last}\n" + tail(logs))


def read_key(data_dir: Path, timeout: float = 10) -> str:
    """The first API key, which ``backprop up`` writes to ``data_dir/api-key`` on its first start."""
    key_file = data_dir / "api-key"
    wait_for(key_file.exists, timeout, f"{key_file} is written", poll=0.05)
    return key_file.read_text().strip()


# --------------------------------------------------------------------------------------------------
# embedded: ``backprop up``
# --------------------------------------------------------------------------------------------------


def start_up(data_dir: Path, env: dict[str, str], log: Path, *args: str,
             timeout: float = 60) -> tuple[subprocess.Popen, str, str]:
    """``backprop up --grace 3 *args`` on a free port (``env`` must set ``BACKPROP_DATA_DIR=data_dir``);
    returns (the process, its URL, the first API key) once it is ready. Stops it if it never is."""
    port = free_port()
    proc = spawn([*CLI, "up", "--port", str(port), "--grace", "3", *args], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, [proc], [log], timeout=timeout)
        return proc, url, read_key(data_dir)
    except BaseException:
        stop(proc)
        raise


# --------------------------------------------------------------------------------------------------
# production: PostgreSQL, ``backprop api``, ``backprop worker``
# --------------------------------------------------------------------------------------------------


def create_database(dbname: str) -> str:
    """A new PostgreSQL database on 127.0.0.1:5432; returns its SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}"


def drop_database(dbname: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def migrate_and_create_key(env: dict[str, str], name: str) -> str:
    """``backprop migrate`` then ``backprop keys create --name NAME``; returns the new key."""
    subprocess.run([*CLI, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    out = subprocess.run([*CLI, "keys", "create", "--name", name], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip().splitlines()[-1]


def spawn_api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    return spawn([*CLI, "api", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                 env, log)


def spawn_worker(env: dict[str, str], name: str, log: Path, loglevel: str = "WARNING") -> subprocess.Popen:
    """``backprop worker -c 1`` (one pool process) with the Celery node name ``name``."""
    return spawn([*CLI, "worker", "-c", "1", "-n", name, "--loglevel", loglevel], env, log)


# --------------------------------------------------------------------------------------------------
# whole services for the benchmarks: (URL, API key, cleanup)
# --------------------------------------------------------------------------------------------------


def start_embedded(tmp: Path, *args: str,
                   extra_env: dict[str, str] | None = None) -> tuple[str, str, Callable[[], None]]:
    """``backprop up *args`` with its data dir ``tmp/embedded`` (SQLite, the embedded broker)."""
    data = tmp / "embedded"
    proc, url, key = start_up(data, clean_env(BACKPROP_DATA_DIR=str(data), **(extra_env or {})),
                              tmp / "up.log", *args)
    return url, key, lambda: stop(proc, timeout=30)


def start_production(tmp: Path, prefix: str, redis_url: str, workers: int = 1,
                     extra_env: dict[str, str] | None = None) -> tuple[str, str, Callable[[], None]]:
    """A fresh PostgreSQL database, a queue of its own on the Redis at ``redis_url``, one ``backprop api``
    and ``workers`` processes ``backprop worker -c 1``. The cleanup stops them and removes the database
    and the queue (with kombu's bindings)."""
    import uuid

    tag = uuid.uuid4().hex[:8]
    dbname, queue = f"backprop_{prefix}_{tag}", f"{prefix}-{tag}"
    env = clean_env(BACKPROP_DATA_DIR=str(tmp / "prod"), BACKPROP_DATABASE_URL=create_database(dbname),
                    BACKPROP_BROKER_URL=redis_url, BACKPROP_QUEUE_NAME=queue, **(extra_env or {}))
    procs: list[subprocess.Popen] = []
    logs = [tmp / f"{prefix}-api.log"] + [tmp / f"{prefix}-worker{i}.log" for i in range(1, workers + 1)]

    def cleanup() -> None:
        for p in procs:
            stop(p, timeout=30)
        drop_database(dbname)
        import redis

        r = redis.Redis.from_url(redis_url)
        for k in list(r.scan_iter(match=f"*{queue}*")):
            r.delete(k)
        r.close()

    try:
        key = migrate_and_create_key(env, prefix)
        port = free_port()
        procs.append(spawn_api(env, port, logs[0]))
        for i, log in enumerate(logs[1:], start=1):
            procs.append(spawn_worker(env, f"{prefix}{i}-{tag}@%h", log))
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, procs, logs)
    except BaseException:
        cleanup()
        raise
    return url, key, cleanup
