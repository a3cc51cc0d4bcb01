"""Database: the PostgreSQL server is stopped for a few seconds while a job trains.

While it is down the API answers 503 problem+json with Retry-After on /v1 routes and /readyz names
the database; the worker keeps training, retrying its writes with backoff; once it is back the job
carries on in the same attempt (the reconcilers do not mistake the outage for a dead worker) and
succeeds; nothing is marked failed.

This stops the machine's shared cluster (``pg_ctlcluster``): the outage is kept to about three
seconds and the cluster is always started again, and waited for, in a ``finally``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from procs import create_model, free_port, get_job, pg_available, start_job, wait_for, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OUTAGE_S = 2.0


def _cluster() -> list[str] | None:
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        return None
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions or os.geteuid() != 0:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def _pg_ctl(cluster: list[str], action: str, *extra: str) -> None:
    subprocess.run([*cluster, action, *extra], check=True, capture_output=True, timeout=60)


def test_postgres_stopped_for_seconds(production_service, recovery):
    svc = production_service
    cluster = _cluster()
    if cluster is None:
        pytest.skip("needs root and pg_ctlcluster to stop and start the PostgreSQL cluster")
    model_id = create_model(svc)
    job_id = start_job(svc, model_id, epochs=60, batch_size=1)
    wait_for(lambda: get_job(svc, job_id)["progress"]["epoch"] >= 2, 60, "training",
             on_timeout=svc.log_tail)
    seen: dict[str, object] = {}
    _pg_ctl(cluster, "stop", "-m", "fast")
    t_down = time.monotonic()
    try:
        assert not pg_available()
        r = svc.client.get(f"/v1/jobs/{job_id}")
        seen["get"] = (r.status_code, r.headers.get("content-type"), r.headers.get("retry-after"),
                       r.json())
        r = svc.client.post("/v1/models", json={"name": "while-down", "input_shape": [4],
                                                "layers": [{"type": "dense", "units": 1}]})
        seen["post"] = (r.status_code, r.headers.get("content-type"))
        r = svc.client.get("/readyz")
        seen["readyz"] = (r.status_code, r.headers.get("content-type"), r.json())
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))
    finally:
        _pg_ctl(cluster, "start")
        wait_for(pg_available, 60, "PostgreSQL answers again", poll=0.1)
    outage = time.monotonic() - t_down

    status, ctype, retry_after, body = seen["get"]
    assert status == 503 and ctype.startswith("application/problem+json"), seen
    assert retry_after and body["status"] == 503 and "database" in body["detail"], body
    assert seen["post"][0] == 503 and seen["post"][1].startswith("application/problem+json")
    status, ctype, body = seen["readyz"]
    assert status == 503 and ctype.startswith("application/problem+json")
    assert body["database"] == "down" and "database" in body["detail"]

    t_up = time.monotonic()
    wait_for(lambda: svc.client.get("/readyz").status_code == 200, 30, "ready again")
    api_back = time.monotonic() - t_up
    job = wait_job(svc, job_id, timeout=120)
    assert job["status"] == "succeeded", (job["error"], svc.log_tail())
    assert job["attempts"] == 1, "the outage was taken for a dead worker"
    assert [r["epoch"] for r in job["history"]] == list(range(1, 61))
    failed = svc.sql("SELECT id, error FROM jobs WHERE status = 'failed' AND error IS NOT NULL")
    assert not [f for f in failed if "database" in str(f[1]).lower()], failed
    recovery(f"PostgreSQL down {outage:.1f} s -> API ready again", api_back)
    # and the service goes on: a new job runs
    assert wait_job(svc, start_job(svc, model_id, epochs=2))["status"] == "succeeded"
    log = svc.logs[1].read_text(errors="replace")
    assert "transient database error" in log or "heartbeat/poll failed" in log


def test_unreachable_database_is_503_problem_json(tmp_path):
    """In process, against a port where no database listens: a /v1 route answers 503
    problem+json with Retry-After (it was a 500 before), and /readyz names the database."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    port = free_port()
    settings = Settings(data_dir=tmp_path, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/x",
                        broker_url="memory://", auto_migrate=False, api_reconciler=False, gc_freeze_at_startup=False)
    app = create_app(settings, enqueue=lambda _job_id: None)
    app.state.broker_ok = lambda: True
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/v1/models", headers={"Authorization": "Bearer bp_" + "a" * 40})
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["retry-after"] == "2"
        body = r.json()
        assert body["status"] == 503 and body["type"].endswith("/database-unavailable")
        assert "127.0.0.1" not in r.text  # the driver's message stays in the log
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["database"] == "down"
