"""The Model: a stack of layers over one flat parameter buffer.

All trainable variables live in ``Model.params`` (1-D, float32 by default) and their gradients in
``Model.grads`` (same layout); each layer's kernel, bias, gamma and beta are reshaped views into them,
so an optimizer step is a handful of array operations whatever the depth. ``Model.segments`` gives
the (start, stop) of each trainable variable in Keras's get_weights() order. Batch-normalization
moving statistics are non-trainable buffers kept apart.
"""
from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np

from . import losses as losses_mod
from . import regularizers
from .errors import SpecError
from .initializers import initialize
from .layers import CLASSES
from .spec import normalize_spec
from .vectors import ones

EVAL_CHUNK = 4096

# Inference plan (see Model._build_plan): op kinds and activation codes of the single-row path.
_DENSE, _DENSE_AUG, _AFFINE, _ACT = 0, 1, 2, 3
_IDENTITY, _RELU, _SOFTMAX, _OTHER = 0, 1, 2, 3
_dot, _add, _multiply, _subtract, _divide, _exp, _maximum, _copyto = (
    np.dot, np.add, np.multiply, np.subtract, np.divide, np.exp, np.maximum, np.copyto)
#: Kernels of the inference plan start on this byte boundary: a single-row product streams the whole kernel
#: through AVX-512 loads, and one starting 16 bytes past a cache line took 10.0 instead of 8.4 us (784 x 256,
#: float32, Zen 4); where NumPy's allocator put it was otherwise luck.
KERNEL_ALIGNMENT = 64


def _aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on a KERNEL_ALIGNMENT boundary."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + KERNEL_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % KERNEL_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _act_code(act) -> int:
    if act is None or act.name == "linear":
        return _IDENTITY
    return {"relu": _RELU, "softmax": _SOFTMAX}.get(act.name, _OTHER)


def _run_row(ops: tuple, x: np.ndarray) -> np.ndarray:
    """One row, shaped (1, n), through compiled ops -> a new (1, outputs) array; ``x`` is never written.

    Each op is ``(kind, a, b, out, nxt, scratch, code, act)``: it reads the 1-D ``h`` and writes ``out`` (a
    preallocated 1-D buffer, or None for the last op, which allocates the result), applies its activation in
    place (``scratch``: the zeros a ReLU compares with, or the 0-d max and sum of a softmax), and hands
    ``nxt`` on: ``out`` itself, or the buffer ``out`` is a view of, one element longer and ending in 1.0,
    when the next op is a dense layer whose bias is the last row of its kernel (``_DENSE_AUG``,
    (inputs + 1, units)). Each product is one gemv accumulating over the inputs in order, as
    the batch path's gemm does, and the softmax is Softmax.forward's arithmetic, so that a row predicted alone
    matches the same row in a batch to float rounding."""
    h = x[0]
    for kind, a, b, out, nxt, scratch, code, act in ops:
        if kind == _DENSE_AUG:
            out = _dot(h, a) if out is None else _dot(h, a, out)
        elif kind == _DENSE:
            out = _dot(h, a) if out is None else _dot(h, a, out)
            _add(out, b, out)
        elif kind == _AFFINE:
            out = _multiply(h, a) if out is None else _multiply(h, a, out)
            _add(out, b, out)
        elif out is None:
            out = h.copy()
        else:
            _copyto(out, h)
        if code == _RELU:
            _maximum(out, scratch, out=out)
        elif code == _SOFTMAX:       # as Softmax.forward on one row, without its reduction overheads
            # through 0-d float32 buffers: a Python or NumPy scalar operand is converted on every call
            # (0.5 of a softmax's 2.8 us on a 10-way output); the sum is a dot product with ones, which
            # costs half of a reduction's call (0.46 against 0.80 us on a 10-way output, Zen 4) and
            # differs from it by float rounding
            top, total, unit = scratch
            top[()] = max(out.tolist())
            _subtract(out, top, out)
            _exp(out, out)
            _dot(out, unit, total)
            _divide(out, total, out)
        elif code == _OTHER:
            act.forward(out, out)
        h = out if nxt is None else nxt
    return h[None]


class _Plan:
    """Compiled inference on flat rows of ``n_in`` values.

    ``steps``: (kind, a, b, act) per op: dense kernels (inputs, units) C-contiguous with their bias, affine
    (scale, shift) maps, activation layers. A dense op after the first keeps its bias as an extra last row of
    its kernel ((inputs + 1, units)), so the single-row path adds no bias; batches use the same arrays
    (``kernel[:-1]``, a contiguous view). Single-row buffer sets live in a pool (list pop/append are atomic, so
    concurrent callers never share one); batch buffers are cached per row count and used under ``lock``."""

    __slots__ = ("steps", "n_in", "dtype", "row_shape", "pool", "lock", "_bufs", "_batch_steps")

    def __init__(self, steps: list, n_in: int, dtype: np.dtype):
        self.dtype = dt = np.dtype(dtype)
        self.n_in = n_in
        self.row_shape = (1, n_in)
        compiled = []
        batch = []
        for i, step in enumerate(steps):
            if step[0] == "dense":
                W, b, act = step[1], step[2].astype(dt), step[3]
                if i == 0:
                    W_own = _aligned_empty(W.shape, dt)
                    W_own[...] = W
                    compiled.append((_DENSE, W_own, b, act))
                    batch.append(("dense", W_own, b, act))
                else:
                    Wb = _aligned_empty((W.shape[0] + 1, W.shape[1]), dt)
                    Wb[:-1] = W
                    Wb[-1] = b
                    compiled.append((_DENSE_AUG, Wb, b, act))
                    batch.append(("dense", Wb[:-1], b, act))
            elif step[0] == "affine":
                compiled.append((_AFFINE, step[1], step[2], None))
                batch.append(step)
            else:
                compiled.append((_ACT, None, None, step[1]))
                batch.append(step)
        if not compiled:      # identity layers only: still a new array
            compiled.append((_ACT, None, None, None))
        self.steps = tuple(compiled)
        self._batch_steps = tuple(batch)
        self.lock = threading.Lock()
        self._bufs: dict[int, list] = {}
        self.pool = [self.row_ops()]

    def row_ops(self) -> tuple:
        """A fresh set of single-row ops with their own buffers."""
        ops = []
        width = self.n_in
        last = len(self.steps) - 1
        for i, (kind, a, b, act) in enumerate(self.steps):
            if kind in (_DENSE, _DENSE_AUG):
                width = a.shape[1]
            code = _act_code(act)
            if code == _RELU:
                scratch = np.zeros(width, self.dtype)
            elif code == _SOFTMAX:
                scratch = (np.zeros((), self.dtype), np.zeros((), self.dtype), ones(width, self.dtype))
            else:
                scratch = None
            if i == last:
                ops.append((kind, a, b, None, None, scratch, code, act))
                continue
            full = np.ones(width + 1, self.dtype)
            nxt = full if self.steps[i + 1][0] == _DENSE_AUG else None
            ops.append((kind, a, b, full[:width], nxt, scratch, code, act))
        return tuple(ops)

    def row(self, x: np.ndarray) -> np.ndarray:
        """(1, n_in) -> a new (1, outputs) array."""
        pool = self.pool
        try:
            ops = pool.pop()
        except IndexError:           # every buffer set is in use by another thread
            ops = self.row_ops()
        try:
            return _run_row(ops, x)
        finally:
            if len(pool) < 4:
                pool.append(ops)

    def batch(self, h: np.ndarray) -> np.ndarray:
        """(n, n_in) rows -> a new (n, outputs) array; ``h`` is never written."""
        n = h.shape[0]
        if self.lock.acquire(False):
            try:
                bufs = self._bufs.get(n)
                if bufs is None:
                    if len(self._bufs) > 8:
                        self._bufs.clear()
                    bufs = self._bufs[n] = self._new_buffers(n)
                return self._run_batch(h, bufs)
            finally:
                self.lock.release()
        return self._run_batch(h, self._new_buffers(n))     # another thread holds the cached buffers

    def _new_buffers(self, n: int) -> list:
        return [np.empty((n, s[1].shape[1]), dtype=self.dtype) if s[0] == "dense" else None
                for s in self._batch_steps]

    def _run_batch(self, h: np.ndarray, bufs: list) -> np.ndarray:
        owned = False      # may h be overwritten? never the caller's array
        for step, buf in zip(self._batch_steps, bufs):
            kind = step[0]
            if kind == "dense":
                np.matmul(h, step[1], out=buf)
                buf += step[2]
                act = step[3]
                if act.name != "linear":
                    act.forward(buf, buf)
                h = buf
            elif kind == "affine":
                h = h * step[1]
                h += step[2]
            else:
                h = step[1].forward(h, h) if owned else step[1](h)
            owned = True
        return np.array(h, dtype=self.dtype, copy=True)


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


class Shapes(NamedTuple):
    """What a spec's network takes and gives, known without allocating or initializing a weight."""

    input_shape: tuple[int, ...]
    input_size: int
    output_shape: tuple[int, ...]
    output_units: int


def _layers(spec: dict, dtype: np.dtype) -> tuple[list, Shapes]:
    """The layers of a normalized spec, built for their input shapes (no weights yet), and the shapes."""
    input_shape = tuple(spec["input_shape"])
    layers = [CLASSES[cfg["type"]](cfg, dtype) for cfg in spec["layers"]]
    shape = input_shape
    for layer in layers:
        shape = layer.build(shape)
    return layers, Shapes(input_shape, math.prod(input_shape), shape, shape[-1])


def shapes(spec: dict) -> Shapes:
    """A spec's input and output shapes (SpecError if it is invalid): what checking a job against a model
    needs, in microseconds, where building the model initializes every weight (a second for 37M of them)."""
    return _layers(normalize_spec(spec), np.dtype(np.float32))[1]


def summarize(spec: dict) -> dict:
    """``Model.summary()`` of a spec's model, from the variables' shapes alone (no weight allocated)."""
    return _summary(_layers(normalize_spec(spec), np.dtype(np.float32))[0])


def _summary(layers: list) -> dict:
    """Per layer: name, type, output shape, parameters (trainable ones, and buffers such as batch
    normalization's moving statistics), counted from the shapes the layers declare."""
    rows = []
    total = trainable = 0
    for layer in layers:
        t = sum(math.prod(shape) for _, shape, _ in layer.variables())
        nt = sum(math.prod(shape) for _, shape, _ in layer.buffer_specs())
        rows.append({"name": layer.name, "type": layer.type, "output_shape": list(layer.output_shape),
                     "params": t + nt, "trainable_params": t})
        total += t + nt
        trainable += t
    return {"layers": rows, "total_params": total, "trainable_params": trainable,
            "non_trainable_params": total - trainable}


class Model:
    """Build with ``engine.build(spec, seed)``; see the package docstring for the public methods."""

    def __init__(self, spec: dict, seed: int | None = None, dtype="float32", *, _normalized: bool = False):
        self.spec = spec if _normalized else normalize_spec(spec)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise SpecError(None, "dtype", "must be float32 or float64")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
        self.seed = int(seed)
        self.layers, (self.input_shape, self.input_size, self.output_shape, self.output_units) = \
            _layers(self.spec, self.dtype)

        variables = [(i, name, shp, init) for i, layer in enumerate(self.layers)
                     for name, shp, init in layer.variables()]
        total = sum(math.prod(shp) for _, _, shp, _ in variables)
        self.params = np.empty(total, dtype=self.dtype)
        self.grads = np.zeros(total, dtype=self.dtype)
        self.segments: list[tuple[int, int]] = []
        self.layer_ranges: dict[str, tuple[int, int]] = {}     # layer name -> its slice of params
        offset = 0
        for v, (i, name, shp, init) in enumerate(variables):
            size = math.prod(shp)
            layer = self.layers[i]
            layer.params[name] = self.params[offset:offset + size].reshape(shp)
            layer.grads[name] = self.grads[offset:offset + size].reshape(shp)
            layer.params[name][...] = initialize(init, shp, _rng(self.seed, i, v), self.dtype)
            self.segments.append((offset, offset + size))
            start = self.layer_ranges.get(layer.name, (offset, offset))[0]
            self.layer_ranges[layer.name] = (start, offset + size)
            offset += size
        for layer in self.layers:
            for name, shp, value in layer.buffer_specs():
                layer.buffers[name] = np.full(shp, value, dtype=self.dtype)
        # a layer computes dL/dx only when some layer before it has parameters
        seen = False
        self._need_dx = []
        for layer in self.layers:
            self._need_dx.append(seen)
            seen = seen or bool(layer.params)
        self.standardization: tuple[np.ndarray, np.ndarray] | None = None   # (mean, std), flat
        self.fit_config: dict | None = None
        self.history: list[dict] = []
        # the epoch whose weights the model holds after a fit: the last one, or the best one early stopping's
        # restore_best_weights handed back (its history row describes the weights that serve)
        self.weights_epoch: int | None = None
        self._reg: list = []
        self._plan = None
        self._grad_bufs: dict = {}
        self._explain_lock = threading.Lock()    # attributions run the layers' own passes, one at a time

    # -- weights -------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Copies in Keras's order: kernel, bias per dense; gamma, beta, moving_mean, moving_variance per BN."""
        out = []
        for layer in self.layers:
            for name, trainable in layer.weight_order():
                out.append((layer.params if trainable else layer.buffers)[name].copy())
        return out

    def set_weights(self, weights) -> None:
        slots = [(layer.params if t else layer.buffers)[name] for layer in self.layers
                 for name, t in layer.weight_order()]
        weights = list(weights)
        if len(weights) != len(slots):
            raise ValueError(f"expected {len(slots)} arrays, got {len(weights)}")
        for k, (slot, w) in enumerate(zip(slots, weights)):
            w = np.asarray(w)
            if w.shape != slot.shape:
                raise ValueError(f"weight {k}: expected shape {slot.shape}, got {w.shape}")
        for slot, w in zip(slots, weights):
            np.copyto(slot, np.asarray(w), casting="unsafe")
        self._plan = None

    def _buffer_arrays(self) -> list[np.ndarray]:
        return [layer.buffers[name] for layer in self.layers for name, _, _ in layer.buffer_specs()]

    def trainable_names(self) -> list[str]:
        return [f"{layer.name}/{name}" for layer in self.layers for name, _, _ in layer.variables()]

    # -- description ---------------------------------------------------------------------------
    def summary(self) -> dict:
        return _summary(self.layers)

    def count_params(self) -> int:
        return self.summary()["total_params"]

    # -- data preparation -------------------------------------------------------------------------
    def _as_input(self, X) -> np.ndarray:
        """(N, *input_shape), a view where possible. Rows may come flat (N, prod(input_shape)) or shaped;
        a 1-D array is one row (or N scalar rows for a one-value input)."""
        X = np.asarray(X)
        n_in = self.input_size
        if X.ndim == 1:
            if X.shape[0] == n_in:
                X = X.reshape(1, n_in)
            elif n_in == 1:
                X = X.reshape(-1, 1)
        if X.ndim < 2 or math.prod(X.shape[1:]) != n_in:
            raise ValueError(f"input rows of shape {list(X.shape[1:] if X.ndim > 1 else X.shape)} do not fit "
                             f"input_shape {list(self.input_shape)}")
        if X.shape[1:] != self.input_shape:
            X = X.reshape((X.shape[0],) + self.input_shape)
        return X

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        """A new array in the model's dtype, standardized if the model carries statistics."""
        X = self._as_input(X)
        if self.standardization is None:
            return np.ascontiguousarray(X, dtype=self.dtype)
        mean, std = self.standardization
        shape = self.input_shape
        out = np.subtract(X, mean.reshape(shape), dtype=self.dtype)
        out /= std.reshape(shape)
        return out

    # -- forward / backward -------------------------------------------------------------------------
    def _forward(self, x: np.ndarray, training: bool, rng=None) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, training, rng)
        return x

    def _backward(self, g: np.ndarray) -> None:
        for layer, need in zip(reversed(self.layers), reversed(self._need_dx)):
            g = layer.backward(g, need)
            if g is None:
                break

    def _configure_loss(self, loss) -> tuple[losses_mod.Loss, bool]:
        loss = losses_mod.get(loss) if not isinstance(loss, losses_mod.Loss) else loss
        last = self.layers[-1]
        fused = loss.fused_activation is not None and last.output_activation == loss.fused_activation
        for layer in self.layers:
            layer.fused = False
        last.fused = fused
        return loss, fused

    def _configure_regularization(self, global_reg: dict | None) -> None:
        dense = [layer for layer in self.layers if layer.type == "dense"]
        coefs = regularizers.effective_coefficients([d.params["kernel"].size for d in dense],
                                                    [d.config["kernel_regularizer"] for d in dense], global_reg)
        self._reg = [(d, l1, l2, np.empty_like(d.params["kernel"])) for d, (l1, l2) in zip(dense, coefs)
                     if l1 or l2]

    def _penalty(self) -> float:
        return sum(regularizers.penalty(d.params["kernel"], l1, l2) for d, l1, l2, _ in self._reg)

    def _grad_buffer(self, n: int) -> np.ndarray:
        buf = self._grad_bufs.get(n)
        if buf is None:
            if len(self._grad_bufs) > 8:
                self._grad_bufs.clear()
            buf = self._grad_bufs[n] = np.empty((n, self.output_units), dtype=self.dtype)
        return buf

    def _train_step(self, xb, yb, loss, fused, rng, training=True, sample_weight=None) -> tuple[float, np.ndarray]:
        """Forward, loss, backward and penalty gradients for one batch; returns (loss with penalty, output).
        ``sample_weight``: the rows' class weights (a crossentropy loss), which leave the penalties alone."""
        out = self._forward(xb, training, rng)
        g = self._grad_buffer(out.shape[0])
        if sample_weight is None:
            value = loss.value_and_grad(out, yb, g, fused)
        else:
            value = loss.value_and_grad(out, yb, g, fused, sample_weight)
        self._backward(g)
        for d, l1, l2, scratch in self._reg:
            value += regularizers.penalty(d.params["kernel"], l1, l2)
            regularizers.add_gradient(d.params["kernel"], d.grads["kernel"], l1, l2, scratch)
        return value, out

    def loss_and_gradients(self, X, y, loss, regularization=None, training=True, class_weight=None):
        """(loss including penalties, gradients in get_weights() order of the trainable variables).

        Random layers draw from a generator fixed per call, so repeated calls see the same dropout
        masks and noise (finite differences rely on it); moving statistics are left untouched.
        ``class_weight`` weighs the rows as fit's config key does ("balanced": from these rows' labels).
        """
        from . import class_weight as class_weight_mod
        from .config import loss_name, normalize_loss
        loss = normalize_loss(loss)
        class_weight = class_weight_mod.normalize(class_weight, loss_name(loss))
        class_weight_mod.check(class_weight, loss_name(loss), self.output_units)
        loss_obj, fused = self._configure_loss(loss)
        self._configure_regularization(regularization)
        xb = self._standardize(X)
        yb = loss_obj.prepare_targets(y, self.dtype)
        if loss_obj.name == "sparse_categorical_crossentropy" and yb.size and not (
                0 <= yb.min() and yb.max() < self.output_units):
            raise ValueError(f"labels must be in [0, {self.output_units - 1}]")
        weights = class_weight_mod.sample_weights(class_weight, loss_obj.name, yb, self.output_units, self.dtype)
        saved = [b.copy() for b in self._buffer_arrays()]
        self.grads.fill(0.0)
        value, _ = self._train_step(xb, yb, loss_obj, fused, _rng(self.seed, 0xC0FFEE), training, weights)
        for b, s in zip(self._buffer_arrays(), saved):
            b[...] = s
        grads = [layer.grads[name].copy() for layer in self.layers for name, _, _ in layer.variables()]
        return float(value), grads

    # -- inference ---------------------------------------------------------------------------------
    def _build_plan(self) -> _Plan:
        """The float inference path: standardization and batch normalizations folded into the
        neighbouring dense layers (exact affine algebra, done in float64), dropout and noise removed."""
        dt = self.dtype
        steps = []
        n_in = self.input_size
        scale = shift = None          # a pending per-feature affine map x -> x·scale + shift
        if self.standardization is not None:
            mean, std = (a.astype(np.float64) for a in self.standardization)
            scale, shift = 1.0 / std, -mean / std

        def flush():
            nonlocal scale, shift
            if scale is not None:
                steps.append(("affine", scale.astype(dt), shift.astype(dt)))
            scale = shift = None

        for layer in self.layers:
            if layer.type == "dense":
                W = layer.params["kernel"].astype(np.float64)
                b = layer.params["bias"].astype(np.float64) if layer.use_bias else np.zeros(layer.units)
                if scale is not None:
                    b = b + shift @ W
                    W = W * scale[:, None]
                    scale = shift = None
                steps.append(("dense", np.ascontiguousarray(W, dtype=dt), b.astype(dt), layer.activation))
            elif layer.type == "batch_normalization":
                s = layer.params["gamma"].astype(np.float64) / np.sqrt(
                    layer.buffers["moving_variance"].astype(np.float64) + layer.epsilon)
                t = layer.params["beta"].astype(np.float64) - layer.buffers["moving_mean"].astype(np.float64) * s
                if scale is None:
                    scale, shift = s, t
                else:
                    scale, shift = scale * s, shift * s + t
            elif layer.type == "activation":
                flush()
                steps.append(("act", layer.activation))
            # dropout, gaussian_noise, flatten: the identity on flat rows at inference
        flush()
        self._plan = _Plan(steps, n_in, dt)
        return self._plan

    def predict(self, X, batch_size: int | None = None) -> np.ndarray:
        """Output activations for raw rows (standardization applied), inference mode.

        One contiguous-enough row already in the model's dtype and shaped (1, n_inputs) takes a
        dedicated path: no conversion or shape checks, preallocated buffers, in-place activations.
        The result is always a new array that the caller owns."""
        plan = self._plan or self._build_plan()
        if type(X) is np.ndarray and X.shape == plan.row_shape and X.dtype is plan.dtype:
            return plan.row(X)
        X = np.asarray(X)
        if X.dtype != self.dtype:
            X = X.astype(self.dtype)
        n_in = plan.n_in
        if X.ndim == 2 and X.shape[1] == n_in:
            h = X
        else:
            h = self._as_input(X).reshape(-1, n_in)
        n = h.shape[0]
        if n == 1:
            return plan.row(h)
        if batch_size is not None and n > batch_size:
            return np.concatenate([self.predict(h[i:i + batch_size]) for i in range(0, n, batch_size)])
        return plan.batch(h)

    def attributions(self, X, target=None, baseline=None, steps: int = 64) -> dict:
        """Integrated gradients of output ``target`` for raw rows ``X`` from ``baseline`` (engine/attribution.py).
        Calls on one model run one at a time (see ``explaining``); predict runs beside them."""
        from .attribution import integrated_gradients
        return integrated_gradients(self, X, target, baseline, steps)

    @property
    def explaining(self) -> bool:
        """Whether an ``attributions`` call is running on this model now (a new one would wait for it)."""
        return self._explain_lock.locked()

    def release_work_arrays(self) -> None:
        """Free every layer's batch-sized arrays; the next pass allocates what it needs."""
        for layer in self.layers:
            layer.release_work()

    def _infer(self, X: np.ndarray) -> np.ndarray:
        """Exact layer-by-layer inference on already standardized input, chunked."""
        outs = [self._forward(X[i:i + EVAL_CHUNK], False).copy() for i in range(0, X.shape[0], EVAL_CHUNK)]
        return np.concatenate(outs) if outs else np.empty((0, self.output_units), self.dtype)

    def _evaluate_prepared(self, Xs, yt, loss_obj, metric_names) -> dict:
        from .metrics import MetricAccumulator
        acc = MetricAccumulator(metric_names, loss_obj.name)
        total = 0.0
        n = Xs.shape[0]
        for i in range(0, n, EVAL_CHUNK):
            p = self._forward(Xs[i:i + EVAL_CHUNK], False)
            yb = yt[i:i + EVAL_CHUNK]
            total += float(np.sum(loss_obj.per_sample(p, yb), dtype=np.float64))
            acc.update(p, yb)
        out = {"loss": total / n + self._penalty() if n else 0.0}
        out.update(acc.result())
        return out

    def evaluate(self, X, y, loss=None, metrics=None) -> dict:
        """{"loss", <metric>...} in inference mode; defaults to the loss and metrics of the last fit."""
        from .config import normalize_loss
        cfg = self.fit_config or {}
        loss = normalize_loss(loss if loss is not None else cfg.get("loss"))
        metric_names = list(metrics if metrics is not None else cfg.get("metrics", []))
        loss_obj = losses_mod.get(loss)
        self._configure_regularization(cfg.get("regularization"))
        Xs = self._standardize(X)
        yt = loss_obj.prepare_targets(y, self.dtype)
        return self._evaluate_prepared(Xs, yt, loss_obj, metric_names)

    # -- training and serialization -----------------------------------------------------------------
    def fit(self, X, y, *, callbacks=(), batch_callbacks=(), **config) -> list[dict]:
        from .training import fit
        return fit(self, X, y, config, callbacks=callbacks, batch_callbacks=batch_callbacks)

    def to_bytes(self) -> bytes:
        from .serialization import model_to_bytes
        return model_to_bytes(self)
