"""Optimizers: Keras 3's update rules, applied in place to the model's one flat parameter buffer.

``get("adam")`` or ``get({"type": "adam", "learning_rate": 0.001, "clipnorm": 1.0})`` returns an optimizer; the
keys are Keras's hyperparameter names and defaults (ENGINE_SEMANTICS.md §5 and §6). One step is

    clip the gradients -> decoupled weight decay (w -= lr * wd * w) -> the optimizer's update rule,

where the base class owns the step count, the clipping and the weight decay, and each subclass implements one
update rule over explicit state arrays.

Speed. The parameters and the gradients are each one contiguous 1-D buffer, so a step is a dozen whole-array
ufunc calls whatever the depth of the network. Every array is allocated in ``build``; every call writes into a
preallocated array (``out``, passed by position: a keyword costs more per call); every scalar is cast to
the buffer's dtype once per step, so that float32 buffers are never promoted to float64 (numpy would compute
a float32 array times an ``np.float64`` scalar in float64, several times slower). The step runs over chunks of
the buffers small enough for the dozen passes over one chunk, and the two chunk-sized scratch arrays, to stay
in the CPU's L2 cache: each state array then crosses the memory bus once per step, and the scratch never does. The update rules only read the gradients; clipping
rewrites them in place, so callers must treat the gradient buffer as overwritten by ``step``.

Exponential moving averages are kept as exponentially weighted *sums*: instead of Keras's
``m <- m + (1 - beta) * (g - m)`` (three passes) the state is ``S <- beta * S + g`` (two passes) and
``m = (1 - beta) * S``; the factor ``1 - beta`` is folded into the step's scalars. The two are the same
arithmetic up to float rounding (the tests check this against PyTorch and a direct NumPy transcription of the
Keras formulas). The folded scalars are computed in Python floats from the exact hyperparameters (as Keras's
float32 ``1 - beta`` is accurate), then cast once.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from . import schedules
from .errors import ConfigError

__all__ = ["OPTIMIZERS", "Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "Adadelta", "Adagrad", "Nadam", "get"]

_CLIP_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")


# ----------------------------------------------------------------------------------------------- validation
def _number(value: Any, key: str, *, lo: float | None = None, lo_open: bool = False,
            hi: float | None = None, hi_open: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"optimizer.{key}", f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"optimizer.{key}", f"must be finite, got {value!r}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ConfigError(f"optimizer.{key}", f"must be {'>' if lo_open else '>='} {lo:g}, got {value:g}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ConfigError(f"optimizer.{key}", f"must be {'<' if hi_open else '<='} {hi:g}, got {value:g}")
    return value


def _fraction(value: Any, key: str) -> float:
    """A decay rate: 0 <= value < 1."""
    return _number(value, key, lo=0.0, hi=1.0, hi_open=True)


def _positive(value: Any, key: str) -> float:
    return _number(value, key, lo=0.0, lo_open=True)


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"optimizer.{key}", f"must be true or false, got {value!r}")
    return bool(value)


# ----------------------------------------------------------------------------------------------- base class
class Optimizer:
    """Step count, gradient clipping, decoupled weight decay and state bookkeeping.

    A subclass sets ``name`` and ``RULE_KEYS`` (its own hyperparameters, stored as attributes of the same names),
    and implements ``_slots`` (its state arrays and their initial values), ``_scalars`` (the step's constants)
    and ``_update`` (the rule, on one chunk of the buffers).
    """

    name: ClassVar[str] = ""
    RULE_KEYS: ClassVar[tuple[str, ...]] = ()
    SCALAR_STATE: ClassVar[tuple[str, ...]] = ()   # float attributes that are state (saved as 0-d float64)
    CHUNK_BYTES: ClassVar[int] = 1 << 17      # per buffer: ~6 chunks of this size fit a 1 MiB L2 cache

    def __init__(self, learning_rate: float | dict | schedules.Schedule, *, weight_decay: float | None = None,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None):
        # a schedule (engine/schedules.py) gives each step's rate from the step count alone
        self.schedule = schedules.get(learning_rate) if schedules.is_schedule_config(learning_rate) else None
        self._learning_rate = 0.0
        if self.schedule is None:
            self.learning_rate = _positive(learning_rate, "learning_rate")
        self.weight_decay = None if weight_decay is None else _number(weight_decay, "weight_decay", lo=0.0)
        self.clipnorm = None if clipnorm is None else _positive(clipnorm, "clipnorm")
        self.clipvalue = None if clipvalue is None else _positive(clipvalue, "clipvalue")
        self.global_clipnorm = None if global_clipnorm is None else _positive(global_clipnorm, "global_clipnorm")
        given = [k for k in _CLIP_KEYS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(f"optimizer.{given[1]}",
                              f"only one of clipnorm, clipvalue and global_clipnorm can be set, got {', '.join(given)}")
        self.iterations = 0
        self._size: int | None = None          # set by build
        self._pending: dict[str, np.ndarray] | None = None   # a state loaded before build

    # -- learning rate: mutable at any time (reduce-on-plateau assigns it), unless a schedule sets it --
    @property
    def learning_rate(self) -> float:
        """The rate the next step will use."""
        if self.schedule is not None:
            return self.schedule(self.iterations)
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if self.schedule is not None:
            raise ValueError(f"the learning rate follows a {self.schedule.name} schedule and cannot be set")
        value = float(value)
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"learning_rate must be a finite number >= 0, got {value!r}")
        self._learning_rate = value

    # -- config --
    def get_config(self) -> dict:
        """``type``, the learning rate (its current value), the rule's hyperparameters, weight decay and clipping."""
        rate = self.schedule.get_config() if self.schedule is not None else self.learning_rate
        config: dict[str, Any] = {"type": self.name, "learning_rate": rate}
        config.update((key, getattr(self, key)) for key in self.RULE_KEYS)
        config["weight_decay"] = self.weight_decay
        config.update((key, getattr(self, key)) for key in _CLIP_KEYS)
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "type")
        return f"{type(self).__name__}({args})"

    # -- the subclass's part --
    def _slots(self) -> dict[str, float]:
        """State array names and their initial fill value."""
        return {}

    def _scalars(self, lr: float, t: int) -> tuple:
        """The constants of step ``t`` (1-based), cast to the buffer's dtype. May advance scalar state."""
        raise NotImplementedError

    def _update(self, p: np.ndarray, g: np.ndarray, t0: np.ndarray, t1: np.ndarray, s: dict[str, np.ndarray],
                c: tuple) -> None:
        """The update rule on one chunk: parameters ``p`` (in place), clipped gradients ``g`` (read only),
        scratch ``t0`` and ``t1`` (the chunk's length), state views ``s`` and the step's constants ``c``."""
        raise NotImplementedError

    def _reset_scalar_state(self) -> None:
        pass

    # -- building --
    def build(self, params: np.ndarray, segments: list[tuple[int, int]]) -> None:
        """Allocate the state (zeros or the rule's initial value) and scratch for the flat buffer ``params``;
        ``segments`` are the (start, stop) of each variable in it (for per-variable clipnorm)."""
        if not isinstance(params, np.ndarray) or params.ndim != 1 or params.dtype not in (np.float32, np.float64):
            raise ValueError("params must be a 1-D float32 or float64 array")
        if not params.flags.c_contiguous:
            raise ValueError("params must be contiguous")
        n = params.size
        segs = sorted((int(a), int(b)) for a, b in segments)
        for (a, b), nxt in zip(segs, segs[1:] + [(n, n)]):
            if not (0 <= a <= b <= nxt[0] <= n):
                raise ValueError(f"segment ({a}, {b}) overlaps another or lies outside the buffer of size {n}")
        self._size = n
        self._dtype = params.dtype
        self._segments = segs
        self._state = {name: np.full(n, init, dtype=params.dtype) for name, init in self._slots().items()}
        self._chunk = max(1024, self.CHUNK_BYTES // params.dtype.itemsize)
        self._scratch = np.empty((2, min(n, 2 * self._chunk)), dtype=params.dtype)   # the last chunk may be longer
        self._views_for: tuple | None = None   # (params, grads) the cached chunk views were cut from
        self._reset_scalar_state()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.load_state(pending)

    @property
    def built(self) -> bool:
        return self._size is not None

    # -- one step --
    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Update ``params`` in place from ``grads`` (which is overwritten)."""
        if self._size is None:
            raise RuntimeError("build the optimizer before step")
        if params.shape != (self._size,) or grads.shape != (self._size,) or params.dtype != self._dtype \
                or grads.dtype != self._dtype:
            raise ValueError(f"params and grads must be 1-D {self._dtype} arrays of size {self._size}")
        if self._views_for is None or self._views_for[0] is not params or self._views_for[1] is not grads:
            self._cut_views(params, grads)
        t = self.iterations + 1
        lr = self.learning_rate
        dt = self._dtype.type
        # clipping (Keras: before weight decay and the update); elementwise parts run chunk by chunk below
        clip_lo = clip_hi = scale = None
        if self.clipvalue is not None:
            clip_lo, clip_hi = dt(-self.clipvalue), dt(self.clipvalue)
        elif self.clipnorm is not None:
            self._clip_per_variable(self.clipnorm)
        elif self.global_clipnorm is not None:
            norm = math.sqrt(float(np.dot(grads, grads)))   # the buffer holds every trainable variable
            if norm > self.global_clipnorm:                 # g <- g * c / max(||g||, c); a zero norm is left alone
                scale = dt(self.global_clipnorm / norm)
        decay = dt(lr * self.weight_decay) if self.weight_decay else None   # Keras: w <- w - w * wd * lr
        # each constant goes into the ufuncs as a 0-d array of the buffer's dtype: NumPy converts a scalar
        # operand on every call (about 0.17 us each, some 40 calls a step on a small network); a 0-d array
        # of the same dtype is used as it is, and the arithmetic is the same
        c = tuple(np.array(v) for v in self._scalars(lr, t))
        if clip_lo is not None:
            clip_lo, clip_hi = np.array(clip_lo), np.array(clip_hi)
        if scale is not None:
            scale = np.array(scale)
        if decay is not None:
            decay = np.array(decay)
        update = self._update
        for p, g, t0, t1, s in self._chunks:
            if clip_lo is not None:
                np.clip(g, clip_lo, clip_hi, g)
            elif scale is not None:
                np.multiply(g, scale, g)
            if decay is not None:
                np.multiply(p, decay, t0)
                np.subtract(p, t0, p)
            update(p, g, t0, t1, s, c)
        self.iterations = t

    def _cut_views(self, params: np.ndarray, grads: np.ndarray) -> None:
        n, size = self._size, self._chunk
        bounds = list(range(0, n, size)) + [n]
        if len(bounds) > 2 and n - bounds[-2] < size // 2:   # no small last chunk
            del bounds[-2]
        t0, t1 = self._scratch
        self._chunks = [
            (params[a:b], grads[a:b], t0[:b - a], t1[:b - a], {name: arr[a:b] for name, arr in self._state.items()})
            for a, b in zip(bounds, bounds[1:])
        ]
        self._grad_segments = [grads[a:b] for a, b in self._segments if b > a]
        self._views_for = (params, grads)

    def _clip_per_variable(self, c: float) -> None:
        """clipnorm: g <- g * c / max(||g||, c) for each variable; a zero norm leaves it unchanged."""
        dt = self._dtype.type
        for g in self._grad_segments:
            norm = math.sqrt(float(np.dot(g, g)))
            if norm > c:
                np.multiply(g, dt(c / norm), out=g)

    # -- state --
    def state(self) -> dict[str, np.ndarray]:
        """Copies of every state array, plus ``iterations``, ``learning_rate`` (and any scalar state) as 0-d
        arrays: numeric only, for ``np.savez`` and ``np.load(allow_pickle=False)``."""
        if self._size is None:
            raise RuntimeError("build the optimizer before state")
        out = {name: arr.copy() for name, arr in self._state.items()}
        out["iterations"] = np.array(self.iterations, dtype=np.int64)
        out["learning_rate"] = np.array(self.learning_rate, dtype=np.float64)
        for name in self.SCALAR_STATE:
            out[name] = np.array(getattr(self, name), dtype=np.float64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``state`` returned (exactly: the next steps are bit-identical to never stopping). Before
        ``build`` the state is kept and applied by ``build``."""
        state = dict(state)
        if self._size is None:
            self._pending = {k: np.array(v, copy=True) for k, v in state.items()}
            return
        expected = set(self._state) | {"iterations", "learning_rate", *self.SCALAR_STATE}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"{self.name} state mismatch: missing {missing}, unexpected {extra}")
        for name, arr in self._state.items():
            value = np.asarray(state[name])
            if value.shape != arr.shape:
                raise ValueError(f"state {name!r} has shape {value.shape}, expected {arr.shape}")
            np.copyto(arr, value, casting="same_kind")
        iterations = np.asarray(state["iterations"])
        if iterations.shape != () or iterations.dtype.kind not in "iu" or int(iterations) < 0:
            raise ValueError("state 'iterations' must be a non-negative integer scalar")
        self.iterations = int(iterations)
        if self.schedule is None:    # a schedule's rate follows from iterations
            self.learning_rate = float(np.asarray(state["learning_rate"]))
        for name in self.SCALAR_STATE:
            setattr(self, name, float(np.asarray(state[name])))


# ----------------------------------------------------------------------------------------------- the rules
class SGD(Optimizer):
    """Keras SGD: v <- momentum*v - lr*g; w <- w + v (Nesterov: w <- w + momentum*v - lr*g); plain w -= lr*g."""

    name = "sgd"
    RULE_KEYS = ("momentum", "nesterov")

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **common):
        super().__init__(learning_rate, **common)
        self.momentum = _number(momentum, "momentum", lo=0.0, hi=1.0)
        self.nesterov = _flag(nesterov, "nesterov")

    def _slots(self):
        return {"velocity": 0.0} if self.momentum > 0 else {}

    def _scalars(self, lr, t):
        dt = self._dtype.type
        return dt(lr), dt(self.momentum)

    def _update(self, p, g, t0, t1, s, c):
        lr, mu = c
        np.multiply(g, lr, t0)                      # lr*g
        if self.momentum > 0:
            v = s["velocity"]
            np.multiply(v, mu, v)
            np.subtract(v, t0, v)                   # v = mu*v - lr*g
            if self.nesterov:
                np.multiply(v, mu, t1)
                np.subtract(t1, t0, t1)
                np.add(p, t1, p)                    # w += mu*v - lr*g
            else:
                np.add(p, v, p)
        else:
            np.subtract(p, t0, p)


def _decay_add_square(acc, decay, g, scratch):
    """acc <- decay*acc + g^2 in place (the second-moment sum of RMSprop, Adam and Nadam); returns acc."""
    np.multiply(acc, decay, acc)
    np.multiply(g, g, scratch)
    np.add(acc, scratch, acc)
    return acc


class RMSprop(Optimizer):
    """Keras RMSprop: v <- rho*v + (1-rho)*g^2; inc = lr*g/sqrt(v + eps) (centered: sqrt(v - gbar^2 + eps),
    gbar <- rho*gbar + (1-rho)*g); with momentum m <- momentum*m + inc, w -= m; else w -= inc.

    State: ``v_sum`` = v/(1-rho), ``g_sum`` = gbar/(1-rho) (centered), ``momentum`` = m (momentum > 0).
    """

    name = "rmsprop"
    RULE_KEYS = ("rho", "momentum", "epsilon", "centered")

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, **common):
        super().__init__(learning_rate, **common)
        self.rho = _fraction(rho, "rho")
        self.momentum = _number(momentum, "momentum", lo=0.0, hi=1.0)
        self.epsilon = _positive(epsilon, "epsilon")
        self.centered = _flag(centered, "centered")

    def _slots(self):
        slots = {"v_sum": 0.0}
        if self.centered:
            slots["g_sum"] = 0.0
        if self.momentum > 0:
            slots["momentum"] = 0.0
        return slots

    def _scalars(self, lr, t):
        dt = self._dtype.type
        rho = self.rho
        k = 1.0 - rho
        # v - gbar^2 + eps = k * (v_sum - k*g_sum^2 + eps/k);  inc = (lr/sqrt(k)) * g / sqrt(...)
        return dt(rho), dt(k), dt(self.epsilon / k), dt(lr / math.sqrt(k)), dt(self.momentum)

    def _update(self, p, g, t0, t1, s, c):
        rho, k, eps, lr, mu = c
        v = _decay_add_square(s["v_sum"], rho, g, t0)  # v_sum = rho*v_sum + g^2
        if self.centered:
            gs = s["g_sum"]
            np.multiply(gs, rho, gs)
            np.add(gs, g, gs)                       # g_sum = rho*g_sum + g
            np.multiply(gs, gs, t0)
            np.multiply(t0, k, t0)
            np.subtract(v, t0, t0)
            np.add(t0, eps, t0)
        else:
            np.add(v, eps, t0)
        np.sqrt(t0, t0)
        np.divide(g, t0, t1)
        np.multiply(t1, lr, t1)                     # inc
        if self.momentum > 0:
            m = s["momentum"]
            np.multiply(m, mu, m)
            np.add(m, t1, m)
            np.subtract(p, m, p)
        else:
            np.subtract(p, t1, p)


class Adam(Optimizer):
    """Keras Adam: m <- m + (1-b1)(g-m); v <- v + (1-b2)(g^2-v); alpha = lr*sqrt(1-b2^t)/(1-b1^t);
    w -= alpha*m/(sqrt(v) + eps) (epsilon before bias correction); amsgrad: vhat = max(vhat, v) replaces v.

    State: ``m_sum`` = m/(1-b1), ``v_sum`` = v/(1-b2), ``v_sum_max`` = vhat/(1-b2) (amsgrad).
    """

    name = "adam"
    RULE_KEYS = ("beta_1", "beta_2", "epsilon", "amsgrad")

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, **common):
        super().__init__(learning_rate, **common)
        self.beta_1 = _fraction(beta_1, "beta_1")
        self.beta_2 = _fraction(beta_2, "beta_2")
        self.epsilon = _positive(epsilon, "epsilon")
        self.amsgrad = _flag(amsgrad, "amsgrad")

    def _slots(self):
        slots = {"m_sum": 0.0, "v_sum": 0.0}
        if self.amsgrad:
            slots["v_sum_max"] = 0.0
        return slots

    def _scalars(self, lr, t):
        dt = self._dtype.type
        b1, b2 = self.beta_1, self.beta_2
        k1, k2 = 1.0 - b1, 1.0 - b2
        alpha = lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        # alpha*m/(sqrt(v)+eps) = (alpha*k1/sqrt(k2)) * m_sum / (sqrt(v_sum) + eps/sqrt(k2))
        return dt(b1), dt(b2), dt(self.epsilon / math.sqrt(k2)), dt(alpha * k1 / math.sqrt(k2))

    def _update(self, p, g, t0, t1, s, c):
        b1, b2, eps, step = c
        m = s["m_sum"]
        v = _decay_add_square(s["v_sum"], b2, g, t0)   # v_sum = b2*v_sum + g^2
        np.multiply(m, b1, m)
        np.add(m, g, m)                             # m_sum = b1*m_sum + g
        if self.amsgrad:
            v = np.maximum(s["v_sum_max"], v, out=s["v_sum_max"])
        np.sqrt(v, t0)
        np.add(t0, eps, t0)
        np.divide(m, t0, t1)
        np.multiply(t1, step, t1)
        np.subtract(p, t1, p)


class AdamW(Adam):
    """Keras AdamW: Adam with decoupled weight decay (default 0.004), applied before the Adam step."""

    name = "adamw"

    def __init__(self, learning_rate: float = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False, **common):
        if weight_decay is None:
            raise ConfigError("optimizer.weight_decay", "adamw needs a weight_decay (a number >= 0)")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **common)


class Adadelta(Optimizer):
    """Keras Adadelta: Eg <- rho*Eg + (1-rho)*g^2; d = -sqrt(Ed + eps)/sqrt(Eg + eps)*g;
    Ed <- rho*Ed + (1-rho)*d^2; w <- w + lr*d.

    State: ``v_sum`` = Eg/(1-rho), ``delta_sum`` = Ed/(1-rho) (the factor sqrt(1-rho) cancels in d).
    """

    name = "adadelta"
    RULE_KEYS = ("rho", "epsilon")

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.95, epsilon: float = 1e-7, **common):
        super().__init__(learning_rate, **common)
        self.rho = _fraction(rho, "rho")
        self.epsilon = _positive(epsilon, "epsilon")

    def _slots(self):
        return {"v_sum": 0.0, "delta_sum": 0.0}

    def _scalars(self, lr, t):
        dt = self._dtype.type
        rho = self.rho
        return dt(rho), dt(self.epsilon / (1.0 - rho)), dt(lr)

    def _update(self, p, g, t0, t1, s, c):
        rho, eps, lr = c
        d = s["delta_sum"]
        v = _decay_add_square(s["v_sum"], rho, g, t0)  # v_sum = rho*v_sum + g^2
        np.add(v, eps, t1)
        np.sqrt(t1, t1)                             # sqrt(Eg + eps) / sqrt(1-rho)
        np.add(d, eps, t0)
        np.sqrt(t0, t0)                             # sqrt(Ed + eps) / sqrt(1-rho)
        np.multiply(t0, g, t0)
        np.divide(t0, t1, t0)                       # -d
        _decay_add_square(d, rho, t0, t1)               # delta_sum = rho*delta_sum + d^2
        np.multiply(t0, lr, t0)
        np.subtract(p, t0, p)


class Adagrad(Optimizer):
    """Keras Adagrad: acc <- acc + g^2 (acc starts at initial_accumulator_value); w -= lr*g/sqrt(acc + eps)."""

    name = "adagrad"
    RULE_KEYS = ("initial_accumulator_value", "epsilon")

    def __init__(self, learning_rate: float = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, **common):
        super().__init__(learning_rate, **common)
        self.initial_accumulator_value = _number(initial_accumulator_value, "initial_accumulator_value", lo=0.0)
        self.epsilon = _positive(epsilon, "epsilon")

    def _slots(self):
        return {"accumulator": self.initial_accumulator_value}

    def _scalars(self, lr, t):
        dt = self._dtype.type
        return dt(self.epsilon), dt(lr)

    def _update(self, p, g, t0, t1, s, c):
        eps, lr = c
        acc = s["accumulator"]
        np.multiply(g, g, t0)
        np.add(acc, t0, acc)
        np.add(acc, eps, t0)
        np.sqrt(t0, t0)
        np.multiply(g, lr, t1)
        np.divide(t1, t0, t1)
        np.subtract(p, t1, p)


class Nadam(Optimizer):
    """Keras Nadam: mu_t = b1*(1 - 0.5*0.96^t), running product P_t = mu_1...mu_t;
    m, v as Adam; mhat = mu_{t+1}*m/(1 - P_t*mu_{t+1}) + (1-mu_t)*g/(1 - P_t); vhat = v/(1-b2^t);
    w -= lr*mhat/(sqrt(vhat) + eps) (epsilon after bias correction).

    State: ``m_sum`` = m/(1-b1), ``v_sum`` = v/(1-b2), and the scalar ``u_product`` = P_t.
    """

    name = "nadam"
    RULE_KEYS = ("beta_1", "beta_2", "epsilon")
    SCALAR_STATE = ("u_product",)

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, **common):
        super().__init__(learning_rate, **common)
        self.beta_1 = _fraction(beta_1, "beta_1")
        self.beta_2 = _fraction(beta_2, "beta_2")
        self.epsilon = _positive(epsilon, "epsilon")
        self.u_product = 1.0

    def _reset_scalar_state(self):
        self.u_product = 1.0

    def _slots(self):
        return {"m_sum": 0.0, "v_sum": 0.0}

    def _scalars(self, lr, t):
        dt = self._dtype.type
        b1, b2 = self.beta_1, self.beta_2
        k1, k2 = 1.0 - b1, 1.0 - b2
        u_t = b1 * (1.0 - 0.5 * 0.96 ** t)
        u_next = b1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        self.u_product *= u_t
        product, product_next = self.u_product, self.u_product * u_next
        # lr*mhat/(sqrt(vhat)+eps) = (a*m_sum + b*g) / (sqrt(v_sum) + e),  with r = sqrt(k2/(1-b2^t)):
        r = math.sqrt(k2 / (1.0 - b2 ** t))
        a = lr / r * u_next * k1 / (1.0 - product_next)
        b = lr / r * (1.0 - u_t) / (1.0 - product)
        return dt(b1), dt(b2), dt(self.epsilon / r), dt(a), dt(b)

    def _update(self, p, g, t0, t1, s, c):
        b1, b2, eps, a, b = c
        m = s["m_sum"]
        v = _decay_add_square(s["v_sum"], b2, g, t0)   # v_sum = b2*v_sum + g^2
        np.multiply(m, b1, m)
        np.add(m, g, m)                             # m_sum = b1*m_sum + g
        np.multiply(m, a, t1)
        np.multiply(g, b, t0)
        np.add(t1, t0, t1)                          # lr*mhat, in units of sqrt(v_sum)/sqrt(vhat)
        np.sqrt(v, t0)
        np.add(t0, eps, t0)
        np.divide(t1, t0, t1)
        np.subtract(p, t1, p)


# ----------------------------------------------------------------------------------------------- factory
OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, RMSprop, Adam, AdamW, Adadelta, Adagrad, Nadam)
}

_COMMON_KEYS = ("learning_rate", "weight_decay", *_CLIP_KEYS)


def get(config: dict | str | Optimizer) -> Optimizer:
    """An optimizer from a name (``"adam"``) or a dict (``{"type": "adam", "learning_rate": 0.01, ...}``) with
    Keras's hyperparameter names; unset keys take Keras's defaults. Raises ``ConfigError`` on an unknown type or
    key or a bad value (``field`` like ``optimizer.beta_1``)."""
    if isinstance(config, Optimizer):
        return config
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, dict):
        raise ConfigError("optimizer", f"must be a name or an object with a \"type\", got {config!r}")
    kind = config.get("type")
    if not isinstance(kind, str):
        raise ConfigError("optimizer.type", f"must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    cls = OPTIMIZERS.get(kind.lower())
    if cls is None:
        raise ConfigError("optimizer.type", f"unknown optimizer {kind!r}; expected one of {', '.join(OPTIMIZERS)}")
    allowed = set(_COMMON_KEYS) | set(cls.RULE_KEYS)
    kwargs = {}
    for key, value in config.items():
        if key == "type":
            continue
        if key not in allowed:
            raise ConfigError(f"optimizer.{key}", f"unknown hyperparameter for {cls.name}; expected one of "
                                                  f"{', '.join(k for k in cls().get_config() if k != 'type')}")
        kwargs[key] = value
    return cls(**kwargs)
