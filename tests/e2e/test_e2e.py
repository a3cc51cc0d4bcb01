"""The whole loop over HTTP with real processes, in both modes (embedded and PostgreSQL + Redis).

Each test runs against ``svc``: first the embedded service (``backprop up``), then the production
one (uvicorn + ``backprop worker`` on PostgreSQL and Redis)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

import engine
from procs import (FIT, MLP, NAMES, assert_same_weights, create_model, digits, get_job,
                   start_job, upload_held_out_digits, wait_job, weights)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


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


def test_a_validation_dataset_scores_every_epoch_as_evaluate_does(svc):
    """validation_dataset_id: every history row carries the held-out dataset's val_loss and val_accuracy, and
    the last row's equal, to the bit, what evaluate answers for the version on that dataset."""
    held = upload_held_out_digits(svc)
    model_id = create_model(svc)
    job_id = start_job(svc, model_id, epochs=8, validation_split=0, validation_dataset_id=held,
                       early_stopping={"monitor": "val_loss", "patience": 50})
    job = wait_job(svc, job_id)
    assert job["status"] == "succeeded", (job["error"], svc.log_tail())
    assert job["config"]["validation_dataset_id"] == held and job["config"]["validation_split"] == 0
    assert all({"val_loss", "val_accuracy"} <= set(row) for row in job["history"])
    r = svc.client.post(f"/v1/models/{model_id}/evaluate", json={"dataset_id": held})
    assert r.status_code == 200, r.text
    scores = r.json()["metrics"]
    last = job["history"][-1]
    assert (scores["loss"], scores["accuracy"]) == (last["val_loss"], last["val_accuracy"])
    assert scores["accuracy"] >= 0.9
    own = svc.client.post(f"/v1/models/{model_id}/evaluate", json={"rows": "validation"}).json()
    assert (own["dataset_id"], own["metrics"]) == (held, scores)     # the job's own validation rows: that dataset
    assert svc.client.delete(f"/v1/datasets/{held}").status_code == 204     # no job uses it any more


def test_a_continued_job_equals_one_longer_job(svc):
    """POST /v1/jobs/{id}/continue: 10 epochs carried on to 16 by a second job (resumed from the first one's last
    checkpoint by a worker) give the version, the history and the validation scores of one 16-epoch job. The jobs
    hold out stratified rows: the worker draws the rows an in-process fit draws, and the continued job the same."""
    model_id = create_model(svc)
    first = wait_job(svc, start_job(svc, model_id, epochs=10, validation_rows="stratified"))
    assert first["status"] == "succeeded", (first["error"], svc.log_tail())
    r = svc.client.post(f"/v1/jobs/{first['id']}/continue", json={"epochs": 16})
    assert r.status_code == 202, r.text
    continued = wait_job(svc, r.json()["id"])
    assert continued["status"] == "succeeded", (continued["error"], svc.log_tail())
    assert continued["config"]["validation_rows"] == "stratified"
    reference = wait_job(svc, start_job(svc, model_id, epochs=16, validation_rows="stratified"))
    assert continued["attempts"] == 1 and [row["epoch"] for row in continued["history"]] == list(range(1, 17))

    def rows(job):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in job["history"]]

    assert rows(continued) == rows(reference)
    assert rows(continued)[:10] == rows(first)
    assert_same_weights(weights(svc, model_id, continued["result_version"]),
                        weights(svc, model_id, reference["result_version"]))
    # evaluate on the continued version's own validation rows: its last row's val_ figures, to the bit
    own = svc.client.post(f"/v1/models/{model_id}/evaluate",
                          json={"rows": "validation", "version": continued["result_version"]}).json()
    assert (own["metrics"]["loss"], own["metrics"]["accuracy"]) == (continued["history"][-1]["val_loss"],
                                                                    continued["history"][-1]["val_accuracy"])

    # to float32 rounding: the worker's BLAS may use another thread count than this process
    val_loss = first["history"][0]["val_loss"]
    assert math.isclose(val_loss, first_epoch_in_process(validation_rows="stratified")["val_loss"], rel_tol=1e-5)
    assert not math.isclose(val_loss, first_epoch_in_process(validation_rows="last")["val_loss"], rel_tol=1e-3)


def first_epoch_in_process(**fit) -> dict:
    """The first history row of FIT (with ``fit`` on top) run by the engine in this process on the digits
    dataset's rows, with the class indices a worker gives its labels (the labels are stored sorted, so "nine"
    is class 3)."""
    X, y, _, _ = digits()
    index = {name: i for i, name in enumerate(sorted(NAMES))}
    labels = np.array([index[NAMES[d]] for d in y])
    return engine.build(MLP, seed=FIT["seed"]).fit(X, labels, **{**FIT, **fit, "epochs": 1})[0]


def test_class_weights_by_label_reach_the_worker_and_a_continued_job(svc):
    """class_weight keyed by the digits dataset's own labels ("nine"...): a real worker trains with them (its history
    is not the unweighted job's), they land on the right classes (the first epoch's loss is an in-process fit's
    given the engine's class indices: the labels are stored sorted, so "nine" is class 3, not 9), and a continued
    weighted job equals one longer weighted job."""
    by_label = {"nine": 4.0, "one": 0.25}
    model_id = create_model(svc)
    plain = wait_job(svc, start_job(svc, model_id, epochs=3))
    weighted = wait_job(svc, start_job(svc, model_id, epochs=3, class_weight=by_label))
    assert weighted["status"] == "succeeded", (weighted["error"], svc.log_tail())
    assert weighted["config"]["class_weight"] == by_label
    assert [r["loss"] for r in weighted["history"]] != [r["loss"] for r in plain["history"]]

    # to float32 rounding: the worker's BLAS may use another thread count than this process
    loss = weighted["history"][0]["loss"]
    assert math.isclose(loss, first_epoch_in_process(class_weight={"3": 4.0, "4": 0.25})["loss"], rel_tol=1e-5)
    assert not math.isclose(loss, first_epoch_in_process(class_weight={"9": 4.0, "1": 0.25})["loss"], rel_tol=1e-3)

    r = svc.client.post(f"/v1/jobs/{weighted['id']}/continue", json={"epochs": 5})
    assert r.status_code == 202, r.text
    continued = wait_job(svc, r.json()["id"])
    longer = wait_job(svc, start_job(svc, model_id, epochs=5, class_weight=by_label))
    assert continued["status"] == longer["status"] == "succeeded", (continued["error"], svc.log_tail())
    assert continued["config"]["class_weight"] == by_label

    def rows(job):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in job["history"]]

    assert rows(continued) == rows(longer)
    assert_same_weights(weights(svc, model_id, continued["result_version"]),
                        weights(svc, model_id, longer["result_version"]))


def test_diagnostics_reach_the_worker_and_a_continued_job(svc):
    """diagnostics: true on real workers: every history row carries the relu layer's activation figures and each
    layer's weight change, the first epoch's activations are an in-process fit's, a continued job reports what
    one longer job does, and the version's metrics leave them out."""
    model_id = create_model(svc)
    job = wait_job(svc, start_job(svc, model_id, epochs=3, diagnostics=True))
    assert job["status"] == "succeeded", (job["error"], svc.log_tail())
    assert all(list(row["activations"]) == ["dense"] for row in job["history"])
    first = job["history"][0]["activations"]["dense"]
    # the counts depend on float32 sums: a worker with another BLAS thread count may flip a unit on a boundary
    expected = first_epoch_in_process(diagnostics=True)["activations"]["dense"]
    assert first["inactive"] == pytest.approx(expected["inactive"], abs=1e-4)
    assert first["dead_units"] == pytest.approx(expected["dead_units"], abs=1 / 64)

    r = svc.client.post(f"/v1/jobs/{job['id']}/continue", json={"epochs": 5})
    assert r.status_code == 202, r.text
    continued = wait_job(svc, r.json()["id"])
    longer = wait_job(svc, start_job(svc, model_id, epochs=5, diagnostics=True))
    assert continued["status"] == longer["status"] == "succeeded", (continued["error"], svc.log_tail())
    for key in ("activations", "weight_changes"):
        assert [row[key] for row in continued["history"]] == [row[key] for row in longer["history"]]
    assert set(job["history"][-1]["weight_changes"]) == {"dense", "dense_1"}
    versions = svc.client.get(f"/v1/models/{model_id}/versions").json()["items"]
    assert all(not {"activations", "weight_changes"} & set(v["metrics"]) for v in versions)


def test_killed_worker_job_is_requeued_and_resumes_bit_identical(svc):
    """kill -9 of the worker mid-training: the reconciler sees the stale heartbeat, re-queues the job,
    the next worker resumes it from its last checkpoint and the version equals an uninterrupted
    run's with the same seed, validation scores on a held-out dataset included."""
    long = {"epochs": 60, "batch_size": 8, "validation_split": 0, "validation_dataset_id": upload_held_out_digits(svc)}
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
    assert [r["val_loss"] for r in job["history"]] == [r["val_loss"] for r in ref["history"]]
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
