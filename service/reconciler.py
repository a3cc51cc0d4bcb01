"""The reconciler: the database is the truth, the broker only transport.

Every ``reconcile_interval_s`` it
- re-queues ``running`` jobs whose heartbeat is older than ``heartbeat_timeout_s`` while they have
  attempts left (status back to ``queued``, a new message sent); out of attempts they end ``failed``
  with code ``worker_lost``; a stale job whose cancel was requested ends ``cancelled``;
- re-sends the message of ``queued`` jobs whose last message is older than ``queued_resend_s``
  and that have no message waiting in the broker (a Redis restart loses its queue; an API process
  killed between its commit and its send never sent one). A duplicate message is harmless: the
  worker's queued -> running claim is atomic;
- in embedded mode, deletes the SQLAlchemy broker's handled message rows.

Heartbeats are judged only once the loop has seen the database answer for ``heartbeat_timeout_s``
(after its start or an outage): no worker can write one while the database is down, and a database
outage must not read as dead workers. A job that ends here (``worker_lost``, ``cancelled``) keeps
only its best and its last checkpoint.

:func:`recover_lost_child` is the fast path for the commonest death, a pool child killed (OOM,
SIGKILL) while its worker's main process lives: that process hands the job on at once (see
``workers/tasks.py``) with the same transitions, instead of waiting for the heartbeat timeout.

Every change is a conditional UPDATE that re-checks the condition it acts on, so any number of
reconcilers (the API process and every worker run one) can run at once: exactly one wins each
transition and only the winner sends the message.
"""
from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db.fork_safe_sqlite import connect_args, without_forks
from service.db.models import Job
from service.queue import training_sender

log = logging.getLogger(__name__)

#: Default for ``Settings.queued_resend_s`` when the settings object has no such field.
DEFAULT_QUEUED_RESEND_S = 30.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _queued_resend_s(settings: Settings) -> float:
    return float(getattr(settings, "queued_resend_s", DEFAULT_QUEUED_RESEND_S))


def reconcile_once(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    now: datetime | None = None,
    enqueue: Callable[[str], None] | None = None,
    pending: Callable[[], set[str] | None] | None = None,
    startup: bool = False,
    judge_heartbeats: bool = True,
) -> dict[str, int]:
    """One pass. Returns counts: ``requeued``, ``worker_lost``, ``cancelled``, ``resent``,
    ``broker_rows_deleted``.

    ``enqueue`` sends one message (default: the Celery client); ``pending`` returns the job ids with
    a message waiting in the broker, or None when that cannot be told (default: read the queue).

    ``startup=True`` is for a supervisor that knows no worker of its own is running yet (``backprop
    up`` before it starts its worker): every ``running`` job is then an orphan, and every queued job
    without a waiting message is re-sent, whatever the clocks say."""
    now = now or utcnow()
    enqueue = enqueue or training_sender(settings)
    if pending is None:
        pending = lambda: pending_job_ids(settings)  # noqa: E731
    counts = {"requeued": 0, "worker_lost": 0, "cancelled": 0, "resent": 0,
              "broker_rows_deleted": 0}

    # 1. Running jobs whose worker stopped heart-beating.
    stale_cutoff = now - timedelta(seconds=settings.heartbeat_timeout_s)
    if startup:
        stale_cutoff = now + timedelta(days=1)
    with session_factory() as s:
        stale = [] if not (judge_heartbeats or startup) else s.execute(
            select(Job.id, Job.attempts, Job.max_attempts, Job.cancel_requested).where(
                Job.status == "running",
                or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_cutoff),
            )
        ).all()
    to_send: list[str] = []
    for job_id, attempts, max_attempts, cancel_requested in stale:
        is_stale = (
            (Job.id == job_id)
            & (Job.status == "running")
            & (Job.attempts == attempts)
            & or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_cutoff)
        )
        key, values = lost_transition(settings, attempts, max_attempts, cancel_requested, now)
        if _conditional_update(session_factory, is_stale, values):
            counts[key] += 1
            log.warning("job %s: stale heartbeat (attempt %s/%s) -> %s", job_id, attempts,
                        max_attempts, key)
            if key == "requeued":
                to_send.append(job_id)
            else:
                _prune_finished(session_factory, job_id)

    # 2. Queued jobs whose message may be lost. A job without enqueued_at is new (the API sends its message
    # right after the commit: give it time) or was handed back by a stopping worker after it had run
    # (started_at is set: no message was sent, send one now).
    resend_cutoff = now - timedelta(seconds=_queued_resend_s(settings))
    if startup:
        resend_cutoff = now + timedelta(microseconds=1)
    with session_factory() as s:
        waiting = s.execute(
            select(Job.id, Job.cancel_requested).where(
                Job.status == "queued",
                or_(Job.enqueued_at.is_(None), Job.enqueued_at < resend_cutoff),
                or_(Job.enqueued_at.is_not(None), Job.created_at < resend_cutoff,
                    Job.started_at.is_not(None)),
            )
        ).all()
    if waiting:
        in_broker = pending()
        for job_id, cancel_requested in waiting:
            if job_id in to_send:
                continue  # just re-queued above
            base = (
                (Job.id == job_id)
                & (Job.status == "queued")
                & or_(Job.enqueued_at.is_(None), Job.enqueued_at < resend_cutoff)
            )
            if cancel_requested:
                if _conditional_update(session_factory, base,
                                       {"status": "cancelled", "finished_at": now}):
                    counts["cancelled"] += 1
                    _prune_finished(session_factory, job_id)
                continue
            if in_broker is not None and job_id in in_broker:
                continue  # its message is still waiting in the queue
            if _conditional_update(session_factory, base, {"enqueued_at": now}):
                to_send.append(job_id)
                counts["resent"] += 1

    for job_id in to_send:
        try:
            enqueue(job_id)
        except Exception as exc:  # the broker is down: enqueued_at ages and a later pass retries
            log.warning("job %s: could not send its message: %s", job_id, exc)

    # 3. Embedded broker housekeeping.
    try:
        counts["broker_rows_deleted"] = delete_handled_broker_rows(settings)
    except Exception as exc:  # pragma: no cover - best effort
        log.info("broker housekeeping failed: %s", exc)
    return counts


def lost_transition(
    settings: Settings, attempts: int, max_attempts: int | None, cancel_requested: bool,
    now: datetime,
) -> tuple[str, dict[str, Any]]:
    """What a running job whose worker died becomes: ``cancelled`` when a cancel was requested,
    ``queued`` again while it has attempts left, else ``failed`` with code ``worker_lost``. Returns
    the count key and the column values."""
    max_attempts = max_attempts or settings.max_attempts
    if cancel_requested:
        return "cancelled", {"status": "cancelled", "finished_at": now, "worker": None}
    if attempts < max_attempts:
        return "requeued", {"status": "queued", "worker": None, "enqueued_at": now}
    return "worker_lost", {
        "status": "failed",
        "finished_at": now,
        "worker": None,
        "error": {
            "code": "worker_lost",
            "message": (
                f"The worker running this job stopped responding {attempts} time(s); "
                f"the job is out of attempts (max {max_attempts})."
            ),
        },
    }


def recover_lost_child(
    session_factory: sessionmaker[Session],
    settings: Settings,
    job_id: str,
    worker_prefix: str,
    *,
    enqueue: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> str | None:
    """The fast path for a dead pool child: the worker's main process saw the child that ran
    ``job_id`` die (SIGKILL, OOM) and hands the job on at once instead of leaving it to the
    heartbeat timeout. Only a job still ``running`` under a claim token starting with
    ``worker_prefix`` (``host:pid:`` of the dead child) is touched, by the same conditional update
    as the reconciler's, so a job that moved on meanwhile is left alone. Returns the transition
    (``requeued``, ``worker_lost``, ``cancelled``) or None."""
    now = now or utcnow()
    with session_factory() as s:
        row = s.execute(
            select(Job.worker, Job.attempts, Job.max_attempts, Job.cancel_requested).where(
                Job.id == job_id, Job.status == "running",
                Job.worker.startswith(worker_prefix, autoescape=True),
            )
        ).one_or_none()
    if row is None:
        return None
    key, values = lost_transition(settings, row.attempts, row.max_attempts, row.cancel_requested,
                                  now)
    where = ((Job.id == job_id) & (Job.status == "running") & (Job.worker == row.worker)
             & (Job.attempts == row.attempts))
    if not _conditional_update(session_factory, where, values):
        return None
    log.warning("job %s: its worker process died (attempt %s/%s) -> %s", job_id, row.attempts,
                row.max_attempts, key)
    if key != "requeued":
        _prune_finished(session_factory, job_id)
    else:
        try:
            (enqueue or training_sender(settings))(job_id)
        except Exception as exc:  # the reconciler re-sends it when its message ages
            log.warning("job %s: could not send its message: %s", job_id, exc)
    return key


def _prune_finished(sf: sessionmaker[Session], job_id: str) -> None:
    """A finished job keeps only its best and its last checkpoint."""
    from service.services.training_results import prune_checkpoints

    try:
        with sf() as s, s.begin():
            prune_checkpoints(s, job_id, keep_last=1)
    except Exception as exc:  # pragma: no cover - best effort; nothing depends on it
        log.info("job %s: pruning checkpoints failed: %s", job_id, exc)


def _conditional_update(sf: sessionmaker[Session], where: Any, values: dict[str, Any]) -> bool:
    with sf() as s, s.begin():
        res = s.execute(
            update(Job).where(where).values(**values).execution_options(synchronize_session=False)
        )
        return res.rowcount == 1


# --------------------------------------------------------------------------------------------------
# What is waiting in the broker
# --------------------------------------------------------------------------------------------------


def job_id_from_message(raw: str | bytes) -> str | None:
    """The job id of one ``backprop.train`` message as kombu stores it (a JSON envelope whose body
    is the base64 JSON ``[args, kwargs, embed]``)."""
    try:
        env = json.loads(raw)
        headers = env.get("headers") or {}
        if headers.get("task") not in (None, "backprop.train"):
            return None
        body = env.get("body")
        if env.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        payload = json.loads(body)
        args = payload[0] if isinstance(payload, list) else payload.get("args")
        return str(args[0]) if args else None
    except Exception:
        return None


def pending_job_ids(settings: Settings) -> set[str] | None:
    """Job ids with a message waiting in the broker's queue; None when the broker cannot be read
    (then every stale queued job is re-sent, which is safe)."""
    from service.celery_client import is_redis_broker, is_sqla_broker, sqla_broker_db_url

    url = settings.resolved_broker_url
    try:
        if is_redis_broker(url):
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
            try:
                raws: list[Any] = list(client.lrange(settings.queue_name, 0, -1))
                # kombu's priority sub-queues ("<queue>\x06\x16<n>") when priorities are used
                for key in client.scan_iter(match=f"{settings.queue_name}\x06\x16*", count=100):
                    raws.extend(client.lrange(key, 0, -1))
            finally:
                client.close()
        elif is_sqla_broker(url):
            from sqlalchemy import create_engine, text

            db_url = sqla_broker_db_url(url)
            engine = create_engine(db_url, connect_args=connect_args(db_url))
            try:
                with engine.connect() as conn:
                    raws = [r[0] for r in conn.execute(text(
                        "SELECT m.payload FROM kombu_message m JOIN kombu_queue q "
                        "ON m.queue_id = q.id WHERE q.name = :q AND m.visible = :t"
                    ), {"q": settings.queue_name, "t": True})]
            finally:
                engine.dispose()
        else:
            return None
    except Exception as exc:
        log.info("cannot read the broker queue: %s", exc)
        return None
    return {j for j in (job_id_from_message(r) for r in raws) if j}


def delete_handled_broker_rows(settings: Settings) -> int:
    """The SQLAlchemy transport marks a delivered message invisible and never reads it again (it
    keeps no acknowledgement state in the table), so those rows can go."""
    from service.celery_client import is_sqla_broker, sqla_broker_db_url

    url = settings.resolved_broker_url
    if not is_sqla_broker(url):
        return 0
    from sqlalchemy import create_engine, inspect, text

    db_url = sqla_broker_db_url(url)
    engine = create_engine(db_url, connect_args=connect_args(db_url, timeout=5))
    try:
        if not inspect(engine).has_table("kombu_message"):
            return 0
        with engine.begin() as conn:
            res = conn.execute(text("DELETE FROM kombu_message WHERE visible = :f"), {"f": False})
            return res.rowcount or 0
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def run_reconciler(
    settings: Settings,
    stop: threading.Event,
    session_factory: sessionmaker[Session] | None = None,
) -> None:
    """Reconcile every ``reconcile_interval_s`` (±20% jitter) until ``stop`` is set. Never raises.

    Heartbeats are judged stale only once this loop has seen the database answer for
    ``heartbeat_timeout_s`` without a break (after its start, or after an outage)."""
    from service.db.session import session_factory as make_sf

    sf = session_factory or make_sf(settings.resolved_database_url)
    # Since when this loop has seen the database answer without a break. Heartbeats are judged
    # only once that is longer ago than heartbeat_timeout_s: while the database was down no worker
    # could write one, and its outage must not read as dead workers.
    db_up_since: float | None = None
    while True:
        try:
            if db_up_since is None:
                with sf() as s:
                    s.execute(select(1))
                db_up_since = time.monotonic()
            judge = time.monotonic() - db_up_since >= settings.heartbeat_timeout_s
            # Not while a worker's main process forks a pool child (see fork_safe_sqlite).
            counts = without_forks(reconcile_once, sf, settings, judge_heartbeats=judge)
            if any(v for k, v in counts.items() if k != "broker_rows_deleted"):
                log.info("reconciler: %s", counts)
        except Exception as exc:  # the database may be down; try again next round
            from service.errors import is_database_unavailable

            if is_database_unavailable(exc):
                db_up_since = None
            log.warning("reconciler pass failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
        interval = settings.reconcile_interval_s * random.uniform(0.8, 1.2)
        if stop.wait(interval):
            return


def start_reconciler_thread(
    settings: Settings, session_factory: sessionmaker[Session] | None = None
) -> Callable[[], None]:
    """Start the loop in a daemon thread; returns a function that stops it (and waits briefly)."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_reconciler, args=(settings, stop, session_factory),
        name="backprop-reconciler", daemon=True,
    )
    thread.start()

    def stop_fn() -> None:
        stop.set()
        thread.join(timeout=10)

    return stop_fn
