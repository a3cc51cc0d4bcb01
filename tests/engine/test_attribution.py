"""Integrated gradients (Model.attributions): the path gradients against finite differences in float64, exact
attributions of a linear model, completeness, and the baseline and target rules."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import attribution

RNG = np.random.default_rng(31)
X = RNG.standard_normal((80, 5)) * np.array([1.0, 3.0, 0.5, 2.0, 1.0]) + np.array([0.0, 5.0, -1.0, 2.0, 0.0])
Y = (X[:, 0] - 0.3 * X[:, 1] + X[:, 2] * X[:, 3] > 0).astype(np.int64) + (X[:, 4] > 1)
SMOOTH = {"input_shape": [5], "layers": [
    {"type": "dense", "units": 8, "activation": "tanh"},
    {"type": "batch_normalization"},
    {"type": "dropout", "rate": 0.3},
    {"type": "dense", "units": 6, "activation": "sigmoid"},
    {"type": "dense", "units": 3, "activation": "softmax"}]}


def trained(spec, dtype="float64", **fit):
    model = engine.build(spec, seed=2, dtype=dtype)
    cfg = dict(loss="sparse_categorical_crossentropy", optimizer={"type": "adam", "learning_rate": 0.05},
               epochs=5, batch_size=16, seed=2)
    model.fit(X, Y, **{**cfg, **fit})
    return model


def output(model, rows, k):
    return model.predict(rows)[:, k]


def test_path_gradients_match_central_differences_in_float64():
    model = trained(SMOOTH)
    rows, base = X[:4], X[10]
    # one step: the gradient at the path's midpoint, in standardized units; finite differences in raw units
    result = model.attributions(rows, target=1, baseline=base, steps=1)
    mean, std = model.standardization
    mid = (rows + base) / 2
    h = 1e-6
    for r in range(4):
        for i in range(5):
            e = np.zeros(5)
            e[i] = h
            grad_raw = (output(model, mid[r:r + 1] + e, 1) - output(model, mid[r:r + 1] - e, 1))[0] / (2 * h)
            expected = (rows[r, i] - base[i]) * grad_raw
            assert result["attributions"][r, i] == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_a_linear_model_gets_exactly_weight_times_difference():
    spec = {"input_shape": [5], "layers": [{"type": "dense", "units": 2}]}
    model = engine.build(spec, seed=1, dtype="float64")
    model.fit(X, np.stack([X[:, 0] + X[:, 1], X[:, 2]], axis=1), loss="mse", epochs=2, seed=1)
    kernel = model.get_weights()[0]
    mean, std = model.standardization
    for steps in (1, 7):
        result = model.attributions(X[:3], target=1, steps=steps)
        np.testing.assert_allclose(result["attributions"], (X[:3] - mean) / std * kernel[:, 1], rtol=1e-12)
        np.testing.assert_array_equal(result["target"], [1, 1, 1])


def test_attributions_add_up_to_the_output_minus_the_baseline_output():
    model = trained(SMOOTH)
    result = model.attributions(X[:20], steps=256)
    gap = result["outputs"] - result["baseline_outputs"]
    np.testing.assert_allclose(result["attributions"].sum(axis=1), gap, atol=1e-5)
    np.testing.assert_array_equal(result["target"], np.argmax(model.predict(X[:20]), axis=1))
    np.testing.assert_allclose(result["outputs"], model.predict(X[:20]).max(axis=1), rtol=1e-12)
    # the default baseline is the training rows' mean, and its own output is the model's there
    np.testing.assert_allclose(result["baseline"], model.standardization[0])
    np.testing.assert_allclose(result["baseline_outputs"],
                               model.predict(model.standardization[0][None, :])[0, result["target"]], rtol=1e-12)
    # float32, as served: the same to float32 rounding; fewer steps, a larger gap
    f32 = engine.from_bytes(trained(SMOOTH, dtype="float32").to_bytes()).attributions(X[:20], steps=64)
    assert np.abs(f32["attributions"].sum(axis=1) - (f32["outputs"] - f32["baseline_outputs"])).max() < 1e-3


def test_relu_networks_and_image_shaped_inputs_are_explained_too():
    spec = {"input_shape": [5], "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                           {"type": "dense", "units": 3, "activation": "softmax"}]}
    model = trained(spec, standardize=False)
    result = model.attributions(X[:5], steps=512)
    np.testing.assert_allclose(result["baseline"], np.zeros(5))           # no standardization: zeros
    np.testing.assert_allclose(result["attributions"].sum(axis=1), result["outputs"] - result["baseline_outputs"],
                               atol=2e-3)          # kinks: the midpoint rule converges more slowly
    image = {"input_shape": [2, 3], "layers": [{"type": "flatten"}, {"type": "dense", "units": 3,
                                                                       "activation": "softmax"}]}
    net = engine.build(image, seed=1, dtype="float64")
    rows = RNG.standard_normal((4, 2, 3))
    out = net.attributions(rows, target=0, steps=32)
    assert out["attributions"].shape == (4, 6)


def test_fit_state_is_left_as_it_was():
    model = trained(SMOOTH, dtype="float32")
    before = model.predict(X[:8])
    model.attributions(X[:8], steps=8)
    np.testing.assert_array_equal(model.predict(X[:8]), before)
    assert model.layers[-1].fused       # the loss's fused softmax is restored for the next fit
    model.fit(X, Y, loss="sparse_categorical_crossentropy", epochs=1, seed=2)


@pytest.mark.parametrize("kwargs,message", [({"steps": 0}, "steps"), ({"target": 3}, "target"),
                                            ({"baseline": [0.0, 1.0]}, "baseline")])
def test_bad_arguments_say_which(kwargs, message):
    with pytest.raises(ValueError, match=message):
        trained(SMOOTH).attributions(X[:2], **kwargs)


def test_points_per_pass_bound_the_work_arrays(monkeypatch):
    model = trained(SMOOTH)
    whole = model.attributions(X[:6], steps=10)
    monkeypatch.setattr(attribution, "POINTS_PER_PASS", 25)       # two rows a pass
    np.testing.assert_allclose(model.attributions(X[:6], steps=10)["attributions"], whole["attributions"],
                               rtol=1e-12)


def _held_arrays(model) -> list[str]:
    """Each batch-sized array a layer still holds: its work arrays and what forward kept for backward."""
    held = [f"{layer.name}._work[{key}]" for layer in model.layers for key in layer._work]
    held += [f"{layer.name}.{name}" for layer in model.layers for name in layer.BATCH_STATE
             if isinstance(getattr(layer, name, None), np.ndarray)]
    return held


def test_a_served_model_keeps_no_arrays_after_explaining(monkeypatch):
    """Attributions run on the copy that serves predict: afterwards no layer holds a pass's arrays (a 4,096-point
    pass through wide layers would otherwise stay in memory), while they run ``explaining`` says so, and the
    next call, predict and a fit all work as before."""
    wide = {"input_shape": [5], "layers": [{"type": "dense", "units": 256, "activation": "relu"},
                                           {"type": "batch_normalization"}, {"type": "dropout", "rate": 0.2},
                                           {"type": "activation", "activation": "tanh"},
                                           {"type": "dense", "units": 3, "activation": "softmax"}]}
    model = engine.from_bytes(trained(wide, dtype="float32").to_bytes())
    before = model.predict(X[:8])
    seen = []
    real = attribution._path_gradients

    def watching(m, *args):
        seen.append(m.explaining)
        out = real(m, *args)
        seen.append(bool(_held_arrays(m)))       # the pass's arrays exist until the call ends
        return out

    monkeypatch.setattr(attribution, "_path_gradients", watching)
    first = model.attributions(X[:64], steps=64)
    assert seen == [True, True] and not model.explaining
    assert _held_arrays(model) == []
    np.testing.assert_array_equal(model.attributions(X[:64], steps=64)["attributions"], first["attributions"])
    np.testing.assert_array_equal(model.predict(X[:8]), before)
    model.fit(X, Y, loss="sparse_categorical_crossentropy", epochs=1, seed=2)
    assert _held_arrays(model)          # training allocates its arrays again


def test_predictions_run_beside_an_explanation_on_the_same_model():
    """The served copy answers predict while attributions run on it: both give what they give alone."""
    import threading

    model = engine.from_bytes(trained(SMOOTH, dtype="float32").to_bytes())
    rows = X[:40]
    alone_rows = [model.predict(rows[i:i + 1]) for i in range(8)]
    alone_batch = model.predict(rows)
    alone_ig = model.attributions(rows, steps=128)["attributions"]
    errors, done = [], threading.Event()

    def predicting():
        try:
            while not done.is_set():
                for i in range(8):
                    np.testing.assert_array_equal(model.predict(rows[i:i + 1]), alone_rows[i])
                np.testing.assert_array_equal(model.predict(rows), alone_batch)
        except Exception as exc:        # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=predicting) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(10):
            np.testing.assert_array_equal(model.attributions(rows, steps=128)["attributions"], alone_ig)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert errors == []
