"""A dataset's profile (feature statistics, per-class counts and rows) and the warnings POST /v1/jobs gives from
it when a validation_split's last rows would hold only some classes."""
from __future__ import annotations

import numpy as np
import pytest

from service.services import dataset_profile
from tests.api.helpers import make_dataset, make_model
from tests.api.test_validation_rows import CSV, LABELS, NET, ROWS


def _values(csv: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split(",")[:2]] for line in csv.splitlines()[1:]], dtype=np.float32)


def test_the_profile_counts_each_class_and_describes_each_feature(client, auth):
    ds = make_dataset(client, auth, CSV)
    profile = ds["profile"]
    by_label = {t["label"]: t for t in profile["targets"]}
    for k, label in enumerate(LABELS):                              # the rows are sorted by class
        assert by_label[label] == {"label": label, "count": 20, "first_row": 20 * k, "last_row": 20 * k + 19}
    assert [t["label"] for t in profile["targets"]] == ds["classes"]
    X = _values(CSV).astype(np.float64)
    for j, feature in enumerate(profile["features"]):
        assert feature["name"] == ["a", "b"][j]
        assert feature["min"] == X[:, j].min() and feature["max"] == X[:, j].max()
        assert feature["mean"] == pytest.approx(X[:, j].mean(), rel=1e-12)
        assert feature["std"] == pytest.approx(X[:, j].std(), rel=1e-12)
    # the one dataset has it; the list leaves it out (a wide dataset's profile outweighs its row)
    assert client.get(f"/v1/datasets/{ds['id']}", headers=auth).json()["profile"] == profile
    listed = client.get("/v1/datasets", headers=auth).json()["items"]
    assert listed and all("profile" not in item for item in listed)


def test_regression_and_multilabel_targets(client, auth):
    rows = "\n".join(f"{i},{i * 0.5 + 0.25}" for i in range(10))
    regression = make_dataset(client, auth, "a,y\n" + rows)["profile"]["targets"]
    y = np.array([i * 0.5 + 0.25 for i in range(10)])
    assert regression == [{"name": "y", "min": 0.25, "max": 4.75, "mean": pytest.approx(y.mean()),
                           "std": pytest.approx(y.std())}]
    rows = "\n".join(f"{i},{i % 2},{int(i % 3 == 0)}" for i in range(9))
    multilabel = make_dataset(client, auth, "a,p,q\n" + rows, target="p,q")["profile"]["targets"]
    assert multilabel == [{"label": "p", "count": 4}, {"label": "q", "count": 3}]


def test_wide_datasets_keep_their_class_counts_but_no_feature_list():
    X = np.zeros((3, dataset_profile.MAX_PROFILED_FEATURES + 1), dtype=np.float32)
    out = dataset_profile.profile(X, np.array([0, 1, 1]), "classification", [f"f{i}" for i in range(X.shape[1])],
                                  ["y"], ["no", "yes"])
    assert out["features"] is None
    assert out["targets"] == [{"label": "no", "count": 1, "first_row": 0, "last_row": 0},
                              {"label": "yes", "count": 2, "first_row": 1, "last_row": 2}]


@pytest.mark.parametrize("config,expected", [
    # rows 0-19 low, 20-39 mid, 40-59 high; the classes are listed in their sorted order (high, low, mid)
    ({"validation_split": 0.25}, ["the last 15 rows (Keras's rule), and they hold only 'high' (1 of 3 classes)"]),
    ({"validation_split": 0.34}, ["the last 21 rows (Keras's rule), and they hold only 'high', 'mid' (2 of 3",
                                  "the training rows (all but rows 39 to 59) hold no 'high'"]),
    ({"validation_split": 0.5}, ["hold only 'high', 'mid' (2 of 3 classes)",
                                 "the training rows (all but rows 30 to 59) hold no 'high'"]),
    # contiguous folds ("last", as KFold): the same two questions of the fold's block of rows
    ({"validation_fold": {"fold": 3, "folds": 3}}, ["fold 3 of 3 holds out rows 40 to 59 (contiguous folds), and "
                                                     "they hold only 'high' (1 of 3", "all but rows 40 to 59) hold "
                                                     "no 'high'"]),
    ({"validation_fold": {"fold": 2, "folds": 4}}, ["rows 15 to 29 (contiguous folds), and they hold only 'low', "
                                                     "'mid' (2 of 3"]),
    ({"validation_fold": {"fold": 1, "folds": 3}, "validation_rows": "random"}, []),
    ({"validation_fold": {"fold": 1, "folds": 3}, "validation_rows": "stratified"}, []),
    ({"validation_fold": {"fold": 1, "folds": 25}, "validation_rows": "stratified"},
     ["'high', 'low', 'mid' have fewer rows than the 25 folds, so some folds validate on none of them"]),
    ({"validation_split": 0.25, "validation_rows": "stratified"}, []),
    ({"validation_split": 0.25, "validation_rows": "random"}, []),
    ({}, []),
])
def test_job_warnings_on_a_split_of_sorted_classes(client, auth, config, expected):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    r = client.post("/v1/jobs", headers=auth, json={"model_id": m["id"], "dataset_id": ds["id"],
                                                    "loss": "sparse_categorical_crossentropy", **config})
    assert r.status_code == 202, r.text
    warnings = r.json()["warnings"]
    assert len(warnings) == len(expected), warnings
    for warning, text in zip(warnings, expected):
        assert text in warning, warnings
    if expected and config.get("validation_rows") != "stratified":     # the advice: draw from every class
        assert 'set validation_rows to "stratified"' in warnings[0]
    # the warnings answer the creation; they are not stored
    assert client.get(f"/v1/jobs/{r.json()['id']}", headers=auth).json()["warnings"] == []


def test_no_warning_when_the_last_rows_hold_every_class(client, auth):
    mixed = "a,b,y\n" + "".join(f"{a:.4f},{b:.4f},{y}\n" for a, b, y in ROWS[::3] + ROWS[1::3] + ROWS[2::3])
    ds, m = make_dataset(client, auth, mixed), make_model(client, auth, NET)
    r = client.post("/v1/jobs", headers=auth, json={"model_id": m["id"], "dataset_id": ds["id"],
                                                    "loss": "sparse_categorical_crossentropy",
                                                    "validation_split": 0.25})
    assert r.status_code == 202 and r.json()["warnings"] == []


def test_a_sweep_answers_its_trials_warnings_once_each(client, auth):
    ds, m = make_dataset(client, auth, CSV), make_model(client, auth, NET)
    body = {"model_id": m["id"], "dataset_id": ds["id"],
            "config": {"loss": "sparse_categorical_crossentropy", "optimizer": "adam", "validation_split": 0.25},
            "grid": {"optimizer.learning_rate": [0.01, 0.1]}}
    r = client.post("/v1/sweeps", headers=auth, json=body)
    assert r.status_code == 202, r.text
    assert len(r.json()["warnings"]) == 1 and "hold only 'high' (1 of 3 classes)" in r.json()["warnings"][0]
    assert client.get(f"/v1/sweeps/{r.json()['id']}", headers=auth).json()["warnings"] == []
    # a grid of splits: each trial's own warning
    r = client.post("/v1/sweeps", headers=auth, json={**body, "grid": {"validation_split": [0.25, 0.5]}})
    assert [w.split(" holds")[0] for w in r.json()["warnings"]][:2] == ["validation_split=0.25",
                                                                         "validation_split=0.5"]
    # stratified: none
    stratified = {**body, "config": {**body["config"], "validation_rows": "stratified"}}
    assert client.post("/v1/sweeps", headers=auth, json=stratified).json()["warnings"] == []
