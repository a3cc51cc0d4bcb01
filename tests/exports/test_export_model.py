"""export_model dispatch, the npz export, and the Keras JSON's structure (none of which needs Keras or ONNX)."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import engine
from service.exports import FORMATS, export_model
from service.exports.keras_export import keras_config


def test_unknown_format_is_a_value_error_naming_it(export_cases):
    model_bytes = export_cases["float64_softmax_layer"][0]
    with pytest.raises(ValueError, match="'pickle'"):
        export_model(model_bytes, "pickle")
    assert FORMATS == ("npz", "keras", "onnx")


def test_undecodable_model_bytes_are_a_value_error():
    with pytest.raises(ValueError):
        export_model(b"not a model", "npz")
    with pytest.raises(ValueError):
        export_model(b"not a model", "keras")


def test_npz_is_the_stored_pickle_free_archive(export_cases):
    model_bytes, X = export_cases["flatten_leaky_gelu_selu_softmax"]
    content, media_type, suffix = export_model(model_bytes, "NPZ")
    assert (media_type, suffix) == ("application/octet-stream", ".npz") and content == model_bytes
    with np.load(io.BytesIO(content), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert all(a.dtype != object for a in arrays.values())
    header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    assert header["spec"]["input_shape"] == [3, 4] and header["standardized"] is True
    model = engine.from_bytes(model_bytes)
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_array_equal(arrays[f"w_{i}"], w)
    np.testing.assert_array_equal(arrays["std_mean"], model.standardization[0])


def test_keras_archive_layout(export_cases):
    model_bytes = export_cases["bn_activation_relu_tanh_elu_sigmoid"][0]
    content, media_type, suffix = export_model(model_bytes, "keras")
    assert (media_type, suffix) == ("application/zip", "-keras.zip")
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        doc = json.loads(z.read("model.json"))
        with np.load(io.BytesIO(z.read("model.weights.npz")), allow_pickle=False) as w:
            weights = [w[f"arr_{i}"] for i in range(len(w.files))]
        readme = z.read("README.md").decode()
    assert "model_from_json" in readme and "set_weights" in readme
    layers = doc["config"]["layers"]
    assert [layer["class_name"] for layer in layers] == [
        "InputLayer", "Normalization", "Dense", "BatchNormalization", "Activation", "Dense", "Dropout", "Dense",
        "Dense"]
    assert all(set(layer) >= {"module", "class_name", "config", "registered_name"} for layer in layers)
    assert layers[0]["config"]["batch_shape"] == [None, 6]
    model = engine.from_bytes(model_bytes)
    mean, std = model.standardization
    np.testing.assert_allclose(layers[1]["config"]["mean"], mean)
    np.testing.assert_allclose(np.sqrt(layers[1]["config"]["variance"]), std, rtol=1e-12)
    assert layers[2]["config"]["use_bias"] is False and layers[5]["config"]["activation"] == "tanh"
    for a, b in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_leaky_relu_and_elu_alphas_are_exact_layers(export_cases):
    model = engine.from_bytes(export_cases["flatten_leaky_gelu_selu_softmax"][0])
    layers = keras_config(model)["config"]["layers"]
    by_class = {layer["class_name"]: layer["config"] for layer in layers}
    assert by_class["LeakyReLU"]["negative_slope"] == 0.07
    assert by_class["ELU"]["alpha"] == 0.5
    assert by_class["Normalization"]["axis"] == [1, 2]          # per-feature over the 3x4 input
    acts = [layer["config"]["activation"] for layer in layers if layer["class_name"] == "Dense"]
    assert acts == ["linear", "gelu", "selu", "softmax"]
    unstd = engine.from_bytes(export_cases["regression_silu_softplus_unstandardized"][0])
    layers = keras_config(unstd)["config"]["layers"]
    assert "Normalization" not in [layer["class_name"] for layer in layers]
    assert [layer["config"]["activation"] for layer in layers if layer["class_name"] == "Dense"] == [
        "silu", "silu", "softplus", "linear"]
    assert layers[-2]["class_name"] == "LeakyReLU" and layers[-2]["config"]["negative_slope"] == 0.01


def test_engine_reads_its_own_keras_export(export_cases):
    """Without standardization the exported JSON is one the engine's Keras importer accepts: rebuilding from it
    and setting the exported weights predicts the same."""
    model_bytes, X = export_cases["regression_silu_softplus_unstandardized"]
    model = engine.from_bytes(model_bytes)
    with zipfile.ZipFile(io.BytesIO(export_model(model_bytes, "keras")[0])) as z:
        rebuilt = engine.build({"keras": z.read("model.json").decode()}, seed=0)
        with np.load(io.BytesIO(z.read("model.weights.npz")), allow_pickle=False) as w:
            rebuilt.set_weights([w[f"arr_{i}"] for i in range(len(w.files))])
    np.testing.assert_allclose(rebuilt.predict(X), model.predict(X), rtol=1e-6, atol=1e-6)
