"""Activation functions: forward into a buffer, backward in place on the incoming gradient.

Every function is stable for |x| up to 1e4 and beyond without overflow warnings: exponentials are
only ever taken of non-positive numbers. Each activation object has

* ``forward(z, out) -> out``: writes f(z) into ``out`` (which may be ``z`` itself when
  ``needs_input`` is False, i.e. when the derivative can be written from the output alone);
* ``backward(z, a, g) -> g``: turns g = dL/da into dL/dz in place (``z`` is None when
  ``needs_input`` is False).
"""
from __future__ import annotations

import math

import numpy as np

from .vectors import ones

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
NAMES = ("linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "silu",
         "swish", "softplus")
DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}   # the seed: "a small positive slope (of 0.01, or so)"


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """1/(1+e^-x) without overflow: e^-|x| is in (0, 1]."""
    if out is None:
        out = np.empty_like(x)
    e = np.exp(-np.abs(x))
    pos = x >= 0
    # x >= 0: 1/(1+e); x < 0: e/(1+e)
    np.add(e, 1.0, out=out)
    np.divide(np.where(pos, 1.0, e).astype(x.dtype, copy=False), out, out=out)
    return out


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorised error function to float64 precision (NumPy has none).

    |x| < 6: the all-positive series erf(x) = 2/√π·e^{-x²}·Σ 2ⁿx^{2n+1}/(1·3·…·(2n+1)), which has no
    cancellation; |x| >= 6: erf(x) = ±1 to double precision.
    """
    x64 = np.asarray(x, dtype=np.float64)
    out = np.sign(x64)
    small = np.abs(x64) < 6.0
    if small.any():
        t = x64[small]
        t2 = t * t
        term = t.copy()
        total = t.copy()
        for n in range(1, 200):
            term *= 2.0 * t2 / (2 * n + 1)
            total += term
            if np.all(np.abs(term) <= 1e-17 * np.abs(total)):
                break
        out[small] = 2.0 / math.sqrt(math.pi) * np.exp(-t2) * total
    return out.astype(np.asarray(x).dtype, copy=False)


class Activation:
    name = ""
    needs_input = False

    def __init__(self, alpha: float | None = None):
        self.alpha = alpha

    def forward(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, z, a: np.ndarray, g: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.forward(z, np.empty_like(z))


class Linear(Activation):
    name = "linear"

    def forward(self, z, out):
        if out is not z:
            np.copyto(out, z)
        return out

    def backward(self, z, a, g):
        return g


class ReLU(Activation):
    name = "relu"

    def forward(self, z, out):
        return np.maximum(z, 0.0, out=out)

    def backward(self, z, a, g):
        # float32 mask multiply: bool → dtype in the ufunc, no branch per element
        np.multiply(g, a > 0, out=g)
        return g

    # training path: the mask z > 0 is kept for backward (a compare and a multiply beat np.maximum,
    # which pays for its NaN handling; z·[z > 0] is max(z, 0) up to the sign of zero, NaN stays NaN)
    def forward_masked(self, z, out, mask):
        np.greater(z, 0, out=mask)
        return np.multiply(z, mask, out=out)

    def backward_masked(self, mask, g):
        np.multiply(g, mask, out=g)
        return g


class LeakyReLU(Activation):
    name = "leaky_relu"

    def __init__(self, alpha=0.01):
        super().__init__(alpha)
        # with a negative slope the sign of the output no longer tells the sign of the input
        self.needs_input = alpha < 0

    def forward(self, z, out):
        # x if x >= 0 else alpha·x  ==  max(x, alpha·x) for 0 <= alpha <= 1
        if 0.0 <= self.alpha <= 1.0:
            return np.maximum(z, z * self.alpha, out=out)
        return np.copyto(out, np.where(z >= 0, z, z * self.alpha)) or out

    def backward(self, z, a, g):
        pos = (z if self.needs_input else a) > 0
        slope = np.where(pos, 1.0, self.alpha).astype(g.dtype, copy=False)
        np.multiply(g, slope, out=g)
        return g


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z, out):
        return sigmoid(z, out)

    def backward(self, z, a, g):
        g *= a
        g *= 1.0 - a
        return g


class Tanh(Activation):
    name = "tanh"

    def forward(self, z, out):
        return np.tanh(z, out=out)

    def backward(self, z, a, g):
        g *= 1.0 - a * a
        return g


# Below this many columns a row maximum is taken over a transposed copy: NumPy's reduction along a short last
# axis costs about 6 us for 128 x 10 (per-row loop setup), an elementwise maximum down the rows of the copy 1.9 us.
_SHORT_ROWS = 32


def _row_max(z: np.ndarray) -> np.ndarray:
    """max over the last axis, kept as a trailing axis of length 1 (exact: a maximum has no rounding)."""
    if z.ndim != 2 or z.shape[1] > _SHORT_ROWS:
        return z.max(axis=-1, keepdims=True)
    columns = np.empty((z.shape[1], z.shape[0]), dtype=z.dtype)
    np.copyto(columns, z.T)
    return np.maximum.reduce(columns, axis=0)[:, None]


class Softmax(Activation):
    """Softmax over the last axis, from z - max z."""
    name = "softmax"

    def forward(self, z, out):
        m = _row_max(z)
        np.subtract(z, m, out=out)
        np.exp(out, out=out)
        # the row sums as a product with ones (engine/vectors.py); float rounding apart, sum(axis=-1)
        out /= np.matmul(out, ones(out.shape[-1], out.dtype))[..., None]
        return out

    def backward(self, z, a, g):
        # dz = s ⊙ (g - Σ g·s)
        dot = np.einsum("...k,...k->...", g, a)[..., None]
        g -= dot
        g *= a
        return g


class ELU(Activation):
    name = "elu"

    def __init__(self, alpha=1.0):
        super().__init__(alpha)
        self.needs_input = alpha <= 0

    def forward(self, z, out):
        neg = np.expm1(np.minimum(z, 0.0)) * self.alpha
        return np.copyto(out, np.where(z > 0, z, neg)) or out

    def backward(self, z, a, g):
        # x > 0: 1; else elu(x) + alpha (for alpha > 0 the sign of a is the sign of z)
        pos = (z if self.needs_input else a) > 0
        if self.needs_input:
            d = np.where(pos, 1.0, self.alpha * np.exp(np.minimum(z, 0.0)))
        else:
            d = np.where(pos, 1.0, a + self.alpha)
        g *= d.astype(g.dtype, copy=False)
        return g


class SELU(Activation):
    name = "selu"

    def forward(self, z, out):
        neg = np.expm1(np.minimum(z, 0.0)) * (SELU_SCALE * SELU_ALPHA)
        return np.copyto(out, np.where(z > 0, z * SELU_SCALE, neg)) or out

    def backward(self, z, a, g):
        d = np.where(a > 0, SELU_SCALE, a + SELU_SCALE * SELU_ALPHA)
        g *= d.astype(g.dtype, copy=False)
        return g


class GELU(Activation):
    """Keras's default gelu (approximate=False): ½x(1 + erf(x/√2)); derivative Φ(x) + xφ(x)."""
    name = "gelu"
    needs_input = True

    def forward(self, z, out):
        cdf = 0.5 * (1.0 + erf(z * (1.0 / math.sqrt(2.0))))
        return np.multiply(z, cdf.astype(z.dtype, copy=False), out=out)

    def backward(self, z, a, g):
        cdf = 0.5 * (1.0 + erf(z * (1.0 / math.sqrt(2.0))))
        pdf = np.exp(-0.5 * np.minimum(z * z, 1e6)) * (1.0 / math.sqrt(2.0 * math.pi))
        g *= (cdf + z * pdf).astype(g.dtype, copy=False)
        return g


class SiLU(Activation):
    name = "silu"
    needs_input = True

    def forward(self, z, out):
        s = sigmoid(z)
        return np.multiply(z, s, out=out)

    def backward(self, z, a, g):
        s = sigmoid(z)
        g *= s * (1.0 + z * (1.0 - s))
        return g


class Softplus(Activation):
    name = "softplus"
    needs_input = True

    def forward(self, z, out):
        return np.logaddexp(z, 0.0, out=out)

    def backward(self, z, a, g):
        g *= sigmoid(z)
        return g


_CLASSES = {"linear": Linear, "relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh,
            "softmax": Softmax, "elu": ELU, "selu": SELU, "gelu": GELU, "silu": SiLU, "swish": SiLU,
            "softplus": Softplus}


def get(name: str, alpha: float | None = None) -> Activation:
    """The activation called ``name`` (``alpha`` for leaky_relu and elu)."""
    cls = _CLASSES[name]
    if name in DEFAULT_ALPHA:
        return cls(DEFAULT_ALPHA[name] if alpha is None else float(alpha))
    return cls()
