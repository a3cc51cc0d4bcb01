"""One training run: load from the database -> run the engine -> persist.

The job row is the truth. Every write below is fenced by the claim token stored in ``jobs.worker``
when the job went ``queued -> running``: a worker that lost its job (the reconciler re-queued it
after a long stall, or the model was deleted) finds its conditional UPDATEs match nothing and stops
quietly instead of overwriting someone else's run.

Crash safety: the history row, the progress and a checkpoint are written in one transaction per
epoch, so a worker killed at any instant leaves either the previous or the new state, never a torn
one; the next attempt resumes from the latest checkpoint with ``engine.resume`` and, because the
engine's resume is bit-exact, ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import numpy as np
from sqlalchemy import select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker, undefer

from service.config import Settings, get_settings
from service.db.models import Checkpoint, Dataset, Job, Model
from service.db.session import session_factory as make_session_factory
from service.services import job_history
from service.services import training_results as tr
from workers import preemption

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Job config keys that are the service's, not the engine's fit() arguments.
SERVICE_KEYS = frozenset({"checkpoint_every", "model_id", "dataset_id", "validation_dataset_id", "continue_from",
                          "name"})
#: History keys that are not metrics of the trained model.
NON_METRIC_KEYS = frozenset({"epoch", "grad_norms", "weight_changes", "activations", "seconds", "learning_rate"})
#: Checkpoints kept per job while it runs (plus the best one).
KEEP_LAST_CHECKPOINTS = 3
#: How often the monitor thread looks for a cancel request (the contract: within one second).
CANCEL_POLL_S = 0.25
#: Checkpoints are spaced out so that taking and writing them costs at most this share of training.
CHECKPOINT_BUDGET = 0.05
#: The epoch writer's shortest interval between two transactions (progress is at most this late).
MIN_WRITE_INTERVAL_S = 0.2
#: ... and at most this share of the time in its transactions (SQLite has one writer at a time: the API's
#: writes and this job's heartbeat must find the lock free; a long history makes each write longer).
MAX_WRITE_SHARE = 0.2


def write_interval(last_write_s: float) -> float:
    """Seconds from the start of one epoch-writer transaction to the start of the next."""
    return max(MIN_WRITE_INTERVAL_S, last_write_s / MAX_WRITE_SHARE)
#: Give up retrying a transient database error after this long; the job then stays ``running`` with
#: a stale heartbeat and the reconciler re-queues it: a database outage never marks a job failed.
DB_RETRY_TOTAL_S = 600.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobLost(Exception):
    """This worker no longer owns the job (re-queued elsewhere, finished, or deleted)."""


# --------------------------------------------------------------------------------------------------
# Transient database errors
# --------------------------------------------------------------------------------------------------

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # connection refused/lost, SQLite "database is locked"
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # pool checkout timeout
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_DB_ERRORS):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return False


def db_retry(
    fn: Callable[[], T],
    *,
    what: str,
    total_s: float = DB_RETRY_TOTAL_S,
    first_delay_s: float = 0.1,
    max_delay_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` (one whole transaction), retrying transient database errors with full-jitter
    exponential backoff for up to ``total_s`` seconds; anything else propagates at once."""
    deadline = time.monotonic() + total_s
    delay = first_delay_s
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
            attempt += 1
            pause = random.uniform(delay / 2, delay)
            log.warning("%s: transient database error (try %d), retrying in %.2fs: %s",
                        what, attempt, pause, str(exc).splitlines()[0] if str(exc) else exc)
            sleep(pause)
            delay = min(delay * 2, max_delay_s)


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """NumPy scalars and arrays to plain JSON; NaN and infinities to None (PostgreSQL's JSON
    rejects them)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def row_metrics(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in NON_METRIC_KEYS}


def version_metrics(history: list[dict[str, Any]], weights_epoch: int | None) -> dict[str, Any]:
    """A new version's metrics: the history row of the epoch whose weights it holds (``Model.weights_epoch``:
    the best epoch when early stopping restored its weights, else the last), so that they describe what serves."""
    row = next((r for r in history if r.get("epoch") == weights_epoch), history[-1] if history else {})
    return row_metrics(row)


def worker_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def fit_config(config: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """The engine's fit() arguments from a job's config: without the service's keys, and with class weights keyed
    by the training ``dataset``'s labels (as the job keeps them) keyed by its class indices."""
    from service.services import dataset_matching as matching

    out = {k: v for k, v in config.items() if k not in SERVICE_KEYS}
    if out.get("class_weight") is not None:
        out["class_weight"] = matching.class_weight_for_engine(dataset, out["class_weight"], ["class_weight"])
    return out


def divergence_message(exc: BaseException, config: dict[str, Any]) -> str:
    epoch = getattr(exc, "epoch", None)
    batch = getattr(exc, "batch", None)
    where = f"epoch {epoch}" if epoch is not None else "an early epoch"
    if batch is not None:
        where += f", batch {batch}"
    opt = config.get("optimizer") or {}
    lr = opt.get("learning_rate") if isinstance(opt, dict) else None
    lower = f"a learning rate below {lr:g}" if isinstance(lr, (int, float)) else "a lower learning rate"
    return (
        f"Training diverged at {where}: the loss became NaN or infinite. "
        f"Try {lower} (e.g. ten times smaller) or gradient clipping "
        f'(e.g. "clipnorm": 1.0 in the optimizer).'
    )


def training_arrays(
    ds: "DatasetInfo", blob: bytes, claim: "Claim"
) -> tuple[np.ndarray, np.ndarray]:
    """X shaped for the model, y in the form the job's loss expects (``service.training_data``)."""
    from types import SimpleNamespace

    from service.training_data import n_outputs_of, training_arrays as arrays

    row = SimpleNamespace(data=blob, task=ds.task, classes=ds.classes)
    return arrays(row, claim.input_shape, claim.config.get("loss"), n_outputs_of(claim.summary))


def validation_arrays(
    ds: "DatasetInfo", vds: "DatasetInfo", blob: bytes, claim: "Claim"
) -> tuple[np.ndarray, np.ndarray]:
    """The validation dataset's rows and targets in the training dataset's terms (its labels by value, its
    column order; see service.services.dataset_matching), shaped as :func:`training_arrays` shapes them."""
    from service.services import dataset_matching as matching
    from service.training_data import n_outputs_of, targets_for_loss, unpack_arrays

    X, y = unpack_arrays(blob)
    X = matching.features(ds, vds, X).reshape((X.shape[0], *claim.input_shape))
    y = matching.targets(ds, vds, y)
    n_classes = len(ds.classes or []) if ds.task == "classification" else None
    y = targets_for_loss(y, ds.task, claim.config.get("loss"), n_outputs_of(claim.summary), n_classes)
    return np.ascontiguousarray(X, dtype=np.float32), y


# --------------------------------------------------------------------------------------------------
# Database steps (each one transaction; writes fenced by the claim token)
# --------------------------------------------------------------------------------------------------


@dataclass
class DatasetInfo:
    id: str
    task: str
    classes: list[Any] | None
    feature_names: list[Any]
    target_names: list[Any]


@dataclass
class Claim:
    job_id: str
    token: str
    attempt: int
    model_id: str
    dataset_id: str | None
    spec: dict[str, Any]
    input_shape: list[int]
    summary: dict[str, Any]
    config: dict[str, Any]
    epochs: int


@dataclass
class Store:
    """The worker's database steps: one transaction each, over the data-layer functions of
    ``service.services.training_results``; every write after the claim is fenced by the claim
    token."""

    sf: sessionmaker[Session]

    def claim(self, job_id: str, token: str) -> Claim | None:
        """queued -> running, atomically. None when the job is not queued (a second delivery, a
        finished or deleted job); a queued job with a cancel request is ended ``cancelled``."""
        with self.sf() as s, s.begin():
            if not tr.claim_job(s, job_id, token):
                res = s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(True))
                    .values(status="cancelled", finished_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:
                    tr.prune_checkpoints(s, job_id, keep_last=1)
                return None
            job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
            model = s.get(Model, job.model_id)
            if model is None:  # pragma: no cover - the job would have been cascade-deleted
                return None
            return Claim(
                job_id=job.id,
                token=token,
                attempt=job.attempts,
                model_id=job.model_id,
                dataset_id=job.dataset_id,
                spec=dict(model.spec),
                input_shape=[int(d) for d in model.input_shape],
                summary=dict(model.summary or {}),
                config=dict(job.config or {}),
                epochs=job.epochs,
            )

    def load_dataset(self, dataset_id: str) -> tuple[DatasetInfo, bytes] | None:
        with self.sf() as s:
            ds = s.execute(
                select(Dataset).options(undefer(Dataset.data)).where(Dataset.id == dataset_id)
            ).scalar_one_or_none()
            if ds is None:
                return None
            info = DatasetInfo(
                id=ds.id,
                task=ds.task,
                classes=list(ds.classes) if ds.classes is not None else None,
                feature_names=list(ds.feature_names or []),
                target_names=list(ds.target_names or []),
            )
            return info, ds.data

    def latest_checkpoint(self, job_id: str) -> tuple[int, bytes] | None:
        with self.sf() as s:
            return tr.latest_checkpoint(s, job_id)

    def checkpoint(self, job_id: str, epoch: int) -> tuple[int, bytes] | None:
        with self.sf() as s:
            data = s.scalar(select(Checkpoint.data).where(Checkpoint.job_id == job_id, Checkpoint.epoch == epoch))
            return (epoch, data) if data is not None else None

    def record_epochs(
        self, c: Claim, rows: list[dict[str, Any]], checkpoint: tuple[int, bytes] | None = None
    ) -> bool:
        """History rows + progress + heartbeat (+ a checkpoint and pruning) in one transaction.
        False when this worker no longer owns the job."""
        with self.sf() as s, s.begin():
            if rows and not tr.record_epochs(s, c.job_id, rows, worker=c.token):
                return False
            if checkpoint is not None:
                epoch, data = checkpoint
                row = next((r for r in rows if int(r.get("epoch", 0)) == epoch), None)
                if row is None:
                    row = job_history.row_at(s, c.job_id, epoch) or {}
                if not tr.save_checkpoint(s, c.job_id, epoch, row_metrics(row), data,
                                          keep_last=KEEP_LAST_CHECKPOINTS, worker=c.token):
                    return False
                _test_pause_in_checkpoint(c.job_id, epoch)
            elif not rows:
                return tr.heartbeat(s, c.job_id, worker=c.token) or self._owned(s, c)
            return True

    def record_epoch(
        self, c: Claim, epoch: int, row: dict[str, Any], checkpoint: bytes | None
    ) -> bool:
        return self.record_epochs(c, [row], (epoch, checkpoint) if checkpoint is not None else None)

    @staticmethod
    def _owned(s: Session, c: Claim) -> bool:
        row = s.execute(select(Job.status, Job.worker).where(Job.id == c.job_id)).one_or_none()
        return row is not None and row.status == "running" and row.worker == c.token

    def heartbeat(self, c: Claim) -> None:
        with self.sf() as s, s.begin():
            tr.heartbeat(s, c.job_id, worker=c.token)

    def poll(self, c: Claim) -> tuple[bool, bool]:
        """(still owned, cancel requested)."""
        with self.sf() as s:
            row = s.execute(
                select(Job.status, Job.worker, Job.cancel_requested).where(Job.id == c.job_id)
            ).one_or_none()
        if row is None or row.status != "running" or row.worker != c.token:
            return False, False
        return True, bool(row.cancel_requested)

    def complete(
        self, c: Claim, ds: DatasetInfo, model_bytes: bytes, history: list[dict[str, Any]], metrics: dict[str, Any]
    ) -> int | None:
        """The new model version and ``succeeded``, in ONE transaction. Returns the version, or None
        when this worker no longer owns the job."""
        with self.sf() as s, s.begin():
            return tr.complete_job(s, c.job_id, model_bytes, metrics, history=history,
                                   worker=c.token)

    def release(self, c: Claim) -> bool:
        """running -> queued, the attempt given back (this worker is being stopped)."""
        with self.sf() as s, s.begin():
            return tr.release_job(s, c.job_id, worker=c.token)

    def finish(self, c: Claim, status: str, error: dict[str, Any] | None = None) -> bool:
        with self.sf() as s, s.begin():
            if status == "cancelled":
                return tr.cancel_running(s, c.job_id, worker=c.token)
            err = error or {"code": "training_error", "message": ""}
            return tr.fail_job(s, c.job_id, err["code"], err["message"], worker=c.token)


#: Fault-test hook, off unless this environment variable names a directory (never set it in
#: production). While that directory holds ``pause-in-checkpoint.json`` (``{"job_id", "epoch",
#: "seconds"}``), the worker writing that job's checkpoint of that epoch or a later one writes
#: ``paused-in-checkpoint`` there (the epoch) and sleeps INSIDE the checkpoint's transaction, so that
#: a test can kill it mid-write and check that the previous checkpoint stays the valid one.
TEST_HOOKS_DIR_ENV = "BACKPROP_TEST_HOOKS_DIR"


def _test_pause_in_checkpoint(job_id: str, epoch: int) -> None:
    hooks = os.environ.get(TEST_HOOKS_DIR_ENV)
    if not hooks:
        return
    import json
    from pathlib import Path

    try:
        want = json.loads((Path(hooks) / "pause-in-checkpoint.json").read_text())
    except (OSError, ValueError):
        return
    if want.get("job_id") != job_id or epoch < int(want.get("epoch", 0)):
        return
    marker = Path(hooks) / "paused-in-checkpoint"
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(str(epoch))
    tmp.replace(marker)
    time.sleep(float(want.get("seconds", 10)))


# --------------------------------------------------------------------------------------------------
# The monitor thread: heartbeat and cancellation
# --------------------------------------------------------------------------------------------------


@dataclass
class Monitor:
    store: Store
    claim: Claim
    heartbeat_interval_s: float
    poll_s: float = CANCEL_POLL_S
    cancel: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    _halt: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set()

    def start(self) -> "Monitor":
        self._thread = threading.Thread(
            target=self._run, name=f"monitor-{self.claim.job_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        last_beat = time.monotonic()
        while not self._halt.wait(self.poll_s):
            try:
                owned, cancel = self.store.poll(self.claim)
                if not owned:
                    self.lost.set()
                    return
                if cancel:
                    self.cancel.set()
                if time.monotonic() - last_beat >= self.heartbeat_interval_s:
                    # (ownership is what poll() says; the heartbeat is skipped once a cancel is
                    # requested, and the job ends within a batch anyway)
                    self.store.heartbeat(self.claim)
                    last_beat = time.monotonic()
            except Exception as exc:  # a DB hiccup: the training goes on; next poll retries
                log.warning("job %s: heartbeat/poll failed: %s", self.claim.job_id, exc)


# --------------------------------------------------------------------------------------------------
# The epoch writer: persistence off the training thread
# --------------------------------------------------------------------------------------------------


class EpochWriter:
    """Writes history rows and checkpoints from a thread of its own, in order, one transaction per
    batch of epochs: the training thread only hands rows over, so a slow database slows the
    progress reports, not the training. While a write is in flight, later epochs accumulate and go
    together in the next transaction; of several pending checkpoints only the newest is kept (the
    older ones would be pruned anyway). ``flush()`` waits until everything handed over is stored."""

    def __init__(self, store: Store, claim: Claim, monitor: "Monitor") -> None:
        self.store, self.claim, self.monitor = store, claim, monitor
        self._cv = threading.Condition()
        self._rows: list[dict[str, Any]] = []
        self._checkpoint: tuple[int, bytes] | None = None
        self._busy = False
        self._closed = False
        self._urgent = False
        self.error: BaseException | None = None
        #: seconds the last checkpoint's transaction took (for the checkpoint budget)
        self.last_checkpoint_write_s = 0.0
        self._thread = threading.Thread(target=self._run, name=f"writer-{claim.job_id[:8]}",
                                        daemon=True)
        self._thread.start()

    def submit(self, row: dict[str, Any], checkpoint: tuple[int, bytes] | None) -> None:
        if self.error is not None:
            raise self.error
        with self._cv:
            self._rows.append(row)
            if checkpoint is not None:
                self._checkpoint = checkpoint
            self._cv.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        with self._cv:
            self._urgent = True
            self._cv.notify_all()
            self._cv.wait_for(lambda: (not self._rows and self._checkpoint is None
                                       and not self._busy) or self.error is not None, timeout)
            self._urgent = False
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=DB_RETRY_TOTAL_S + 10)

    def _run(self) -> None:
        last_write, interval = -math.inf, MIN_WRITE_INTERVAL_S
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._rows or self._checkpoint is not None
                                  or self._closed)
                # Short epochs: one transaction per write_interval() at most, with all the epochs
                # since the last one (a flush or the end of the run does not wait).
                while not (self._closed or self._urgent):
                    left = interval - (time.monotonic() - last_write)
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if not self._rows and self._checkpoint is None:
                    return  # closed and drained
                last_write = time.monotonic()
                rows, ck = self._rows, self._checkpoint
                self._rows, self._checkpoint, self._busy = [], None, True
            try:
                t0 = time.perf_counter()
                owned = db_retry(lambda: self.store.record_epochs(self.claim, rows, ck),
                                 what=f"record epochs of {self.claim.job_id}")
                took = time.perf_counter() - t0
                interval = write_interval(took)
                if ck is not None:
                    self.last_checkpoint_write_s = took
                if not owned:
                    self.monitor.lost.set()
            except BaseException as exc:  # surfaced to the training thread by submit/flush
                self.error = exc
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
            if self.error is not None:
                return


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def run_job(
    job_id: str,
    *,
    settings: Settings | None = None,
    session_factory: sessionmaker[Session] | None = None,
) -> str:
    """Run job ``job_id`` to its end. Returns the outcome: ``skipped`` (not claimable: a duplicate
    delivery, a finished or cancelled job), ``succeeded``, ``failed``, ``cancelled``, ``lost`` (this
    worker lost the job to a re-queue or a deletion) or ``interrupted`` (the database stayed
    unreachable: the job is left to the reconciler) or ``handed_back`` (this worker is being stopped: the job
    went back to the queue, to resume from its latest checkpoint; see workers.preemption)."""
    settings = settings or get_settings()
    sf = session_factory or make_session_factory(settings.resolved_database_url)
    store = Store(sf)
    token = worker_token()
    try:
        claim = db_retry(lambda: store.claim(job_id, token), what=f"claim {job_id}")
    except Exception as exc:
        if is_transient(exc):
            log.error("job %s: database unreachable, leaving the message to the reconciler", job_id)
            return "interrupted"
        raise
    if claim is None:
        log.info("job %s: not queued (duplicate delivery or finished); nothing to do", job_id)
        return "skipped"
    log.info("job %s: claimed by %s (attempt %d)", job_id, token, claim.attempt)
    monitor = Monitor(store, claim, settings.heartbeat_interval_s).start()
    try:
        return _train(store, claim, monitor)
    except Exception as exc:
        if is_transient(exc):
            log.error("job %s: database unreachable for too long; the reconciler will re-queue it",
                      job_id)
            return "interrupted"
        if isinstance(exc, JobLost):
            return "lost"
        code, message = classify_failure(exc, claim.config)
        if code == "training_error":
            log.exception("job %s failed", job_id)
        else:
            log.info("job %s failed: %s", job_id, message)
        db_retry(lambda: store.finish(claim, "failed", {"code": code, "message": message}),
                 what=f"fail {job_id}")
        return "failed"
    finally:
        monitor.stop()


def classify_failure(exc: BaseException, config: dict[str, Any]) -> tuple[str, str]:
    import engine

    if isinstance(exc, getattr(engine, "Diverged", ())):
        return "diverged", divergence_message(exc, config)
    if isinstance(exc, getattr(engine, "SpecError", ())):
        return "invalid_spec", str(exc)
    try:
        from celery.exceptions import SoftTimeLimitExceeded
    except ImportError:  # pragma: no cover
        SoftTimeLimitExceeded = ()  # type: ignore[assignment]
    if isinstance(exc, SoftTimeLimitExceeded):
        return "time_limit", "The job ran past the worker's time limit."
    return "training_error", f"{type(exc).__name__}: {exc}"


def _fail(store: Store, claim: Claim, code: str, message: str) -> str:
    """End the job ``failed`` with ``code`` before any training (what it needs is gone)."""
    db_retry(lambda: store.finish(claim, "failed", {"code": code, "message": message}),
             what=f"fail {claim.job_id}")
    return "failed"


def _train(store: Store, claim: Claim, monitor: Monitor) -> str:
    import engine

    job_id = claim.job_id
    if claim.dataset_id is None:
        return _fail(store, claim, "dataset_deleted", "The job's dataset was deleted.")
    loaded = db_retry(lambda: store.load_dataset(claim.dataset_id), what=f"load dataset {job_id}")
    if loaded is None:
        return _fail(store, claim, "dataset_deleted", "The job's dataset was deleted.")
    ds, blob = loaded
    X, y = training_arrays(ds, blob, claim)
    del blob
    config = claim.config
    validation: dict[str, Any] = {}      # fit's validation_data, when the job validates on a dataset
    if config.get("validation_dataset_id"):
        loaded = db_retry(lambda: store.load_dataset(config["validation_dataset_id"]),
                          what=f"load validation dataset {job_id}")
        if loaded is None:
            return _fail(store, claim, "dataset_deleted", "The job's validation dataset was deleted.")
        validation["validation_data"] = validation_arrays(ds, *loaded, claim)

    every = int(config.get("checkpoint_every") or 0)
    writer = EpochWriter(store, claim, monitor)
    last_checkpoint = {"at": 0.0, "cost": 0.0}

    def checkpoint_due(epoch: int) -> bool:
        """Every ``checkpoint_every`` epochs, spaced out when epochs are so short that checkpoints
        would cost more than CHECKPOINT_BUDGET of the training time."""
        if every <= 0 or epoch % every:
            return False
        cost = last_checkpoint["cost"] + writer.last_checkpoint_write_s
        return time.perf_counter() - last_checkpoint["at"] >= cost / CHECKPOINT_BUDGET

    # Where the current epoch stands, for a stop request in its middle (workers.preemption).
    clock = {"epoch_start": time.perf_counter(), "batch": 0, "batches_per_epoch": 0, "checkpointed": 0}
    handing_back = threading.Event()

    def on_epoch(event: Any) -> None:
        if monitor.should_stop:
            event.stop()
            return
        epoch = int(event.epoch)
        row = jsonable(dict(event.row))
        row.setdefault("epoch", epoch)
        # asked to hand the job back: this epoch gets a checkpoint whatever the spacing, and the fit ends
        # here (unless this was its last epoch: then completing is quicker than handing back)
        stop_here = preemption.requested() and epoch < claim.epochs
        data = None
        # the last epoch is always kept (when the job checkpoints at all): POST /v1/jobs/{id}/continue carries
        # the fit on from there instead of redoing the epochs after an earlier, spaced-out checkpoint
        last = every > 0 and epoch == claim.epochs
        if checkpoint_due(epoch) or stop_here or last:
            t0 = time.perf_counter()
            data = event.checkpoint()
            last_checkpoint["at"] = time.perf_counter()
            last_checkpoint["cost"] = last_checkpoint["at"] - t0
        writer.submit(row, (epoch, data) if data is not None else None)
        if data is not None:
            clock["checkpointed"] = epoch
        if stop_here:
            handing_back.set()
            event.stop()
        if monitor.lost.is_set():
            event.stop()
        clock.update(epoch_start=time.perf_counter(), batch=0, batches_per_epoch=clock["batch"])

    def epoch_ends_soon(batch: int) -> bool:
        per_epoch = clock["batches_per_epoch"]
        if per_epoch == 0:          # the first epoch of this run: its length is not known yet
            return False
        if batch >= per_epoch:      # its last batch: the epoch ends now
            return True
        seconds_per_batch = (time.perf_counter() - clock["epoch_start"]) / batch
        return (per_epoch - batch) * seconds_per_batch <= preemption.FINISH_EPOCH_S

    def on_batch(event: Any) -> None:
        if monitor.should_stop:
            event.stop()
            return
        batch = clock["batch"] = int(event.batch)
        if preemption.requested() and not epoch_ends_soon(batch):
            handing_back.set()      # the partial epoch is dropped: the job resumes from the previous one
            event.stop()

    resume_from = db_retry(lambda: store.latest_checkpoint(job_id), what=f"checkpoint {job_id}")
    carry_on: dict[str, Any] = {}      # resume's epochs, when this job continues another one's fit
    source = config.get("continue_from")
    if resume_from is None and source:
        resume_from = db_retry(lambda: store.checkpoint(source["job_id"], source["epoch"]),
                               what=f"source checkpoint {job_id}")
        if resume_from is None:
            return _fail(store, claim, "checkpoint_missing",
                         f"The checkpoint of job {source['job_id']} at epoch {source['epoch']} is gone.")
        carry_on["epochs"] = claim.epochs
    try:
        if resume_from is not None:
            epoch, data = resume_from
            clock["checkpointed"] = epoch
            log.info("job %s: resuming from the checkpoint of epoch %d%s", job_id, epoch,
                     f" of job {source['job_id']}" if carry_on else "")
            model, history = engine.resume(data, X, y, callbacks=[on_epoch], batch_callbacks=[on_batch],
                                           **validation, **carry_on)
        else:
            model = engine.build(claim.spec, seed=config.get("seed"))
            history = model.fit(X, y, callbacks=[on_epoch], batch_callbacks=[on_batch],
                                **validation, **fit_config(config, ds))
    finally:
        # What was handed over is stored before the job's final state (a diverged job keeps its
        # history up to the bad epoch).
        writer.close()
    if writer.error is not None:
        raise writer.error

    if monitor.lost.is_set():
        log.info("job %s: no longer owned by this worker; stopping", job_id)
        return "lost"
    if monitor.cancel.is_set():
        db_retry(lambda: store.finish(claim, "cancelled"), what=f"cancel {job_id}")
        log.info("job %s: cancelled", job_id)
        return "cancelled"
    if handing_back.is_set():
        return _hand_back(store, claim, clock["checkpointed"])
    model_bytes = model.to_bytes()
    history = jsonable(list(history))
    metrics = version_metrics(history, model.weights_epoch)
    version = _complete_with_retry(store, claim, ds, model_bytes, history, metrics)
    if version is None:
        return "lost"
    log.info("job %s: succeeded, version %d", job_id, version)
    return "succeeded"


def _hand_back(store: Store, claim: Claim, checkpointed: int) -> str:
    """This worker is being stopped: the job goes back to the queue (its history and its checkpoints, the
    latest of epoch ``checkpointed``, are stored by now). Its message is sent by the next reconciler pass: the
    stopping worker's main process runs one as its last step, once it takes no more messages itself."""
    job_id = claim.job_id
    if not db_retry(lambda: store.release(claim), what=f"hand back {job_id}"):
        owned, cancel = db_retry(lambda: store.poll(claim), what=f"poll {job_id}")
        if owned and cancel:       # a cancel came in meanwhile: it wins
            db_retry(lambda: store.finish(claim, "cancelled"), what=f"cancel {job_id}")
            return "cancelled"
        return "lost"
    log.warning("job %s: this worker is stopping; the job is back in the queue and resumes after epoch %d",
                job_id, checkpointed)
    return "handed_back"


def _complete_with_retry(
    store: Store, claim: Claim, ds: DatasetInfo, model_bytes: bytes, history: list[dict[str, Any]],
    metrics: dict[str, Any],
) -> int | None:
    # Two jobs of one model finishing at once can race for the same version number on SQLite
    # (PostgreSQL serializes them on the model row lock); the loser retries with the next number.
    for attempt in range(5):
        try:
            return db_retry(lambda: store.complete(claim, ds, model_bytes, history, metrics),
                            what=f"complete {claim.job_id}")
        except sa_exc.IntegrityError:
            if attempt == 4:
                raise
            time.sleep(random.uniform(0.05, 0.2))
    return None  # pragma: no cover
