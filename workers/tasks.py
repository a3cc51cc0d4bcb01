"""Celery tasks: thin adapters around :mod:`workers.runner`."""
from __future__ import annotations

import logging
import socket
import threading

from billiard.exceptions import WorkerLostError
from celery.worker.request import Request

from workers import preemption
from workers.celery_app import app, settings
from workers.runner import run_job

log = logging.getLogger(__name__)


def _requeue_lost(job_id: str, child_pid: int) -> None:
    from service.db.fork_safe_sqlite import without_forks
    from service.db.session import session_factory
    from service.reconciler import recover_lost_child

    try:
        # This thread runs while billiard forks the dead child's replacement: the fork waits.
        without_forks(recover_lost_child, session_factory(settings.resolved_database_url),
                      settings, job_id, f"{socket.gethostname()}:{child_pid}:")
    except Exception as exc:  # the database is down: the reconciler recovers it later
        log.warning("job %s: fast recovery failed (%s); the reconciler will recover it", job_id, exc)


class TrainRequest(Request):
    """Runs in the worker's MAIN process. When the pool child running a job dies (SIGKILL, the OOM
    killer), the job is handed on at once (re-queued, or failed with ``worker_lost`` past its
    attempts) instead of after ``heartbeat_timeout_s``: the claim token names the child's pid, so
    only the job that child held is touched. A whole worker killed at once has no main process
    left to do this; the reconciler's heartbeat check covers that."""

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # celery's ExceptionWithTraceback wrapper
        try:
            return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                      return_ok=return_ok)
        finally:
            pid = self.worker_pid
            if isinstance(exc, WorkerLostError) and pid and self.args:
                # Off the consumer's event loop: a slow database must not stall the worker.
                threading.Thread(target=_requeue_lost, args=(str(self.args[0]), int(pid)),
                                 name="requeue-lost", daemon=True).start()


@app.task(name="backprop.train", acks_late=True, ignore_result=True, Request=TrainRequest)
def train(job_id: str) -> str:
    """Train job ``job_id``. Idempotent: a second delivery finds the job claimed and does nothing."""
    preemption.listen()     # a stop of this worker from here on hands the job back (workers.preemption)
    return run_job(job_id)
