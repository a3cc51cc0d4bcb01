"""Predictions: labels as the dataset's values, probabilities, dict inputs, row errors, regression, multilabel,
the LRU cache, npz export."""
from __future__ import annotations

import io

import numpy as np
import pytest

from service.serving import ModelCache, map_outputs
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

BLOBS = "a,b,y\n" + "\n".join(
    f"{x:.3f},{y:.3f},{lab}"
    for i in range(90)
    for x, y, lab in [((i % 3) * 4 + (i * 0.37) % 1, (i % 3) * -3 + (i * 0.71) % 1, ["low", "mid", "high"][i % 3])]
) + "\n"


@pytest.fixture(scope="module")
def trained(client, make_key, session_factory):
    auth = {"Authorization": f"Bearer {make_key('pred')}"}
    ds = make_dataset(client, auth, BLOBS)
    m = make_model(client, auth, {"input_shape": [2], "layers": [
        {"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 3, "activation": "softmax"}]})
    job = make_job(client, auth, m["id"], ds["id"], epochs=60, batch_size=16,
                   optimizer={"type": "adam", "learning_rate": 0.05})
    assert run_job_in_process(session_factory, job["id"]) == 1
    return auth, m, ds


def test_classification_labels_and_probabilities(client, trained):
    auth, m, ds = trained
    assert ds["classes"] == ["high", "low", "mid"]
    rows = [[0.5, 0.5], [4.5, -2.5], [8.5, -5.5]]
    r = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": rows})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_id"] == m["id"] and out["version"] == 1 and out["task"] == "classification"
    assert out["classes"] == ["high", "low", "mid"]
    assert out["predictions"] == ["low", "mid", "high"]
    for p in out["probabilities"]:
        assert len(p) == 3 and abs(sum(p) - 1) < 1e-6
    by_name = client.post(f"/v1/models/{m['id']}/predict", headers=auth,
                          json={"inputs": [{"b": 0.5, "a": 0.5}], "version": 1}).json()
    assert by_name["predictions"] == ["low"]
    assert by_name["probabilities"][0] == pytest.approx(out["probabilities"][0])


@pytest.mark.parametrize(
    "inputs,needle,row",
    [
        ([[1, 2], [1, 2, 3]], "row 2", 1),
        ([[1, 2], [1, "x"]], "row 2", 1),
        ([[1, 2], [1, None]], "row 2", 1),
        ([[1, 2, 3]], "row 1", 0),
        ([{"a": 1}], "missing", 0),
        ([{"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}], "unknown", 1),
        ([], "empty", None),
    ],
    ids=["ragged", "string", "null", "width", "missing-name", "extra-name", "empty"],
)
def test_bad_rows_are_422_naming_the_row(client, trained, inputs, needle, row):
    auth, m, _ = trained
    r = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": inputs})
    assert r.status_code == 422, r.text
    body = r.json()
    assert needle in body["detail"]
    if row is not None:
        assert body["errors"][0]["loc"] == ["body", "inputs", row]


def test_nan_is_422(client, trained):
    auth, m, _ = trained
    raw = b'{"inputs": [[1, 2], [NaN, 1]]}'
    r = client.post(f"/v1/models/{m['id']}/predict", headers={**auth, "content-type": "application/json"}, content=raw)
    assert r.status_code == 422 and "row 2" in r.json()["detail"]


def test_unknown_version_404_and_rows_limit(client, trained, app):
    auth, m, _ = trained
    r = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": [[1, 2]], "version": 9})
    assert r.status_code == 404
    old = app.state.settings.max_predict_rows
    app.state.settings.max_predict_rows = 2
    try:
        r = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": [[1, 2]] * 3})
    finally:
        app.state.settings.max_predict_rows = old
    assert r.status_code == 413 and "max_predict_rows" in r.json()["detail"]


def test_export_npz_loads_without_pickle(client, trained):
    auth, m, _ = trained
    r = client.get(f"/v1/models/{m['id']}/export?format=npz&version=1", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    with np.load(io.BytesIO(r.content), allow_pickle=False) as npz:
        assert len(npz.files) > 0
    assert client.get(f"/v1/models/{m['id']}/export?format=npz&version=2", headers=auth).status_code == 404


def test_regression_and_multilabel(client, auth, session_factory):
    rows = "\n".join(f"{i / 10:.2f},{(i % 7) / 7:.3f},{2 * i / 10 + 1:.3f}" for i in range(60))
    ds = make_dataset(client, auth, "a,b,y\n" + rows)
    assert ds["task"] == "regression"
    m = make_model(client, auth, {"input_shape": [2], "layers": [{"type": "dense", "units": 1}]})
    job = make_job(client, auth, m["id"], ds["id"], loss="mean_squared_error", epochs=3)
    run_job_in_process(session_factory, job["id"])
    out = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": [[1, 0.5], [2, 0.1]]}).json()
    assert out["task"] == "regression" and len(out["predictions"]) == 2
    assert all(isinstance(v, float) for v in out["predictions"]) and "probabilities" not in out or out["probabilities"] is None

    rows = "\n".join(f"{i % 2},{(i // 2) % 2},{i % 2},{(i // 2) % 2}" for i in range(40))
    ds = make_dataset(client, auth, "a,b,p,q\n" + rows, target="p,q")
    assert ds["task"] == "multilabel"
    m = make_model(client, auth, {"input_shape": [2], "layers": [{"type": "dense", "units": 2, "activation": "sigmoid"}]})
    bad = client.post("/v1/jobs", headers=auth, json={"model_id": m["id"], "dataset_id": ds["id"],
                                                       "loss": "categorical_crossentropy"})
    assert bad.status_code == 422
    job = make_job(client, auth, m["id"], ds["id"], loss="binary_crossentropy", epochs=2)
    run_job_in_process(session_factory, job["id"])
    out = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": [[1, 0]]}).json()
    assert out["task"] == "multilabel" and out["classes"] == ["p", "q"]
    assert isinstance(out["predictions"][0], list) and len(out["probabilities"][0]) == 2


def test_binary_sigmoid_output_maps_to_two_classes():
    out = map_outputs(np.array([[0.2], [0.9]]), "classification", ["no", "yes"])
    assert out["predictions"] == ["no", "yes"]
    assert out["probabilities"][0] == pytest.approx([0.8, 0.2])


def test_cache_is_bounded_by_bytes():
    cache = ModelCache(max_bytes=100)
    loads = []

    def loader(name, size):
        def load():
            loads.append(name)
            return name, size
        return load

    assert cache.get(("m", 1), loader("a", 60)) == "a"
    assert cache.get(("m", 1), loader("a", 60)) == "a"
    cache.get(("m", 2), loader("b", 60))  # evicts ("m", 1)
    assert len(cache) == 1 and cache.bytes == 60
    cache.get(("m", 1), loader("a", 60))
    assert loads == ["a", "b", "a"]
    cache.get(("n", 1), loader("huge", 1000))  # too big to keep
    assert cache.bytes == 60
    cache.evict_model("m")
    assert len(cache) == 0
    assert cache._loading == {}  # per-key load locks live only while a load runs


def test_cache_forgets_a_failed_load():
    cache = ModelCache(max_bytes=100)

    def broken():
        raise ValueError("stored archive is invalid")

    with pytest.raises(ValueError):
        cache.get(("m", 1), broken)
    assert cache._loading == {} and len(cache) == 0
    assert cache.get(("m", 1), lambda: ("ok", 10)) == "ok"


def test_digits_loop_over_http(client, make_key, session_factory):
    """Upload digits as CSV with string labels, train in-process, predict held-out rows over HTTP."""
    from sklearn.datasets import load_digits

    auth = {"Authorization": f"Bearer {make_key('digits')}"}
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    train, test = slice(0, 1500), slice(1500, None)
    header = ",".join(f"p{i}" for i in range(64)) + ",digit"
    lines = [",".join(str(int(v)) for v in row) + "," + names[label] for row, label in zip(X[train], y[train])]
    ds = make_dataset(client, auth, header + "\n" + "\n".join(lines) + "\n", target="digit", input_shape="8,8")
    assert ds["classes"] == sorted(names) and ds["input_shape"] == [8, 8]
    m = make_model(client, auth, {"input_shape": [8, 8], "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 64, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"}]})
    job = make_job(client, auth, m["id"], ds["id"], loss="sparse_categorical_crossentropy", epochs=25,
                   optimizer={"type": "adam", "learning_rate": 0.003}, metrics=["accuracy"], validation_split=0.1)
    assert run_job_in_process(session_factory, job["id"]) == 1
    r = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": X[test].tolist()})
    assert r.status_code == 200, r.text
    out = r.json()
    truth = [names[label] for label in y[test]]
    accuracy = np.mean([p == t for p, t in zip(out["predictions"], truth)])
    assert accuracy >= 0.95, accuracy
    assert np.allclose(np.sum(out["probabilities"], axis=1), 1.0)


def test_export_onnx_and_keras_over_http_match_predict(client, trained):
    """The route serves the exports of service/exports; ONNX output equals predict's probabilities."""
    import zipfile

    auth, m, _ = trained
    rows = [[0.2, -0.1], [4.5, -3.2], [8.1, -6.0]]
    probs = np.array(client.post(f"/v1/models/{m['id']}/predict", headers=auth,
                                 json={"inputs": rows}).json()["probabilities"])
    r = client.get(f"/v1/models/{m['id']}/export?format=keras", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].endswith('-v1-keras.zip"')
    assert {"model.json", "model.weights.npz"} <= set(zipfile.ZipFile(io.BytesIO(r.content)).namelist())
    r = client.get(f"/v1/models/{m['id']}/export?format=onnx&version=1", headers=auth)
    assert r.status_code == 200 and r.headers["content-disposition"].endswith('-v1.onnx"')
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = session.run(None, {name: np.asarray(rows, dtype=np.float32)})[0]
    np.testing.assert_allclose(out, probs, rtol=1e-5, atol=1e-6)
