"""A job's history: one ``job_epochs`` row per recorded epoch.

Writers insert the rows of the epochs they record (replacing any rows from the first of them on, which an
attempt that died after its last checkpoint left behind), so recording an epoch costs the same at epoch 10
and at epoch 100,000. Readers ask for what they need: the whole history, its last rows, the rows after an
epoch they have already seen, or one row.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.orm import Session

from service.db.models import Job, JobEpoch

#: rows per INSERT statement (executemany); keeps every statement's parameter count well under SQLite's limit
INSERT_BATCH = 500


def replace_from(session: Session, job_id: str, rows: Iterable[dict[str, Any]]) -> int | None:
    """Store ``rows`` after deleting the job's rows from the first of them on; returns the last epoch stored
    (None when ``rows`` is empty). A row without an ``epoch`` is the epoch of its position (1-based)."""
    by_epoch = _by_epoch(rows)
    if by_epoch:
        session.execute(delete(JobEpoch).where(JobEpoch.job_id == job_id, JobEpoch.epoch >= min(by_epoch)))
    return _insert(session, job_id, by_epoch)


def replace_all(session: Session, job_id: str, rows: Iterable[dict[str, Any]]) -> int | None:
    """The job's history becomes ``rows`` (as in ``replace_from``); returns the last epoch (None when empty)."""
    session.execute(delete(JobEpoch).where(JobEpoch.job_id == job_id))
    return _insert(session, job_id, _by_epoch(rows))


def _by_epoch(rows: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out = {}
    for position, row in enumerate(rows, 1):
        epoch = int(row.get("epoch", position))
        out[epoch] = {**row, "epoch": epoch}      # a repeated epoch: the later row wins
    return out


def _insert(session: Session, job_id: str, by_epoch: dict[int, dict[str, Any]]) -> int | None:
    values = [{"job_id": job_id, "epoch": e, "row": r} for e, r in sorted(by_epoch.items())]
    for i in range(0, len(values), INSERT_BATCH):
        session.execute(insert(JobEpoch), values[i:i + INSERT_BATCH])
    return values[-1]["epoch"] if values else None


def load(session: Session, job_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The job's rows with an epoch above ``after`` (0: the whole history), in epoch order."""
    return list(session.scalars(
        select(JobEpoch.row).where(JobEpoch.job_id == job_id, JobEpoch.epoch > after).order_by(JobEpoch.epoch)
    ))


def load_many(session: Session, job_ids: list[str], after: dict[str, int] | None = None
              ) -> dict[str, list[dict[str, Any]]]:
    """``load`` for several jobs in one statement; ``after`` maps a job to the epoch its rows start after."""
    out: dict[str, list[dict[str, Any]]] = {j: [] for j in job_ids}
    if not job_ids:
        return out
    after = after or {}
    # jobs grouped by the epoch their rows start after: one condition per distinct start, not per job
    starts: dict[int, list[str]] = {}
    for j in job_ids:
        starts.setdefault(int(after.get(j, 0)), []).append(j)
    where = or_(*(and_(JobEpoch.job_id.in_(ids), JobEpoch.epoch > a) if a > 0 else JobEpoch.job_id.in_(ids)
                  for a, ids in starts.items()))
    stmt = select(JobEpoch.job_id, JobEpoch.row).where(where).order_by(JobEpoch.job_id, JobEpoch.epoch)
    for job_id, row in session.execute(stmt):
        out[job_id].append(row)
    return out


def tails(session: Session, jobs: list[Job], tail: int | None) -> dict[str, list[dict[str, Any]]]:
    """The last ``tail`` rows of each job's history (None: all of them, 0: none), in one statement.

    A history holds epochs 1 to ``job.epoch`` (a writer sets ``epoch`` to the last row it stores), so the last
    ``tail`` rows are those above ``job.epoch - tail``; the cut is repeated on what comes back in case a row
    above the recorded epoch is waiting to be replaced."""
    if tail == 0:
        return {j.id: [] for j in jobs}
    after = None if tail is None else {j.id: max(int(j.epoch or 0) - tail, 0) for j in jobs}
    found = load_many(session, [j.id for j in jobs], after)
    if tail is not None:
        found = {k: v[-tail:] for k, v in found.items()}
    return found


def row_at(session: Session, job_id: str, epoch: int) -> dict[str, Any] | None:
    return session.scalar(select(JobEpoch.row).where(JobEpoch.job_id == job_id, JobEpoch.epoch == epoch))


def latest_rows(session: Session, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each job's row for its recorded ``epoch`` (the latest), in one statement."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(JobEpoch.job_id, JobEpoch.row)
        .join(Job, (Job.id == JobEpoch.job_id) & (Job.epoch == JobEpoch.epoch))
        .where(JobEpoch.job_id.in_(job_ids))
    )
    return {job_id: row for job_id, row in rows}
