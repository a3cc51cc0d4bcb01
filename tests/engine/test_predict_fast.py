"""The compiled inference path (Model.predict) against exact layer-by-layer inference (Model._infer).

predict folds standardization and batch normalization into the dense kernels, keeps biases as an extra kernel
row, and runs one row through preallocated buffers with in-place activations. All of that must change nothing
but float rounding:
in float64 the outputs agree to 1e-6 relative for every activation, with and without BN, on one row, one 1-D
row, a batch and a chunked batch.
"""
import threading

import numpy as np
import pytest

import engine
from engine.activations import NAMES

N_IN = 7


def _spec(act: str, bn: bool, out_act: str) -> dict:
    layers = [{"type": "dense", "units": 9, "activation": act}]
    if bn:
        layers.append({"type": "batch_normalization"})
    layers += [{"type": "dropout", "rate": 0.3},
               {"type": "dense", "units": 6, "activation": act}]
    if bn:
        layers.append({"type": "batch_normalization"})
    layers += [{"type": "activation", "activation": act},
               {"type": "gaussian_noise", "stddev": 0.5},
               {"type": "dense", "units": 4, "activation": out_act}]
    if bn:
        layers.append({"type": "batch_normalization"})           # an affine step as the last op
    return {"input_shape": [N_IN], "layers": layers}


def _model(spec: dict, dtype: str, seed: int = 3, logit_scale: float = 1.0):
    model = engine.Model(spec, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        weights.append(rng.normal(0.0, 0.6, w.shape))
    # BN's moving variance must be positive; make every BN non-trivial
    for layer_weights in _bn_slices(model):
        weights[layer_weights + 3] = rng.uniform(0.3, 2.0, weights[layer_weights + 3].shape)
    model.set_weights(weights)
    if logit_scale != 1.0:
        last = [layer for layer in model.layers if layer.type == "dense"][-1]
        last.params["kernel"][...] *= logit_scale
        last.params["bias"][...] *= logit_scale
        model._plan = None
    mean = rng.normal(0.0, 3.0, N_IN)
    std = rng.uniform(0.5, 4.0, N_IN)
    model.standardization = (mean.astype(dtype), std.astype(dtype))
    model._plan = None
    return model


def _bn_slices(model) -> list[int]:
    """Index in get_weights() of each BN's gamma."""
    out, k = [], 0
    for layer in model.layers:
        if layer.type == "batch_normalization":
            out.append(k)
        k += len(layer.weight_order())
    return out


def _rows(n: int, dtype: str, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 3.0, (n, N_IN)) + rng.normal(0.0, 3.0, N_IN)).astype(dtype)


def _exact(model, X):
    return model._infer(model._standardize(X))


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("act", NAMES)
def test_fast_path_equals_layer_by_layer_float64(act, bn):
    out_act = "softmax" if act == "softmax" else ("sigmoid" if act == "linear" else "softmax")
    model = _model(_spec(act, bn, out_act), "float64")
    X = _rows(33, "float64")
    exact = _exact(model, X)
    assert np.all(np.isfinite(exact))
    kw = {"rtol": 1e-6, "atol": 1e-12}
    np.testing.assert_allclose(model.predict(X), exact, **kw)                      # batch
    np.testing.assert_allclose(model.predict(X, batch_size=8), exact, **kw)        # chunked
    for i in (0, 5, 32):
        one = np.ascontiguousarray(X[i:i + 1])
        np.testing.assert_allclose(model.predict(one), exact[i:i + 1], **kw)       # the single-row path
        np.testing.assert_allclose(model.predict(X[i]), exact[i:i + 1], **kw)      # a 1-D row
    # and with a linear output, the raw last layer
    lin = _model(_spec(act, bn, "linear"), "float64")
    np.testing.assert_allclose(lin.predict(X[:1]), _exact(lin, X[:1]), **kw)


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("act", NAMES)
def test_fast_path_float32(act, bn):
    model = _model(_spec(act, bn, "softmax"), "float32")
    X = _rows(17, "float32")
    exact = _exact(model, X)
    one = model.predict(X[:1])
    assert one.dtype == np.float32 and one.shape == (1, exact.shape[1])
    # float32: folding standardization and BN into the kernels reorders roundings
    np.testing.assert_allclose(one, exact[:1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.predict(X), exact, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 40.0, 1e3, -1e3])
def test_single_row_softmax_every_logit_range(scale):
    """Moderate, large and very negative logits: no overflow, rows summing to 1."""
    spec = {"input_shape": [N_IN], "layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                                              {"type": "dense", "units": 5, "activation": "softmax"}]}
    model = _model(spec, "float64", logit_scale=scale)
    X = _rows(20, "float64")
    exact = _exact(model, X)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        rows = np.concatenate([model.predict(X[i:i + 1]) for i in range(20)])
    np.testing.assert_allclose(rows, exact, rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-12)


def test_single_row_result_is_owned_and_input_untouched():
    model = _model(_spec("relu", True, "softmax"), "float32")
    X = _rows(2, "float32")
    x = np.ascontiguousarray(X[:1])
    before = x.copy()
    a = model.predict(x)
    b = model.predict(X[1:2])
    assert np.array_equal(x, before)
    assert not np.shares_memory(a, b) and not np.array_equal(a, b)
    a_copy = a.copy()
    model.predict(X[1:2])
    assert np.array_equal(a, a_copy)


def test_identity_only_model_returns_a_copy():
    model = engine.Model({"input_shape": [3], "layers": [{"type": "dropout", "rate": 0.5}]}, seed=0)
    x = np.ones((1, 3), np.float32)
    out = model.predict(x)
    assert np.array_equal(out, x) and not np.shares_memory(out, x)


def test_weights_change_rebuilds_the_plan():
    model = _model(_spec("tanh", False, "softmax"), "float64")
    X = _rows(1, "float64")
    first = model.predict(X)
    weights = model.get_weights()
    model.set_weights([w * 0.5 for w in weights])
    np.testing.assert_allclose(model.predict(X), _exact(model, X), rtol=1e-6)
    assert not np.allclose(model.predict(X), first)


def test_concurrent_single_row_predictions():
    """Each thread gets its own buffers (a pool), so concurrent rows never mix."""
    model = _model(_spec("relu", True, "softmax"), "float32")
    X = _rows(64, "float32")
    expected = np.concatenate([model.predict(X[i:i + 1]) for i in range(64)])
    batch_expected = model.predict(X)
    errors = []

    def work(offset):
        for rep in range(200):
            i = (offset + rep) % 64
            if not np.array_equal(model.predict(X[i:i + 1]), expected[i:i + 1]):
                errors.append(i)
            if rep % 50 == 0 and not np.allclose(model.predict(X), batch_expected):
                errors.append(-1)

    threads = [threading.Thread(target=work, args=(k * 7,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    model._plan.pool.clear()      # every pooled buffer set taken: a fresh one is made
    assert np.array_equal(model.predict(X[:1]), expected[:1])


def test_served_model_single_row_matches_batch():
    spec = {"input_shape": [4, 5], "layers": [{"type": "flatten"},
                                              {"type": "dense", "units": 6, "activation": "relu"},
                                              {"type": "batch_normalization"},
                                              {"type": "dense", "units": 3, "activation": "softmax"}]}
    model = engine.build(spec, seed=1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4, 5)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    model.fit(X, y, loss="sparse_categorical_crossentropy", optimizer="adam", epochs=2, batch_size=8, metrics=[])
    served = engine.from_bytes(model.to_bytes())
    batch = served.predict(X)
    for i in range(5):
        np.testing.assert_allclose(served.predict(X[i:i + 1]), batch[i:i + 1], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(served.predict(X[i].reshape(1, 20)), batch[i:i + 1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(batch, served._infer(served._standardize(X)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plan_kernels_start_on_a_cache_line(dtype):
    """Single-row products stream whole kernels; one that starts mid cache line is measurably slower, so
    every kernel of the plan is placed on a 64-byte boundary, whatever the allocator hands out."""
    from engine.model import KERNEL_ALIGNMENT

    model = _model(_spec("relu", True, "softmax"), dtype)
    model.predict(_rows(1, dtype))
    kernels = [step[1] for step in model._plan.steps if step[1] is not None and step[1].ndim == 2]
    assert len(kernels) == 3
    for kernel in kernels:
        assert kernel.ctypes.data % KERNEL_ALIGNMENT == 0 and kernel.flags.c_contiguous
        assert kernel.dtype == np.dtype(dtype)
