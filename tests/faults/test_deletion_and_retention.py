"""Deleting a model or a dataset while a job uses it, and what is kept afterwards.

- a dataset used by a queued or running job: 409 (cancel the job first); once it is not: 204 and
  its rows and blob are gone, the jobs and versions made from it stay (``dataset_id`` NULL);
- a model with a running job, a queued job and trained versions: 204; its versions, jobs and
  checkpoints (and their blobs) are gone; the worker running its job stops at its next write and
  takes the next job; the queued job's message is consumed without effect;
- never an orphaned row: every child row's parent exists, and the deleted objects' row counts in
  every table are 0.

All blobs (dataset arrays, model versions, checkpoints) are columns of those rows: no row, no blob.
"""
from __future__ import annotations

import time

import pytest

from procs import (checkpoint_epochs, create_model, get_job, start_job, upload_digits, wait_for,
                   wait_job)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def rows_of_model(svc, model_id: str, job_ids: list[str]) -> dict[str, int]:
    one = lambda q, **p: svc.sql(q, **p)[0][0]  # noqa: E731
    ids = ",".join(f"'{j}'" for j in job_ids) or "''"
    return {
        "models": one("SELECT COUNT(*) FROM models WHERE id = :m", m=model_id),
        "model_versions": one("SELECT COUNT(*) FROM model_versions WHERE model_id = :m", m=model_id),
        "jobs": one(f"SELECT COUNT(*) FROM jobs WHERE model_id = :m OR id IN ({ids})", m=model_id),
        "checkpoints": one(f"SELECT COUNT(*) FROM checkpoints WHERE job_id IN ({ids})"),
        "history rows": one(f"SELECT COUNT(*) FROM job_epochs WHERE job_id IN ({ids})"),
    }


def assert_no_orphans(svc) -> None:
    assert svc.orphans() == dict.fromkeys(svc.orphans(), 0)


def test_delete_model_while_its_job_runs(svc, recovery):
    dataset = upload_digits(svc)
    model_id = create_model(svc)
    done = wait_job(svc, start_job(svc, model_id, dataset, epochs=3))
    assert done["status"] == "succeeded"
    running = start_job(svc, model_id, dataset, epochs=2000, batch_size=1)
    wait_for(lambda: checkpoint_epochs(svc, running), 60, "a checkpoint", on_timeout=svc.log_tail)
    queued = start_job(svc, model_id, dataset, epochs=3)
    before = rows_of_model(svc, model_id, [done["id"], running, queued])
    assert before["model_versions"] == 1 and before["jobs"] == 3 and before["checkpoints"] >= 2
    assert before["history rows"] >= 3 + 1

    # the dataset is in use: 409, and nothing is deleted
    r = svc.client.delete(f"/v1/datasets/{dataset}")
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    assert svc.client.get(f"/v1/datasets/{dataset}").status_code == 200

    t0 = time.monotonic()
    assert svc.client.delete(f"/v1/models/{model_id}").status_code == 204
    assert rows_of_model(svc, model_id, [done["id"], running, queued]) == dict.fromkeys(before, 0)
    for job in (done["id"], running, queued):
        assert svc.client.get(f"/v1/jobs/{job}").status_code == 404
    assert svc.client.get(f"/v1/models/{model_id}").status_code == 404
    assert_no_orphans(svc)

    # the worker lets the job go and takes the next one
    other = create_model(svc)
    nxt = wait_job(svc, start_job(svc, other, dataset, epochs=2), timeout=60)
    recovery("model deleted under a running job -> worker free for the next job",
             time.monotonic() - t0)
    assert nxt["status"] == "succeeded" and nxt["attempts"] == 1
    time.sleep(0.5)  # whatever the lost job's worker might still write would land by now
    assert rows_of_model(svc, model_id, [done["id"], running, queued]) == dict.fromkeys(before, 0)
    assert_no_orphans(svc)

    # no job uses the dataset any more: it can go, with its blob; the version made from it stays
    assert svc.client.delete(f"/v1/datasets/{dataset}").status_code == 204
    assert svc.sql("SELECT COUNT(*) FROM datasets WHERE id = :d", d=dataset)[0][0] == 0
    assert get_job(svc, nxt["id"])["dataset_id"] is None
    r = svc.client.post(f"/v1/models/{other}/predict", json={"inputs": [[0.0] * 64]})
    assert r.status_code == 200, r.text
    assert_no_orphans(svc)


def test_deleting_a_model_removes_versions_checkpoints_and_blobs(svc):
    dataset = upload_digits(svc)
    model_id = create_model(svc)
    jobs = [wait_job(svc, start_job(svc, model_id, dataset, epochs=6, validation_split=0.2))
            for _ in range(2)]
    assert [j["status"] for j in jobs] == ["succeeded"] * 2
    ids = [j["id"] for j in jobs]
    for job in jobs:  # finished: the best and the last checkpoint, nothing else
        rows = svc.sql("SELECT epoch, is_best, size_bytes FROM checkpoints WHERE job_id = :j "
                       "ORDER BY epoch DESC", j=job["id"])
        assert 1 <= len(rows) <= 2, rows
        assert all(e == rows[0][0] or best for e, best, _ in rows), rows
        assert all(size > 0 for *_, size in rows)
    blob_bytes = svc.sql(
        "SELECT (SELECT COALESCE(SUM(size_bytes), 0) FROM model_versions WHERE model_id = :m) + "
        "(SELECT COALESCE(SUM(size_bytes), 0) FROM checkpoints c JOIN jobs j ON j.id = c.job_id "
        "WHERE j.model_id = :m)", m=model_id)[0][0]
    assert blob_bytes > 0
    assert svc.client.delete(f"/v1/models/{model_id}").status_code == 204
    assert rows_of_model(svc, model_id, ids) == {"models": 0, "model_versions": 0, "jobs": 0,
                                                 "checkpoints": 0, "history rows": 0}
    assert svc.client.delete(f"/v1/datasets/{dataset}").status_code == 204
    assert svc.sql("SELECT COUNT(*) FROM datasets WHERE id = :d", d=dataset)[0][0] == 0
    assert_no_orphans(svc)
