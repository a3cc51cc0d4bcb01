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


def test_fifty_jobs_submitted_at_once(svc, recovery):
    """50 concurrent POST /v1/jobs of one owner and one model: all accepted at once (they used to
    deadlock on the owner's row lock against the threadpool until the connection pool timed out),
    all run once, versions 1..50, one per job."""
    import asyncio

    import httpx

    from procs import dataset_id

    model_id = create_model(svc)
    body = {"model_id": model_id, "dataset_id": dataset_id(svc), "epochs": 1, "batch_size": 256,
            "loss": "sparse_categorical_crossentropy", "seed": 3, "checkpoint_every": 0}

    async def submit_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=svc.url, timeout=60,
                                     headers={"Authorization": f"Bearer {svc.key}"}) as ac:
            return await asyncio.gather(*(ac.post("/v1/jobs", json=body) for _ in range(50)))

    t0 = time.monotonic()
    responses = asyncio.run(submit_all())
    submitted = time.monotonic() - t0
    assert [r.status_code for r in responses] == [202] * 50, {r.status_code for r in responses}
    assert submitted < 15, submitted
    ids = [r.json()["id"] for r in responses]
    jobs = [wait_job(svc, j, timeout=120, poll=0.2) for j in ids]
    recovery("50 concurrent submissions accepted", submitted)
    recovery("50 jobs submitted at once -> all finished (1 worker)", time.monotonic() - t0)
    assert {j["status"] for j in jobs} == {"succeeded"} and {j["attempts"] for j in jobs} == {1}
    versions = svc.client.get(f"/v1/models/{model_id}/versions", params={"limit": 100}).json()
    assert sorted(v["version"] for v in versions["items"]) == list(range(1, 51))
    assert sorted(v["job_id"] for v in versions["items"]) == sorted(ids)
