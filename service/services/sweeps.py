"""Hyperparameter sweeps: a grid of job configs validated as a whole, then queued as one job per trial; list,
read, cancel, delete.

Creating one is all or nothing. Every trial's config goes through exactly what POST /v1/jobs checks (the
``JobCreate`` schema, then :func:`service.services.jobs.validate`) before anything is stored; a refusal names the
grid entry whose value was at fault (``["body", "grid", key, index]``) or else the base config's field
(``["body", "config", ...]``). Then the sweep row and every trial's job are added in the request's one
transaction, and each job's broker message goes out once it has committed, as for POST /v1/jobs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.db.models import Job, Sweep
from service.errors import Conflict, Invalid, LimitExceeded
from service.schemas.jobs import JobCreate
from service.schemas.sweeps import SweepCreate
from service.services import engine_port, jobs, sweep_grid, sweep_results
from service.services.jobs import ACTIVE, ValidJob
from service.services.queries import get_owned, page

#: Fields of the request itself, not of the base config or the grid.
TOP_LEVEL = ("model_id", "dataset_id")
#: The job-config fields that say which rows validate, which a sweep's ``folds`` decides instead.
HELD_OUT_FIELDS = ("validation_split", "validation_fold", "validation_dataset_id")
#: The job-config fields a grid key may start with.
CONFIG_FIELDS = frozenset(JobCreate.model_fields) - set(TOP_LEVEL)


def create(
    session: Session, settings: Settings, owner_id: str, body: SweepCreate, enqueue: Callable[[str], None]
) -> Sweep:
    """Validate every trial, the objective and the owner's quota, then add the sweep and queue its trials."""
    for field in TOP_LEVEL:
        if field in body.config:
            raise Invalid(f"config: {field} is the sweep's own field, not the config's", loc=["body", "config", field])
    grid = _grid_with_folds(body)
    key_paths = sweep_grid.paths(grid, CONFIG_FIELDS)
    n_trials = sweep_grid.count(grid)
    if n_trials > settings.max_sweep_trials:
        raise LimitExceeded(f"the grid expands to {n_trials:,} trials, over the limit of "
                            f"max_sweep_trials={settings.max_sweep_trials}", loc=["body", "grid"])
    quota = settings.max_concurrent_jobs_per_owner
    if 0 < quota < n_trials:        # a 429 would be wrong: waiting could never make room for them all
        raise LimitExceeded(f"the grid expands to {n_trials} trials, more than the "
                            f"max_concurrent_jobs_per_owner={quota} jobs an owner may have queued or running at once",
                            loc=["body", "grid"])
    base = dict(body.config)
    if body.folds is not None:
        base["validation_fold"] = {"folds": body.folds}      # each trial's fold comes from the grid
    if base.get("seed") is None and not any(path[0] == "seed" for path in key_paths.values()):
        # one seed for every trial: the trials then differ only in the grid's values (the same initial weights
        # and shuffles), not in luck
        base["seed"] = engine_port.draw_seed()

    valid = [_validate_trial(session, settings, owner_id, body, grid, base, key_paths, trial)
             for trial in range(n_trials)]
    objective, mode = _objective(body, [job.config for job in valid])
    jobs.check_concurrency(session, settings, owner_id, adding=n_trials)

    sweep = Sweep(owner_id=owner_id, model_id=valid[0].model_id, dataset_id=valid[0].dataset_id,
                  name=body.name or " × ".join(body.grid)[:200], grid=grid, config=base,
                  objective=objective, mode=mode)
    session.add(sweep)
    session.flush()
    for trial, job in enumerate(valid):
        jobs.queue_job(session, settings, owner_id, job.model_id, job.dataset_id, job.config, enqueue,
                       sweep_id=sweep.id, sweep_trial=trial)
    return sweep


def _grid_with_folds(body: SweepCreate) -> dict[str, list[Any]]:
    """The grid, with ``folds``: k-fold cross-validation of every grid point, one trial per fold (the fold as the
    last key, so a point's folds are consecutive trials). Invalid at ``["body", "folds"]`` when the base config
    or the grid already says which rows validate."""
    grid = dict(body.grid)
    if body.folds is None:
        return grid
    clash = next((key for key in grid if key.split(".")[0] in HELD_OUT_FIELDS), None)
    if clash is None:
        clash = next((key for key in HELD_OUT_FIELDS if body.config.get(key)), None)
    if clash is not None:
        raise Invalid(f"folds: each trial validates on its fold, so {clash} cannot be set too "
                      "(validation_rows in the config says how the rows are dealt to the folds)",
                      loc=["body", "folds"])
    grid[sweep_grid.FOLD_KEY] = list(range(1, body.folds + 1))
    return grid


def _validate_trial(
    session: Session, settings: Settings, owner_id: str, body: SweepCreate, grid: dict[str, list[Any]],
    base: dict[str, Any], key_paths: dict[str, list[str]], trial: int,
) -> ValidJob:
    """Trial number ``trial``'s job, checked as POST /v1/jobs checks one; a refusal is re-aimed at the sweep's
    body (:func:`_blame`)."""
    config = sweep_grid.trial_config(base, sweep_grid.params(grid, trial), key_paths)
    try:
        job_body = JobCreate.model_validate({**config, "model_id": body.model_id, "dataset_id": body.dataset_id})
        return jobs.validate(session, settings, owner_id, job_body)
    except ValidationError as exc:
        errors = [{"loc": ["body", *err["loc"]], "msg": str(err["msg"])} for err in exc.errors()]
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        raise _blame(Invalid, f"{where}: {first['msg']}" if where else first["msg"], errors, key_paths, trial,
                     grid) from None
    except Invalid as exc:
        raise _blame(type(exc), exc.detail, exc.errors or [], key_paths, trial, grid) from None


def _blame(
    cls: type[Invalid], detail: str, errors: list[dict[str, Any]], key_paths: dict[str, list[str]], trial: int,
    grid: dict[str, list[Any]],
) -> Invalid:
    """A job's refusal, its locations moved from the job's body to the sweep's.

    An error at or inside a grid key's path (``optimizer.learning_rate`` for the key ``optimizer.learning_rate``
    or ``optimizer``), or at an object that holds a grid key's path (``optimizer`` for the key
    ``optimizer.learning_rate``), came from that key's value in this trial: ``["body", "grid", key, index]``.
    Any other error is the base config's (``["body", "config", ...]``), or the request's own model_id or
    dataset_id; its detail says in which trial it came up, since a grid value may have made the base's field
    wrong (``metrics: ["accuracy"]`` with a grid of losses). The first error decides what ``detail`` names."""
    indices = sweep_grid.value_indices(grid, trial)
    moved = []
    for error in errors:
        loc = list(error.get("loc") or [])
        rest = loc[1:] if loc[:1] == ["body"] else loc
        key = _grid_key(rest, key_paths)
        if key is not None:
            where: list[Any] = ["body", "grid", key, indices[key]]
        elif rest[:1] and rest[0] in TOP_LEVEL:
            where = ["body", *rest]
        else:
            where = ["body", "config", *rest]
        moved.append({"loc": where, "msg": error.get("msg", detail)})
    first = moved[0]["loc"] if moved else ["body", "config"]
    if first[1] == "grid":
        key, index = first[2], first[3]
        detail = f"grid {key}[{index}] = {_short(grid[key][index])}: {detail}"
    elif first[1] == "config":
        values = ", ".join(f"{key}={_short(value)}" for key, value in sweep_grid.params(grid, trial).items())
        detail = f"config: {detail} (trial {trial + 1} of {sweep_grid.count(grid)}: {values})"
    return cls(detail, errors=moved)


def _grid_key(loc: list[Any], key_paths: dict[str, list[str]]) -> str | None:
    if not loc:
        return None
    segments = [str(p) for p in loc]
    inside = [key for key, path in key_paths.items() if segments[:len(path)] == path]
    if inside:
        return max(inside, key=lambda key: len(key_paths[key]))       # the deepest key holding the error
    return next((key for key, path in key_paths.items() if path[:len(segments)] == segments), None)


def _short(value: Any, limit: int = 60) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _objective(body: SweepCreate, configs: list[dict[str, Any]]) -> tuple[str, str]:
    """The objective (given, or the default) checked against every trial as early stopping's monitor is checked,
    and whether it is minimized or maximized."""
    has_validation = [float(c.get("validation_split") or 0) > 0 or c.get("validation_dataset_id") is not None
                      or c.get("validation_fold") is not None for c in configs]
    objective = body.objective or ("val_loss" if all(has_validation) else "loss")
    for trial, config in enumerate(configs):
        names = engine_port.monitor_names(list(config.get("metrics") or []))
        if objective not in names:
            raise Invalid(f"objective: {objective!r} is neither the loss nor one of the jobs' metrics (with or "
                          f"without val_); expected one of {', '.join(sorted(names))}", loc=["body", "objective"])
        if objective.startswith("val_") and not has_validation[trial]:
            raise Invalid(f"objective: {objective} needs validation data, and trial {trial + 1} has none: set "
                          f"validation_split or validation_dataset_id, or rank by "
                          f"{objective.removeprefix('val_')}", loc=["body", "objective"])
    return objective, engine_port.monitor_mode(objective, body.mode)


def warnings(session: Session, sweep: Sweep) -> list[str]:
    """What POST /v1/jobs warns about the sweep's trials (service.services.jobs.warnings), each warning once."""
    trials = session.scalars(select(Job).where(Job.sweep_id == sweep.id).order_by(Job.sweep_trial)).all()
    return list(dict.fromkeys(w for job in trials for w in jobs.warnings(session, job)))


def get(session: Session, owner_id: str, sweep_id: str) -> Sweep:
    return get_owned(session, Sweep, "sweep", owner_id, sweep_id)


def list_(
    session: Session, owner_id: str, limit: int, offset: int, model_id: str | None = None
) -> tuple[list[Sweep], int]:
    where = [Sweep.owner_id == owner_id]
    if model_id is not None:
        where.append(Sweep.model_id == model_id)
    return page(session, Sweep, where, [Sweep.created_at.desc(), Sweep.id.desc()], limit, offset)


def _active_trials(session: Session, sweep_id: str) -> list[str]:
    return list(session.scalars(select(Job.id).where(Job.sweep_id == sweep_id, Job.status.in_(ACTIVE))
                                .order_by(Job.sweep_trial)))


def cancel(session: Session, owner_id: str, sweep_id: str) -> Sweep:
    """Cancel every trial still queued or running, as POST /v1/jobs/{id}/cancel does (queued ones end at once,
    running ones stop within a batch). Trials that have ended are left as they are."""
    sweep = get(session, owner_id, sweep_id)
    for job_id in _active_trials(session, sweep.id):
        try:
            jobs.cancel(session, owner_id, job_id)
        except Conflict:            # it ended between our look and the cancel: nothing left to stop
            pass
    session.flush()
    return sweep


def delete(session: Session, owner_id: str, sweep_id: str) -> None:
    """Delete the sweep; its trials' jobs and versions stay, belonging to no sweep. 409 while one still runs."""
    sweep = get(session, owner_id, sweep_id)
    busy = _active_trials(session, sweep.id)
    if busy:
        raise Conflict(f"sweep {sweep_id} has {len(busy)} trials queued or running (job {busy[0]} first); cancel "
                       f"it first (POST /v1/sweeps/{sweep_id}/cancel)")
    # the foreign key would null sweep_id by itself; the trial numbers mean nothing without the sweep
    session.execute(update(Job).where(Job.sweep_id == sweep.id).values(sweep_id=None, sweep_trial=None)
                    .execution_options(synchronize_session=False))
    session.delete(sweep)
    session.flush()


def refit(session: Session, settings: Settings, owner_id: str, sweep_id: str,
          enqueue: Callable[[str], None]) -> Job:
    """A job that trains a cross-validation sweep's best point on every row: the sweep's base config with the
    point's values, without the fold (each fold's version saw only (k-1)/k of the rows). 409 when the sweep has no
    folds, no point has all its folds yet, or that config cannot train without validation rows."""
    sweep = get(session, owner_id, sweep_id)
    cv = sweep_results.views(session, [sweep])[0].cross_validation
    if cv is None:
        raise Conflict("refit trains a cross-validation sweep's best point on every row, and this sweep has no "
                       "folds: its best trial's version can serve as it is")
    if cv.best is None:
        raise Conflict("no grid point has all its folds succeeded yet: nothing to refit")
    if sweep.dataset_id is None:
        raise Conflict("the sweep's dataset was deleted: nothing to train on")
    base = {k: v for k, v in sweep.config.items() if k not in ("validation_fold", "validation_rows")}
    grid = {k: v for k, v in sweep.grid.items() if k != sweep_grid.FOLD_KEY}
    config = sweep_grid.trial_config(base, cv.best.params, sweep_grid.paths(grid, CONFIG_FIELDS))
    try:
        job_body = JobCreate.model_validate({**config, "model_id": sweep.model_id, "dataset_id": sweep.dataset_id})
        valid = jobs.validate(session, settings, owner_id, job_body)
    except (ValidationError, Invalid) as exc:
        detail = exc.detail if isinstance(exc, Invalid) else str(exc.errors()[0]["msg"])
        raise Conflict(f"the best point's config cannot train on every row: {detail}") from None
    jobs.check_concurrency(session, settings, owner_id)
    return jobs.queue_job(session, settings, owner_id, valid.model_id, valid.dataset_id, valid.config, enqueue)
