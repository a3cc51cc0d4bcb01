"""Models: creation through the engine, errors naming the layer, limits, versions, export, cascade delete."""
from __future__ import annotations

import pytest

from tests.api.helpers import make_model

KERAS = {
    "module": "keras", "class_name": "Sequential", "registered_name": None,
    "config": {"name": "sequential", "trainable": True, "dtype": "float32", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
         "config": {"batch_shape": [None, 28, 28], "dtype": "float32", "sparse": False, "name": "input_layer"}},
        {"module": "keras.layers", "class_name": "Flatten", "registered_name": None,
         "config": {"name": "flatten", "trainable": True, "dtype": "float32", "data_format": "channels_last"}},
        {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
         "config": {"name": "dense", "trainable": True, "dtype": "float32", "units": 10, "activation": "softmax",
                    "use_bias": True,
                    "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                           "config": {"seed": None}, "registered_name": None},
                    "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {},
                                         "registered_name": None},
                    "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None,
                    "bias_constraint": None}},
    ]},
}


def test_create_fills_defaults_and_summary(client, auth):
    m = make_model(client, auth)
    assert m["input_shape"] == [2] and m["latest_version"] is None
    dense = m["layers"][0]
    assert dense["units"] == 8 and dense["use_bias"] is True and dense["kernel_initializer"]
    assert m["summary"]["total_params"] == 2 * 8 + 8 + 8 * 2 + 2
    assert [layer["params"] for layer in m["summary"]["layers"]] == [24, 18]
    got = client.get(f"/v1/models/{m['id']}", headers=auth).json()
    assert got == m


def test_seed_counts(client, auth):
    spec = {"input_shape": [784], "layers": [
        {"type": "dense", "units": 300}, {"type": "batch_normalization"}, {"type": "dense", "units": 100},
        {"type": "batch_normalization"}, {"type": "dense", "units": 10, "activation": "softmax"}]}
    s = make_model(client, auth, spec)["summary"]
    assert (s["total_params"], s["trainable_params"], s["non_trainable_params"]) == (268210, 267410, 800)


def test_keras_json(client, auth):
    r = client.post("/v1/models", headers=auth, json={"name": "k", "keras": KERAS})
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["input_shape"] == [28, 28] and m["summary"]["total_params"] == 784 * 10 + 10


@pytest.mark.parametrize(
    "layers,loc",
    [
        ([{"type": "dense", "units": 4}, {"type": "dense", "units": 0}], ["body", "layers", 1, "units"]),
        ([{"type": "dense", "units": 4}, {"type": "dropout", "rate": 1.5}], ["body", "layers", 1, "rate"]),
        ([{"type": "dense", "units": 4, "activation": "nope"}], ["body", "layers", 0, "activation"]),
        ([{"type": "conv2d"}], ["body", "layers", 0, "type"]),
        ([], ["body", "layers"]),
    ],
    ids=["units", "rate", "activation", "type", "empty"],
)
def test_impossible_spec_names_layer_and_field(client, auth, layers, loc):
    r = client.post("/v1/models", headers=auth, json={"name": "x", "input_shape": [3], "layers": layers})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == loc


def test_input_shape_that_does_not_fit(client, auth):
    r = client.post("/v1/models", headers=auth, json={"name": "x", "input_shape": [4, 4],
                                                      "layers": [{"type": "dense", "units": 2}]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"][:3] == ["body", "layers", 0]


def test_missing_form_is_422(client, auth):
    r = client.post("/v1/models", headers=auth, json={"name": "x"})
    assert r.status_code == 422


def test_params_over_limit(client, auth, app):
    old = app.state.settings.max_params
    app.state.settings.max_params = 100
    try:
        r = client.post("/v1/models", headers=auth, json={"name": "x", "input_shape": [100],
                                                          "layers": [{"type": "dense", "units": 100}]})
    finally:
        app.state.settings.max_params = old
    assert r.status_code == 422 and "max_params" in r.json()["detail"]


def test_list_versions_export_without_training(client, auth):
    ids = [make_model(client, auth, name=f"m{i}")["id"] for i in range(3)]
    page = client.get("/v1/models", headers=auth).json()
    assert page["total"] == 3 and [m["id"] for m in page["items"]] == ids[::-1]
    assert client.get(f"/v1/models/{ids[0]}/versions", headers=auth).json() == {"items": [], "total": 0}
    r = client.get(f"/v1/models/{ids[0]}/export?format=npz", headers=auth)
    assert r.status_code == 409
    assert client.get(f"/v1/models/{ids[0]}/export?format=onnx", headers=auth).status_code == 409
    assert client.get(f"/v1/models/{ids[0]}/export?format=pickle", headers=auth).status_code == 422
    r = client.post(f"/v1/models/{ids[0]}/predict", headers=auth, json={"inputs": [[1, 2]]})
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    assert client.delete(f"/v1/models/{ids[0]}", headers=auth).status_code == 204
    assert client.get(f"/v1/models/{ids[0]}", headers=auth).status_code == 404
