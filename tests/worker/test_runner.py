"""The training run's database logic, against a fake engine with the real interface."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest
from sqlalchemy import select, update
from sqlalchemy import exc as sa_exc

from service.db.models import Checkpoint, Job, Model, ModelVersion
from service.services import job_history
from workers import runner
from workers.runner import db_retry, run_job

from .conftest import FakeModel, SimulatedCrash


def job_row(sf, job_id):
    with sf() as s:
        return s.get(Job, job_id)


def epochs_of(sf, job_id):
    """The epochs of the job's stored history, in order."""
    with sf() as s:
        return [r["epoch"] for r in job_history.load(s, job_id)]


def test_success_writes_version_history_and_prunes_checkpoints(sf, settings, make_job, fake_engine):
    job_id = make_job(epochs=5)
    assert run_job(job_id, settings=settings, session_factory=sf) == "succeeded"
    job = job_row(sf, job_id)
    assert job.status == "succeeded" and job.result_version == 1 and job.attempts == 1
    assert epochs_of(sf, job_id) == [1, 2, 3, 4, 5]
    assert job.error is None and job.finished_at is not None
    with sf() as s:
        versions = s.scalars(select(ModelVersion)).all()
        assert [(v.version, v.job_id) for v in versions] == [(1, job_id)]
        assert versions[0].classes == ["no", "yes"]
        assert "grad_norms" not in versions[0].metrics and "loss" in versions[0].metrics
        assert s.get(Model, job.model_id).latest_version == 1
        cks = s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
        # finished: the best and the last (the loss falls every epoch, so they are the same one)
        assert [c.epoch for c in cks] == [5] and cks[0].is_best
    # the service-only key never reaches fit()
    assert "checkpoint_every" not in FakeModel.calls[0][1]


def test_second_delivery_does_nothing(sf, settings, make_job, fake_engine):
    job_id = make_job()
    assert run_job(job_id, settings=settings, session_factory=sf) == "succeeded"
    assert run_job(job_id, settings=settings, session_factory=sf) == "skipped"
    with sf() as s:
        assert len(s.scalars(select(ModelVersion)).all()) == 1
    assert job_row(sf, job_id).attempts == 1


def test_concurrent_deliveries_claim_once(sf, settings, make_job, fake_engine):
    job_id = make_job(batch_sleep=0.01)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        run_job(job_id, settings=settings, session_factory=sf))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["skipped"] * 3 + ["succeeded"]


def test_versions_are_numbered_per_model(sf, settings, make_job, fake_engine):
    first = make_job()
    with sf() as s:
        model_id = s.get(Job, first).model_id
    ids = [first]
    for _ in range(2):
        with sf() as s, s.begin():
            src = s.get(Job, first)
            j = Job(owner_id=src.owner_id, model_id=model_id, dataset_id=src.dataset_id,
                    config=src.config, epochs=src.epochs)
            s.add(j)
            s.flush()
            ids.append(j.id)
    for j in ids:
        assert run_job(j, settings=settings, session_factory=sf) == "succeeded"
    assert [job_row(sf, j).result_version for j in ids] == [1, 2, 3]


def test_keeps_last_three_and_best_while_running(sf, settings, make_job, fake_engine, monkeypatch):
    # Each epoch's write (and checkpoint) done before the next epoch ends: no spacing of writes, which
    # at MAX_WRITE_SHARE 0.2 waits 5x a write and, on a slow machine, merged two epochs' checkpoints.
    monkeypatch.setattr(runner, "MIN_WRITE_INTERVAL_S", 0.0)
    monkeypatch.setattr(runner, "MAX_WRITE_SHARE", 1.0)
    # and every epoch checkpointed: spacing checkpoints out (its own test) skipped one on a loaded CI host
    monkeypatch.setattr(runner, "CHECKPOINT_BUDGET", float("inf"))
    job_id = make_job(epochs=6, crash_after=6, batch_sleep=0.02)
    with pytest.raises(SimulatedCrash):
        run_job(job_id, settings=settings, session_factory=sf)
    with sf() as s:
        cks = s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)
                        .order_by(Checkpoint.epoch)).all()
    assert [c.epoch for c in cks] == [4, 5, 6]
    assert [c.is_best for c in cks] == [False, False, True]


def test_resume_from_latest_checkpoint_after_a_crash(sf, settings, make_job, fake_engine):
    # uninterrupted reference
    ref = make_job(epochs=4)
    run_job(ref, settings=settings, session_factory=sf)
    # crash after epoch 2, then the reconciler's re-queue
    job_id = make_job(epochs=4, crash_after=2)
    with pytest.raises(SimulatedCrash):
        run_job(job_id, settings=settings, session_factory=sf)
    with sf() as s, s.begin():
        j = s.get(Job, job_id)
        assert j.status == "running" and j.epoch == 2
        j.status, j.worker = "queued", None
        cfg = dict(j.config)
        cfg.pop("crash_after")
        j.config = cfg
    # the checkpoint carries the fit config; the fake resume keeps crash_after=2 but epoch 2 is past
    FakeModel.calls = []
    assert run_job(job_id, settings=settings, session_factory=sf) == "succeeded"
    assert [c for c in FakeModel.calls if c[0] != "checkpoint"] == [("resume", 2)]
    job = job_row(sf, job_id)
    assert job.attempts == 2 and epochs_of(sf, job_id) == [1, 2, 3, 4]
    with sf() as s:
        a, b = (s.scalars(select(ModelVersion.data).where(ModelVersion.job_id == j)).one()
                for j in (ref, job_id))
    assert a == b  # the fake's state is a pure function of the epochs run, like the engine's


def test_history_rows_past_the_checkpoint_are_replaced(sf, settings, make_job, fake_engine):
    job_id = make_job(epochs=4, checkpoint_every=2, crash_after=3)
    with pytest.raises(SimulatedCrash):
        run_job(job_id, settings=settings, session_factory=sf)
    assert epochs_of(sf, job_id) == [1, 2, 3]
    with sf() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(status="queued", worker=None))
    assert run_job(job_id, settings=settings, session_factory=sf) == "succeeded"
    assert ("resume", 2) in FakeModel.calls
    assert epochs_of(sf, job_id) == [1, 2, 3, 4]


def test_diverged_fails_with_advice(sf, settings, make_job, fake_engine):
    job_id = make_job(epochs=5, diverge_at=3, optimizer={"type": "sgd", "learning_rate": 10.0})
    assert run_job(job_id, settings=settings, session_factory=sf) == "failed"
    job = job_row(sf, job_id)
    assert job.status == "failed" and job.error["code"] == "diverged"
    msg = job.error["message"]
    assert "epoch 3" in msg and "learning rate" in msg and "clipnorm" in msg and "10" in msg


@pytest.mark.parametrize("config,code,needle", [
    ({"validation_dataset_id": "gone"}, "dataset_deleted", "validation dataset"),
    ({"continue_from": {"job_id": "gone", "epoch": 3}}, "checkpoint_missing", "job gone at epoch 3"),
], ids=["validation-dataset", "source-checkpoint"])
def test_what_a_job_needs_gone_before_it_starts_fails_it_saying_what(sf, settings, make_job, fake_engine, config,
                                                                     code, needle):
    job_id = make_job(**config)
    assert run_job(job_id, settings=settings, session_factory=sf) == "failed"
    job = job_row(sf, job_id)
    assert job.error["code"] == code and needle in job.error["message"] and FakeModel.calls == []
    with sf() as s, s.begin():          # the training dataset itself
        s.execute(update(Job).where(Job.id == job_id).values(status="queued", dataset_id=None, error=None))
    assert run_job(job_id, settings=settings, session_factory=sf) == "failed"
    assert job_row(sf, job_id).error == {"code": "dataset_deleted", "message": "The job's dataset was deleted."}


def test_unexpected_error_fails_the_job(sf, settings, make_job, fake_engine, monkeypatch):
    job_id = make_job()
    monkeypatch.setattr(fake_engine, "build", lambda spec, seed=None: 1 / 0)
    assert run_job(job_id, settings=settings, session_factory=sf) == "failed"
    assert job_row(sf, job_id).error["code"] == "training_error"


def test_cancel_while_running_lands_within_a_second(sf, settings, make_job, fake_engine):
    job_id = make_job(epochs=1000, batch_sleep=0.02)
    out = []
    t = threading.Thread(target=lambda: out.append(
        run_job(job_id, settings=settings, session_factory=sf)))
    t.start()
    deadline = time.monotonic() + 10
    while job_row(sf, job_id).epoch < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    with sf() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    while job_row(sf, job_id).status == "running" and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    t.join(5)
    assert out == ["cancelled"] and job_row(sf, job_id).status == "cancelled"
    assert elapsed < 1.0, elapsed


def test_cancel_requested_while_queued(sf, settings, make_job, fake_engine):
    job_id = make_job()
    with sf() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    assert run_job(job_id, settings=settings, session_factory=sf) == "skipped"
    assert job_row(sf, job_id).status == "cancelled"


def test_worker_that_lost_its_job_stops_quietly(sf, settings, make_job, fake_engine):
    job_id = make_job(epochs=1000, batch_sleep=0.02)
    out = []
    t = threading.Thread(target=lambda: out.append(
        run_job(job_id, settings=settings, session_factory=sf)))
    t.start()
    while job_row(sf, job_id).epoch < 1:
        time.sleep(0.02)
    with sf() as s, s.begin():  # the reconciler gave it to someone else
        s.execute(update(Job).where(Job.id == job_id).values(status="queued", worker=None))
    t.join(5)
    assert out == ["lost"]
    job = job_row(sf, job_id)
    assert job.status == "queued"  # untouched by the old worker


def test_heartbeat_advances_while_training(sf, settings, make_job, fake_engine):
    job_id = make_job(epochs=1, batches=40, batch_sleep=0.02)  # one 0.8 s epoch
    beats = set()
    t = threading.Thread(target=run_job, args=(job_id,),
                         kwargs={"settings": settings, "session_factory": sf})
    t.start()
    while t.is_alive():
        beats.add(job_row(sf, job_id).heartbeat_at)
        time.sleep(0.05)
    assert len(beats) >= 3  # claim + heartbeats every 0.2 s within the single epoch


def test_db_retry_retries_transient_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sa_exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
        return "ok"

    assert db_retry(flaky, what="t", sleep=lambda _s: None) == "ok" and len(calls) == 3

    def broken():
        raise sa_exc.IntegrityError("INSERT", {}, Exception("duplicate"))

    with pytest.raises(sa_exc.IntegrityError):
        db_retry(broken, what="t", sleep=lambda _s: None)


def test_jsonable_turns_numpy_and_nan_into_json():
    import numpy as np

    out = runner.jsonable({"a": np.float32(1.5), "b": np.int64(2), "c": float("nan"),
                           "d": [np.float64(np.inf)], "e": np.array([1, 2])})
    assert out == {"a": 1.5, "b": 2, "c": None, "d": [None], "e": [1, 2]}
    json.dumps(out, allow_nan=False)


def test_checkpoints_are_spaced_out_to_stay_within_budget(sf, settings, make_job, fake_engine,
                                                         monkeypatch):
    monkeypatch.setattr(runner, "CHECKPOINT_BUDGET", 0.05)
    # 1 ms epochs, 10 ms checkpoints: every epoch would cost 10x the training; the budget allows
    # about one checkpoint per 200 ms of training.
    job_id = make_job(epochs=300, batches=1, batch_sleep=0.001, checkpoint_sleep=0.01)
    t0 = time.monotonic()
    assert run_job(job_id, settings=settings, session_factory=sf) == "succeeded"
    elapsed = time.monotonic() - t0
    job = job_row(sf, job_id)
    assert epochs_of(sf, job_id) == list(range(1, 301))
    taken = [c for c in FakeModel.calls if c[0] == "checkpoint"]
    # Each checkpoint costs at least its 10 ms sleep, so after the first epoch's (taken before any cost is
    # known) one is due per 10 ms / budget = 200 ms of run at most, and the last epoch always takes one: a
    # bound from the run's own length, as a slow host runs longer, not more often. Without the spacing all
    # 300 epochs would take one.
    assert 2 <= len(taken) <= elapsed * runner.CHECKPOINT_BUDGET / 0.01 + 2, (len(taken), elapsed)
    assert taken[0] == ("checkpoint", 1) and taken[-1] == ("checkpoint", 300)


def test_slow_database_does_not_slow_training(sf, settings, make_job, fake_engine, monkeypatch):
    """History rows are written off the training thread and coalesce while a write is in flight."""
    real = runner.Store.record_epochs
    writes = []

    def slow(self, c, rows, ck=None):
        time.sleep(0.05)
        writes.append(len(rows))
        return real(self, c, rows, ck)

    monkeypatch.setattr(runner.Store, "record_epochs", slow)
    job_id = make_job(epochs=100, batches=1, batch_sleep=0.001, checkpoint_every=0)
    t0 = time.monotonic()
    assert run_job(job_id, settings=settings, session_factory=sf) == "succeeded"
    assert time.monotonic() - t0 < 100 * 0.05 / 2  # far less than one write per epoch
    assert sum(writes) == 100 and len(writes) < 20
    assert epochs_of(sf, job_id) == list(range(1, 101))


def test_short_epochs_are_written_in_batches(sf, settings, make_job, fake_engine, monkeypatch):
    real = runner.Store.record_epochs
    writes = []  # (start time, epochs in the transaction)

    def counting(self, c, rows, ck=None):
        writes.append((time.monotonic(), len(rows)))
        return real(self, c, rows, ck)

    monkeypatch.setattr(runner.Store, "record_epochs", counting)
    job_id = make_job(epochs=200, batches=1, batch_sleep=0.002)  # ~0.5 s of 2.5 ms epochs
    t0 = time.monotonic()
    assert run_job(job_id, settings=settings, session_factory=sf) == "succeeded"
    elapsed = time.monotonic() - t0
    assert sum(n for _, n in writes) == 200
    # Bounded by the run's own length, not an assumed one: a slow host runs longer, not more often.
    assert len(writes) <= elapsed / runner.MIN_WRITE_INTERVAL_S + 2
    # Every transaction but the closing one waited its interval (a little slack for the stamp's
    # distance from the writer's own clock reading).
    starts = [t for t, _ in writes[:-1]]
    assert all(b - a >= runner.MIN_WRITE_INTERVAL_S - 0.05 for a, b in zip(starts, starts[1:]))
    assert len(writes) < 200 / 4  # and epochs really were batched


def test_epoch_writer_keeps_its_share_of_the_write_lock_bounded():
    from workers.runner import MAX_WRITE_SHARE, MIN_WRITE_INTERVAL_S, write_interval

    assert write_interval(0.001) == MIN_WRITE_INTERVAL_S
    for took in (0.05, 0.5, 3.0):   # a long history makes each write longer: the writes space out
        assert write_interval(took) >= MIN_WRITE_INTERVAL_S
        assert took / write_interval(took) <= MAX_WRITE_SHARE + 1e-12


# --------------------------------------------------------------------------------------------------
# A worker being stopped hands its job back (workers.preemption)
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def stop_signal():
    """The handler for the stop request, installed as the task installs it in a pool child; the test's main
    thread receives the real signal while the job runs in a thread."""
    import signal

    from workers import preemption

    before = signal.getsignal(preemption.PREEMPT_SIGNAL)
    preemption.listen()
    yield lambda: os.kill(os.getpid(), preemption.PREEMPT_SIGNAL)
    signal.signal(preemption.PREEMPT_SIGNAL, before)
    preemption._requested.clear()


def run_in_thread(sf, settings, job_id):
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(run_job(job_id, settings=settings, session_factory=sf)))
    t.start()
    return t, out


def wait_for_epoch(sf, job_id, epoch, timeout=20):
    deadline = time.monotonic() + timeout
    while job_row(sf, job_id).epoch < epoch:
        assert time.monotonic() < deadline, f"epoch {epoch} not reached"
        time.sleep(0.01)


def handed_back_after(sf, settings, job_id, epoch, stop_signal):
    """Run the job, send the stop request once ``epoch`` is stored, and return the job row after the run has
    handed the job back."""
    t, out = run_in_thread(sf, settings, job_id)
    wait_for_epoch(sf, job_id, epoch)
    stop_signal()
    t.join(10)
    assert out == ["handed_back"]
    job = job_row(sf, job_id)
    assert job.status == "queued" and job.worker is None and job.attempts == 0
    return job


def latest_checkpoint_epoch(sf, job_id):
    with sf() as s:
        return max(s.scalars(select(Checkpoint.epoch).where(Checkpoint.job_id == job_id)))


def test_a_stopping_worker_ends_the_epoch_checkpoints_it_and_hands_the_job_back(
        sf, settings, make_job, fake_engine, stop_signal, monkeypatch):
    """Short epochs: the epoch in progress is finished and checkpointed (whatever the checkpoint spacing), the
    job goes back to the queue with its attempt given back and a new message, and the next run resumes from
    exactly there and ends as an uninterrupted run does."""
    from service.reconciler import pending_job_ids, reconcile_once

    ref = make_job(epochs=30, batches=5)
    assert run_job(ref, settings=settings, session_factory=sf) == "succeeded"
    monkeypatch.setattr(runner, "CHECKPOINT_BUDGET", 1e-9)     # no checkpoint would be due otherwise
    job_id = make_job(epochs=30, batches=5, batch_sleep=0.01, checkpoint_every=1000)
    job = handed_back_after(sf, settings, job_id, 3, stop_signal)
    stopped_at = job.epoch
    assert 3 <= stopped_at < 30
    assert epochs_of(sf, job_id) == list(range(1, stopped_at + 1))
    assert latest_checkpoint_epoch(sf, job_id) == stopped_at      # nothing done is lost
    # no message yet (the stopping worker could take it back); the next reconciler pass sends it
    assert job.enqueued_at is None and job_id not in (pending_job_ids(settings) or set())
    assert reconcile_once(sf, settings)["resent"] == 1 and job_id in pending_job_ids(settings)

    from workers import preemption
    preemption._requested.clear()      # the next worker process starts without the request
    FakeModel.calls = []
    assert run_job(job_id, settings=settings, session_factory=sf) == "succeeded"
    assert [c for c in FakeModel.calls if c[0] != "checkpoint"] == [("resume", stopped_at)]
    job = job_row(sf, job_id)
    assert job.attempts == 1 and epochs_of(sf, job_id) == list(range(1, 31))
    with sf() as s:
        a, b = (s.scalars(select(ModelVersion.data).where(ModelVersion.job_id == j)).one()
                for j in (ref, job_id))
    assert a == b


def test_a_stopping_worker_far_from_the_epoch_end_drops_the_partial_epoch(
        sf, settings, make_job, fake_engine, stop_signal, monkeypatch):
    """An epoch that would take longer than FINISH_EPOCH_S to end is not waited for: the run stops at the next
    batch and the job resumes from the last checkpoint (here, every epoch's)."""
    from workers import preemption

    monkeypatch.setattr(preemption, "FINISH_EPOCH_S", 0.1)    # epochs of 1.5 s, asked early in the second
    job_id = make_job(epochs=5, batches=300, batch_sleep=0.005)
    handed_back_after(sf, settings, job_id, 1, stop_signal)
    assert epochs_of(sf, job_id) == [1] and latest_checkpoint_epoch(sf, job_id) == 1


def test_a_cancel_beats_a_stop_request(sf, settings, make_job, fake_engine, stop_signal):
    job_id = make_job(epochs=1000, batch_sleep=0.01)
    t, out = run_in_thread(sf, settings, job_id)
    wait_for_epoch(sf, job_id, 2)
    with sf() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    stop_signal()
    t.join(10)
    assert out == ["cancelled"] and job_row(sf, job_id).status == "cancelled"


def test_a_stop_request_reaches_jobs_run_in_the_main_process_too(sf, settings, make_job, fake_engine):
    """Celery's solo and thread pools run jobs in the worker's main process: asking the (absent) children
    also asks this process, and a job started off the main thread listens without installing a handler."""
    from workers import preemption

    job_id = make_job(epochs=1000, batch_sleep=0.01)
    out: list[str] = []

    def task():
        preemption.listen()          # off the main thread: must not raise
        out.append(run_job(job_id, settings=settings, session_factory=sf))

    t = threading.Thread(target=task)
    t.start()
    try:
        wait_for_epoch(sf, job_id, 2)
        assert preemption.ask_children() == 0       # no pool children in this process
        t.join(10)
    finally:
        preemption._requested.clear()
    assert out == ["handed_back"] and job_row(sf, job_id).status == "queued"
