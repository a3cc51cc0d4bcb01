"""Against PyTorch: same weights give the same outputs, losses and gradients; the same BN statistics.

PyTorch's Linear stores W as (out, in): the engine's (in, out) kernel is transposed on the way over.
BatchNorm1d's momentum is 1 - Keras's, and it stores the *unbiased* batch variance in running_var.
"""
import numpy as np
import pytest

import engine

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
F = torch.nn.functional

RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 5))


def to_torch(model):
    """Leaf tensors (requires_grad) for each trainable variable, in get_weights() order of trainables."""
    tensors = []
    for layer in model.layers:
        for name, _, _ in layer.variables():
            tensors.append(torch.tensor(layer.params[name].copy(), dtype=torch.float64, requires_grad=True))
    return tensors


def torch_forward(model, tensors, x, training=True):
    h = torch.tensor(x, dtype=torch.float64)
    it = iter(tensors)
    for layer in model.layers:
        cfg = layer.config
        if layer.type == "dense":
            W = next(it)
            h = h @ W
            if cfg["use_bias"]:
                h = h + next(it)
            h = ACT[cfg["activation"]](h, cfg.get("alpha"))
        elif layer.type == "batch_normalization":
            gamma, beta = next(it), next(it)
            h = F.batch_norm(h, None, None, gamma, beta, training=True, eps=cfg["epsilon"])
        elif layer.type == "activation":
            h = ACT[cfg["activation"]](h, cfg.get("alpha"))
        elif layer.type == "flatten":
            h = h.reshape(h.shape[0], -1)
    return h


ACT = {
    "linear": lambda h, a: h, "relu": lambda h, a: torch.relu(h), "sigmoid": lambda h, a: torch.sigmoid(h),
    "tanh": lambda h, a: torch.tanh(h), "softmax": lambda h, a: torch.softmax(h, dim=-1),
    "leaky_relu": lambda h, a: F.leaky_relu(h, a), "elu": lambda h, a: F.elu(h, a), "selu": lambda h, a: F.selu(h),
    "gelu": lambda h, a: F.gelu(h), "silu": lambda h, a: F.silu(h), "swish": lambda h, a: F.silu(h),
    "softplus": lambda h, a: F.softplus(h),
}


def compare(spec, y, engine_loss, torch_loss, regularization=None, torch_penalty=None):
    model = engine.build(spec, seed=3, dtype="float64")
    loss, grads = model.loss_and_gradients(X, y, engine_loss, regularization)
    tensors = to_torch(model)
    out = torch_forward(model, tensors, X)
    t_loss = torch_loss(out, torch.tensor(y))
    if torch_penalty is not None:
        t_loss = t_loss + torch_penalty(tensors)
    t_loss.backward()
    assert np.isclose(loss, t_loss.item(), rtol=1e-12, atol=1e-14)
    for g, t in zip(grads, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-12)
    # inference outputs (no BN in these nets, so training and inference forward agree)
    if not any(l.type == "batch_normalization" for l in model.layers):
        np.testing.assert_allclose(model.predict(X), out.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_softmax_crossentropy_net():
    spec = {"input_shape": [5], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                           {"type": "dense", "units": 6, "activation": "tanh"},
                                           {"type": "dense", "units": 3, "activation": "softmax"}]}
    labels = RNG.integers(0, 3, 16)
    onehot = np.eye(3)[labels]
    compare(spec, onehot, "categorical_crossentropy", lambda p, y: -(y * torch.log(p)).sum(-1).mean())
    compare(spec, labels, "sparse_categorical_crossentropy",
            lambda p, y: F.nll_loss(torch.log(p), y.long()))


def test_sigmoid_multilabel_binary_crossentropy_with_l2():
    spec = {"input_shape": [5], "layers": [
        {"type": "dense", "units": 8, "activation": "leaky_relu", "kernel_regularizer": {"l2": 0.01}},
        {"type": "dense", "units": 4, "activation": "sigmoid"}]}
    y = RNG.integers(0, 2, (16, 4)).astype(float)
    m = 5 * 8 + 8 * 4
    compare(spec, y, "binary_crossentropy", lambda p, t: F.binary_cross_entropy(p, t),
            regularization={"type": "l2", "lambda": 0.1},
            torch_penalty=lambda ts: 0.01 * (ts[0] ** 2).sum() + 0.1 / (2 * m) * ((ts[0] ** 2).sum() + (ts[2] ** 2).sum()))


@pytest.mark.parametrize("act", ["elu", "selu", "gelu", "silu", "softplus", "sigmoid"])
def test_activations_regression(act):
    spec = {"input_shape": [5], "layers": [{"type": "dense", "units": 7, "activation": act},
                                           {"type": "dense", "units": 2}]}
    y = RNG.standard_normal((16, 2))
    compare(spec, y, "mean_squared_error", lambda p, t: F.mse_loss(p, t))
    compare(spec, y, "mean_absolute_error", lambda p, t: F.l1_loss(p, t))
    compare(spec, y, {"type": "huber", "delta": 0.5}, lambda p, t: F.huber_loss(p, t, delta=0.5))


def test_batch_normalization_forward_gradients_and_moving_statistics():
    spec = {"input_shape": [5], "layers": [{"type": "dense", "units": 6, "activation": "relu"},
                                           {"type": "batch_normalization", "momentum": 0.9, "epsilon": 1e-3},
                                           {"type": "dense", "units": 3, "activation": "softmax"}]}
    y = np.eye(3)[RNG.integers(0, 3, 16)]
    compare(spec, y, "categorical_crossentropy", lambda p, t: -(t * torch.log(p)).sum(-1).mean())

    model = engine.build(spec, seed=3, dtype="float64")
    bn = torch.nn.BatchNorm1d(6, eps=1e-3, momentum=0.1, dtype=torch.float64)   # torch momentum = 1 - Keras's
    W, b = (torch.tensor(a) for a in model.get_weights()[:2])
    keras_var = np.ones(6)
    for step in range(4):
        xb = RNG.standard_normal((16, 5)) * (step + 1)
        model._forward(xb, True, None)
        h = torch.relu(torch.tensor(xb) @ W + b)
        bn.train()
        bn(h)
        # Keras keeps the biased batch variance: rebuild it from torch's unbiased one
        keras_var = 0.9 * keras_var + 0.1 * h.var(dim=0, unbiased=False).numpy()
    mm, mv = model.get_weights()[4:6]
    np.testing.assert_allclose(mm, bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(mv, keras_var, rtol=1e-12)
    assert not np.allclose(mv, bn.running_var.numpy())       # torch's unbiased variance differs
    # inference uses the moving statistics, exactly as torch's eval mode
    bn.eval()
    bn.weight.data[...] = torch.tensor(model.get_weights()[2])
    bn.bias.data[...] = torch.tensor(model.get_weights()[3])
    bn.running_var[...] = torch.tensor(mv)
    h = torch.relu(torch.tensor(X) @ W + b)
    ref = torch.softmax(bn(h) @ torch.tensor(model.get_weights()[6]) + torch.tensor(model.get_weights()[7]), -1)
    np.testing.assert_allclose(model.predict(X), ref.detach().numpy(), rtol=1e-10, atol=1e-13)
