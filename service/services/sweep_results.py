"""What a sweep's trials came to: each trial's objective, the best trial and the sweep's status, read from the
trials' jobs and the versions they made (a few statements for any number of sweeps).

A trial's objective is the objective's value for the model version its job made: a version's ``metrics`` are the
history row (val_ metrics included) of the epoch whose weights it holds, the best epoch when early stopping
restored its weights, else the last (``engine.Model.weights_epoch``, ``workers.runner.version_metrics``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job, ModelVersion, Sweep
from service.services import sweep_grid
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
    by_sweep: dict[str, list[Job]] = {}
    for job in jobs:
        by_sweep.setdefault(job.sweep_id or "", []).append(job)

    out = []
    for sweep in sweeps:
        trials = []
        for job in by_sweep.get(sweep.id, []):
            objective = None
            if job.status == "succeeded":
                objective = _number((version_metrics.get(job.id) or {}).get(sweep.objective))
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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
