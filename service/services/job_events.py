"""The event stream of a job, computed from its row: what a watcher who has seen up to a cursor must see next.

A job's stream is a pure function of its row (status, attempts) and its history rows, so any process can serve it and a
reconnecting watcher resumes exactly where it stopped:

- ``status`` events carry ``{"id", "status", "attempts", "progress", "error", "result_version"}``;
- ``progress`` events carry one history row (one per epoch);
- the stream ends after a final status (succeeded, failed, cancelled).

Event ids are cursors ``"<epoch>.<status seq>"``: the last epoch delivered and the number of the last status
delivered. The status sequence number is derived from the row, and grows with every change a job can go
through (queued -> running -> queued again on a retry -> running -> final)::

    queued: 2 * attempts        running: 2 * attempts - 1        final: 2 * attempts + 1

A cursor with no status seen yet is just ``"<epoch>"`` (the progress events of a stream opened on a finished
job, whose final status comes last). ``Last-Event-ID`` takes any id the stream sent; an id that cannot be
parsed starts from the beginning.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job
from service.services import job_history

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Snapshot:
    """What the stream needs of a job row."""

    job_id: str
    status: str
    attempts: int
    epoch: int
    epochs: int
    history: tuple[dict[str, Any], ...]
    error: dict[str, Any] | None
    result_version: int | None

    @property
    def seq(self) -> int:
        return status_seq(self.status, self.attempts)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Cursor:
    epoch: int = 0
    seq: int = -1  # -1: no status seen yet

    def __str__(self) -> str:
        return str(self.epoch) if self.seq < 0 else f"{self.epoch}.{self.seq}"

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        if not raw:
            return cls()
        head, _, tail = raw.strip().partition(".")
        try:
            epoch = int(head)
            seq = int(tail) if tail else -1
        except ValueError:
            return cls()
        if epoch < 0 or seq < -1:
            return cls()
        return cls(epoch, seq)


@dataclass(frozen=True)
class Event:
    type: str  # "progress" | "status"
    id: str
    data: dict[str, Any]

    def encode(self) -> str:
        data = json.dumps(_finite(self.data), separators=(",", ":"), allow_nan=False)
        return f"id: {self.id}\nevent: {self.type}\ndata: {data}\n\n"


def status_seq(status: str, attempts: int) -> int:
    attempts = max(int(attempts or 0), 0)
    if status == "queued":
        return 2 * attempts
    if status == "running":
        return max(2 * attempts - 1, 1)
    return 2 * attempts + 1


def _finite(value: Any) -> Any:
    """NaN and infinities (a diverged loss) become null: JSON has no literal for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def status_data(snap: Snapshot) -> dict[str, Any]:
    epochs = max(snap.epochs, 0)
    return {
        "id": snap.job_id,
        "status": snap.status,
        "attempts": snap.attempts,
        "progress": {
            "epoch": snap.epoch,
            "epochs": epochs,
            "fraction": min(snap.epoch / epochs, 1.0) if epochs else 0.0,
        },
        "error": snap.error,
        "result_version": snap.result_version,
    }


def events_since(snap: Snapshot, cursor: Cursor) -> tuple[list[Event], Cursor]:
    """The events a watcher at ``cursor`` has not seen, in stream order, and the cursor after them.

    A status that is not final comes before the epochs recorded under it; a final status comes after every
    epoch (it ends the stream). Statuses a job went through between two looks are not replayed: the stream
    says where the job is, and every epoch it recorded.
    """
    events: list[Event] = []
    seq = snap.seq
    status_new = seq > cursor.seq
    epoch = cursor.epoch
    if status_new and not snap.terminal:
        cursor = Cursor(epoch, seq)
        events.append(Event("status", str(cursor), status_data(snap)))
    for row in snap.history:
        e = int(row.get("epoch", 0))
        if e > epoch:
            epoch = e
            cursor = Cursor(e, cursor.seq)
            events.append(Event("progress", str(cursor), dict(row)))
    if status_new and snap.terminal:
        cursor = Cursor(epoch, seq)
        events.append(Event("status", str(cursor), status_data(snap)))
    return events, cursor


# --------------------------------------------------------------------------------------------------
# Reads (the hub counts them: the fingerprints are one statement, the snapshots two)
# --------------------------------------------------------------------------------------------------

Fingerprint = tuple[str, int, int]


def read_fingerprints(session: Session, job_ids: list[str]) -> dict[str, Fingerprint]:
    """(status, attempts, epoch) of each job that still exists: cheap columns only."""
    if not job_ids:
        return {}
    rows = session.execute(select(Job.id, Job.status, Job.attempts, Job.epoch).where(Job.id.in_(job_ids))).all()
    return {r.id: (r.status, int(r.attempts or 0), int(r.epoch or 0)) for r in rows}


def read_snapshots(session: Session, job_ids: list[str], after: dict[str, int] | None = None
                   ) -> dict[str, Snapshot]:
    """The jobs' rows, with the history rows after ``after[job_id]`` (0 or missing: the whole history)."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(
            Job.id, Job.status, Job.attempts, Job.epoch, Job.epochs, Job.error, Job.result_version
        ).where(Job.id.in_(job_ids))
    ).all()
    # The rows after the job: a final status read first is never shown without the rows it finished with
    # (complete_job writes both in one transaction), whatever the isolation level.
    histories = job_history.load_many(session, [r.id for r in rows], after)
    return {
        r.id: Snapshot(
            job_id=r.id,
            status=r.status,
            attempts=int(r.attempts or 0),
            epoch=int(r.epoch or 0),
            epochs=int(r.epochs or 0),
            history=tuple(histories[r.id]),
            error=r.error,
            result_version=r.result_version,
        )
        for r in rows
    }


def fingerprint(snap: Snapshot) -> Fingerprint:
    return (snap.status, snap.attempts, snap.epoch)
