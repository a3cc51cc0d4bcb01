"""The API process killed (SIGKILL) and restarted while jobs run and wait; cancelling queued and
running jobs (both end ``cancelled`` within a second of the request)."""
from __future__ import annotations

import time

import pytest

from procs import create_model, get_job, start_job, wait_for, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_api_killed_and_restarted_while_jobs_run(svc, recovery):
    """Training lives in the worker and the truth in the database: an API process killed in the
    middle loses nothing. The running job and the queued ones finish, one version each, in their
    first attempt; the restarted API serves them."""
    model_id = create_model(svc)
    running = start_job(svc, model_id, epochs=30, batch_size=1)
    wait_for(lambda: get_job(svc, running)["status"] == "running", 60, "running",
             on_timeout=svc.log_tail)
    queued = [start_job(svc, model_id, epochs=3) for _ in range(2)]
    t0 = time.monotonic()
    svc.restart_api()  # SIGKILL, then a new process on the same port (embedded: the supervisor)
    recovery("API SIGKILL -> a new API process ready", time.monotonic() - t0)
    assert get_job(svc, running)["status"] in ("running", "succeeded")
    # the new API accepts work at once
    queued.append(start_job(svc, model_id, epochs=3))
    jobs = [wait_job(svc, j, timeout=90) for j in (running, *queued)]
    assert [j["status"] for j in jobs] == ["succeeded"] * 4, [j["error"] for j in jobs]
    assert [j["attempts"] for j in jobs] == [1] * 4
    versions = svc.client.get(f"/v1/models/{model_id}/versions").json()["items"]
    assert sorted(v["version"] for v in versions) == [1, 2, 3, 4]
    assert sorted(v["job_id"] for v in versions) == sorted(j["id"] for j in jobs)


def test_cancel_queued_and_running_within_a_second(svc, recovery):
    model_id = create_model(svc)
    running = start_job(svc, model_id, epochs=2000, batch_size=1)
    wait_for(lambda: get_job(svc, running)["status"] == "running"
             and get_job(svc, running)["progress"]["epoch"] >= 1, 60, "running",
             on_timeout=svc.log_tail)
    queued = start_job(svc, model_id, epochs=5)  # behind the running one (one worker slot)
    assert get_job(svc, queued)["status"] == "queued"

    t0 = time.monotonic()
    r = svc.client.post(f"/v1/jobs/{queued}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
    recovery("cancel a queued job -> cancelled", time.monotonic() - t0)

    t0 = time.monotonic()
    r = svc.client.post(f"/v1/jobs/{running}/cancel")
    assert r.status_code == 202, r.text
    job = wait_job(svc, running, timeout=10, poll=0.02)
    elapsed = time.monotonic() - t0
    recovery("cancel a running job -> cancelled", elapsed)
    assert job["status"] == "cancelled" and elapsed < 1.0, (job["status"], elapsed)
    assert job["result_version"] is None

    # the cancelled queued job never runs, even though its message is still delivered
    nxt = wait_job(svc, start_job(svc, model_id, epochs=2), timeout=60)
    assert nxt["status"] == "succeeded"
    q = get_job(svc, queued)
    assert q["status"] == "cancelled" and q["attempts"] == 0 and q["started_at"] is None
    # a finished job keeps at most its best and its last checkpoint
    rows = svc.sql("SELECT epoch, is_best FROM checkpoints WHERE job_id = :j ORDER BY epoch DESC",
                   j=running)
    assert len(rows) <= 2 and all(e == rows[0][0] or best for e, best in rows), rows
    assert svc.client.post(f"/v1/jobs/{nxt['id']}/cancel").status_code == 409
