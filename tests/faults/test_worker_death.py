"""Worker death: SIGKILL mid-training, in both modes.

Two ways to die, two ways back:
- the pool child alone (the process that runs the job; the OOM killer's usual victim): the worker's
  main process sees it die and re-queues the job at once (``workers.tasks.TrainRequest``);
- the whole worker (main process and child): the reconciler sees the heartbeat go stale
  (``heartbeat_timeout_s``, 3 s here) and re-queues the job; the supervisor (embedded) or the
  test, as an orchestrator would (production), starts a new worker.

Either way the next attempt resumes from the last checkpoint and the job ends with weights
bit-identical to an uninterrupted run with the same seed.
"""
from __future__ import annotations

import json
import random
import time

import pytest

from procs import (assert_same_weights, checkpoint_epochs, create_model, get_job, start_job,
                   wait_for, wait_job, weights)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

#: Long enough to kill ten times (epochs of about 0.2 s, a checkpoint every one or two). The learning rate
#: follows a schedule of the step count, restarting within epochs, which a resume must pick up exactly.
KILL_FIT = {"epochs": 24, "batch_size": 1,
            "optimizer": {"type": "adam", "learning_rate": {"type": "cosine_decay_restarts",
                                                            "initial_learning_rate": 0.003, "first_decay_steps": 50}}}

_reference: dict[str, tuple[str, dict]] = {}


def reference(svc) -> tuple[str, dict]:
    """(model id, weights) of one uninterrupted KILL_FIT run in this mode (trained once)."""
    if svc.mode not in _reference:
        model_id = create_model(svc)
        job = wait_job(svc, start_job(svc, model_id, **KILL_FIT), timeout=120)
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        _reference[svc.mode] = (model_id, weights(svc, model_id, job["result_version"]))
    return _reference[svc.mode]


def assert_resumed_identically(svc, model_id: str, job: dict, attempts: int) -> None:
    assert job["status"] == "succeeded", (job["error"], svc.log_tail())
    assert job["attempts"] == attempts
    assert [r["epoch"] for r in job["history"]] == list(range(1, KILL_FIT["epochs"] + 1))
    assert len({r["learning_rate"] for r in job["history"]}) > 10      # the schedule moved the rate
    versions = svc.client.get(f"/v1/models/{model_id}/versions").json()
    assert [v["job_id"] for v in versions["items"]].count(job["id"]) == 1
    assert_same_weights(reference(svc)[1], weights(svc, model_id, job["result_version"]))
    assert_pruned(svc, job["id"])


def assert_pruned(svc, job_id: str) -> None:
    """A finished job keeps its best and its last checkpoint, nothing else."""
    rows = svc.sql("SELECT epoch, is_best FROM checkpoints WHERE job_id = :j ORDER BY epoch DESC",
                   j=job_id)
    assert 1 <= len(rows) <= 2, rows
    assert all(epoch == rows[0][0] or is_best for epoch, is_best in rows), rows


def running_again(svc, job_id: str, attempts: int):
    def check():
        job = get_job(svc, job_id)
        return job if job["status"] == "running" and job["attempts"] >= attempts else None

    return check


def test_ten_kills_in_one_job(svc, recovery):
    """Ten SIGKILLs of the pool child at random moments (mid-epoch, mid-checkpoint, right after a
    resume): each one is recovered at once by the worker's main process, and the job ends as if
    nothing had happened."""
    reference(svc)
    model_id = create_model(svc)
    job_id = start_job(svc, model_id, **KILL_FIT)
    rng = random.Random(4)
    seen = -1
    times = []
    for kill in range(1, 11):
        # Kill only after the current attempt has stored a newer checkpoint, so the job advances.
        wait_for(lambda: (get_job(svc, job_id)["status"] == "running"
                          and checkpoint_epochs(svc, job_id)[:1] > [seen]), 60,
                 f"kill {kill}: a new checkpoint", on_timeout=svc.log_tail)
        seen = checkpoint_epochs(svc, job_id)[0]
        time.sleep(rng.uniform(0, 0.15))
        assert get_job(svc, job_id)["status"] == "running", "finished before ten kills"
        svc.kill_pool_child()
        t0 = time.monotonic()
        wait_for(running_again(svc, job_id, kill + 1), 30, f"kill {kill}: running again",
                 on_timeout=svc.log_tail)
        times.append(time.monotonic() - t0)
    job = wait_job(svc, job_id, timeout=120)
    assert_resumed_identically(svc, model_id, job, attempts=11)
    recovery("pool child SIGKILL -> running again (mean of 10)", sum(times) / len(times))
    recovery("pool child SIGKILL -> running again (max of 10)", max(times))
    # each one by the fast path (the worker's main process), not the heartbeat timeout
    log = "\n".join(p.read_text(errors="replace") for p in svc.logs)
    assert log.count(f"job {job_id}: its worker process died") == 10, times


def test_kill_in_first_epoch_before_any_checkpoint_starts_over(svc, recovery):
    """The whole worker dies in epoch 1: no checkpoint yet, so the next attempt starts from the
    beginning, and still ends bit-identical."""
    reference(svc)
    model_id = create_model(svc)
    job_id = start_job(svc, model_id, **KILL_FIT)
    wait_for(lambda: get_job(svc, job_id)["status"] == "running", 30, "running",
             poll=0.01, on_timeout=svc.log_tail)
    svc.kill_worker()
    t0 = time.monotonic()
    assert checkpoint_epochs(svc, job_id) == []
    assert get_job(svc, job_id)["progress"]["epoch"] == 0
    wait_for(running_again(svc, job_id, 2), 60, "running again", on_timeout=svc.log_tail)
    recovery("whole worker SIGKILL -> running again (heartbeat)", time.monotonic() - t0)
    job = wait_job(svc, job_id, timeout=120)
    assert_resumed_identically(svc, model_id, job, attempts=2)


def test_kill_while_a_checkpoint_is_written_keeps_the_previous_one(svc, recovery):
    """The worker sleeps inside a checkpoint's transaction (a test hook) and is killed there: the
    torn checkpoint never appears, the previous one stays the latest and it is valid, and the job
    resumes from it bit-identically."""
    from engine.serialization import checkpoint_from_bytes

    reference(svc)
    model_id = create_model(svc)
    job_id = start_job(svc, model_id, **KILL_FIT)
    control, marker = svc.hooks_dir / "pause-in-checkpoint.json", svc.hooks_dir / "paused-in-checkpoint"
    marker.unlink(missing_ok=True)
    first = wait_for(lambda: checkpoint_epochs(svc, job_id), 60, "a first checkpoint",
                     on_timeout=svc.log_tail)[0]
    control.write_text(json.dumps({"job_id": job_id, "epoch": first + 1, "seconds": 20}))
    try:
        wait_for(marker.exists, 30, "the worker pauses inside a checkpoint transaction",
                 poll=0.005, on_timeout=svc.log_tail)
    finally:
        control.unlink(missing_ok=True)  # the next attempt must not pause again
    paused_at = int(marker.read_text())
    before = checkpoint_epochs(svc, job_id)
    svc.kill_pool_child()
    t0 = time.monotonic()
    marker.unlink()
    after = checkpoint_epochs(svc, job_id)
    assert paused_at not in before and paused_at not in after and after == before, \
        (paused_at, before, after)
    blob = svc.sql("SELECT data FROM checkpoints WHERE job_id = :j AND epoch = :e",
                   j=job_id, e=after[0])[0][0]
    state = checkpoint_from_bytes(bytes(blob))  # the previous checkpoint reads back whole
    assert state["config"]["epochs"] == KILL_FIT["epochs"]
    wait_for(running_again(svc, job_id, 2), 30, "running again", on_timeout=svc.log_tail)
    recovery("SIGKILL inside a checkpoint transaction -> running again", time.monotonic() - t0)
    job = wait_job(svc, job_id, timeout=120)
    assert_resumed_identically(svc, model_id, job, attempts=2)
    if svc.mode == "production":  # its worker logs at INFO
        log = svc.logs[1].read_text(errors="replace")
        assert f"job {job_id}: resuming from the checkpoint of epoch {after[0]}" in log


def test_past_max_attempts_fails_with_worker_lost(svc, recovery):
    """max_attempts=2: the first death (the whole worker: heartbeat path) re-queues the job, the
    second (the pool child: fast path) ends it failed with code worker_lost."""
    model_id = create_model(svc)
    job_id = start_job(svc, model_id, **KILL_FIT)
    svc.sql_exec("UPDATE jobs SET max_attempts = 2 WHERE id = :j", j=job_id)
    wait_for(lambda: checkpoint_epochs(svc, job_id), 60, "a checkpoint", on_timeout=svc.log_tail)
    svc.kill_worker()
    wait_for(running_again(svc, job_id, 2), 60, "running again", on_timeout=svc.log_tail)
    svc.kill_pool_child()
    t0 = time.monotonic()
    job = wait_job(svc, job_id, timeout=30, poll=0.02)
    recovery("pool child SIGKILL on the last attempt -> failed", time.monotonic() - t0)
    assert job["status"] == "failed", job
    assert job["attempts"] == 2
    assert job["error"]["code"] == "worker_lost" and "max 2" in job["error"]["message"]
    assert job["result_version"] is None
    assert_pruned(svc, job_id)
    # the worker is fine: the next job runs
    nxt = wait_job(svc, start_job(svc, model_id, epochs=2), timeout=60)
    assert nxt["status"] == "succeeded" and nxt["attempts"] == 1


def test_a_stopped_worker_hands_its_job_back_checkpointed(svc, recovery):
    """A planned stop (SIGTERM to the worker's main process: ``docker stop``, Ctrl-C, a deploy). Celery's warm
    shutdown would wait for the whole job; instead the job finishes the epoch it is in, checkpoints it, goes back
    to the queue without spending an attempt, the worker exits, and the next worker resumes from that epoch and
    ends bit-identical to an uninterrupted run."""
    reference(svc)
    model_id = create_model(svc)
    job_id = start_job(svc, model_id, **KILL_FIT)
    wait_for(lambda: get_job(svc, job_id)["progress"]["epoch"] >= 3, 60, "three epochs",
             on_timeout=svc.log_tail)
    exited_after = svc.stop_worker()
    job = get_job(svc, job_id)
    assert job["status"] == "queued" and job["attempts"] == 0, (job, svc.log_tail())
    stopped_at = job["progress"]["epoch"]
    assert 3 <= stopped_at < KILL_FIT["epochs"]
    assert [r["epoch"] for r in job["history"]] == list(range(1, stopped_at + 1))
    assert checkpoint_epochs(svc, job_id)[0] == stopped_at       # nothing that was done is lost
    recovery("worker SIGTERM -> job back in the queue, worker exited", exited_after)
    svc.start_worker()
    job = wait_job(svc, job_id, timeout=120)
    assert_resumed_identically(svc, model_id, job, attempts=1)
    log = "\n".join(p.read_text(errors="replace") for p in svc.logs)
    assert f"job {job_id}: this worker is stopping; the job is back in the queue and resumes after epoch " \
           f"{stopped_at}" in log
