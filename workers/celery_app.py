"""The worker's Celery app: ``celery -A workers.celery_app worker -Q training -c 1``.

It starts from the configuration the API sends with (``service.celery_client.celery_config``) and adds
what only a consumer needs.
"""
from __future__ import annotations

import logging
import os

from celery import Celery, signals

from service.celery_client import celery_config, is_sqla_broker, prepare_sqla_broker
from service.config import get_settings
from workers import preemption

log = logging.getLogger(__name__)

settings = get_settings()
broker_url = settings.resolved_broker_url

if is_sqla_broker(broker_url):
    from kombu.transport import TRANSPORT_ALIASES

    # kombu's transport with a faster poll and short waits, so that a stop is noticed at once
    for _alias in ("sqla", "sqlalchemy"):
        TRANSPORT_ALIASES[_alias] = "workers.sqla_transport:Transport"
    prepare_sqla_broker(broker_url)

app = Celery("backprop", include=["workers.tasks"], set_as_current=True)
app.conf.update(celery_config(settings))
app.conf.update(
    # acks_late: the message is acknowledged only after the task returns, so a worker that dies
    # mid-job does not silently swallow it. Tasks can therefore run twice; the training task is
    # idempotent per job id (the queued -> running claim is atomic), and the reconciler, not the
    # broker, re-queues jobs whose worker stopped heart-beating.
    task_acks_late=True,
    # A killed child is recovered by the reconciler (stale heartbeat -> re-queue with an attempt
    # counted); re-delivering the message as well would only add a duplicate.
    task_reject_on_worker_lost=False,
    # How long billiard waits for a result from a dead pool child before it reports the child
    # lost (default 10 s). Results are ignored here, and until then the dead child's slot stays
    # taken: the fast re-queue (workers.tasks.TrainRequest) would wait for nothing.
    worker_lost_wait=0.25,
    # Prefork, with the dead-child check every 0.5 s instead of 5 s (see workers/pool.py).
    worker_pool="workers.pool:TaskPool",
    # Prefetch 1: a worker holds at most the job it runs, so a queued job never waits behind a long
    # job on a busy worker while another worker idles.
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_soft_time_limit=settings.task_soft_time_limit_s,
    task_time_limit=settings.task_hard_time_limit_s,
    task_track_started=False,
    # A Redis restart must not kill running jobs: they finish and write their results to the
    # database; their (lost) acks do not matter because the job row is the truth.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    broker_connection_retry=True,
    broker_connection_max_retries=None,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    # The SQLAlchemy transport has no fanout exchange, which remote control (pidbox) needs.
    worker_enable_remote_control=not is_sqla_broker(broker_url),
)


_stop_reconciler = None


@signals.worker_ready.connect
def _start_reconciler(sender=None, **_kwargs):  # pragma: no cover - exercised by e2e tests
    """Every worker's main process also runs the reconciler loop (conditional updates make several
    reconcilers at once safe), so recovery works even where the API runs none."""
    global _stop_reconciler
    if os.environ.get("BACKPROP_WORKER_RECONCILER", "1") == "0":
        return
    from service.reconciler import start_reconciler_thread

    _stop_reconciler = start_reconciler_thread(settings)


@signals.worker_shutdown.connect
def _stop(sender=None, **_kwargs):  # pragma: no cover - exercised by e2e tests
    if _stop_reconciler is not None:
        _stop_reconciler()
    if os.environ.get("BACKPROP_WORKER_RECONCILER", "1") == "0":
        return
    # The pool and the consumer have stopped: one last pass sends the messages of the jobs this worker's
    # children handed back (workers.preemption), so another worker resumes them at once.
    from service.db.session import session_factory
    from service.reconciler import reconcile_once

    try:
        counts = reconcile_once(session_factory(settings.resolved_database_url), settings,
                                judge_heartbeats=False)
        if counts["resent"]:
            log.warning("sent the message of %d queued job(s) that had none (handed back, or lost)",
                        counts["resent"])
    except Exception as exc:  # any other reconciler sends them within its interval
        log.warning("last reconciler pass failed: %s", exc)


@signals.worker_init.connect
def _before_the_pool(**_kwargs):  # pragma: no cover - exercised by e2e tests
    preemption.ignore_in_main_process()


@signals.worker_shutting_down.connect
def _hand_jobs_back(how=None, **_kwargs):  # pragma: no cover - exercised by e2e tests
    """Warm shutdown: the running jobs go back to the queue with a fresh checkpoint (workers.preemption)."""
    if how == "Warm":
        preemption.ask_children()


@signals.worker_process_init.connect
def _fresh_connections(**_kwargs):  # pragma: no cover - runs in pool children
    """A forked pool child must not reuse database connections inherited from the parent."""
    from service import celery_client
    from service.db import session as db_session

    db_session.engine_for.cache_clear()
    celery_client._apps.clear()  # the parent's broker connections stay the parent's
