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
