"""Keras round trip: exported models load into Keras 3 (numpy backend by default) and predict like the engine.

Keras's numpy backend imports jax in recent Keras releases (keras/src/backend/numpy/math.py imports the jax
fft helpers); where jax is missing and torch is installed, the test falls back to Keras's torch backend
rather than skipping. KERAS_BACKEND set by the caller is respected.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import zipfile

import numpy as np
import pytest

import engine
from service.exports.keras_export import export_keras

from .conftest import ADAM, CASE_IDS

os.environ.setdefault("KERAS_BACKEND", "numpy")


def _import_keras():
    """``pytest.importorskip("keras")``, with the torch fallback described above."""
    if importlib.util.find_spec("keras") is None:
        return pytest.importorskip("keras")      # skips: not installed
    try:
        import keras
        return keras
    except ModuleNotFoundError as exc:
        if exc.name != "jax" or os.environ.get("KERAS_BACKEND") != "numpy":
            return pytest.importorskip("keras")
    if importlib.util.find_spec("torch") is None:
        pytest.skip("Keras's numpy backend needs jax here (pip install jax)", allow_module_level=True)
    for name in [n for n in sys.modules if n == "keras" or n.startswith("keras.")]:
        del sys.modules[name]
    os.environ["KERAS_BACKEND"] = "torch"
    return pytest.importorskip("keras", reason="Keras's numpy backend needs jax, and its torch backend failed")


keras = _import_keras()

RTOL = ATOL = 1e-5
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:keras"),
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning:keras")]


def load_export(content: bytes):
    """What the archive's README tells users to do."""
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        model = keras.models.model_from_json(z.read("model.json").decode("utf-8"))
        with np.load(z.open("model.weights.npz"), allow_pickle=False) as w:
            model.set_weights([w[f"arr_{i}"] for i in range(len(w.files))])
    return model


def _predict(kmodel, X) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(kmodel(X, training=False)))


@pytest.mark.parametrize("case", CASE_IDS)
def test_keras_predictions_match(export_cases, case):
    model_bytes, X = export_cases[case]
    model = engine.from_bytes(model_bytes)
    kmodel = load_export(export_keras(model_bytes))
    expected = model.predict(X)
    X_in = X.astype(model.dtype)
    np.testing.assert_allclose(np.asarray(kmodel.predict(X_in, verbose=0)), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_predict(kmodel, X_in[:1]), expected[:1], rtol=RTOL, atol=ATOL)
    # same weights, same order, bit for bit; Keras sees the engine's parameter count
    for kw, ew in zip(kmodel.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(kw, ew)
    assert kmodel.count_params() == model.count_params()
    assert tuple(kmodel.input_shape[1:]) == model.input_shape and kmodel.output_shape[-1] == model.output_units


def test_model_from_keras_json_round_trip():
    """The issue's round trip: a model written by Keras, built from its JSON by the engine, trained there,
    exported, and loaded back into Keras."""
    L = keras.layers
    source = keras.Sequential([
        keras.Input((4, 3)), L.Flatten(), L.Dense(10, activation="gelu", kernel_initializer="he_normal"),
        L.BatchNormalization(momentum=0.6), L.LeakyReLU(negative_slope=0.15), L.Dropout(0.25),
        L.Dense(8, activation="selu", kernel_regularizer=keras.regularizers.L2(1e-3)),
        L.GaussianNoise(0.1), L.Dense(3), L.Activation("softmax")])
    model = engine.build({"keras": source.to_json()}, seed=21)
    rng = np.random.default_rng(22)
    X = (rng.normal(size=(160, 4, 3)) * 7 + 4).astype(np.float32)
    y = (X[:, 0, 0] > 4).astype(np.int64) + (X[:, 3, 2] > 4)
    model.fit(X, y, loss="sparse_categorical_crossentropy", optimizer=ADAM, epochs=4, batch_size=16, seed=23)
    trained = model.to_bytes()

    kmodel = load_export(export_keras(trained))
    assert [type(layer).__name__ for layer in kmodel.layers] == [
        "Normalization", "Flatten", "Dense", "BatchNormalization", "LeakyReLU", "Dropout", "Dense",
        "GaussianNoise", "Dense", "Activation"]
    assert kmodel.layers[4].negative_slope == pytest.approx(0.15)
    np.testing.assert_allclose(kmodel.predict(X, verbose=0), engine.from_bytes(trained).predict(X),
                               rtol=RTOL, atol=ATOL)


def test_archive_contents_and_loader_script(export_cases, tmp_path):
    model_bytes, X = export_cases["flatten_leaky_gelu_selu_softmax"]
    content = export_keras(model_bytes)
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        assert set(z.namelist()) == {"model.json", "model.weights.npz", "weights.json", "README.md", "load_model.py"}
        z.extractall(tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["class_name"] == "Sequential"
    first = doc["config"]["layers"][0]
    assert first["class_name"] == "InputLayer" and first["config"]["batch_shape"] == [None, 3, 4]
    manifest = json.loads((tmp_path / "weights.json").read_text())
    assert [w["variable"] for w in manifest["weights"][:6]] == ["kernel", "bias", "gamma", "beta", "moving_mean",
                                                                "moving_variance"]
    # the bundled loader works on the unzipped folder
    sys.path.insert(0, str(tmp_path))
    try:
        import load_model as loader
        kmodel = loader.load(str(tmp_path))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("load_model", None)
    np.testing.assert_allclose(kmodel.predict(X, verbose=0), engine.from_bytes(model_bytes).predict(X),
                               rtol=RTOL, atol=ATOL)
