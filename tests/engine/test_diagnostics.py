"""Activation diagnostics (``diagnostics: true``): inactive shares and dead units of the hidden layers."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.errors import ConfigError
from tests.engine.test_training import checkpoint_of_a_fit_stopped_after, same_weights, strip_seconds

RNG = np.random.default_rng(5)
X = RNG.standard_normal((120, 6))
Y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64)
NET = {"input_shape": [6], "layers": [
    {"type": "dense", "units": 10, "activation": "relu"},
    {"type": "dense", "units": 8, "activation": "tanh"},
    {"type": "dense", "units": 4},
    {"type": "activation", "activation": "sigmoid"},
    {"type": "dense", "units": 5, "activation": "leaky_relu"},
    {"type": "dense", "units": 2, "activation": "softmax"}]}
FIT = dict(loss="sparse_categorical_crossentropy", optimizer={"type": "adam", "learning_rate": 0.05}, epochs=3,
           batch_size=32, seed=2, diagnostics=True)


def reference_counts(weights_per_batch, X, batch_size):
    """The figures recomputed from the weights each batch saw, layer by layer in float64 (no shuffle,
    no standardization): {layer: (inactive pairs, pairs, units live on some row)} for dense, dense_1, activation."""
    inactive = {"dense": 0, "dense_1": 0, "activation": 0}
    pairs = dict.fromkeys(inactive, 0)
    live = {"dense": np.zeros(10, bool), "dense_1": np.zeros(8, bool), "activation": np.zeros(4, bool)}
    for b, ws in enumerate(weights_per_batch):
        h = X[b * batch_size:(b + 1) * batch_size]
        a0 = np.maximum(h @ ws[0] + ws[1], 0.0)
        a1 = np.tanh(a0 @ ws[2] + ws[3])
        a2 = 1.0 / (1.0 + np.exp(-(a1 @ ws[4] + ws[5])))
        for name, active in (("dense", a0 > 0), ("dense_1", np.abs(a1) < 0.99), ("activation", np.abs(a2 - 0.5) < 0.49)):
            inactive[name] += active.size - np.count_nonzero(active)
            pairs[name] += active.size
            live[name] |= active.any(axis=0)
    return {k: (inactive[k], pairs[k], live[k]) for k in inactive}


def test_the_counts_are_exact_against_a_float64_recomputation():
    model = engine.build(NET, seed=1, dtype="float64")
    seen = [model.get_weights()]          # the weights of batch b are those after batch b - 1's step

    def record(event):
        seen.append(model.get_weights())

    cfg = {**FIT, "shuffle": False, "standardize": False, "epochs": 1}
    row = model.fit(X, Y, batch_callbacks=[record], **cfg)[0]
    ref = reference_counts(seen[:-1], X, 32)
    assert set(row["activations"]) == {"dense", "dense_1", "activation"}   # not leaky_relu, not the output
    for name, (inactive, pairs, live) in ref.items():
        assert row["activations"][name]["inactive"] == inactive / pairs
        assert row["activations"][name]["dead_units"] == (live.size - live.sum()) / live.size
    assert 0 < row["activations"]["dense"]["inactive"] < 1


def test_relu_units_that_never_fire_are_dead_and_keep_their_weights():
    spec = {"input_shape": [6], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                           {"type": "dense", "units": 2, "activation": "softmax"}]}
    model = engine.build(spec, seed=3)
    kernel, bias, *rest = model.get_weights()
    bias[[1, 4, 6]] = -1e3                 # z < 0 on every (standardized) row: three dead units
    model.set_weights([kernel, bias, *rest])
    history = model.fit(X, Y, **{**FIT, "epochs": 4})
    for row in history:
        assert row["activations"]["dense"]["dead_units"] == 3 / 8
        assert row["activations"]["dense"]["inactive"] >= 3 / 8
    after = model.get_weights()
    np.testing.assert_array_equal(after[0][:, [1, 4, 6]], kernel[:, [1, 4, 6]])   # no gradient reached them
    assert not np.array_equal(after[0][:, 0], kernel[:, 0])


def test_large_weights_saturate_tanh():
    spec = {"input_shape": [6], "layers": [{"type": "dense", "units": 16, "activation": "tanh"},
                                           {"type": "dense", "units": 2, "activation": "softmax"}]}
    calm, wild = engine.build(spec, seed=4), engine.build(spec, seed=4)
    kernel, *rest = wild.get_weights()
    wild.set_weights([kernel * 200.0, *rest])
    sgd = {**FIT, "optimizer": {"type": "sgd", "learning_rate": 1e-4}, "epochs": 1}
    calm_row, wild_row = calm.fit(X, Y, **sgd)[0], wild.fit(X, Y, **sgd)[0]
    assert calm_row["activations"]["dense"]["inactive"] < 0.05
    assert wild_row["activations"]["dense"]["inactive"] > 0.9
    # the saturated layer's gradients vanish with it
    assert wild_row["grad_norms"]["dense"] < calm_row["grad_norms"]["dense"]


def test_off_by_default_and_it_changes_nothing_it_measures():
    cfg = {**FIT, "validation_split": 0.25, "optimizer": "adam", "augmentation": {"gaussian_noise": 0.1}}
    spec = {**NET, "layers": NET["layers"][:1] + [{"type": "dropout", "rate": 0.3}] + NET["layers"][1:]}
    on, off = engine.build(spec, seed=6), engine.build(spec, seed=6)
    h_on = on.fit(X, Y, **cfg)
    h_off = off.fit(X, Y, **{k: v for k, v in cfg.items() if k != "diagnostics"})
    assert all("activations" not in row for row in h_off)
    assert off.fit_config["diagnostics"] is False
    assert same_weights(on, off)
    assert strip_seconds([{k: v for k, v in r.items() if k != "activations"} for r in h_on]) == strip_seconds(h_off)


def test_a_network_with_nothing_to_watch_reports_an_empty_dict():
    spec = {"input_shape": [6], "layers": [{"type": "dense", "units": 4, "activation": "elu"},
                                           {"type": "dense", "units": 1, "activation": "relu"}]}
    row = engine.build(spec, seed=1).fit(X, X[:, :1], loss="mse", epochs=1, diagnostics=True)[0]
    assert row["activations"] == {}


def test_resume_reports_the_same_figures():
    cfg = {**FIT, "epochs": 4, "validation_split": 0.2}
    full = engine.build(NET, seed=7)
    history = full.fit(X, Y, **cfg)
    checkpoint = checkpoint_of_a_fit_stopped_after(2, NET, 7, X, Y, cfg)
    resumed, resumed_history = engine.resume(checkpoint, X, Y)
    assert strip_seconds(resumed_history) == strip_seconds(history)
    assert all("activations" in row for row in resumed_history)
    assert same_weights(full, resumed)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_diagnostics_must_be_a_boolean(value):
    if value is None:
        assert engine.normalize_fit_config({"loss": "mse", "diagnostics": None})["diagnostics"] is False
        return
    with pytest.raises(ConfigError) as err:
        engine.normalize_fit_config({"loss": "mse", "diagnostics": value})
    assert err.value.field == "diagnostics"
