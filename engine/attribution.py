"""Integrated gradients: how much each input feature moved one output of a trained model away from a baseline.

For a row x, a baseline row x' and the output F (the probability of a class, or a regression output), the
attribution of feature i is

    IG_i = (x_i - x'_i) * integral over a in [0, 1] of dF/dx_i (x' + a (x - x')) da

(Sundararajan, Taly and Yan, 2017). The attributions add up to F(x) - F(x') (completeness), so each says how
much of the prediction's departure from the baseline's that feature carries. The integral is the midpoint rule
over ``steps`` points; its error falls as steps grow (as 1/steps² where F is smooth along the path; ReLU's kinks
make it slower). The gradients are the model's own backward pass in inference mode (moving batch-norm
statistics, no dropout or noise), so they are what ``predict`` computes, differentiated.

The straight path in raw units is a straight path in standardized units too (standardization is affine per
feature), and (x_i - x'_i) dF/dx_i is the same in both, so the work happens on the standardized rows.
"""
from __future__ import annotations

import numpy as np

#: Rows of path points per forward and backward pass (bounds the work arrays).
POINTS_PER_PASS = 4096


def default_baseline(model) -> np.ndarray:
    """The training rows' mean when the model standardizes (the "average row"), else zeros; raw units, flat."""
    if model.standardization is not None:
        return model.standardization[0].astype(np.float64)
    return np.zeros(model.input_size)


def integrated_gradients(model, X, target=None, baseline=None, steps: int = 64) -> dict:
    """Attributions of each row of ``X`` (raw rows) to output ``target`` (an output index, one per row or one for
    all; default: the row's largest output), from ``baseline`` (one raw row; default: ``default_baseline``).

    Returns {"attributions": (n, features) float64 in ``X``'s flat feature order, "outputs": F(x) (n,),
    "baseline_outputs": F(x') (n,), "target": (n,) int, "baseline": x' (raw, flat)}. Serialized per model: the
    layers' work arrays are shared (batch normalization's parameter gradients are overwritten; dense layers'
    are left alone), and released at the end. The inference plan that ``predict`` runs is not touched, so
    predictions on the same model run beside it."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    Xs = model._standardize(X).reshape(-1, model.input_size)
    n = Xs.shape[0]
    base = default_baseline(model) if baseline is None else np.asarray(baseline, np.float64).reshape(-1)
    if base.shape != (model.input_size,):
        raise ValueError(f"the baseline has {base.size} values; the model takes {model.input_size}")
    base_s = model._standardize(base.reshape(1, -1)).reshape(-1)
    with model._explain_lock:
        fused = [layer.fused for layer in model.layers]
        for layer in model.layers:
            layer.fused = False           # differentiate the output activation itself, not a loss through it
            layer.param_grads = False     # dF/dx only: a dense layer skips its kernel's product
        try:
            # the rows and the baseline in one forward pass
            ends = np.concatenate([Xs, base_s[None, :]]).reshape((n + 1,) + model.input_shape)
            out = model._forward(ends, False).reshape(n + 1, -1).astype(np.float64)
            out_x, out_b = out[:n], out[n:]
            units = out_x.shape[1]
            if target is None:
                tgt = np.argmax(out_x, axis=1)
            else:
                tgt = np.broadcast_to(np.asarray(target, np.int64), (n,)).copy()
                if tgt.min() < 0 or tgt.max() >= units:
                    raise ValueError(f"target must be an output index in [0, {units - 1}]")
            mean_grad = _path_gradients(model, Xs, base_s, tgt, steps, units)
        finally:
            for layer, f in zip(model.layers, fused):
                layer.fused = f
                layer.param_grads = True
            # a served model explains on the copy that answers predict: leave it no pass's arrays
            # (a 4,096-point pass through 1,024-unit layers holds tens of MiB)
            model.release_work_arrays()
    rows = np.arange(n)
    return {"attributions": (Xs.astype(np.float64) - base_s.astype(np.float64)) * mean_grad,
            "outputs": out_x[rows, tgt], "baseline_outputs": out_b[0, tgt], "target": tgt, "baseline": base}


def _path_gradients(model, Xs, base_s, tgt, steps: int, units: int) -> np.ndarray:
    """The mean over the midpoint path of dF_target/dx (standardized units), per row: (n, features)."""
    n, f = Xs.shape
    alphas = ((np.arange(steps) + 0.5) / steps).astype(model.dtype)
    rows_per_pass = max(1, POINTS_PER_PASS // steps)
    total = np.zeros((n, f))
    delta = (Xs - base_s).astype(model.dtype)
    weights = np.full((1, steps), 1.0 / steps, model.dtype)    # the mean over a row's points, as a product
    for i in range(0, n, rows_per_pass):
        j = min(i + rows_per_pass, n)
        m = j - i
        # (m rows x steps points): x' + a (x - x'), row-major so each row's points are together
        points = base_s + alphas[None, :, None] * delta[i:j, None, :]
        points = points.reshape((m * steps,) + model.input_shape).astype(model.dtype, copy=False)
        model._forward(points, False)
        g = np.zeros((m * steps, units), model.dtype)
        g[np.arange(m * steps), np.repeat(tgt[i:j], steps)] = 1.0
        for layer in reversed(model.layers):
            g = layer.backward(g, True)
        total[i:j] = np.matmul(weights, g.reshape(m, steps, f))[:, 0, :]
    return total
