"""Celery tasks: thin adapters around :mod:`workers.runner`."""
from __future__ import annotations

from workers.celery_app import app
from workers.runner import run_job


@app.task(name="backprop.train", acks_late=True, ignore_result=True)
def train(job_id: str) -> str:
    """Train job ``job_id``. Idempotent: a second delivery finds the job claimed and does nothing."""
    return run_job(job_id)
