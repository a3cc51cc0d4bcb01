"""The worker's process pool: Celery's prefork pool, checking on its children more often.

When a pool child dies (SIGKILL, the OOM killer), billiard reports its task lost (``WorkerLostError``,
on which ``workers.tasks.TrainRequest`` re-queues the job and the broker message is acknowledged)
only from its periodic ``maintain_pool``, every 5 s by default. Until then the job waits and the
worker's one prefetch slot stays taken. Every 0.5 s, a dead child's job is handed on within about a
second.
"""
from __future__ import annotations

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool as PreforkTaskPool

#: Seconds between two checks of the pool's children (Celery: 5).
MAINTAIN_POOL_INTERVAL_S = 0.5


class _AsynPool(AsynPool):
    @property
    def timers(self):
        return {self.maintain_pool: MAINTAIN_POOL_INTERVAL_S}


class TaskPool(PreforkTaskPool):
    Pool = _AsynPool
