"""Layers: ``forward(x, training, rng)`` keeps what backward needs; ``backward(g, need_dx)`` fills the
parameter gradients (views into the model's flat gradient buffer) and returns dL/dx (or None when
``need_dx`` is False). Batch-sized work arrays are allocated once per batch size and reused.

Shapes: x is (N, *input_shape); dense and batch normalization take flat (N, F) inputs.
"""
from __future__ import annotations

import numpy as np

from . import activations
from .vectors import ones


class Layer:
    type = ""
    #: attributes that forward sets to batch-sized arrays (what backward reads); release_work drops them
    BATCH_STATE: tuple[str, ...] = ()

    def __init__(self, config: dict, dtype):
        self.config = config
        self.name = config["name"]
        self.dtype = np.dtype(dtype)
        self.params: dict[str, np.ndarray] = {}     # views into the flat parameter buffer
        self.grads: dict[str, np.ndarray] = {}      # views into the flat gradient buffer
        self.buffers: dict[str, np.ndarray] = {}    # non-trainable state (BN moving statistics)
        self.fused = False    # the loss hands back dL/dz of this layer's output activation
        self.param_grads = True   # backward fills the parameter gradients (attributions need only dL/dx)
        self._work: dict = {}

    # -- construction ------------------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.input_shape = tuple(input_shape)
        self.output_shape = self.input_shape
        return self.output_shape

    def variables(self) -> list[tuple[str, tuple[int, ...], dict]]:
        """Trainable variables in Keras's order: (name, shape, initializer config)."""
        return []

    def buffer_specs(self) -> list[tuple[str, tuple[int, ...], float]]:
        """Non-trainable variables: (name, shape, initial value)."""
        return []

    def weight_order(self) -> list[tuple[str, bool]]:
        """All variables in Keras's get_weights() order: (name, trainable)."""
        return [(n, True) for n, _, _ in self.variables()] + [(n, False) for n, _, _ in self.buffer_specs()]

    @property
    def output_activation(self) -> str | None:
        return None

    # -- work arrays -------------------------------------------------------------------------
    def _buf(self, key: str, shape: tuple[int, ...], dtype=None) -> np.ndarray:
        k = (key, shape)
        arr = self._work.get(k)
        if arr is None:
            if len(self._work) > 48:     # many batch sizes seen (predict calls): start over
                self._work.clear()
            arr = self._work[k] = np.empty(shape, dtype=self.dtype if dtype is None else dtype)
        return arr

    def release_work(self) -> None:
        """Drop every batch-sized array (work arrays and what forward kept for backward); the next pass
        allocates afresh. A model that only serves then holds no memory for past passes."""
        self._work.clear()
        for name in self.BATCH_STATE:
            setattr(self, name, None)

    def forward(self, x, training: bool, rng: np.random.Generator | None):
        raise NotImplementedError

    def backward(self, g, need_dx: bool):
        raise NotImplementedError


class Dense(Layer):
    """z = x·W + b, a = f(z). W has shape (in, units) as in Keras."""
    type = "dense"
    BATCH_STATE = ("x", "z", "a", "mask")

    def build(self, input_shape):
        super().build(input_shape)
        self.units = int(self.config["units"])
        self.use_bias = bool(self.config["use_bias"])
        self.activation = activations.get(self.config["activation"], self.config.get("alpha"))
        self.output_shape = (self.units,)
        return self.output_shape

    def variables(self):
        out = [("kernel", (self.input_shape[0], self.units), self.config["kernel_initializer"])]
        if self.use_bias:
            out.append(("bias", (self.units,), self.config["bias_initializer"]))
        return out

    @property
    def output_activation(self):
        return self.activation.name

    def forward(self, x, training, rng):
        n = x.shape[0]
        z = self._buf("z", (n, self.units))
        np.matmul(x, self.params["kernel"], out=z)
        if self.use_bias:
            z += self.params["bias"]
        act = self.activation
        self.mask = None
        if hasattr(act, "forward_masked"):
            self.mask = mask = self._buf("mask", (n, self.units), np.bool_)
            a = act.forward_masked(z, z, mask)
        elif act.needs_input:
            a = act.forward(z, self._buf("a", (n, self.units)))
        else:
            a = act.forward(z, z)    # in place: the derivative is written from the output
        self.x, self.z, self.a = x, z, a
        return a

    def backward(self, g, need_dx):
        if not self.fused:
            if self.mask is not None:
                g = self.activation.backward_masked(self.mask, g)
            else:
                g = self.activation.backward(self.z, self.a, g)
        x = self.x
        n = x.shape[0]
        if self.param_grads:
            np.matmul(x.T, g, out=self.grads["kernel"])
            if self.use_bias:
                np.matmul(ones(n, self.dtype), g, out=self.grads["bias"])    # Σ over the batch as a matmul
        if not need_dx:
            return None
        dx = self._buf("dx", x.shape)
        np.matmul(g, self.params["kernel"].T, out=dx)
        return dx


class BatchNormalization(Layer):
    """Keras BatchNormalization on (N, F): batch statistics in training (biased variance), moving
    statistics in inference, y = γ(x - μ)/√(σ² + ε) + β (the seed's (x - μ)/(σ + ε) is not what Keras
    and PyTorch compute)."""
    type = "batch_normalization"
    BATCH_STATE = ("inv", "xhat")

    def build(self, input_shape):
        super().build(input_shape)
        self.features = int(input_shape[-1])
        self.momentum = float(self.config["momentum"])
        self.epsilon = float(self.config["epsilon"])
        return self.output_shape

    def variables(self):
        f = (self.features,)
        return [("gamma", f, {"type": "ones", "seed": None}), ("beta", f, {"type": "zeros", "seed": None})]

    def buffer_specs(self):
        f = (self.features,)
        return [("moving_mean", f, 0.0), ("moving_variance", f, 1.0)]

    def forward(self, x, training, rng):
        n, f = x.shape
        gamma, beta = self.params["gamma"], self.params["beta"]
        out = self._buf("out", (n, f))
        xhat = self._buf("xhat", (n, f))
        if training:
            column = ones(n, self.dtype)
            mean = np.matmul(column, x) * (1.0 / n)
            np.subtract(x, mean, out=xhat)
            np.multiply(xhat, xhat, out=out)
            var = np.matmul(column, out) * (1.0 / n)          # biased batch variance
            inv = 1.0 / np.sqrt(var + self.epsilon)
            xhat *= inv
            mm, mv = self.buffers["moving_mean"], self.buffers["moving_variance"]
            mm *= self.momentum
            mm += (1.0 - self.momentum) * mean
            mv *= self.momentum
            mv += (1.0 - self.momentum) * var
        else:
            inv = 1.0 / np.sqrt(self.buffers["moving_variance"] + self.epsilon)
            np.subtract(x, self.buffers["moving_mean"], out=xhat)
            xhat *= inv
        np.multiply(xhat, gamma, out=out)
        out += beta
        self.inv, self.xhat, self.training = inv, xhat, training
        return out

    def backward(self, g, need_dx):
        n, f = g.shape
        xhat = self.xhat
        column = ones(n, self.dtype)
        dgamma, dbeta = self.grads["gamma"], self.grads["beta"]
        np.matmul(column, g, out=dbeta)
        tmp = self._buf("tmp", (n, f))
        np.multiply(g, xhat, out=tmp)
        np.matmul(column, tmp, out=dgamma)
        if not need_dx:
            return None
        scale = self.params["gamma"] * self.inv
        dx = self._buf("dx", (n, f))
        if self.training:
            # dx = γ/(N·s) · (N·dy - Σdy - x̂·Σ(dy·x̂))
            np.multiply(xhat, dgamma * (1.0 / n), out=dx)
            np.subtract(g, dx, out=dx)
            dx -= dbeta * (1.0 / n)
            dx *= scale
        else:
            np.multiply(g, scale, out=dx)
        return dx


class Dropout(Layer):
    """Inverted dropout: in training keep each unit with probability 1 - rate and scale it by
    1/(1 - rate); the identity in inference.

    The keep test draws 16-bit uniform integers straight from the generator's raw 64-bit output
    (four per draw), twice as fast as float draws: a unit is dropped when its integer is below
    round(rate·65536), i.e. with probability rate to within 2^-17.
    """
    type = "dropout"
    BATCH_STATE = ("mask",)

    def build(self, input_shape):
        super().build(input_shape)
        self.rate = float(self.config["rate"])
        self.threshold = int(round(self.rate * 65536))
        self.scale = 1.0 / (1.0 - self.rate)
        return self.output_shape

    def forward(self, x, training, rng):
        self.active = training and self.threshold > 0
        if not self.active:
            return x
        size = x.size
        raw = rng.bit_generator.random_raw((size + 3) // 4).view(np.uint16)[:size].reshape(x.shape)
        mask = self._buf("mask", x.shape)
        np.greater_equal(raw, self.threshold, out=mask, casting="unsafe")
        mask *= self.scale
        out = self._buf("out", x.shape)
        np.multiply(x, mask, out=out)
        self.mask = mask
        return out

    def backward(self, g, need_dx):
        if not need_dx:
            return None
        if self.active:
            g *= self.mask
        return g


class GaussianNoise(Layer):
    """x + N(0, stddev²) in training; the identity in inference."""
    type = "gaussian_noise"

    def forward(self, x, training, rng):
        stddev = float(self.config["stddev"])
        if not training or stddev == 0:
            return x
        out = self._buf("out", x.shape)
        rng.standard_normal(out=out, dtype=out.dtype)
        out *= stddev
        out += x
        return out

    def backward(self, g, need_dx):
        return g if need_dx else None


class Flatten(Layer):
    type = "flatten"

    def build(self, input_shape):
        super().build(input_shape)
        self.output_shape = (int(np.prod(input_shape)),)
        return self.output_shape

    def forward(self, x, training, rng):
        return x.reshape(x.shape[0], -1)

    def backward(self, g, need_dx):
        return g.reshape((g.shape[0],) + self.input_shape) if need_dx else None


class ActivationLayer(Layer):
    type = "activation"
    BATCH_STATE = ("x", "a", "mask")

    def build(self, input_shape):
        super().build(input_shape)
        self.activation = activations.get(self.config["activation"], self.config.get("alpha"))
        return self.output_shape

    @property
    def output_activation(self):
        return self.activation.name

    def forward(self, x, training, rng):
        a = self._buf("a", x.shape)
        act = self.activation
        self.mask = None
        if hasattr(act, "forward_masked"):
            self.mask = mask = self._buf("mask", x.shape, np.bool_)
            act.forward_masked(x, a, mask)
        else:
            act.forward(x, a)
        self.x, self.a = x, a
        return a

    def backward(self, g, need_dx):
        if not need_dx:
            return None
        if self.fused:
            return g
        if self.mask is not None:
            return self.activation.backward_masked(self.mask, g)
        return self.activation.backward(self.x, self.a, g)


CLASSES = {c.type: c for c in (Dense, BatchNormalization, Dropout, GaussianNoise, Flatten, ActivationLayer)}
