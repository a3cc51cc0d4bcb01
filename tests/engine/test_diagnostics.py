"""Training diagnostics (``diagnostics: true``): each layer's weight change over the epoch, and the inactive
shares and dead units of the hidden layers."""
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
        watched = (("dense", a0 > 0), ("dense_1", np.abs(a1) < 0.99), ("activation", np.abs(a2 - 0.5) < 0.49))
        for name, active in watched:
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
    added = {"activations", "weight_changes"}
    assert all(not added & set(row) for row in h_off) and all(added <= set(row) for row in h_on)
    assert off.fit_config["diagnostics"] is False
    assert same_weights(on, off)
    assert strip_seconds([{k: v for k, v in r.items() if k not in added} for r in h_on]) == strip_seconds(h_off)


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


def test_weight_changes_are_each_layers_relative_change_over_the_epoch():
    model = engine.build(NET, seed=8)
    start = [model.get_weights()]

    def record(event):
        start.append(model.get_weights())

    history = model.fit(X, Y, callbacks=[record], **FIT)
    # get_weights order: each dense layer's kernel and bias (no batch normalization here)
    dense = [layer.name for layer in model.layers if layer.params]
    for row, before, after in zip(history, start, start[1:]):
        assert list(row["weight_changes"]) == dense
        for k, name in enumerate(dense):
            w0 = np.concatenate([before[2 * k].ravel(), before[2 * k + 1].ravel()]).astype(np.float64)
            w1 = np.concatenate([after[2 * k].ravel(), after[2 * k + 1].ravel()]).astype(np.float64)
            assert row["weight_changes"][name] == pytest.approx(np.linalg.norm(w1 - w0) / np.linalg.norm(w0),
                                                                rel=1e-5)


def test_a_layer_that_starts_at_zero_has_no_ratio_in_its_first_epoch():
    spec = {"input_shape": [6], "layers": [
        {"type": "dense", "units": 4, "activation": "tanh"},
        {"type": "dense", "units": 2, "activation": "softmax", "kernel_initializer": "zeros"}]}
    history = engine.build(spec, seed=1).fit(X, Y, **{**FIT, "epochs": 2})
    assert history[0]["weight_changes"]["dense_1"] is None
    assert history[1]["weight_changes"]["dense_1"] > 0 and history[0]["weight_changes"]["dense"] > 0


def test_vanishing_gradients_leave_the_lower_layers_unchanged():
    """The course's picture, measured: eight sigmoid layers with small initial weights train only their top
    layers (the first layer's weights move a billionth of their norm in an epoch), eight relu layers with He
    initialization move every layer."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    changes = {}
    for act, init in (("sigmoid", "random_normal"), ("relu", "he_normal")):
        layers = [{"type": "dense", "units": 32, "activation": act, "kernel_initializer": init} for _ in range(8)]
        spec = {"input_shape": [64], "layers": layers + [{"type": "dense", "units": 10, "activation": "softmax"}]}
        row = engine.build(spec, seed=1).fit(
            digits.data, digits.target, loss="sparse_categorical_crossentropy", epochs=3, batch_size=32, seed=1,
            optimizer={"type": "sgd", "learning_rate": 0.1}, diagnostics=True)[-1]
        changes[act] = row["weight_changes"]
    assert changes["sigmoid"]["dense"] < 1e-6 * changes["sigmoid"]["dense_7"]
    assert all(changes["sigmoid"][f"dense_{k}"] < changes["sigmoid"][f"dense_{k + 1}"] for k in range(1, 7))
    assert changes["relu"]["dense"] > 0.1 * changes["relu"]["dense_7"]


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_diagnostics_must_be_a_boolean(value):
    if value is None:
        assert engine.normalize_fit_config({"loss": "mse", "diagnostics": None})["diagnostics"] is False
        return
    with pytest.raises(ConfigError) as err:
        engine.normalize_fit_config({"loss": "mse", "diagnostics": value})
    assert err.value.field == "diagnostics"
