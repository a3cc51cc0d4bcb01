"""Sending work to the workers. The service never imports ``workers``: it sends by task name.

The broker is only transport: the job row in our database is the truth, so a lost message is
re-sent by the reconciler.
"""
from __future__ import annotations

TRAIN_TASK = "backprop.train"


def enqueue_training(job_id: str) -> None:
    """Send one training message for ``job_id`` (JSON body: ``[job_id]``)."""
    from service.celery_client import get_celery

    settings_queue = get_celery().conf.task_default_queue
    get_celery().send_task(TRAIN_TASK, args=[job_id], queue=settings_queue)
