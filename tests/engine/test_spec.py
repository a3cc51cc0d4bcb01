"""Specs: parameter counts, defaults, Keras 3 JSON, errors naming the layer and field."""
import json
from pathlib import Path

import numpy as np
import pytest

import engine

FIXTURES = Path(__file__).parent / "fixtures"


def dense(units, **kw):
    return {"type": "dense", "units": units, **kw}


def test_seed_parameter_counts():
    # the seed's 3-4-2 network: 12 + 8 weights and 6 biases
    assert engine.build({"input_shape": [3], "layers": [dense(4), dense(2)]}).summary()["total_params"] == 26
    # 3-4-4-1: 32 weights and 9 biases
    assert engine.build({"input_shape": [3], "layers": [dense(4), dense(4), dense(1)]}).count_params() == 41


def test_batch_normalization_parameter_counts():
    spec = {"input_shape": [784], "layers": [
        dense(300, activation="relu"), {"type": "batch_normalization"},
        dense(100, activation="relu"), {"type": "batch_normalization"},
        dense(10, activation="softmax")]}
    model = engine.build(spec)
    s = model.summary()
    assert (s["total_params"], s["trainable_params"], s["non_trainable_params"]) == (268_210, 267_410, 800)
    assert sum(w.size for w in model.get_weights()) == s["total_params"]     # the arrays it holds
    assert engine.summarize(spec) == s                                        # counted without building


@pytest.mark.parametrize("fixture", ["keras3_seed_example_dtypepolicy.json", "keras3_seed_example_dtypestring.json"])
def test_keras_json_seed_example(fixture):
    keras = json.loads((FIXTURES / fixture).read_text())
    model = engine.build({"keras": keras}, seed=0)
    s = model.summary()
    assert (s["total_params"], s["trainable_params"], s["non_trainable_params"]) == (271_346, 268_978, 2_368)
    assert sum(w.size for w in model.get_weights()) == s["total_params"]
    assert engine.summarize({"keras": keras}) == s
    spec = engine.normalize_spec({"keras": json.dumps(keras)})   # the JSON text works too
    assert spec["input_shape"] == [28, 28]
    assert [l["name"] for l in spec["layers"]] == ["flatten", "batch_normalization", "dense",
                                                  "batch_normalization_1", "dense_1", "batch_normalization_2",
                                                  "dropout", "dense_2"]
    assert spec["layers"][4]["kernel_initializer"] == {"type": "he_normal", "seed": None}
    assert spec["layers"][4]["kernel_regularizer"] == {"l1": 0.0, "l2": 0.001}
    assert spec["layers"][7]["activation"] == "softmax"
    assert spec["layers"][6]["rate"] == 0.2
    # a 28x28 image row goes straight in, flat or not
    x = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    assert np.allclose(model.predict(x), model.predict(x.reshape(3, 784)))
    assert np.allclose(model.predict(x).sum(axis=1), 1, atol=1e-5)


def test_keras_json_errors():
    keras = json.loads((FIXTURES / "keras3_seed_example_dtypestring.json").read_text())
    keras["config"]["layers"][3]["class_name"] = "Conv2D"
    with pytest.raises(engine.SpecError) as e:
        engine.normalize_spec({"keras": keras})
    assert e.value.layer_index == 2 and e.value.field == "class_name"
    with pytest.raises(engine.SpecError):
        engine.normalize_spec({"keras": {"class_name": "Functional", "config": {}}})


def test_keras_layer_variants():
    keras = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4]}},
        {"class_name": "Dense", "config": {"name": "d", "units": 3, "activation": "leaky_relu",
                                           "kernel_initializer": {"class_name": "VarianceScaling", "config": {
                                               "scale": 2.0, "mode": "fan_in", "distribution": "truncated_normal",
                                               "seed": 5}}}},
        {"class_name": "LeakyReLU", "config": {"name": "lr", "negative_slope": 0.3}},
        {"class_name": "GaussianNoise", "config": {"name": "g", "stddev": 0.1}},
        {"class_name": "Activation", "config": {"name": "a", "activation": "sigmoid"}},
    ]}}
    spec = engine.normalize_spec({"keras": keras})
    d, lr, g, a = spec["layers"]
    assert d["alpha"] == 0.2          # keras.activations.leaky_relu's default slope
    assert d["kernel_initializer"] == {"type": "he_normal", "seed": 5}
    assert lr == {"type": "activation", "name": "lr", "activation": "leaky_relu", "alpha": 0.3}
    assert g["stddev"] == 0.1 and a["activation"] == "sigmoid"


def test_defaults_filled_in():
    spec = engine.normalize_spec({"input_shape": [8], "layers": [
        dense(4, activation="leaky_relu"), {"type": "batch_normalization"}, {"type": "dropout", "rate": 0.5},
        dense(2, kernel_initializer="random_normal")]})
    d0, bn, dr, d1 = spec["layers"]
    assert d0 == {"type": "dense", "name": "dense", "units": 4, "activation": "leaky_relu", "alpha": 0.01,
                  "use_bias": True, "kernel_initializer": {"type": "glorot_uniform", "seed": None},
                  "bias_initializer": {"type": "zeros", "seed": None}, "kernel_regularizer": None}
    assert bn == {"type": "batch_normalization", "name": "batch_normalization", "momentum": 0.99, "epsilon": 0.001}
    assert d1["name"] == "dense_1" and d1["activation"] == "linear"
    assert d1["kernel_initializer"] == {"type": "random_normal", "mean": 0.0, "stddev": 0.05, "seed": None}
    assert engine.normalize_spec(spec) == spec           # idempotent
    json.dumps(spec)


@pytest.mark.parametrize("spec,index,field", [
    ({"input_shape": [4], "layers": [dense(0)]}, 0, "units"),
    ({"input_shape": [4], "layers": [dense(3), {"type": "conv2d"}]}, 1, "type"),
    ({"input_shape": [4], "layers": [dense(3, activation="relux")]}, 0, "activation"),
    ({"input_shape": [4], "layers": [dense(3), {"type": "dropout", "rate": 1.0}]}, 1, "rate"),
    ({"input_shape": [4], "layers": [dense(3), {"type": "dropout", "rate": -0.1}]}, 1, "rate"),
    ({"input_shape": [4], "layers": [dense(3, kernel_initializer="xavier")]}, 0, "kernel_initializer"),
    ({"input_shape": [4], "layers": [dense(3, kernel_regularizer={"l3": 1})]}, 0, "kernel_regularizer.l3"),
    ({"input_shape": [4], "layers": [dense(3, bogus=1)]}, 0, "bogus"),
    ({"input_shape": [28, 28], "layers": [dense(3)]}, 0, "type"),           # needs a flatten first
    ({"input_shape": [4], "layers": [dense(3, name="x"), dense(2, name="x")]}, 1, "name"),
    ({"input_shape": [0], "layers": [dense(3)]}, None, "input_shape"),
    ({"input_shape": [4], "layers": []}, None, "layers"),
    ({"layers": [dense(3)]}, None, "input_shape"),
    ({"input_shape": [4], "layers": [dense(3, activation="relu", alpha=0.1)]}, 0, "alpha"),
])
def test_spec_errors_name_layer_and_field(spec, index, field):
    with pytest.raises(engine.SpecError) as e:
        engine.build(spec)
    assert e.value.layer_index == index and e.value.field == field
    assert field in str(e.value)
    if index is not None:
        assert f"layers[{index}]" in str(e.value)


def test_get_set_weights_order():
    model = engine.build({"input_shape": [3], "layers": [dense(4), {"type": "batch_normalization"}, dense(2)]})
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(3, 4), (4,), (4,), (4,), (4,), (4,), (4, 2), (2,)]
    new = [np.full(s, i, dtype=np.float32) for i, s in enumerate(shapes)]
    model.set_weights(new)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), new))
    # trainable views share the flat buffer; moving statistics are kept apart
    assert model.params.size == 12 + 4 + 4 + 4 + 8 + 2
    with pytest.raises(ValueError):
        model.set_weights(new[:-1])
