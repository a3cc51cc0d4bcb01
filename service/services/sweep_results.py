"""What a sweep's trials came to: each trial's objective, the best trial and the sweep's status, read from the
trials' jobs and the versions they made (a few statements for any number of sweeps).

A trial's objective is the objective's value for the model version its job made. A version's ``metrics`` are the
last epoch's history row (val_ metrics included), and so describe the version's weights, except after early
stopping with ``restore_best_weights``: the engine then hands back the weights of the best epoch it saw, and the
objective is read from that epoch's history row (:func:`restored_epoch_row`), not from the version's metrics.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job, ModelVersion, Sweep
from service.services import engine_port, job_history, sweep_grid
from service.services.jobs import ACTIVE


@dataclass(frozen=True)
class Trial:
    job_id: str
    params: dict[str, Any]
    status: str
    epochs_done: int
    objective: float | None
    result_version: int | None


@dataclass(frozen=True)
class SweepView:
    sweep: Sweep
    trials: list[Trial]
    best: Trial | None
    status: str


def views(session: Session, sweeps: Sequence[Sweep]) -> list[SweepView]:
    """Each sweep with its trials (in expansion order), its best trial and its status."""
    if not sweeps:
        return []
    jobs = session.scalars(
        select(Job).where(Job.sweep_id.in_([s.id for s in sweeps])).order_by(Job.sweep_trial)
    ).all()
    succeeded = [j for j in jobs if j.status == "succeeded"]
    version_metrics = dict(session.execute(
        select(ModelVersion.job_id, ModelVersion.metrics).where(ModelVersion.job_id.in_([j.id for j in succeeded]))
    ).all()) if succeeded else {}
    restoring = [j.id for j in succeeded if _restores_best_weights(j.config)]
    histories = job_history.load_many(session, restoring) if restoring else {}
    by_sweep: dict[str, list[Job]] = {}
    for job in jobs:
        by_sweep.setdefault(job.sweep_id or "", []).append(job)

    out = []
    for sweep in sweeps:
        trials = []
        for job in by_sweep.get(sweep.id, []):
            objective = None
            if job.status == "succeeded":
                row = restored_epoch_row(job.config, histories[job.id]) if job.id in histories else None
                objective = _number((row if row is not None else version_metrics.get(job.id) or {})
                                    .get(sweep.objective))
            trials.append(Trial(job_id=job.id, params=sweep_grid.params(sweep.grid, int(job.sweep_trial or 0)),
                                status=job.status, epochs_done=int(job.epoch or 0), objective=objective,
                                result_version=job.result_version))
        out.append(SweepView(sweep, trials, best(trials, sweep.mode), status([t.status for t in trials])))
    return out


def best(trials: Sequence[Trial], mode: str) -> Trial | None:
    """The succeeded trial with the lowest (``min``) or highest (``max``) objective; ties go to the earlier."""
    sign = 1.0 if mode == "max" else -1.0
    chosen: Trial | None = None
    for trial in trials:
        if trial.status != "succeeded" or trial.objective is None:
            continue
        if chosen is None or sign * (trial.objective - chosen.objective) > 0:   # type: ignore[operator]
            chosen = trial
    return chosen


def status(trial_statuses: Sequence[str]) -> str:
    """running while a trial is queued or running; then succeeded when one trial succeeded; else cancelled when
    one was cancelled (the sweep was stopped before anything succeeded), else failed."""
    if any(s in ACTIVE for s in trial_statuses):
        return "running"
    if "succeeded" in trial_statuses:
        return "succeeded"
    return "cancelled" if "cancelled" in trial_statuses else "failed"


def _restores_best_weights(config: dict[str, Any] | None) -> bool:
    early_stopping = (config or {}).get("early_stopping")
    return isinstance(early_stopping, dict) and bool(early_stopping.get("restore_best_weights"))


def restored_epoch_row(config: dict[str, Any], history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The history row of the epoch whose weights early stopping restored at the end of the fit, picked as the
    engine picks it (engine/training.py, ``_early_stopping``): the first epoch from ``start_from_epoch`` on that
    reports the monitored value, then each epoch that improves on the best so far by more than ``min_delta``.
    None when no epoch qualified (the engine then keeps the last weights)."""
    settings = config["early_stopping"]
    monitor = settings["monitor"]
    sign = -1.0 if engine_port.monitor_mode(monitor, settings.get("mode", "auto")) == "min" else 1.0
    min_delta = abs(float(settings.get("min_delta") or 0.0))
    start = int(settings.get("start_from_epoch") or 0)
    chosen: dict[str, Any] | None = None
    best_value: float | None = None
    for row in history:
        value = row.get(monitor)
        if value is None or int(row["epoch"]) - 1 < start:     # the engine counts epochs from 0
            continue
        if chosen is None or best_value is None or sign * (value - best_value) > min_delta:
            chosen, best_value = row, value
    return chosen


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
