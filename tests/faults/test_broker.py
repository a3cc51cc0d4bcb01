"""Broker: the Redis server (the production fixture's own) is killed and started again, empty, while a
job runs and others wait in its queue, and a job is submitted while it is down. The running job
finishes, the queued ones are re-sent from the database by the reconciler (``queued_resend_s``, 3 s
here), and every job makes exactly one version: none lost, none run twice."""
from __future__ import annotations

import time

import pytest

from procs import create_model, get_job, start_job, wait_for, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

QUICK = {"epochs": 3}


def test_redis_restart_mid_job_and_with_jobs_queued(production_service, recovery):
    svc = production_service
    assert svc.redis is not None
    model_id = create_model(svc)
    running = start_job(svc, model_id, epochs=24, batch_size=1)
    wait_for(lambda: get_job(svc, running)["status"] == "running"
             and get_job(svc, running)["progress"]["epoch"] >= 1, 60, "running",
             on_timeout=svc.log_tail)
    queued = [start_job(svc, model_id, **QUICK) for _ in range(3)]
    assert all(get_job(svc, j)["status"] == "queued" for j in queued)

    svc.redis.kill()  # the queue and the unacknowledged running message are gone
    t0 = time.monotonic()
    try:
        assert svc.client.get("/readyz").json()["broker"] == "down"
        # submitting while the broker is down: accepted (202, queued); the message goes out later
        t_post = time.monotonic()
        queued.append(start_job(svc, model_id, **QUICK))
        assert time.monotonic() - t_post < 5
        time.sleep(1.0)
    finally:
        svc.redis.start()
    down_s = time.monotonic() - t0

    jobs = [wait_job(svc, j, timeout=90) for j in [running, *queued]]
    all_done = time.monotonic() - t0
    assert [j["status"] for j in jobs] == ["succeeded"] * len(jobs), \
        ([j["error"] for j in jobs], svc.log_tail())
    assert [j["attempts"] for j in jobs] == [1] * len(jobs)  # none ran twice
    versions = svc.client.get(f"/v1/models/{model_id}/versions").json()["items"]
    assert sorted(v["version"] for v in versions) == list(range(1, len(jobs) + 1))
    assert sorted(v["job_id"] for v in versions) == sorted(j["id"] for j in jobs)
    recovery(f"Redis down {down_s:.1f} s -> all {len(jobs)} jobs done", all_done)
    time.sleep(1.0)
    # duplicates of re-sent messages, if any, are consumed without effect
    assert len(svc.client.get(f"/v1/models/{model_id}/versions").json()["items"]) == len(jobs)
    assert all(get_job(svc, j["id"])["attempts"] == 1 for j in jobs)
