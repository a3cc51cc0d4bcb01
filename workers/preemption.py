"""A worker that is being stopped hands its running job back instead of making it wait.

Celery's warm shutdown (SIGTERM: ``docker stop``, Ctrl-C on ``backprop up``, a rolling deploy) waits for the
running task. A training job can run for hours, so the orchestrator's grace period ran out, the worker was
killed, the work since the last checkpoint was lost, the job waited for its heartbeat to go stale, and the kill
counted against its ``max_attempts`` (three deploys during one long job failed it with ``worker_lost``).

Now the worker's main process, as its warm shutdown begins, sends ``PREEMPT_SIGNAL`` to its pool children. In
a child the signal only sets a flag; the training loop (``workers.runner``) reads it after every batch, ends
the epoch if that takes at most ``FINISH_EPOCH_S`` more and stores a checkpoint of it (a longer epoch is
dropped: the job resumes from its latest checkpoint), puts the job back in the queue with its attempt given
back and returns. When the main process has stopped taking messages, its last reconciler pass sends the job's
message again, and another worker (or this one, restarted) resumes from that checkpoint, bit-identical to a run
that was never stopped.

A cold shutdown (a second Ctrl-C, SIGQUIT) does not ask: it kills, and the usual recovery applies.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

#: SIGUSR1 is Celery's (a pool child dies of it: Celery resets it to the default action there).
PREEMPT_SIGNAL = signal.SIGUSR2

#: A stop request in the middle of an epoch waits for the epoch's end when that is this close (estimated
#: from the epoch's batches so far and the previous epoch's batch count); otherwise the partial epoch is
#: dropped and the job resumes from the end of the previous one.
FINISH_EPOCH_S = 3.0

_requested = threading.Event()


def requested() -> bool:
    """True once this process was asked to hand its job back."""
    return _requested.is_set()


def _on_signal(_signum, _frame) -> None:
    _requested.set()


def ignore_in_main_process() -> None:
    """In the worker's main process, before the pool forks. A child inherits the ignored signal, and billiard,
    which points every other signal it does not see ignored at its own exit handler once a child has started
    (Celery's ``worker_process_init`` runs before that, so a handler installed there is overwritten), leaves it
    alone: a request that reaches a child with no job is dropped instead of killing it."""
    signal.signal(PREEMPT_SIGNAL, signal.SIG_IGN)


def listen() -> None:
    """In the process that runs the job, as a job starts: take the signal from here on. A request already
    received stands (a stopping worker's child hands back any job it is still given). Off the main thread
    (Celery's thread pool) no handler can be installed, and none is needed: the jobs run in the main
    process, whose own flag ``ask_children`` sets."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(PREEMPT_SIGNAL, _on_signal)


def ask_children() -> int:
    """From the main process: ask every pool child to hand its job back, and this process's own jobs too
    (Celery's solo and thread pools run them here). Returns how many children were asked."""
    from billiard.process import active_children

    _requested.set()
    asked = 0
    for child in active_children():
        try:
            os.kill(child.pid, PREEMPT_SIGNAL)
            asked += 1
        except (ProcessLookupError, TypeError):   # gone meanwhile, or never started
            pass
    return asked
