"""Sending work to the workers. The service never imports ``workers``: it sends by task name.

The broker is only transport: the job row in our database is the truth, so a lost message is
re-sent by the reconciler.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from service.config import Settings

TRAIN_TASK = "backprop.train"


def training_sender(settings: Settings) -> Callable[[str], None]:
    """A function that sends one training message for a job id (JSON body: ``[job_id]``) to the broker and
    queue of ``settings``. The API and the reconciler (also a stopping worker's last pass) send this way."""
    from service.celery_client import get_celery

    def send(job_id: str) -> None:
        get_celery(settings).send_task(TRAIN_TASK, args=[job_id], queue=settings.queue_name)

    return send
