"""Training jobs: validate everything before anything is queued, then queue; list, cancel, checkpoints."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.db.models import Checkpoint, Dataset, Job, Model, Owner, utcnow
from service.errors import Conflict, Invalid, LimitExceeded, TooManyRequests
from service.services import dataset_matching as matching
from service.services import dataset_profile, engine_port, job_history
from service.services.queries import get_owned, page
from service.services.hooks import after_commit
from service.training_data import TargetMismatch, check_targets, n_outputs_of, n_targets_of, target_shape

log = logging.getLogger("backprop.jobs")

#: Job keys that belong to the service, not to the engine's ``fit``.
SERVICE_KEYS = ("model_id", "dataset_id", "validation_dataset_id", "checkpoint_every")
DEFAULT_CHECKPOINT_EVERY = 1
ACTIVE = ("queued", "running")


def _owned(session: Session, cls: type, ident: str, owner_id: str, field: str) -> Any:
    row = session.get(cls, ident)
    if row is None or row.owner_id != owner_id:
        kind = "model" if cls is Model else "dataset"
        raise Invalid(f"{kind} {ident} was not found", loc=["body", field])
    return row


def _check_epochs(settings: Settings, epochs: int) -> None:
    if epochs > settings.max_epochs:
        raise LimitExceeded(f"epochs={epochs} is over the limit of max_epochs={settings.max_epochs}",
                            loc=["body", "epochs"])


#: Seconds a client is told to wait when it has too many jobs queued or running.
CONCURRENCY_RETRY_AFTER_S = 5


def check_concurrency(session: Session, settings: Settings, owner_id: str, adding: int = 1) -> None:
    """429 when ``adding`` more jobs (a sweep adds all its trials at once) would take the owner over
    ``max_concurrent_jobs_per_owner`` jobs queued or running.

    A quota that frees itself as jobs finish, not a fault of the request: hence 429 with Retry-After (retrying
    the same request later succeeds), not 422. Concurrent submissions by one owner are counted one after the
    other: a no-op UPDATE of the owner's row first takes its row lock (PostgreSQL) or the database's write lock
    (SQLite, where a SELECT ... FOR UPDATE would lock nothing), held until the job row is committed.
    """
    limit = settings.max_concurrent_jobs_per_owner
    if limit <= 0:
        return
    session.execute(
        update(Owner).where(Owner.id == owner_id).values(name=Owner.name).execution_options(synchronize_session=False)
    )
    active = session.scalar(
        select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status.in_(ACTIVE))
    ) or 0
    if active + adding > limit:
        more = f" and {adding} more would be over" if adding > 1 else ","
        raise TooManyRequests(
            f"{active} jobs are already queued or running for this owner{more} the limit of "
            f"max_concurrent_jobs_per_owner={limit}; wait for one to finish or cancel one",
            retry_after=CONCURRENCY_RETRY_AFTER_S,
        )


@dataclass(frozen=True)
class ValidJob:
    """A job request that passed every check of :func:`validate`: what :func:`queue_job` stores."""

    model_id: str
    dataset_id: str
    #: the normalized fit config (every default filled in) with the service's keys
    config: dict[str, Any]


def create(
    session: Session,
    settings: Settings,
    owner_id: str,
    body: Any,
    enqueue: Callable[[str], None],
) -> Job:
    """Validate the job (model, dataset, fit config, their fit together, limits) and queue it.

    The broker message is sent after the request's transaction commits (see ``hooks.after_commit``); if the
    broker is down the job stays ``queued`` with no ``enqueued_at`` and the reconciler sends it later.
    """
    job = validate(session, settings, owner_id, body)
    check_concurrency(session, settings, owner_id)
    return queue_job(session, settings, owner_id, job.model_id, job.dataset_id, job.config, enqueue)


def validate(session: Session, settings: Settings, owner_id: str, body: Any) -> ValidJob:
    """Every check POST /v1/jobs makes of ``body`` (a ``JobCreate``) but the concurrency quota, and its config
    normalized; reads only. Invalid (422) names the offending field under ``["body", ...]``."""
    model: Model = _owned(session, Model, body.model_id, owner_id, "model_id")
    dataset: Dataset = _owned(session, Dataset, body.dataset_id, owner_id, "dataset_id")

    raw = body.model_dump(exclude_unset=True, exclude_none=True, exclude=set(SERVICE_KEYS))
    engine_port.check_numbers(raw, ["body"])
    validation = None
    if body.validation_dataset_id is not None:
        validation = _owned(session, Dataset, body.validation_dataset_id, owner_id, "validation_dataset_id")
        if raw.get("validation_split"):
            raise Invalid("give validation_split or validation_dataset_id, not both", loc=["body", "validation_split"])
        if raw.get("validation_fold") is not None:
            raise Invalid("give validation_fold or validation_dataset_id, not both", loc=["body", "validation_fold"])
        # the engine only needs to know that the fit has validation rows (early stopping may monitor val_loss);
        # the worker reads them from the dataset
        raw["validation_data"] = True
    labelled_weights = raw.get("class_weight")
    if labelled_weights is not None:
        raw["class_weight"] = matching.class_weight_for_engine(dataset, labelled_weights, ["body", "class_weight"])
    config = engine_port.normalize_fit_config(raw, input_rank=len(model.input_shape))
    _check_epochs(settings, int(config.get("epochs") or 0))

    model_width = math.prod(int(d) for d in model.input_shape)
    if model_width != dataset.n_features:
        raise Invalid(
            f"the model takes inputs of shape {list(model.input_shape)} ({model_width} values) but the dataset's "
            f"rows have {dataset.n_features} features (shape {list(dataset.input_shape)})",
            loc=["body", "dataset_id"],
        )
    if validation is not None:
        matching.check(dataset, validation, model_width, validation.n_features, ["body", "validation_dataset_id"],
                       "the training dataset")
        config["validation_dataset_id"] = validation.id
    loss = config.get("loss")
    loss_name = loss if isinstance(loss, str) else str((loss or {}).get("type", ""))
    n_outputs = n_outputs_of(model.summary)
    n_targets = n_targets_of(dataset.task, dataset.classes, dataset.target_names)
    try:
        check_targets(dataset.task, n_targets, loss, n_outputs)
    except TargetMismatch as exc:
        raise Invalid(f"loss {loss_name} cannot train this model on this dataset: {exc}",
                      loc=["body", "loss"]) from None
    fold = config.get("validation_fold")
    if fold and fold["folds"] > dataset.n_samples:
        raise Invalid(f"validation_fold: {fold['folds']} folds of {dataset.n_samples} rows: at most one per row",
                      loc=["body", "validation_fold", "folds"])
    vs = float(config.get("validation_split") or 0.0)
    if math.floor(dataset.n_samples * (1.0 - vs)) < 1:
        raise Invalid(
            f"validation_split={vs} leaves no training rows out of {dataset.n_samples}",
            loc=["body", "validation_split"],
        )
    engine_port.check_compatible(
        model.spec,
        config,
        (dataset.n_samples, *[int(d) for d in model.input_shape]),
        target_shape(dataset.task, dataset.n_samples, n_targets, loss, n_outputs),
    )

    if isinstance(labelled_weights, dict):
        # the job keeps the client's labels (what GET shows); the worker maps them to class indices again
        config["class_weight"] = {label: float(weight) for label, weight in labelled_weights.items()}
    checkpoint_every = body.checkpoint_every if body.checkpoint_every is not None else DEFAULT_CHECKPOINT_EVERY
    return ValidJob(model.id, dataset.id, {**config, "checkpoint_every": checkpoint_every})


def warnings(session: Session, job: Job) -> list[str]:
    """What the job's config will do badly on its dataset (service.services.dataset_profile.split_warnings)."""
    row = session.execute(select(Dataset.profile, Dataset.task, Dataset.n_samples)
                          .where(Dataset.id == job.dataset_id)).one_or_none()
    if row is None:
        return []
    return dataset_profile.split_warnings(row.profile, row.task, int(row.n_samples), job.config or {})


def queue_job(
    session: Session, settings: Settings, owner_id: str, model_id: str, dataset_id: str, config: dict[str, Any],
    enqueue: Callable[[str], None], *, sweep_id: str | None = None, sweep_trial: int | None = None,
) -> Job:
    """Add a queued job (a sweep's trial when ``sweep_id`` is given, ``sweep_trial`` its place in the sweep);
    its broker message goes out once the request's transaction commits."""
    job = Job(owner_id=owner_id, model_id=model_id, dataset_id=dataset_id, status="queued", config=config, epoch=0,
              epochs=int(config["epochs"]), attempts=0, max_attempts=settings.max_attempts, cancel_requested=False,
              sweep_id=sweep_id, sweep_trial=sweep_trial)
    session.add(job)
    session.flush()
    job_id = job.id
    bind = session.get_bind()

    def send() -> None:
        try:
            enqueue(job_id)
        except Exception as exc:  # the reconciler re-sends queued jobs that have no enqueued_at
            log.warning("job %s: could not send its message now (%s); the reconciler will", job_id, exc)
            return
        with Session(bind) as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))

    after_commit(session, send)
    return job


#: Failed jobs that may be continued: their end came from outside the fit, which would go on the same way.
CONTINUABLE_FAILURES = ("worker_lost", "time_limit")


def continue_(
    session: Session, settings: Settings, owner_id: str, job_id: str, epochs: int | None,
    enqueue: Callable[[str], None],
) -> Job:
    """A new queued job that carries ``job_id``'s fit on from its latest checkpoint to ``epochs`` in all (default:
    the job's own): a cancelled job finished, a succeeded one trained longer. The worker resumes the engine's
    checkpoint, so the result is bit-identical to one job of that many epochs."""
    source = get(session, owner_id, job_id)
    if source.status in ACTIVE:
        raise Conflict(f"job {job_id} is {source.status}: it goes on by itself")
    code = (source.error or {}).get("code")
    if source.status == "failed" and code not in CONTINUABLE_FAILURES:
        raise Conflict(f"job {job_id} failed ({code}): continuing would end the same way; start a new job")
    if source.status == "succeeded" and source.epoch < source.epochs:
        raise Conflict(f"early stopping ended job {job_id} at epoch {source.epoch}: it cannot be continued")
    if source.dataset_id is None or session.get(Dataset, source.dataset_id) is None:
        raise Conflict(f"job {job_id}'s dataset was deleted")
    config = dict(source.config or {})
    validation_id = config.get("validation_dataset_id")
    if validation_id and session.get(Dataset, validation_id) is None:
        raise Conflict(f"job {job_id}'s validation dataset was deleted")
    start = session.scalar(select(func.max(Checkpoint.epoch)).where(Checkpoint.job_id == source.id))
    if start is None:
        raise Conflict(f"job {job_id} has no checkpoint to continue from")
    epochs = source.epochs if epochs is None else epochs
    if epochs <= start:
        raise Invalid(f"job {job_id}'s latest checkpoint is at epoch {start}: epochs must be more than that",
                      loc=["body", "epochs"])
    _check_epochs(settings, epochs)
    check_concurrency(session, settings, owner_id)
    config = {**config, "epochs": epochs, "continue_from": {"job_id": source.id, "epoch": int(start)}}
    job = queue_job(session, settings, owner_id, source.model_id, source.dataset_id, config, enqueue)
    # the epochs the checkpoint holds are the new job's first ones: its history and progress start there (as
    # after a worker's crash, the rows past the checkpoint are the ones a run rewrites)
    carried = [row for row in job_history.load(session, source.id) if row["epoch"] <= start]
    last = job_history.replace_all(session, job.id, carried)
    job.epoch = last or 0
    return job


def get(session: Session, owner_id: str, job_id: str) -> Job:
    return get_owned(session, Job, "job", owner_id, job_id)


def list_(
    session: Session,
    owner_id: str,
    limit: int,
    offset: int,
    status: str | None = None,
    model_id: str | None = None,
    sweep_id: str | None = None,
) -> tuple[list[Job], int]:
    where = [Job.owner_id == owner_id]
    if status is not None:
        where.append(Job.status == status)
    if model_id is not None:
        where.append(Job.model_id == model_id)
    if sweep_id is not None:
        where.append(Job.sweep_id == sweep_id)
    return page(session, Job, where, [Job.created_at.desc(), Job.id.desc()], limit, offset)


def cancel(session: Session, owner_id: str, job_id: str) -> Job:
    """A queued job ends ``cancelled`` at once; a running one gets ``cancel_requested`` (its worker stops it
    within one batch). Cancelling a cancelled job is a no-op; a finished job answers 409."""
    job = get(session, owner_id, job_id)
    now = utcnow()
    # Conditional updates: the worker may claim the job between our read and our write.
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    else:  # a queued job re-queued after a lost worker may hold checkpoints: keep the best and the last
        from service.services.training_results import prune_checkpoints

        prune_checkpoints(session, job_id, keep_last=1)
    session.flush()
    session.refresh(job)
    if job.status in ("succeeded", "failed"):
        raise Conflict(f"job {job_id} has already {job.status}; there is nothing to cancel")
    return job


def list_checkpoints(
    session: Session, owner_id: str, job_id: str, limit: int, offset: int
) -> tuple[list[Checkpoint], int]:
    get(session, owner_id, job_id)
    return page(session, Checkpoint, [Checkpoint.job_id == job_id], [Checkpoint.epoch.desc()], limit, offset)
