"""What a sweep's trials came to: each trial's objective, the best trial and the sweep's status, read from the
trials' jobs and the versions they made (a few statements for any number of sweeps).

A trial's objective is the objective's value for the model version its job made: a version's ``metrics`` are the
history row (val_ metrics included) of the epoch whose weights it holds, the best epoch when early stopping
restored its weights, else the last (``engine.Model.weights_epoch``, ``workers.runner.version_metrics``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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
class CrossValidationPoint:
    params: dict[str, Any]
    trials: list[Trial]                    # fold 1 first
    mean: float | None                     # over the folds, once every fold has an objective
    std: float | None


@dataclass(frozen=True)
class CrossValidation:
    folds: int
    points: list[CrossValidationPoint]
    best: CrossValidationPoint | None


@dataclass(frozen=True)
class SweepView:
    sweep: Sweep
    trials: list[Trial]
    best: Trial | None                     # None in a cross-validation sweep: cross_validation.best ranks points
    status: str
    cross_validation: CrossValidation | None = None


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
        state = status([t.status for t in trials])
        folds = sweep.grid.get(sweep_grid.FOLD_KEY)
        if folds:
            out.append(SweepView(sweep, trials, None, state, cross_validation(trials, len(folds), sweep.mode)))
        else:
            out.append(SweepView(sweep, trials, best(trials, sweep.mode), state))
    return out


def cross_validation(trials: Sequence[Trial], folds: int, mode: str) -> CrossValidation:
    """The trials of a sweep with ``folds`` grouped by grid point (their values but the fold's, in trial order),
    each point's mean and standard deviation over its folds once every fold has an objective, and the point with
    the best mean (ties: the earlier)."""
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        point = {k: v for k, v in trial.params.items() if k != sweep_grid.FOLD_KEY}
        groups.setdefault(json.dumps(point, sort_keys=True), []).append(trial)
    points = []
    for group in groups.values():
        scores = [t.objective for t in group if t.status == "succeeded" and t.objective is not None]
        complete = len(scores) == folds
        params = {k: v for k, v in group[0].params.items() if k != sweep_grid.FOLD_KEY}
        points.append(CrossValidationPoint(params, group, float(np.mean(scores)) if complete else None,
                                           float(np.std(scores)) if complete else None))
    sign = 1.0 if mode == "max" else -1.0
    chosen: CrossValidationPoint | None = None
    for point in points:
        if point.mean is not None and (chosen is None or sign * (point.mean - chosen.mean) > 0):  # type: ignore
            chosen = point
    return CrossValidation(folds, points, chosen)


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
