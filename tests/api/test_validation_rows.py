"""validation_rows on jobs: stored, followed by the fit (its val_loss is the version's loss on exactly the rows
the engine holds out), refused naming the field."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import holdout
from engine.training import _rng
from service.db.models import Job
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

RNG = np.random.default_rng(8)
LABELS = ("low", "mid", "high")
# 60 rows sorted by class, as iris is: Keras's rule would hold out only "high" rows
ROWS = [(float(RNG.normal(k, 0.7)), float(RNG.normal(-k, 0.7)), LABELS[k]) for k in range(3) for _ in range(20)]
CSV = "a,b,y\n" + "".join(f"{a:.4f},{b:.4f},{y}\n" for a, b, y in ROWS)
NET = {"input_shape": [2], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                      {"type": "dense", "units": 3, "activation": "softmax"}]}


def csv_of(rows) -> str:
    return "a,b,y\n" + "".join(f"{ROWS[i][0]:.4f},{ROWS[i][1]:.4f},{ROWS[i][2]}\n" for i in rows)


@pytest.mark.parametrize("mode", ["random", "stratified"])
def test_the_job_validates_on_the_rows_the_mode_holds_out(client, auth, session_factory, mode):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    job = make_job(client, auth, m["id"], ds["id"], loss="sparse_categorical_crossentropy", epochs=4,
                   batch_size=8, validation_split=0.25, validation_rows=mode, seed=5, metrics=["accuracy"])
    assert job["config"]["validation_rows"] == mode
    run_job_in_process(session_factory, job["id"])
    done = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert done["status"] == "succeeded", done
    classes = np.array([ds["classes"].index(y) for _, _, y in ROWS])
    order = holdout.row_order(mode, 60, 45, _rng(5, 0, 3), classes if mode == "stratified" else None)
    held = order[45:]
    if mode == "stratified":
        assert np.bincount(classes[held]).tolist() == [5, 5, 5]
    test = make_dataset(client, auth, csv_of(held))
    scores = client.post(f"/v1/models/{m['id']}/evaluate", headers=auth, json={"dataset_id": test["id"]}).json()
    last = done["history"][-1]
    assert scores["metrics"]["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    assert scores["metrics"]["accuracy"] == pytest.approx(last["val_accuracy"], abs=1e-9)


def test_the_default_is_keras_last_rows(client, auth, session_factory):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    job = make_job(client, auth, m["id"], ds["id"], loss="sparse_categorical_crossentropy", epochs=2,
                   batch_size=8, validation_split=0.25, seed=5)
    assert job["config"]["validation_rows"] == "last"
    run_job_in_process(session_factory, job["id"])
    done = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    # a dataset of one class cannot be uploaded (that is the trouble with this rule), so score the predictions
    inputs = [{"a": round(ROWS[i][0], 4), "b": round(ROWS[i][1], 4)} for i in range(45, 60)]     # all "high"
    out = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": inputs}).json()
    truth = out["classes"].index("high")
    picked = np.clip(np.array(out["probabilities"])[:, truth], 1e-7, 1 - 1e-7)
    assert float(np.mean(-np.log(picked))) == pytest.approx(done["history"][-1]["val_loss"], rel=1e-4)


def test_refusals_are_422_naming_the_field(client, auth, enqueued, session_factory):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    regression = make_dataset(client, auth, "a,b,y\n" + "".join(f"{i},{i % 3},{i * 0.5}\n" for i in range(30)))
    out1 = make_model(client, auth, {"input_shape": [2], "layers": [{"type": "dense", "units": 1}]})
    other = make_dataset(client, auth, CSV)
    base = {"model_id": m["id"], "dataset_id": ds["id"], "loss": "sparse_categorical_crossentropy"}
    cases = [
        ({"validation_split": 0.2, "validation_rows": "shuffled"}, base),
        ({"validation_rows": "random"}, base),                       # no split to draw from
        ({"validation_rows": "stratified", "validation_dataset_id": other["id"]}, base),
        ({"validation_split": 0.2, "validation_rows": "stratified"},
         {"model_id": out1["id"], "dataset_id": regression["id"], "loss": "mse"}),
    ]
    before = (len(enqueued), _jobs(session_factory))
    for extra, body in cases:
        r = client.post("/v1/jobs", headers=auth, json={**body, **extra})
        assert r.status_code == 422, (extra, r.text)
        assert r.json()["errors"][0]["loc"] == ["body", "validation_rows"], r.json()
    assert (len(enqueued), _jobs(session_factory)) == before
    # random needs no classes
    r = client.post("/v1/jobs", headers=auth, json={"model_id": out1["id"], "dataset_id": regression["id"],
                                                   "loss": "mse", "validation_split": 0.2, "validation_rows": "random"})
    assert r.status_code == 202, r.text


def _jobs(session_factory) -> int:
    with session_factory() as s:
        return s.query(Job).count()


# -------------------------------------------------------------------- evaluate on the job's own rows
def _evaluate(client, auth, model_id, **body):
    return client.post(f"/v1/models/{model_id}/evaluate", headers=auth, json=body)


@pytest.mark.parametrize("mode,held_classes", [("last", [0, 0, 15]), ("random", None), ("stratified", [5, 5, 5])])
def test_evaluate_scores_the_rows_the_job_held_out_and_trained_on(client, auth, session_factory, mode,
                                                                  held_classes):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    job = make_job(client, auth, m["id"], ds["id"], loss="sparse_categorical_crossentropy", epochs=3,
                   batch_size=8, validation_split=0.25, validation_rows=mode, seed=9, metrics=["accuracy"])
    run_job_in_process(session_factory, job["id"])
    last = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["history"][-1]

    held = _evaluate(client, auth, m["id"], rows="validation")
    assert held.status_code == 200, held.text
    held = held.json()
    assert (held["rows"], held["dataset_id"], held["n_samples"]) == ("validation", ds["id"], 15)
    assert held["metrics"]["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    assert held["metrics"]["accuracy"] == pytest.approx(last["val_accuracy"], abs=1e-9)
    support = {c["label"]: c["support"] for c in held["confusion"]["per_class"]}
    if held_classes is not None:
        assert [support[label] for label in LABELS] == held_classes

    # the training rows: the same scores as those rows uploaded on their own
    trained = _evaluate(client, auth, m["id"], rows="training", dataset_id=ds["id"]).json()
    assert (trained["rows"], trained["n_samples"]) == ("training", 45)
    classes = np.array([ds["classes"].index(y) for _, _, y in ROWS])
    train_rows, _ = engine.split_rows(job["config"], classes)
    alone = make_dataset(client, auth, csv_of(train_rows))
    scored = _evaluate(client, auth, m["id"], dataset_id=alone["id"]).json()
    assert scored["rows"] == "all"
    assert trained["metrics"] == pytest.approx(scored["metrics"], rel=1e-6)
    assert trained["confusion"]["matrix"] == scored["confusion"]["matrix"]


def test_evaluate_validation_rows_of_a_job_with_a_validation_dataset(client, auth, session_factory):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    held = make_dataset(client, auth, csv_of(range(0, 60, 4)))
    job = make_job(client, auth, m["id"], ds["id"], loss="sparse_categorical_crossentropy", epochs=2,
                   batch_size=8, validation_dataset_id=held["id"], seed=9)
    run_job_in_process(session_factory, job["id"])      # (an end-to-end test checks val_loss against evaluate)
    out = _evaluate(client, auth, m["id"], rows="validation").json()
    assert (out["rows"], out["dataset_id"], out["n_samples"]) == ("validation", held["id"], 15)
    assert out["metrics"] == _evaluate(client, auth, m["id"], dataset_id=held["id"]).json()["metrics"]
    r = _evaluate(client, auth, m["id"], rows="validation", dataset_id=ds["id"])
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "dataset_id"], r.text


def test_evaluate_rows_refusals_name_the_field(client, auth, session_factory):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    other = make_dataset(client, auth, CSV)
    job = make_job(client, auth, m["id"], ds["id"], loss="sparse_categorical_crossentropy", epochs=1, seed=9)
    run_job_in_process(session_factory, job["id"])
    cases = [({"rows": "validation"}, ["body", "rows"]),                     # the job held out nothing
             ({}, ["body", "dataset_id"]),                                    # nothing to score
             ({"rows": "held_out"}, ["body", "rows"]),
             ({"rows": "training", "dataset_id": other["id"]}, ["body", "dataset_id"])]
    for body, loc in cases:
        r = _evaluate(client, auth, m["id"], **body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0]["loc"] == loc, (body, r.json())
    out = _evaluate(client, auth, m["id"], rows="training").json()         # every row trained
    assert (out["rows"], out["n_samples"]) == ("training", 60)
