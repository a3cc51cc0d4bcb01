"""Forking beside SQLite: the embedded worker's pool children must never inherit a locked SQLite mutex.

The failure this guards against was seen in CI and caught under gdb: a pool child forked while the
worker's main thread polled the SQLAlchemy broker hung for good in ``sqlite3Malloc`` (SQLite's
allocator mutex, copied locked), and the embedded worker ran no job again.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from service.db import fork_safe_sqlite
from service.db.fork_safe_sqlite import GATE, ForkSafeConnection

ROOT = Path(__file__).resolve().parents[2]

# Three threads open, query and close SQLite connections as fast as they can while the main
# thread forks; each child opens its own connection and exits. A child that is not gone within
# CHILD_TIMEOUT_S is stuck on a mutex copied locked (a healthy one takes milliseconds).
FORK_BESIDE_SQLITE = textwrap.dedent("""
    import json, os, sqlite3, sys, threading, time
    sys.path.insert(0, {root!r})
    from service.db import fork_safe_sqlite

    mode, forks, path, child_timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    open_db = fork_safe_sqlite.connect if mode == "fork_safe" else sqlite3.connect
    stop = False

    def hammer():
        while not stop:
            con = open_db(path, timeout=5)
            con.execute("CREATE TABLE IF NOT EXISTS t (a)")
            con.execute("SELECT count(*) FROM t").fetchone()
            con.close()

    for _ in range(3):
        threading.Thread(target=hammer, daemon=True).start()
    time.sleep(0.05)
    hung = done = 0
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            con = sqlite3.connect(":memory:")
            con.execute("SELECT 1").fetchone()
            os._exit(0)
        deadline = time.monotonic() + child_timeout
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                hung += 1
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                break
            time.sleep(0.001)
        done += 1
        if mode == "plain" and hung:
            break  # the hazard is shown; no need to wait out more hung children
    stop = True
    print(json.dumps({{"forks": done, "hung": hung}}))
""").format(root=str(ROOT))


def fork_beside_sqlite(tmp_path: Path, mode: str, forks: int, child_timeout: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", FORK_BESIDE_SQLITE, mode, str(forks), str(tmp_path / "busy.db"),
         str(child_timeout)],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def fork_an_empty_child() -> float:
    """Fork a child that exits at once and reap it; returns when (monotonic) the fork returned."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    returned = time.monotonic()
    os.waitpid(pid, 0)
    return returned


@pytest.mark.slow
def test_plain_sqlite_connections_leave_forked_children_hanging(tmp_path):
    """The hazard is real with this SQLite (so the next test can fail): with plain connections busy
    in other threads, some forked child hangs (about one fork in four here)."""
    result = fork_beside_sqlite(tmp_path, "plain", forks=80, child_timeout=1.0)
    assert result["hung"] >= 1, result


@pytest.mark.slow
def test_fork_safe_connections_never_leave_a_forked_child_hanging(tmp_path):
    result = fork_beside_sqlite(tmp_path, "fork_safe", forks=200, child_timeout=10.0)
    assert result == {"forks": 200, "hung": 0}


def test_every_sqlite_call_of_a_fork_safe_connection_runs_inside_the_gate(tmp_path):
    """Stepping a statement (a SQL function runs inside sqlite3_step, on the first row and on every
    later fetch) and each statement's start (the trace callback, which also sees the COMMIT of a
    ``with`` block) happen with the calling thread inside the gate, whichever entry point is used.
    The base class's ``execute`` shortcuts make plain cursors whose fetches would not be."""
    con = fork_safe_sqlite.connect(tmp_path / "g.db")
    seen: list[tuple[str, bool]] = []

    def inside_gate(what: str) -> bool:
        seen.append((what, threading.get_ident() in GATE._inside))
        return True

    con.create_function("step", 1, lambda a: inside_gate("step") and a)
    con.set_trace_callback(lambda sql: inside_gate(sql.split()[0]))
    con.execute("CREATE TABLE t (a)")
    con.executemany("INSERT INTO t VALUES (step(?))", [(i,) for i in range(5)])
    with con:
        con.execute("INSERT INTO t VALUES (step(5))")
    con.executescript("INSERT INTO t VALUES (step(6));")
    assert con.execute("SELECT step(a) FROM t ORDER BY a").fetchall() == [(i,) for i in range(7)]
    assert [r for r in con.execute("SELECT step(a) FROM t ORDER BY a")] == [(i,) for i in range(7)]
    cursor = con.execute("SELECT step(a) FROM t ORDER BY a")
    assert (cursor.fetchone(), cursor.fetchmany(2)) == ((0,), [(1,), (2,)])
    cursor.close()
    con.execute("INSERT INTO t VALUES (step(7))")
    con.rollback()
    con.close()
    assert sum(what == "step" for what, _ in seen) >= 25 and ("COMMIT", True) in seen
    assert [entry for entry in seen if not entry[1]] == []


def test_a_fork_waits_for_a_call_in_progress_and_no_call_starts_during_it(tmp_path):
    """Ordering, not timing: a fork requested while a SQLite call runs returns only after that
    call ends, and a call attempted while the fork waits runs only after it."""
    events: dict[str, float] = {}
    in_slow = threading.Event()

    def slow() -> int:  # runs inside sqlite3_step, i.e. inside the gate
        in_slow.set()
        time.sleep(0.3)
        events["slow call ends"] = time.monotonic()
        return 1

    def mark() -> int:
        events["second call runs"] = time.monotonic()
        return 1

    con = fork_safe_sqlite.connect(tmp_path / "a.db", check_same_thread=False)
    con.create_function("slow", 0, slow)
    con.create_function("mark", 0, mark)
    second = fork_safe_sqlite.connect(tmp_path / "a.db", check_same_thread=False)
    second.create_function("mark", 0, mark)

    def second_caller():
        while not GATE._forking:  # the fork is now waiting for the slow call
            time.sleep(0.001)
        second.execute("SELECT mark()").fetchone()

    t1 = threading.Thread(target=lambda: con.execute("SELECT slow()").fetchone())
    t2 = threading.Thread(target=second_caller)
    t1.start()
    in_slow.wait(5)
    t2.start()
    events["fork returns"] = fork_an_empty_child()
    t1.join(5)
    t2.join(5)
    assert events["slow call ends"] <= events["fork returns"]
    assert events["slow call ends"] <= events["second call runs"]
    assert GATE.threads_inside() == 0


def test_a_thread_may_reenter_while_a_fork_waits(tmp_path):
    """A Python function called from inside a SQLite call may itself query SQLite; with a fork
    waiting, that nested call must go through (the fork waits for the outer call anyway)."""
    other = fork_safe_sqlite.connect(tmp_path / "b.db", check_same_thread=False)
    other.execute("CREATE TABLE t (a)")
    fork_waiting = threading.Event()

    def nested() -> int:
        fork_waiting.wait(5)
        time.sleep(0.05)
        return other.execute("SELECT count(*) FROM t").fetchone()[0] + 7

    con = fork_safe_sqlite.connect(":memory:", check_same_thread=False)
    con.create_function("nested", 0, nested)
    result = []
    t = threading.Thread(target=lambda: result.append(con.execute("SELECT nested()").fetchone()))
    t.start()
    while GATE.threads_inside() == 0:
        time.sleep(0.001)
    threading.Timer(0.05, fork_waiting.set).start()
    fork_an_empty_child()
    t.join(5)
    assert result == [(7,)]


WORKER_MAIN_PROCESS = textwrap.dedent("""
    import json, sqlite3, sqlite3.dbapi2, sys
    sys.path.insert(0, {root!r})
    opened = []
    for module in (sqlite3, sqlite3.dbapi2):
        real = module.connect
        def recording(*args, _real=real, **kwargs):
            opened.append(getattr(kwargs.get("factory"), "__name__", "sqlite3.Connection"))
            return _real(*args, **kwargs)
        module.connect = recording

    from workers.celery_app import app, settings  # the worker's own app, as its main process has it
    from service.celery_client import broker_ok, get_celery
    from service.db.session import session_factory
    from service.reconciler import (delete_handled_broker_rows, pending_job_ids,
                                    recover_lost_child, reconcile_once)

    sf = session_factory(settings.resolved_database_url)
    reconcile_once(sf, settings, judge_heartbeats=True)            # the reconciler thread
    recover_lost_child(sf, settings, "no-such-job", "host:1:")     # the dead-child requeue thread
    get_celery(settings).send_task("backprop.train", args=["no-such-job"],
                                   queue=settings.queue_name)
    assert pending_job_ids(settings) == {{"no-such-job"}}
    with app.connection_for_read() as conn:                        # the consumer's poll
        message = conn.SimpleQueue(settings.queue_name).get(timeout=5)
        message.ack()
    delete_handled_broker_rows(settings)
    assert broker_ok(settings)
    print(json.dumps(opened))
""").format(root=str(ROOT))


def test_every_sqlite_connection_of_the_embedded_worker_main_process_is_fork_safe(tmp_path):
    """Every path by which the embedded worker's main process opens SQLite (its app database, the
    reconciler, the dead-child requeue, kombu's broker engine for sending and for polling, the
    broker housekeeping and probe) opens a :class:`ForkSafeConnection`."""
    env = {**os.environ, "BACKPROP_DATA_DIR": str(tmp_path), "BACKPROP_WORKER_RECONCILER": "0"}
    env.pop("BACKPROP_DATABASE_URL", None)
    env.pop("BACKPROP_BROKER_URL", None)
    migrate = subprocess.run([sys.executable, "-m", "service.cli", "migrate"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    out = subprocess.run([sys.executable, "-c", WORKER_MAIN_PROCESS], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    opened = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(opened) >= 5, opened
    assert set(opened) == {ForkSafeConnection.__name__}, opened


def test_a_fork_waits_for_a_whole_pass_run_without_forks():
    """``without_forks`` holds forks off for a whole piece of Python (a reconciler pass), not
    only for single SQLite calls."""
    events: dict[str, float] = {}
    started = threading.Event()

    def a_pass() -> None:
        started.set()
        time.sleep(0.3)
        events["pass ends"] = time.monotonic()

    t = threading.Thread(target=fork_safe_sqlite.without_forks, args=(a_pass,))
    t.start()
    started.wait(5)
    events["fork returns"] = fork_an_empty_child()
    t.join(5)
    assert events["pass ends"] <= events["fork returns"]


@pytest.mark.timeout(20)
def test_the_forking_thread_passes_its_own_gate(tmp_path):
    """While a fork waits, the forking thread itself may have to run a SQLite call: the garbage
    collector can finalize a cursor there (``__del__`` closes it). Waiting would wait for itself;
    that deadlock was seen in the test suite before this rule."""
    con = fork_safe_sqlite.connect(tmp_path / "c.db")
    GATE.before_fork()
    try:
        cursor = con.execute("SELECT 41 + 1")
        assert cursor.fetchone() == (42,)
        del cursor  # finalized here, in the forking thread
    finally:
        GATE.after_fork_in_parent()
    assert GATE.threads_inside() == 0
