"""The reconciler against the real tables: stale heartbeats, lost messages, several at once."""
from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta

from sqlalchemy import update

from service.db.models import Job, utcnow
from service.reconciler import job_id_from_message, reconcile_once

from .conftest import set_heartbeat


def run(sf, settings, pending=frozenset(), **kw):
    sent = []
    counts = reconcile_once(sf, settings, enqueue=sent.append, pending=lambda: set(pending), **kw)
    return counts, sent


def get(sf, job_id):
    with sf() as s:
        return s.get(Job, job_id)


def test_stale_running_job_is_requeued_and_resent(sf, settings, make_job):
    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 31, attempts=1, worker="w:1:x")
    counts, sent = run(sf, settings)
    assert counts["requeued"] == 1 and sent == [job_id]
    job = get(sf, job_id)
    assert job.status == "queued" and job.worker is None and job.attempts == 1


def test_fresh_heartbeat_is_left_alone(sf, settings, make_job):
    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 5, attempts=1)
    counts, sent = run(sf, settings)
    assert sent == [] and get(sf, job_id).status == "running"


def test_out_of_attempts_fails_with_worker_lost(sf, settings, make_job):
    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 60, attempts=3, max_attempts=3)
    counts, sent = run(sf, settings)
    assert counts["worker_lost"] == 1 and sent == []
    job = get(sf, job_id)
    assert job.status == "failed" and job.error["code"] == "worker_lost"
    assert job.finished_at is not None


def test_stale_job_with_cancel_request_ends_cancelled(sf, settings, make_job):
    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 60, attempts=1, cancel_requested=True)
    counts, sent = run(sf, settings)
    assert counts["cancelled"] == 1 and sent == [] and get(sf, job_id).status == "cancelled"


def test_queued_job_with_lost_message_is_resent_once(sf, settings, make_job):
    job_id = make_job()
    with sf() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id)
                  .values(enqueued_at=utcnow() - timedelta(minutes=5)))
    counts, sent = run(sf, settings)
    assert counts["resent"] == 1 and sent == [job_id]
    counts, sent = run(sf, settings)  # enqueued_at was refreshed: not again right away
    assert sent == []


def test_queued_job_whose_message_waits_is_not_resent(sf, settings, make_job):
    job_id = make_job()
    with sf() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id)
                  .values(enqueued_at=utcnow() - timedelta(minutes=5)))
    counts, sent = run(sf, settings, pending={job_id})
    assert sent == []


def test_fresh_queued_job_is_not_resent(sf, settings, make_job):
    make_job()
    counts, sent = run(sf, settings)
    assert sent == []


def test_startup_recovers_every_running_job(sf, settings, make_job):
    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 1, attempts=1)
    queued = make_job()
    counts, sent = run(sf, settings, startup=True)
    assert sorted(sent) == sorted([job_id, queued])


def test_concurrent_reconcilers_requeue_exactly_once(sf, settings, make_job):
    ids = [make_job(status="running") for _ in range(5)]
    for j in ids:
        set_heartbeat(sf, j, 60, attempts=1)
    sent, lock = [], threading.Lock()

    def one():
        def enqueue(j):
            with lock:
                sent.append(j)
        reconcile_once(sf, settings, enqueue=enqueue, pending=lambda: set())

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent) == sorted(ids)


def test_broker_down_keeps_the_job_for_the_next_pass(sf, settings, make_job):
    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 60, attempts=1)

    def down(_j):
        raise ConnectionError("broker down")

    reconcile_once(sf, settings, enqueue=down, pending=lambda: None)
    assert get(sf, job_id).status == "queued"
    # the next pass after queued_resend_s re-sends it
    later = utcnow() + timedelta(minutes=5)
    sent = []
    reconcile_once(sf, settings, enqueue=sent.append, pending=lambda: None, now=later)
    assert sent == [job_id]


def test_job_id_from_kombu_envelope():
    body = base64.b64encode(json.dumps([["abc"], {}, {}]).encode()).decode()
    env = {"body": body, "headers": {"task": "backprop.train"},
           "properties": {"body_encoding": "base64"}}
    assert job_id_from_message(json.dumps(env)) == "abc"
    env["headers"]["task"] = "other"
    assert job_id_from_message(json.dumps(env)) is None
    assert job_id_from_message("not json") is None


# --------------------------------------------------------------------------------------------------
# The fast path for a dead pool child, outages, retention
# --------------------------------------------------------------------------------------------------


def _add_checkpoints(sf, job_id, epochs, best):
    from service.db.models import Checkpoint

    with sf() as s, s.begin():
        for e in epochs:
            s.add(Checkpoint(job_id=job_id, epoch=e, metrics={}, is_best=(e == best),
                             size_bytes=1, data=b"x"))


def _checkpoint_epochs(sf, job_id):
    from service.db.models import Checkpoint

    with sf() as s:
        return sorted(r.epoch for r in s.query(Checkpoint).filter_by(job_id=job_id))


def test_dead_child_requeues_only_its_own_job_at_once(sf, settings, make_job):
    from service.reconciler import recover_lost_child

    mine, other = make_job(status="running"), make_job(status="running")
    set_heartbeat(sf, mine, 0, attempts=1, worker="host:41:abc")  # fresh heartbeats: no timeout
    set_heartbeat(sf, other, 0, attempts=1, worker="host:411:def")  # another pid, same prefix digits
    sent = []
    assert recover_lost_child(sf, settings, other, "host:41:", enqueue=sent.append) is None
    assert recover_lost_child(sf, settings, mine, "host:41:", enqueue=sent.append) == "requeued"
    assert sent == [mine]
    job = get(sf, mine)
    assert job.status == "queued" and job.worker is None and job.attempts == 1
    assert get(sf, other).status == "running"
    # a second report of the same death changes nothing
    assert recover_lost_child(sf, settings, mine, "host:41:", enqueue=sent.append) is None
    assert sent == [mine]


def test_dead_child_on_the_last_attempt_fails_with_worker_lost_and_prunes(sf, settings, make_job):
    from service.reconciler import recover_lost_child

    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 0, attempts=2, max_attempts=2, worker="h:7:x")
    _add_checkpoints(sf, job_id, [1, 2, 3, 4, 5], best=2)
    sent = []
    assert recover_lost_child(sf, settings, job_id, "h:7:", enqueue=sent.append) == "worker_lost"
    job = get(sf, job_id)
    assert sent == [] and job.status == "failed" and job.error["code"] == "worker_lost"
    assert _checkpoint_epochs(sf, job_id) == [2, 5]  # the best and the last


def test_dead_child_with_cancel_request_ends_cancelled(sf, settings, make_job):
    from service.reconciler import recover_lost_child

    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 0, attempts=1, worker="h:8:x", cancel_requested=True)
    assert recover_lost_child(sf, settings, job_id, "h:8:", enqueue=lambda j: None) == "cancelled"
    assert get(sf, job_id).status == "cancelled"


def test_heartbeats_are_not_judged_right_after_a_database_outage(sf, settings, make_job):
    """judge_heartbeats=False (the loop's state until it has seen the database up for
    heartbeat_timeout_s): stale-looking running jobs are left alone."""
    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 120, attempts=1)
    counts, sent = run(sf, settings, judge_heartbeats=False)
    assert counts["requeued"] == 0 and get(sf, job_id).status == "running"
    counts, sent = run(sf, settings)
    assert counts["requeued"] == 1 and sent == [job_id]


def test_run_reconciler_waits_a_heartbeat_timeout_after_the_database_comes_back(sf, settings,
                                                                                make_job,
                                                                                monkeypatch):
    from service import reconciler

    settings = settings.model_copy(update={"heartbeat_timeout_s": 0.3, "reconcile_interval_s": 0.05})
    seen = []

    def fake_once(_sf, _settings, **kw):
        seen.append(kw["judge_heartbeats"])
        if len(seen) == 8:
            stop.set()
        return {}

    monkeypatch.setattr(reconciler, "reconcile_once", fake_once)
    stop = threading.Event()
    reconciler.run_reconciler(settings, stop, sf)
    assert seen[0] is False and seen[-1] is True  # not judged at first, judged 0.3 s later


def test_worker_lost_by_heartbeat_prunes_checkpoints(sf, settings, make_job):
    job_id = make_job(status="running")
    set_heartbeat(sf, job_id, 60, attempts=3, max_attempts=3)
    _add_checkpoints(sf, job_id, [3, 4, 5, 6], best=6)
    counts, _ = run(sf, settings)
    assert counts["worker_lost"] == 1 and _checkpoint_epochs(sf, job_id) == [6]
