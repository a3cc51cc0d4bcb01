"""POST /v1/models/{id}/evaluate: a trained version's loss and metrics on a held-out dataset, checked against the
same numbers computed here from its predictions; labels, label columns and feature columns matched to the version
by value and name; every mismatch a 4xx that says what differs."""
from __future__ import annotations

import numpy as np
import pytest

from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

RNG = np.random.default_rng(5)
CENTERS = {"low": (0.0, 0.0), "mid": (3.0, -2.0), "high": (6.0, -4.0)}


def blobs(n: int, labels=("low", "mid", "high"), swap: bool = False) -> str:
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        a, b = np.array(CENTERS[label]) + RNG.normal(scale=0.8, size=2)
        rows.append(f"{b:.4f},{a:.4f},{label}" if swap else f"{a:.4f},{b:.4f},{label}")
    return ("b,a,y\n" if swap else "a,b,y\n") + "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def trained(client, make_key, session_factory):
    auth = {"Authorization": f"Bearer {make_key('eval')}"}
    train = make_dataset(client, auth, blobs(150))
    m = make_model(client, auth, {"input_shape": [2], "layers": [
        {"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 3, "activation": "softmax"}]})
    job = make_job(client, auth, m["id"], train["id"], loss="sparse_categorical_crossentropy", epochs=30,
                   batch_size=16, metrics=["accuracy"], optimizer={"type": "adam", "learning_rate": 0.05})
    assert run_job_in_process(session_factory, job["id"]) == 1
    return auth, m["id"]


def _expected(client, auth, model_id, csv: str) -> dict:
    """Loss (Keras's sparse crossentropy: probabilities clipped to [1e-7, 1 - 1e-7]) and accuracy from predict."""
    lines = csv.strip().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    inputs = [{"a": float(r["a"]), "b": float(r["b"])} for r in rows]
    out = client.post(f"/v1/models/{model_id}/predict", headers=auth, json={"inputs": inputs}).json()
    p = np.array(out["probabilities"])
    truth = np.array([out["classes"].index(r["y"]) for r in rows])
    picked = np.clip(p[np.arange(len(rows)), truth], 1e-7, 1 - 1e-7)
    return {"loss": float(np.mean(-np.log(picked))), "accuracy": float(np.mean(p.argmax(1) == truth)),
            "labels": ([r["y"] for r in rows], out["predictions"])}


@pytest.mark.parametrize("labels,swap", [(("low", "mid", "high"), False), (("high", "mid"), False),
                                         (("mid", "low", "high"), True)],
                         ids=["all-classes", "two-of-three", "columns-swapped"])
def test_held_out_rows_give_the_loss_and_accuracy_of_the_predictions(client, trained, labels, swap):
    auth, model_id = trained
    csv = blobs(60, labels, swap)
    test = make_dataset(client, auth, csv)
    r = client.post(f"/v1/models/{model_id}/evaluate", headers=auth, json={"dataset_id": test["id"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_id"] == model_id and out["version"] == 1 and out["dataset_id"] == test["id"]
    assert out["n_samples"] == 60 and out["loss"] == "sparse_categorical_crossentropy"
    assert set(out["metrics"]) == {"loss", "accuracy"}
    want = _expected(client, auth, model_id, csv)
    assert out["metrics"]["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
    assert out["metrics"]["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert out["metrics"]["accuracy"] > 0.8
    # the confusion matrix and per-class scores, against scikit-learn's on the predict endpoint's answers
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    conf = out["confusion"]
    classes = conf["classes"]
    assert classes == ["high", "low", "mid"] and conf["matrices"] is None
    true, predicted = want["labels"]
    k = range(len(classes))
    t = [classes.index(v) for v in true]
    p = [classes.index(v) for v in predicted]
    assert conf["matrix"] == confusion_matrix(t, p, labels=k).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(t, p, labels=k, zero_division=0)
    assert [c["label"] for c in conf["per_class"]] == classes
    assert [c["support"] for c in conf["per_class"]] == support.tolist()
    assert [c["precision"] for c in conf["per_class"]] == pytest.approx(precision.tolist())
    assert [c["recall"] for c in conf["per_class"]] == pytest.approx(recall.tolist())
    assert [c["f1"] for c in conf["per_class"]] == pytest.approx(f1.tolist())


def test_loss_and_metrics_can_be_chosen(client, trained):
    auth, model_id = trained
    test = make_dataset(client, auth, blobs(30))
    r = client.post(f"/v1/models/{model_id}/evaluate", headers=auth, json={
        "dataset_id": test["id"], "version": 1, "loss": "categorical_crossentropy", "metrics": ["acc", "mse"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["loss"] == "categorical_crossentropy" and set(out["metrics"]) == {"loss", "accuracy", "mse"}
    default = client.post(f"/v1/models/{model_id}/evaluate", headers=auth, json={"dataset_id": test["id"]}).json()
    assert out["metrics"]["loss"] == pytest.approx(default["metrics"]["loss"], rel=1e-5)   # the same crossentropy
    assert out["metrics"]["accuracy"] == default["metrics"]["accuracy"]


def test_mismatches_are_4xx_saying_what_differs(client, trained, other_auth, make_key):
    auth, model_id = trained
    url = f"/v1/models/{model_id}/evaluate"
    unknown = make_dataset(client, auth, blobs(30).replace("mid", "emu"))
    r = client.post(url, headers=auth, json={"dataset_id": unknown["id"]})
    assert r.status_code == 422 and "'emu'" in r.json()["detail"]
    wide = make_dataset(client, auth, "a,b,c,y\n" + "\n".join(f"{i},{i},{i},{'xy'[i % 2]}" for i in range(20)))
    r = client.post(url, headers=auth, json={"dataset_id": wide["id"]})
    assert r.status_code == 422 and "takes 2 values" in r.json()["detail"]
    numbers = make_dataset(client, auth, "a,b,y\n" + "\n".join(f"{i},{i},{i * 0.37}" for i in range(20)))
    r = client.post(url, headers=auth, json={"dataset_id": numbers["id"]})
    assert r.status_code == 422 and "task=classification" in r.json()["detail"]
    test = make_dataset(client, auth, blobs(30))
    r = client.post(url, headers=auth, json={"dataset_id": test["id"], "metrics": ["f1"]})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "metrics", 0]
    r = client.post(url, headers=auth, json={"dataset_id": test["id"], "loss": "hinge", "metrics": []})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "loss"]
    # the trained job's accuracy has no meaning under a regression loss: said, not guessed
    r = client.post(url, headers=auth, json={"dataset_id": test["id"], "loss": "mean_squared_error"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "metrics", 0]
    r = client.post(url, headers=auth, json={"dataset_id": test["id"], "loss": "mean_squared_error", "metrics": []})
    assert r.status_code == 200 and set(r.json()["metrics"]) == {"loss"}
    assert client.post(url, headers=auth, json={"dataset_id": test["id"], "version": 7}).status_code == 404
    assert client.post(url, headers=other_auth, json={"dataset_id": test["id"]}).status_code == 404
    theirs = make_dataset(client, other_auth, blobs(30))
    assert client.post(url, headers=auth, json={"dataset_id": theirs["id"]}).status_code == 404
    untrained = make_model(client, auth)
    r = client.post(f"/v1/models/{untrained['id']}/evaluate", headers=auth, json={"dataset_id": test["id"]})
    assert r.status_code == 409


def test_regression_targets_are_matched_by_name(client, auth, session_factory):
    def table(n: int, swap: bool) -> tuple[str, np.ndarray, np.ndarray]:
        X = RNG.normal(size=(n, 2))
        Y = np.stack([X[:, 0] * 2 + 1, X[:, 1] - X[:, 0]], axis=1)
        head, cols = ("a,b,v,u", (X[:, 0], X[:, 1], Y[:, 1], Y[:, 0])) if swap else \
            ("a,b,u,v", (X[:, 0], X[:, 1], Y[:, 0], Y[:, 1]))
        return head + "\n" + "\n".join(",".join(f"{c[i]:.5f}" for c in cols) for i in range(n)) + "\n", X, Y

    csv, _, _ = table(80, False)
    train = make_dataset(client, auth, csv, target="u,v")
    m = make_model(client, auth, {"input_shape": [2], "layers": [{"type": "dense", "units": 2}]})
    job = make_job(client, auth, m["id"], train["id"], loss="mean_squared_error", metrics=["mae"], epochs=40,
                   optimizer={"type": "adam", "learning_rate": 0.1})
    assert run_job_in_process(session_factory, job["id"]) == 1
    results: list[dict] = []
    for swap in (False, True):
        csv, X, Y = table(30, swap)
        # swapped: the targets are stored as (v, u), and the evaluation must put them back in (u, v) order
        ds = make_dataset(client, auth, csv, target="v,u" if swap else "u,v")
        r = client.post(f"/v1/models/{m['id']}/evaluate", headers=auth, json={"dataset_id": ds["id"]})
        assert r.status_code == 200, r.text
        pred = np.array(client.post(f"/v1/models/{m['id']}/predict", headers=auth,
                                    json={"inputs": np.round(X, 5).tolist()}).json()["predictions"])
        Yr = np.round(Y, 5).astype(np.float32)
        results.append(r.json()["metrics"])
        assert r.json()["metrics"]["mae"] == pytest.approx(float(np.mean(np.abs(pred - Yr))), rel=1e-3, abs=1e-6)
        assert r.json()["metrics"]["loss"] == pytest.approx(float(np.mean((pred - Yr) ** 2)), rel=1e-3, abs=1e-8)
    assert results[0] != results[1]          # different rows, each checked against its own predictions
    assert r.json()["confusion"] is None


def test_multilabel_gets_a_two_by_two_matrix_per_label(client, auth, session_factory):
    from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support

    def table(n: int) -> str:
        X = RNG.normal(size=(n, 2))
        return "a,b,p,q\n" + "\n".join(f"{a:.4f},{b:.4f},{int(a > 0)},{int(a + b > 0.5)}" for a, b in X) + "\n"

    train = make_dataset(client, auth, table(120), target="p,q")
    assert train["task"] == "multilabel"
    m = make_model(client, auth, {"input_shape": [2], "layers": [{"type": "dense", "units": 2,
                                                                  "activation": "sigmoid"}]})
    job = make_job(client, auth, m["id"], train["id"], loss="binary_crossentropy", epochs=20,
                   optimizer={"type": "adam", "learning_rate": 0.1})
    assert run_job_in_process(session_factory, job["id"]) == 1
    csv = table(50)
    held = make_dataset(client, auth, csv, target="p,q")
    conf = client.post(f"/v1/models/{m['id']}/evaluate", headers=auth, json={"dataset_id": held["id"]}).json()[
        "confusion"]
    rows = [line.split(",") for line in csv.strip().splitlines()[1:]]
    true = np.array([[int(r[2]), int(r[3])] for r in rows])
    out = client.post(f"/v1/models/{m['id']}/predict", headers=auth,
                      json={"inputs": [[float(r[0]), float(r[1])] for r in rows]}).json()
    predicted = np.array([[int(label in labels) for label in ("p", "q")] for labels in out["predictions"]])
    assert conf["classes"] == ["p", "q"] and conf["matrix"] is None
    assert conf["matrices"] == multilabel_confusion_matrix(true, predicted).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, zero_division=0)
    assert [c["support"] for c in conf["per_class"]] == support.tolist()
    assert [c["precision"] for c in conf["per_class"]] == pytest.approx(precision.tolist())
    assert [c["recall"] for c in conf["per_class"]] == pytest.approx(recall.tolist())
    assert [c["f1"] for c in conf["per_class"]] == pytest.approx(f1.tolist())


def test_one_sigmoid_unit_is_decided_as_predict_decides_it():
    from service.serving import map_outputs
    from service.services.evaluation import confusion

    out = np.array([[0.2], [0.7], [0.5], [0.9]])
    report = confusion("classification", ["no", "yes"], out, np.array([0, 1, 1, 0]))
    assert map_outputs(out, "classification", ["no", "yes"])["predictions"] == ["no", "yes", "no", "yes"]
    assert report["matrix"] == [[1, 1], [1, 1]]
    assert [c["precision"] for c in report["per_class"]] == [0.5, 0.5]
