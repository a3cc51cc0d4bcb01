"""Finite differences in float64 against every backward: each activation, loss (fused and not),
regularizer, and layer, batch normalization in training and inference mode."""
import numpy as np
import pytest

import engine
from engine import activations
from engine.gradcheck import check_model, input_gradient_error, relative_error

TOL = 1e-6
RNG = np.random.default_rng(0)
X = RNG.standard_normal((7, 5))


def net(layers, input_shape=(5,), seed=1):
    return engine.build({"input_shape": list(input_shape), "layers": layers}, seed=seed, dtype="float64")


def assert_grads(model, X, y, loss, regularization=None, training=True):
    errors = check_model(model, X, y, loss, regularization, training)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("name", [a for a in activations.NAMES])
def test_activation_input_gradient(name):
    act = activations.get(name)
    x = RNG.standard_normal((6, 4)) * 2
    x[np.abs(x) < 1e-3] = 0.5            # keep away from the kinks of relu-like functions

    def forward(v):
        return act.forward(v.copy(), np.empty_like(v))

    def backward(g):
        z = x.copy()
        a = act.forward(z, np.empty_like(z))
        return act.backward(z, a, g)

    assert input_gradient_error(forward, backward, x) <= TOL


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "elu", "selu", "gelu", "silu",
                                  "softplus", "linear"])
def test_dense_activation_through_network(name):
    model = net([{"type": "dense", "units": 6, "activation": name},
                 {"type": "dense", "units": 3, "activation": name}])
    y = RNG.standard_normal((7, 3))
    assert_grads(model, X, y, "mean_squared_error")


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu",
                                  "silu", "softplus"])
def test_stable_for_huge_inputs(name):
    x = np.array([[-1e4, -50.0, 0.0, 50.0, 1e4]], dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is fine
        a = activations.get(name)(x)
        g = activations.get(name).backward(x, a, np.ones_like(a))
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(g))


def test_activation_values():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    s = 1 / (1 + np.exp(-x))
    assert np.allclose(activations.get("sigmoid")(x), s)
    assert np.allclose(activations.get("leaky_relu")(x), np.where(x >= 0, x, 0.01 * x))
    assert np.allclose(activations.get("elu")(x), np.where(x > 0, x, np.expm1(x)))
    assert np.allclose(activations.get("selu")(x), 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)))
    assert np.allclose(activations.get("softplus")(x), np.log1p(np.exp(x)))
    assert np.allclose(activations.get("silu")(x), x * s)
    import math
    assert np.allclose(activations.get("gelu")(x), [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x],
                       rtol=1e-14, atol=1e-15)
    assert np.allclose(activations.erf(np.linspace(-7, 7, 57)), [math.erf(v) for v in np.linspace(-7, 7, 57)],
                       rtol=1e-14, atol=1e-16)
    sm = activations.get("softmax")(np.array([[1.0, 2.0, 3.0]]))
    assert np.allclose(sm, np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())


def _probabilities(k, n=7, seed=0):
    p = np.random.default_rng(seed).random((n, k)) + 0.1
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("loss,out_act,target", [
    ("categorical_crossentropy", "softmax", "onehot"),          # fused
    ("categorical_crossentropy", "sigmoid", "onehot"),          # through normalisation, not fused
    ({"type": "categorical_crossentropy", "label_smoothing": 0.1}, "softmax", "onehot"),
    ("sparse_categorical_crossentropy", "softmax", "labels"),   # fused
    ("sparse_categorical_crossentropy", "sigmoid", "labels"),
    ("binary_crossentropy", "sigmoid", "binary"),               # fused, several independent labels
    ("binary_crossentropy", "softmax", "binary"),               # not fused
    ({"type": "binary_crossentropy", "label_smoothing": 0.2}, "sigmoid", "binary"),
    ("mean_squared_error", "linear", "real"),
    ("mean_absolute_error", "linear", "real"),
    ("mean_squared_logarithmic_error", "softplus", "positive"),
    ("huber", "linear", "real"),
    ({"type": "huber", "delta": 0.3}, "linear", "real"),
])
def test_loss_gradients(loss, out_act, target):
    model = net([{"type": "dense", "units": 6, "activation": "tanh"},
                 {"type": "dense", "units": 3, "activation": out_act}])
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 7)
    y = {"onehot": np.eye(3)[labels], "labels": labels, "binary": rng.integers(0, 2, (7, 3)).astype(float),
         "real": rng.standard_normal((7, 3)) * 2, "positive": rng.random((7, 3)) * 3}[target]
    assert_grads(model, X, y, loss)


def test_loss_values_match_formulas():
    from engine import losses
    p = _probabilities(4)
    y = np.eye(4)[[0, 1, 2, 3, 0, 1, 2]]
    g = np.empty_like(p)
    assert np.isclose(losses.get("categorical_crossentropy").value_and_grad(p, y, g, False),
                      -np.mean(np.sum(y * np.log(p), axis=1)))
    assert np.isclose(losses.get("sparse_categorical_crossentropy").value_and_grad(p, y.argmax(1), g, False),
                      -np.mean(np.log(p[np.arange(7), y.argmax(1)])))
    yb = (p > 0.25).astype(float)
    assert np.isclose(losses.get("binary_crossentropy").value_and_grad(p, yb, g, False),
                      -np.mean(yb * np.log(p) + (1 - yb) * np.log(1 - p)))
    r = np.random.default_rng(1).standard_normal(p.shape)
    assert np.isclose(losses.get("huber").value_and_grad(p, r, g, False),
                      np.mean(np.where(np.abs(p - r) <= 1, 0.5 * (p - r) ** 2, np.abs(p - r) - 0.5)))
    # Keras clips probabilities to [1e-7, 1 - 1e-7]: a zero probability gives -log(1e-7), not inf
    p0 = np.array([[0.0, 1.0]])
    assert np.isclose(losses.get("categorical_crossentropy").value_and_grad(p0, np.array([[1.0, 0.0]]),
                                                                           np.empty_like(p0), False),
                      -np.log(1e-7))


def test_target_vector_against_one_unit_is_not_broadcast():
    model = net([{"type": "dense", "units": 1}])
    y = RNG.standard_normal(7)
    loss, _ = model.loss_and_gradients(X, y, "mean_squared_error")
    pred = model.predict(X)[:, 0]
    assert np.isclose(loss, np.mean((pred - y) ** 2))


@pytest.mark.parametrize("kernel_regularizer,regularization", [
    ({"l1": 0.01}, None), ({"l2": 0.02}, None), ({"l1": 0.01, "l2": 0.03}, None),
    (None, {"type": "l2", "lambda": 0.5}), (None, {"type": "l1", "lambda": 0.5}),
    ({"l2": 0.01}, {"type": "l2", "lambda": 0.1}),
])
def test_regularizer_gradients(kernel_regularizer, regularization):
    model = net([{"type": "dense", "units": 6, "activation": "tanh", "kernel_regularizer": kernel_regularizer},
                 {"type": "dense", "units": 2}])
    y = RNG.standard_normal((7, 2))
    assert_grads(model, X, y, "mean_squared_error", regularization)


def test_regularization_penalty_values():
    model = net([{"type": "dense", "units": 6, "kernel_regularizer": {"l1": 0.01, "l2": 0.02}},
                 {"type": "dense", "units": 2}])
    y = RNG.standard_normal((7, 2))
    base, _ = model.loss_and_gradients(X, y, "mean_squared_error")
    W1, _, W2, _ = model.get_weights()
    with_layer, _ = model.loss_and_gradients(X, y, "mean_squared_error")
    # per-layer l1/l2 is part of the spec: loss with no global term already includes it
    layer_penalty = 0.01 * np.abs(W1).sum() + 0.02 * (W1 ** 2).sum()
    plain = net([{"type": "dense", "units": 6}, {"type": "dense", "units": 2}])
    plain.set_weights(model.get_weights())
    assert np.isclose(with_layer - plain.loss_and_gradients(X, y, "mean_squared_error")[0], layer_penalty)
    # the seed's global form: λ/(2m)·‖W‖² with m = number of kernel entries
    lam, m = 0.3, W1.size + W2.size
    glob, _ = plain.loss_and_gradients(X, y, "mean_squared_error", {"type": "l2", "lambda": lam})
    assert np.isclose(glob - plain.loss_and_gradients(X, y, "mean_squared_error")[0],
                      lam / (2 * m) * ((W1 ** 2).sum() + (W2 ** 2).sum()))
    glob1, _ = plain.loss_and_gradients(X, y, "mean_squared_error", {"type": "l1", "lambda": lam})
    assert np.isclose(glob1 - plain.loss_and_gradients(X, y, "mean_squared_error")[0],
                      lam / (2 * m) * (np.abs(W1).sum() + np.abs(W2).sum()))
    assert base == with_layer


@pytest.mark.parametrize("training", [True, False])
def test_batch_normalization_gradients(training):
    model = net([{"type": "dense", "units": 6, "activation": "tanh"},
                 {"type": "batch_normalization", "momentum": 0.9, "epsilon": 1e-3},
                 {"type": "dense", "units": 3, "activation": "softmax"}])
    w = model.get_weights()
    rng = np.random.default_rng(5)
    w[2] = rng.random(6) + 0.5            # gamma
    w[3] = rng.standard_normal(6)         # beta
    w[4] = rng.standard_normal(6) * 0.1   # moving mean
    w[5] = rng.random(6) + 0.5            # moving variance
    model.set_weights(w)
    y = np.eye(3)[rng.integers(0, 3, 7)]
    assert_grads(model, X, y, "categorical_crossentropy", training=training)


def test_batch_normalization_input_gradient():
    model = net([{"type": "batch_normalization"}])
    bn = model.layers[0]
    bn.params["gamma"][...] = [0.5, 1.5, 2.0, 1.0, 0.7]
    x = RNG.standard_normal((9, 5)) * 3 + 1

    def forward(v):
        return bn.forward(v, True, None).copy()

    def backward(g):
        bn.forward(x, True, None)
        return bn.backward(g, True).copy()

    assert input_gradient_error(forward, backward, x) <= TOL


def test_dropout_noise_flatten_activation_layers():
    model = net([{"type": "gaussian_noise", "stddev": 0.3},
                 {"type": "flatten"},
                 {"type": "dense", "units": 8, "activation": "relu"},
                 {"type": "dropout", "rate": 0.4},
                 {"type": "dense", "units": 4},
                 {"type": "activation", "activation": "elu"},
                 {"type": "dense", "units": 3},
                 {"type": "activation", "activation": "softmax"}], input_shape=(2, 3))
    x = RNG.standard_normal((6, 2, 3))
    y = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    assert_grads(model, x, y, "categorical_crossentropy")
    assert model.layers[-1].fused       # a standalone softmax layer is fused with the crossentropy too


def test_relative_error_helper():
    assert relative_error(np.ones(3), np.ones(3)) == 0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0
