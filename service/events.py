"""One source of job changes per process, fanned out to every watcher of ``GET /v1/jobs/{id}/events``.

The hub runs a single background task while anyone watches: every ``poll_interval_s`` it reads the cheap
columns (status, attempts, epoch) of all watched jobs in one statement, reads the full rows of the jobs that
changed in a second one, and hands each changed :class:`~service.services.job_events.Snapshot` to the
watchers of that job. A thousand watchers cost the database what one does; each watcher only diffs the
snapshot against its own cursor. The task stops when the last watcher leaves.

It works the same in both modes (SQLite embedded, PostgreSQL in production) and with several API processes
(one hub each), because the job row is the truth and the stream is a function of it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.services.job_events import (
    Cursor,
    Fingerprint,
    Snapshot,
    events_since,
    fingerprint,
    read_fingerprints,
    read_snapshots,
)

log = logging.getLogger("backprop.events")

#: Tells the client how long to wait before it reconnects (ms).
RETRY_MS = 2000


class Subscription:
    """A watcher's mailbox. A snapshot's status fields are the job's whole state, so only the latest counts;
    its history holds only the rows the poller had not read before, so the rows of snapshots the watcher has
    not taken yet are kept, in order, ahead of the new ones."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.latest: Snapshot | None = None
        self.gone = False
        self._changed = asyncio.Event()

    def push(self, snap: Snapshot | None) -> None:
        if snap is None:
            self.gone = True
        elif self.latest is not None:      # not taken yet: keep its rows
            self.latest = replace(snap, history=self.latest.history + snap.history)
        else:
            self.latest = snap
        self._changed.set()

    async def wait(self, timeout: float) -> Snapshot | None:
        """The next snapshot; None when the job is gone. Raises TimeoutError after ``timeout`` s of quiet."""
        await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()
        snap, self.latest = self.latest, None
        return None if self.gone else snap


class EventHub:
    def __init__(self, session_factory: sessionmaker[Session], poll_interval_s: float = 0.5) -> None:
        self.session_factory = session_factory
        self.poll_interval_s = poll_interval_s
        self._subs: dict[str, set[Subscription]] = {}
        self._fingerprints: dict[str, Fingerprint] = {}
        self._epochs_read: dict[str, int] = {}   # the last history epoch the poller read, per watched job
        self._task: asyncio.Task[None] | None = None
        # Counters (tests and /metrics): poll cycles, statements the poller ran, reads on connect, and the
        # largest number of watchers one poll cycle served.
        self.polls = 0
        self.queries = 0
        self.initial_reads = 0
        self.keepalives = 0          # keep-alive comments sent, all streams together
        self.max_watchers_per_poll = 0

    # ------------------------------------------------------------------------------------------------

    @property
    def watchers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(job_id)
        self._subs.setdefault(job_id, set()).add(sub)
        self._ensure_task()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.job_id]
            self._fingerprints.pop(sub.job_id, None)
            self._epochs_read.pop(sub.job_id, None)

    def _ensure_task(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._task = loop.create_task(self._run(), name="backprop-event-hub")

    async def close(self) -> None:
        """Stop polling and end every open stream (the app is shutting down)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.push(None)

    # ------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while self._subs:
            await asyncio.sleep(self.poll_interval_s)
            ids = list(self._subs)
            if not ids:
                break
            try:
                found, changed = await run_in_threadpool(
                    self._poll, ids, dict(self._fingerprints), dict(self._epochs_read))
            except Exception as exc:  # a database hiccup: watchers wait for the next poll
                log.warning("event poll failed: %s", exc)
                continue
            served = 0
            for job_id in ids:
                subs = self._subs.get(job_id)
                if not subs:
                    continue
                if job_id not in found:  # deleted (its model was deleted): end the streams
                    for sub in list(subs):
                        sub.push(None)
                    continue
                self._fingerprints[job_id] = found[job_id]
                snap = changed.get(job_id)
                if snap is not None:
                    if snap.history:
                        self._epochs_read[job_id] = int(snap.history[-1].get("epoch", 0))
                    for sub in list(subs):
                        sub.push(snap)
                served += len(subs)
            self.max_watchers_per_poll = max(self.max_watchers_per_poll, served)

    def _poll(
        self, ids: list[str], known: dict[str, Fingerprint], epochs_read: dict[str, int]
    ) -> tuple[dict[str, Fingerprint], dict[str, Snapshot]]:
        """Runs in a worker thread: one read of every watched job's fingerprint, one more of those that changed
        (their rows and the history rows after the epoch last read)."""
        with self.session_factory() as session:
            self.polls += 1
            self.queries += 1
            found = read_fingerprints(session, ids)
            stale = [i for i, fp in found.items() if known.get(i) != fp]
            changed: dict[str, Snapshot] = {}
            if stale:
                self.queries += 1
                changed = read_snapshots(session, stale, epochs_read)
                # The row may have moved on between the two reads: remember what was actually read.
                found.update({i: fingerprint(s) for i, s in changed.items()})
        return found, changed

    def read(self, job_id: str, after_epoch: int = 0) -> Snapshot | None:
        """The job's snapshot now, with the history rows after ``after_epoch`` (a watcher's first look; runs
        in a worker thread)."""
        with self.session_factory() as session:
            self.initial_reads += 1
            return read_snapshots(session, [job_id], {job_id: after_epoch}).get(job_id)

    # ------------------------------------------------------------------------------------------------

    async def stream(self, job_id: str, cursor: Cursor, keepalive_s: float) -> AsyncIterator[str]:
        """The text of ``job_id``'s event stream from ``cursor`` on; ends after a final status."""
        sub = self.subscribe(job_id)  # before the first read, so that no change falls between the two
        try:
            yield f"retry: {RETRY_MS}\n\n"
            snap: Any = await run_in_threadpool(self.read, job_id, cursor.epoch)
            while snap is not None:
                events, cursor = events_since(snap, cursor)
                for event in events:
                    yield event.encode()
                if snap.terminal:
                    return
                try:
                    snap = await sub.wait(keepalive_s)
                except (asyncio.TimeoutError, TimeoutError):
                    self.keepalives += 1
                    yield ": keep-alive\n\n"
        finally:
            self.unsubscribe(sub)
