"""A hyperparameter sweep on real processes, in both modes: its trials run on the real worker, the sweep ranks
them by the versions they made, and the best trial's version predicts."""
from __future__ import annotations

import time

import numpy as np
import pytest

from procs import FIT, NAMES, create_model, dataset_id, digits

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def wait_sweep(svc, sweep_id: str, timeout: float = 150.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = svc.client.get(f"/v1/sweeps/{sweep_id}")
        assert r.status_code == 200, r.text
        sweep = r.json()
        if sweep["status"] != "running":
            return sweep
        assert time.monotonic() < deadline, (sweep, svc.log_tail())
        time.sleep(0.1)


def test_a_sweep_of_four_trials_runs_to_its_best_version(svc):
    model_id = create_model(svc)
    config = {**FIT, "epochs": 6}
    config.pop("optimizer")
    r = svc.client.post("/v1/sweeps", json={
        "model_id": model_id, "dataset_id": dataset_id(svc), "config": {**config, "optimizer": "adam"},
        "grid": {"optimizer.learning_rate": [0.0003, 0.01], "batch_size": [16, 128]}, "objective": "val_accuracy"})
    assert r.status_code == 202, r.text
    sweep = wait_sweep(svc, r.json()["id"])
    assert sweep["status"] == "succeeded", (sweep, svc.log_tail())
    assert [t["params"] for t in sweep["trials"]] == [
        {"optimizer.learning_rate": lr, "batch_size": bs} for lr in (0.0003, 0.01) for bs in (16, 128)]
    assert [(t["status"], t["epochs_done"]) for t in sweep["trials"]] == [("succeeded", 6)] * 4
    # each trial's objective is its version's val_accuracy, as the model's versions list them
    versions = {v["version"]: v for v in svc.client.get(f"/v1/models/{model_id}/versions").json()["items"]}
    assert sorted(versions) == [1, 2, 3, 4]
    values = [versions[t["result_version"]]["metrics"]["val_accuracy"] for t in sweep["trials"]]
    assert [t["objective"] for t in sweep["trials"]] == values
    assert {versions[t["result_version"]]["job_id"] for t in sweep["trials"]} == {t["job_id"] for t in sweep["trials"]}
    best = sweep["best"]
    assert best == sweep["trials"][values.index(max(values))]
    assert best["params"]["optimizer.learning_rate"] == 0.01     # 0.0003 is far too slow for 6 epochs here

    _, _, X_test, y_test = digits()
    r = svc.client.post(f"/v1/models/{model_id}/predict",
                        json={"inputs": X_test.tolist(), "version": best["result_version"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["version"] == best["result_version"] and set(out["predictions"]) <= set(NAMES)
    accuracy = np.mean([p == NAMES[t] for p, t in zip(out["predictions"], y_test)])
    assert accuracy >= 0.9, accuracy
    # done: the sweep can go, its jobs and versions stay
    assert svc.client.delete(f"/v1/sweeps/{sweep['id']}").status_code == 204
    assert svc.client.get(f"/v1/jobs/{best['job_id']}").json()["result_version"] == best["result_version"]


def test_a_cross_validation_sweep_ranks_points_by_their_folds(svc):
    """folds=3 on real workers: every grid point's three fold jobs validate on disjoint thirds of the rows (each
    job's version scores its own fold as its history says), and the points are ranked by their folds' mean."""
    model_id = create_model(svc)
    config = {k: v for k, v in FIT.items() if k not in ("optimizer", "validation_split")}
    r = svc.client.post("/v1/sweeps", json={
        "model_id": model_id, "dataset_id": dataset_id(svc),
        "config": {**config, "epochs": 4, "optimizer": "adam", "validation_rows": "stratified"},
        "grid": {"optimizer.learning_rate": [0.0003, 0.01]}, "folds": 3, "objective": "val_accuracy"})
    assert r.status_code == 202, r.text
    sweep = wait_sweep(svc, r.json()["id"])
    assert sweep["status"] == "succeeded", (sweep, svc.log_tail())
    cv = sweep["cross_validation"]
    assert sweep["best"] is None and [p["folds_succeeded"] for p in cv["points"]] == [3, 3]
    n = svc.client.get(f"/v1/datasets/{dataset_id(svc)}").json()["n_samples"]
    for point in cv["points"]:
        scores, held = [], 0
        for job_id in point["job_ids"]:
            job = svc.client.get(f"/v1/jobs/{job_id}").json()
            own = svc.client.post(f"/v1/models/{model_id}/evaluate",
                                  json={"rows": "validation", "version": job["result_version"]}).json()
            assert own["metrics"]["accuracy"] == job["history"][-1]["val_accuracy"]       # to the bit
            scores.append(job["history"][-1]["val_accuracy"])
            held += own["n_samples"]
        assert held == n                                          # the three folds cover the rows once
        assert point["objective_mean"] == pytest.approx(np.mean(scores), rel=1e-12)
    assert cv["best"]["params"] == {"optimizer.learning_rate": 0.01}
