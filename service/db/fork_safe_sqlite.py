"""SQLite connections that a ``fork()`` can never catch half-way through a call.

Why: SQLite guards its allocator and its file bookkeeping with process-wide pthread mutexes. A
process that forks while another of its threads is inside SQLite hands the child those mutexes
locked by a thread the child does not have, and the child's first SQLite call (often the
``sqlite3.connect`` of its fresh engine) then waits forever. The embedded worker is exactly such a
process: billiard's supervisor thread forks a new pool child whenever one dies, while the main
thread polls the SQLAlchemy broker every 0.1 s and the reconciler and the dead-child requeue
threads query the database. Seen in CI and under ``gdb``: a fresh pool child stuck in
``sqlite3Malloc`` for good, and the worker's one prefetch slot with it.

The fix is a gate. Every SQLite call made through a :class:`ForkSafeConnection` or its cursors
passes it, any number of threads at once; ``os.fork`` (through :func:`os.register_at_fork`) closes
it, waits until no thread is inside, forks, and opens it again. SQLite's mutexes are therefore all
free at the instant of the fork. Only forks made with :func:`os.fork` are covered, which is what
billiard and :mod:`multiprocessing` use; ``subprocess`` execs at once and needs nothing.

Use :func:`connect` instead of :func:`sqlite3.connect`, and :func:`connect_args` for every
SQLAlchemy engine whose URL may be SQLite (the app's engines, kombu's broker engine, the probes).
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class _ForkGate:
    """Shared for SQLite calls, exclusive for a fork, cheap on the way in (a few dict operations).

    A thread inside a call has its id in ``_inside``. A fork first raises ``_forking``, then waits
    until no other thread is inside; a thread comes in by registering first and checking
    ``_forking`` second, and backs out if it is up. Each step is one bytecode, atomic under the
    GIL, and the two sides write before they read, so one of them always sees the other.

    Two kinds of thread pass freely: one that re-enters (a call running Python that calls SQLite
    again), and the forking thread itself while it waits (a garbage-collected cursor's ``__del__``
    can run there; its call ends before the fork does, and waiting would wait for itself)."""

    #: Seconds between two looks while a fork waits for the threads inside to come out.
    POLL_S = 0.0005

    def __init__(self) -> None:
        self._inside: dict[int, bool] = {}
        self._forking = False
        self._forker: int | None = None
        self._one_fork_at_a_time = threading.Lock()
        self._reopened = threading.Event()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        me = threading.get_ident()
        inside = self._inside
        if me in inside or me == self._forker:
            return fn(*args, **kwargs)
        inside[me] = True
        while self._forking:
            del inside[me]
            self._reopened.wait()
            inside[me] = True
        try:
            return fn(*args, **kwargs)
        finally:
            del inside[me]

    def before_fork(self) -> None:
        me = threading.get_ident()
        self._one_fork_at_a_time.acquire()  # released once this fork is done
        self._reopened.clear()
        self._forker = me
        self._forking = True
        while any(t != me for t in list(self._inside)):
            time.sleep(self.POLL_S)

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._forker = None
        self._reopened.set()
        self._one_fork_at_a_time.release()

    def after_fork_in_child(self) -> None:
        # The child has one thread, the one that forked: the others' entries go, and the event
        # (copied while the parent's threads may have been waiting on it) is made anew.
        me = threading.get_ident()
        self._inside = {me: True} if me in self._inside else {}
        self._forking = False
        self._forker = None
        self._one_fork_at_a_time = threading.Lock()
        self._reopened = threading.Event()
        self._reopened.set()

    def threads_inside(self) -> int:
        return len(self._inside)


GATE = _ForkGate()
os.register_at_fork(before=GATE.before_fork, after_in_parent=GATE.after_fork_in_parent,
                    after_in_child=GATE.after_fork_in_child)


class ForkSafeCursor(sqlite3.Cursor):
    """A cursor whose every call into SQLite passes :data:`GATE`."""

    def execute(self, *args: Any, **kwargs: Any) -> ForkSafeCursor:
        return GATE.run(super().execute, *args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> ForkSafeCursor:
        return GATE.run(super().executemany, *args, **kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> ForkSafeCursor:
        return GATE.run(super().executescript, *args, **kwargs)

    def fetchone(self) -> Any:
        return GATE.run(super().fetchone)

    def fetchmany(self, *args: Any, **kwargs: Any) -> list[Any]:
        return GATE.run(super().fetchmany, *args, **kwargs)

    def fetchall(self) -> list[Any]:
        return GATE.run(super().fetchall)

    def __next__(self) -> Any:
        return GATE.run(super().__next__)

    def close(self) -> None:
        GATE.run(super().close)

    def __del__(self) -> None:
        # Resetting a statement on garbage collection is a SQLite call too: do it here, inside
        # the gate, so that the base class finds nothing left to do.
        try:
            self.close()
        except Exception:  # a cursor of a closed connection: nothing to release
            pass


class ForkSafeConnection(sqlite3.Connection):
    """A connection (and cursors) whose every call into SQLite passes :data:`GATE`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        GATE.run(super().__init__, *args, **kwargs)

    def cursor(self, factory: type[sqlite3.Cursor] = ForkSafeCursor) -> sqlite3.Cursor:
        # Making a cursor calls nothing in SQLite; its methods do, and they are gated.
        return super().cursor(factory)

    # The shortcuts go through a cursor of ours: the base class's make a plain sqlite3.Cursor in C
    # (not through self.cursor()), whose fetches and finalization would run SQLite ungated.
    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        return self.cursor().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        return self.cursor().executemany(*args, **kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        return self.cursor().executescript(*args, **kwargs)

    def commit(self) -> None:
        GATE.run(super().commit)

    def rollback(self) -> None:
        GATE.run(super().rollback)

    def __exit__(self, *exc_info: Any) -> bool:
        # ``with connection:`` commits or rolls back in C, past the methods above.
        return GATE.run(super().__exit__, *exc_info)

    def close(self) -> None:
        GATE.run(super().close)

    def create_function(self, *args: Any, **kwargs: Any) -> None:
        GATE.run(super().create_function, *args, **kwargs)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # already unusable: the base class's own cleanup is all there is
            pass


def without_forks(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with no fork of this process in the meantime.

    For whole passes of background threads in a process that forks (the reconciler, the dead-child
    requeue in a worker's main process): besides SQLite's mutexes, a pass may hold Python-level
    locks of SQLAlchemy or kombu that a child copied mid-pass would find taken for good."""
    return GATE.run(fn, *args, **kwargs)


def connect(database: Any, **kwargs: Any) -> ForkSafeConnection:
    """:func:`sqlite3.connect`, fork-safe."""
    return sqlite3.connect(database, factory=ForkSafeConnection, **kwargs)


def connect_args(url: str, **sqlite_args: Any) -> dict[str, Any]:
    """``connect_args`` for ``create_engine(url, ...)``: for a SQLite URL, ``sqlite_args`` (arguments
    of :func:`sqlite3.connect`) and the fork-safe connection class; for any other database, none."""
    if url.startswith("sqlite"):
        return {**sqlite_args, "factory": ForkSafeConnection}
    return {}
