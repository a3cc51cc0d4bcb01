"""Persisting a training run: the data-layer steps a worker takes, as plain functions over a session.

Every function only flushes; the caller (the worker's task wrapper, or a test) commits, one transaction per
call unless stated otherwise. Writes after the claim may be fenced by ``worker``: when given, they only touch
the job while ``jobs.worker`` still equals it and the job is ``running`` (a worker that lost its job to the
reconciler then changes nothing), and they return False.

- ``claim_job(session, job_id, worker) -> bool``: queued -> running, atomically (attempts + 1).
- ``heartbeat(session, job_id, worker=None) -> bool``: True while the job should go on (owned, running, no
  cancel request).
- ``record_epoch(session, job_id, row, epoch, worker=None) -> bool``: progress + history row.
- ``save_checkpoint(session, job_id, epoch, metrics, data, keep_last=3, worker=None) -> bool``.
- ``latest_checkpoint(session, job_id) -> (epoch, bytes) | None``.
- ``complete_job(session, job_id, model_bytes, metrics, history=None, worker=None) -> int | None``: version
  N+1 and ``succeeded`` together; idempotent per job (returns the existing version).
- ``fail_job(session, job_id, code, message, worker=None) -> bool``.
- ``cancel_running(session, job_id, worker=None) -> bool``.
- ``release_job(session, job_id, worker) -> bool``: running -> queued for a worker that is being stopped, with
  its attempt given back (a planned stop is not a failure) and no message sent yet (``enqueued_at`` NULL on a
  job that has started: the next reconciler pass sends it); never when a cancel was requested.

Retention: a finished job (succeeded, failed or cancelled) keeps only its best and its last checkpoint.
"""
from __future__ import annotations

import math
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, undefer

from service.db.models import Checkpoint, Dataset, Job, Model, ModelVersion, utcnow
from service.services import job_history

TERMINAL = ("succeeded", "failed", "cancelled")


def _fence(job_id: str, worker: str | None) -> list[Any]:
    where = [Job.id == job_id, Job.status == "running"]
    if worker is not None:
        where.append(Job.worker == worker)
    return where


def _locked_job(session: Session, job_id: str, worker: str | None) -> Job | None:
    return session.scalars(select(Job).where(*_fence(job_id, worker)).with_for_update()).one_or_none()


def claim_job(session: Session, job_id: str, worker: str) -> bool:
    """queued -> running when the job is queued and no cancel was requested; False for a second delivery."""
    now = utcnow()
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))
        .values(
            status="running",
            attempts=Job.attempts + 1,
            worker=worker,
            heartbeat_at=now,
            started_at=func.coalesce(Job.started_at, now),
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return res.rowcount == 1


def heartbeat(session: Session, job_id: str, worker: str | None = None) -> bool:
    res = session.execute(
        update(Job)
        .where(*_fence(job_id, worker), Job.cancel_requested.is_(False))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1


def record_epoch(
    session: Session, job_id: str, row: dict[str, Any], epoch: int, worker: str | None = None
) -> bool:
    """Progress and the history row of ``epoch``. Rows from ``epoch`` on (left by an attempt that died after
    its last checkpoint) are replaced, so a resumed job's history has each epoch once."""
    return record_epochs(session, job_id, [{**row, "epoch": epoch}], worker)


def record_epochs(session: Session, job_id: str, rows: list[dict[str, Any]], worker: str | None = None) -> bool:
    """``record_epoch`` for several consecutive rows (each with its ``epoch``) in one transaction: the rows
    are inserted into ``job_epochs`` (after deleting any from the first of them on) and the job's progress
    and heartbeat move, so a write costs the same however long the history already is."""
    if not rows:
        return True
    job = _locked_job(session, job_id, worker)
    if job is None:
        return False
    job.epoch = job_history.replace_from(session, job_id, rows)
    job.heartbeat_at = utcnow()
    session.flush()
    return True


def monitor_value(metrics: dict[str, Any]) -> float | None:
    """The value that ranks checkpoints: val_loss when there is a validation split, else loss."""
    for key in ("val_loss", "loss"):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return float(v)
    return None


def prune_checkpoints(session: Session, job_id: str, keep_last: int) -> None:
    rows = session.execute(
        select(Checkpoint.id, Checkpoint.is_best).where(Checkpoint.job_id == job_id).order_by(Checkpoint.epoch.desc())
    ).all()
    keep = {r.id for r in rows[:keep_last]} | {r.id for r in rows if r.is_best}
    drop = [r.id for r in rows if r.id not in keep]
    if drop:
        session.execute(delete(Checkpoint).where(Checkpoint.id.in_(drop)))
    session.flush()


def save_checkpoint(
    session: Session,
    job_id: str,
    epoch: int,
    metrics: dict[str, Any],
    data: bytes,
    keep_last: int = 3,
    worker: str | None = None,
) -> bool:
    """Store the engine checkpoint of ``epoch``; keep the last ``keep_last`` and the best (lowest val_loss,
    else loss)."""
    if _locked_job(session, job_id, worker) is None:
        return False
    session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.epoch == epoch))
    value = monitor_value(metrics)
    best = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.is_best.is_(True))).all()
    best_value = min((v for v in (monitor_value(b.metrics or {}) for b in best) if v is not None), default=None)
    is_best = value is not None and (best_value is None or value < best_value)
    if is_best:
        for b in best:
            b.is_best = False
    session.add(Checkpoint(job_id=job_id, epoch=epoch, metrics=metrics, is_best=is_best, size_bytes=len(data), data=data))
    session.flush()
    prune_checkpoints(session, job_id, keep_last)
    return True


def latest_checkpoint(session: Session, job_id: str) -> tuple[int, bytes] | None:
    ck = session.scalars(
        select(Checkpoint)
        .options(undefer(Checkpoint.data))
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.epoch.desc())
        .limit(1)
    ).one_or_none()
    return (ck.epoch, ck.data) if ck is not None else None


def complete_job(
    session: Session,
    job_id: str,
    model_bytes: bytes,
    metrics: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
    worker: str | None = None,
) -> int | None:
    """Create version N+1 of the job's model from ``model_bytes`` and mark the job succeeded, in the caller's
    one transaction. Idempotent: when this job already made a version, that version is returned. None when
    the job is no longer running (or no longer this worker's)."""
    existing = session.scalar(select(ModelVersion.version).where(ModelVersion.job_id == job_id))
    if existing is not None:
        return int(existing)
    job = _locked_job(session, job_id, worker)
    if job is None:
        return None
    # Lock the model row so that version numbers are taken one writer at a time (PostgreSQL); on SQLite the
    # database-wide write lock and the unique (model_id, version) do the same.
    model = session.scalars(select(Model).where(Model.id == job.model_id).with_for_update()).one()
    last = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
    version = int(last or 0) + 1
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    now = utcnow()
    session.add(
        ModelVersion(
            model_id=model.id,
            version=version,
            job_id=job.id,
            dataset_id=job.dataset_id,
            task=dataset.task if dataset else "regression",
            classes=dataset.classes if dataset else None,
            feature_names=dataset.feature_names if dataset else [],
            target_names=dataset.target_names if dataset else [],
            metrics=metrics,
            size_bytes=len(model_bytes),
            data=model_bytes,
            created_at=now,
        )
    )
    job.status = "succeeded"
    job.result_version = version
    if history is not None:
        last = job_history.replace_all(session, job.id, history)
        if last is not None:
            job.epoch = last
    job.finished_at = now
    job.heartbeat_at = now
    job.error = None
    if (model.latest_version or 0) < version:
        model.latest_version = version
    session.flush()
    prune_checkpoints(session, job.id, keep_last=1)
    return version


def _finish(session: Session, job_id: str, worker: str | None, **values: Any) -> bool:
    """End the job (``values``: its status and the rest) if ``worker`` still holds it; False otherwise."""
    res = session.execute(
        update(Job)
        .where(*_fence(job_id, worker))
        .values(finished_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    if res.rowcount != 1:
        return False
    prune_checkpoints(session, job_id, keep_last=1)  # finished: the best and the last stay
    return True


def fail_job(session: Session, job_id: str, code: str, message: str, worker: str | None = None) -> bool:
    return _finish(session, job_id, worker, status="failed", error={"code": code, "message": message})


def cancel_running(session: Session, job_id: str, worker: str | None = None) -> bool:
    return _finish(session, job_id, worker, status="cancelled")


def release_job(session: Session, job_id: str, worker: str) -> bool:
    """running -> queued, handed back by ``worker`` (whose process is being stopped) after it stored its
    last checkpoint. The attempt is given back: ``max_attempts`` counts runs that died, not planned stops.
    ``enqueued_at`` is cleared: the message is sent by a reconciler pass, the stopping worker's own last one
    once its consumer has stopped (sent earlier, it could go straight back to that worker)."""
    res = session.execute(
        update(Job)
        .where(*_fence(job_id, worker), Job.cancel_requested.is_(False))
        .values(status="queued", worker=None, attempts=Job.attempts - 1, enqueued_at=None)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return res.rowcount == 1
