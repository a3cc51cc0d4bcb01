"""diagnostics on jobs: stored in the config, every history row carries the engine's activation figures, the
version's metrics leave them out; a value that is not a boolean is refused naming the field."""
from __future__ import annotations

import numpy as np

import engine
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

RNG = np.random.default_rng(12)
ROWS = [(float(a), float(b), "yes" if a * b > 0 else "no") for a, b in RNG.normal(size=(64, 2))]
CSV = "a,b,y\n" + "".join(f"{a:.4f},{b:.4f},{y}\n" for a, b, y in ROWS)
NET = {"input_shape": [2], "layers": [{"type": "dense", "units": 12, "activation": "relu"},
                                      {"type": "dense", "units": 6, "activation": "tanh"},
                                      {"type": "dense", "units": 2, "activation": "softmax"}]}
FIT = dict(loss="sparse_categorical_crossentropy", optimizer={"type": "adam", "learning_rate": 0.05}, epochs=3,
           batch_size=16, validation_split=0.25, seed=9, metrics=["accuracy"])


def test_a_job_with_diagnostics_reports_them_every_epoch(client, auth, session_factory):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    job = make_job(client, auth, m["id"], ds["id"], diagnostics=True, **FIT)
    assert job["config"]["diagnostics"] is True
    run_job_in_process(session_factory, job["id"])
    done = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert done["status"] == "succeeded", done
    # the same fit in process: the worker's figures are the engine's
    X = np.array([[float(f"{a:.4f}"), float(f"{b:.4f}")] for a, b, _ in ROWS], np.float32)
    y = np.array([ds["classes"].index(label) for _, _, label in ROWS])
    expected = engine.build(NET, seed=FIT["seed"]).fit(X, y, diagnostics=True, **FIT)
    for key in ("activations", "weight_changes"):
        assert [row[key] for row in done["history"]] == [row[key] for row in expected]
    assert set(done["history"][-1]["activations"]) == {"dense", "dense_1"}
    versions = client.get(f"/v1/models/{m['id']}/versions", headers=auth).json()["items"]
    assert not {"activations", "weight_changes"} & set(versions[-1]["metrics"])
    assert "accuracy" in versions[-1]["metrics"]


def test_off_unless_asked(client, auth, session_factory):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    job = make_job(client, auth, m["id"], ds["id"], **FIT)
    assert job["config"]["diagnostics"] is False
    run_job_in_process(session_factory, job["id"])
    done = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert all("activations" not in row and "weight_changes" not in row for row in done["history"])


def test_a_value_that_is_not_a_boolean_is_a_422_naming_it(client, auth):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    r = client.post("/v1/jobs", headers=auth, json={"model_id": m["id"], "dataset_id": ds["id"],
                                                    "diagnostics": "often", **FIT})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "diagnostics"]


def test_a_sweep_with_diagnostics_gives_them_to_every_trial(client, auth, session_factory):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    r = client.post("/v1/sweeps", headers=auth, json={
        "model_id": m["id"], "dataset_id": ds["id"], "config": {**FIT, "diagnostics": True},
        "grid": {"optimizer.learning_rate": [0.01, 0.05]}, "objective": "val_loss"})
    assert r.status_code == 202, r.text
    trials = r.json()["trials"]
    assert len(trials) == 2
    for trial in trials:
        run_job_in_process(session_factory, trial["job_id"])
        job = client.get(f"/v1/jobs/{trial['job_id']}", headers=auth).json()
        assert job["status"] == "succeeded" and job["config"]["diagnostics"] is True
        assert all(set(row["activations"]) == {"dense", "dense_1"} for row in job["history"])
    sweep = client.get(f"/v1/sweeps/{r.json()['id']}", headers=auth).json()
    assert sweep["best"]["objective"] is not None
