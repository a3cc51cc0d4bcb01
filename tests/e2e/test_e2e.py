"""The whole loop over HTTP with real processes, in both modes (embedded and PostgreSQL + Redis).

Each test runs against ``svc``: first the embedded service (``backprop up``), then the production
one (uvicorn + ``backprop worker`` on PostgreSQL and Redis)."""
from __future__ import annotations

import io
import time
from functools import lru_cache

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MLP = {"input_shape": [64], "layers": [
    {"type": "dense", "units": 64, "activation": "relu"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]}
FIT = {"loss": "sparse_categorical_crossentropy",
       "optimizer": {"type": "adam", "learning_rate": 0.003},
       "epochs": 25, "batch_size": 32, "validation_split": 0.1, "seed": 7,
       "metrics": ["accuracy"]}


@lru_cache(maxsize=1)
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data.astype(np.float32), d.target
    held = np.arange(len(X)) % 5 == 0
    return X[~held], y[~held], X[held], y[held]


def digits_csv() -> bytes:
    X, y, _, _ = digits()
    out = io.StringIO()
    out.write(",".join([f"px{i}" for i in range(64)] + ["digit"]) + "\n")
    for row, label in zip(X, y):
        out.write(",".join(str(int(v)) for v in row) + "," + NAMES[label] + "\n")
    return out.getvalue().encode()


_datasets: dict[str, str] = {}


def dataset_id(svc) -> str:
    if svc.mode not in _datasets:
        r = svc.client.post("/v1/datasets", files={"file": ("digits.csv", digits_csv(), "text/csv")},
                            data={"name": "digits", "target": "digit"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["task"] == "classification" and sorted(body["classes"]) == sorted(NAMES)
        _datasets[svc.mode] = body["id"]
    return _datasets[svc.mode]


def create_model(svc, spec=MLP) -> str:
    r = svc.client.post("/v1/models", json={"name": "digits-mlp", **spec})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start_job(svc, model_id: str, **overrides) -> str:
    body = {"model_id": model_id, "dataset_id": dataset_id(svc), **FIT, **overrides}
    r = svc.client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    return r.json()["id"]


def get_job(svc, job_id: str) -> dict:
    r = svc.client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(svc, job_id: str, until=("succeeded", "failed", "cancelled"), timeout=90.0,
             poll=0.05) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(svc, job_id)
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s "
                                 f"(epoch {job['progress']}):\n{svc.log_tail()}")
        time.sleep(poll)


def weights(svc, model_id: str, version: int) -> dict[str, np.ndarray]:
    r = svc.client.get(f"/v1/models/{model_id}/export", params={"format": "npz", "version": version})
    assert r.status_code == 200, r.text
    with np.load(io.BytesIO(r.content), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype.kind in "fiub":
            assert np.array_equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------------


def test_whole_loop_on_digits(svc):
    model_id = create_model(svc)
    job_id = start_job(svc, model_id)
    job = wait_job(svc, job_id)
    assert job["status"] == "succeeded", (job["error"], svc.log_tail())
    assert job["result_version"] == 1 and job["attempts"] == 1
    assert [row["epoch"] for row in job["history"]] == list(range(1, FIT["epochs"] + 1))
    assert {"loss", "val_loss", "accuracy", "grad_norms"} <= set(job["history"][-1])
    assert job["progress"]["fraction"] == 1.0

    _, _, X_test, y_test = digits()
    r = svc.client.post(f"/v1/models/{model_id}/predict", json={"inputs": X_test.tolist()})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["version"] == 1 and out["task"] == "classification"
    assert set(out["predictions"]) <= set(NAMES)  # the dataset's own label values
    accuracy = np.mean([p == NAMES[t] for p, t in zip(out["predictions"], y_test)])
    assert accuracy >= 0.95, accuracy
    probs = np.asarray(out["probabilities"])
    assert probs.shape == (len(X_test), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [out["classes"][i] for i in probs.argmax(axis=1)] == out["predictions"]
    r = svc.client.get(f"/v1/jobs/{job_id}/checkpoints")
    assert r.status_code == 200 and r.json()["total"] >= 1


def test_duplicate_delivery_makes_one_version(svc):
    model_id = create_model(svc)
    job_id = start_job(svc, model_id, epochs=5)
    svc.send_task(job_id)  # the same job delivered twice (acks_late redelivery, reconciler resend)
    svc.send_task(job_id)
    job = wait_job(svc, job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1
    time.sleep(0.5)  # let the duplicates be consumed
    versions = svc.client.get(f"/v1/models/{model_id}/versions").json()
    assert versions["total"] == 1 and versions["items"][0]["job_id"] == job_id
    assert get_job(svc, job_id)["status"] == "succeeded"


def test_versions_numbered_and_same_seed_bit_identical(svc):
    model_id = create_model(svc)
    jobs = [start_job(svc, model_id, epochs=6) for _ in range(3)]
    done = [wait_job(svc, j) for j in jobs]
    assert [j["status"] for j in done] == ["succeeded"] * 3
    assert sorted(j["result_version"] for j in done) == [1, 2, 3]
    versions = svc.client.get(f"/v1/models/{model_id}/versions").json()
    assert sorted(v["version"] for v in versions["items"]) == [1, 2, 3]
    w = [weights(svc, model_id, v) for v in (1, 2, 3)]
    assert_same_weights(w[0], w[1])
    assert_same_weights(w[0], w[2])
    assert svc.client.get(f"/v1/models/{model_id}").json()["latest_version"] == 3


def test_cancel_running_job_within_a_second(svc):
    model_id = create_model(svc)
    job_id = start_job(svc, model_id, epochs=2000, batch_size=1)
    wait_job(svc, job_id, until=("running",), timeout=30, poll=0.02)
    t0 = time.monotonic()
    r = svc.client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202, r.text
    job = wait_job(svc, job_id, timeout=10, poll=0.02)
    elapsed = time.monotonic() - t0
    assert job["status"] == "cancelled"
    assert elapsed < 1.0, f"cancel took {elapsed:.2f}s"


def test_diverging_job_fails_with_advice(svc):
    model_id = create_model(svc, {"input_shape": [64], "layers": [
        {"type": "dense", "units": 32, "activation": "linear"},
        {"type": "dense", "units": 10, "activation": "softmax"}]})
    job_id = start_job(svc, model_id, epochs=20, optimizer={"type": "sgd", "learning_rate": 1e30},
                       standardize=False)
    job = wait_job(svc, job_id)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "diverged"
    assert "epoch" in job["error"]["message"] and "learning rate" in job["error"]["message"]


def test_killed_worker_job_is_requeued_and_resumes_bit_identical(svc):
    """kill -9 of the worker mid-training: the reconciler sees the stale heartbeat, re-queues the job,
    the next worker resumes it from its last checkpoint and the version equals an uninterrupted
    run's with the same seed."""
    long = {"epochs": 60, "batch_size": 8}
    model_id = create_model(svc)
    ref = wait_job(svc, start_job(svc, model_id, **long))
    assert ref["status"] == "succeeded"

    job_id = start_job(svc, model_id, **long)
    deadline = time.monotonic() + 60
    while (get_job(svc, job_id)["progress"]["epoch"] < 3
           or svc.client.get(f"/v1/jobs/{job_id}/checkpoints").json()["total"] < 1):
        assert time.monotonic() < deadline, svc.log_tail()
        time.sleep(0.02)
    svc.kill_worker()
    killed_at = get_job(svc, job_id)
    assert killed_at["status"] == "running"
    job = wait_job(svc, job_id, timeout=120)
    assert job["status"] == "succeeded", (job["error"], svc.log_tail())
    assert job["attempts"] == 2
    assert [r["epoch"] for r in job["history"]] == list(range(1, long["epochs"] + 1))
    assert_same_weights(weights(svc, model_id, ref["result_version"]),
                        weights(svc, model_id, job["result_version"]))
    if svc.mode == "production":  # its worker logs at INFO: the second attempt resumed
        log = svc.logs[1].read_text(errors="replace")
        assert f"job {job_id}: resuming from the checkpoint of epoch" in log


def test_embedded_broker_keeps_no_handled_rows(embedded_service):
    """The SQLAlchemy transport leaves delivered messages in kombu_message; the reconciler deletes
    them."""
    import sqlite3

    svc = embedded_service
    model_id = create_model(svc)
    wait_job(svc, start_job(svc, model_id, epochs=2))
    db = svc.data_dir / "broker.db"
    deadline = time.monotonic() + 10
    while True:
        con = sqlite3.connect(db, timeout=10)
        try:
            handled = con.execute("SELECT COUNT(*) FROM kombu_message WHERE visible = 0").fetchone()[0]
        finally:
            con.close()
        if handled == 0:
            break
        assert time.monotonic() < deadline, f"{handled} handled rows left"
        time.sleep(0.2)
