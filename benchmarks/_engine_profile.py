"""Where one training step of the engine spends its time, per component (a helper of benchmarks/engine.py).

    python -m benchmarks._engine_profile a        # one of the reference nets a, b, c, d

Each layer's forward and backward, the loss, the optimizer step and the rest of the fit loop (shuffle gather,
gradient norms, callbacks) are timed by wrapping the methods of one model's objects; the wrappers cost about
half a microsecond per call. The same optimizer step is also timed on its own, outside the loop.
Like benchmarks/engine.py, it drops OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unless --keep-env.
"""
from __future__ import annotations

import os
import sys

if "--keep-env" not in sys.argv and any(k in os.environ for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")) \
        and "numpy" not in sys.modules:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)

import time  # noqa: E402
from collections import defaultdict  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import engine  # noqa: E402
from engine import optimizers  # noqa: E402

from benchmarks.engine import NETS, engine_spec, make_data  # noqa: E402


def _wrap(obj, name: str, label: str, totals: dict) -> None:
    fn = getattr(obj, name)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - t0

    setattr(obj, name, timed)


def _wrap_factory(module, method: str, label: str, totals: dict[str, float]):
    """Make ``module.get`` time ``method`` of every object it builds; returns a function that undoes it."""
    real_get = module.get

    def get(config):
        obj = real_get(config)
        _wrap(obj, method, label, totals)
        return obj

    module.get = get
    return lambda: setattr(module, "get", real_get)


def profile(net: str, samples: int = 16384, epochs: int = 3) -> None:
    *_, batch, loss, _ = NETS[net]
    X, y = make_data(net, samples)
    model = engine.build(engine_spec(net), seed=1)
    totals: dict[str, float] = defaultdict(float)
    for i, layer in enumerate(model.layers):
        _wrap(layer, "forward", f"{i} {layer.type} forward", totals)
        _wrap(layer, "backward", f"{i} {layer.type} backward", totals)
    from engine import losses

    restore = [_wrap_factory(optimizers, "step", "optimizer step", totals),
               _wrap_factory(losses, "value_and_grad", "loss value_and_grad", totals)]
    try:
        history = model.fit(X, y, loss=loss, optimizer="adam", epochs=epochs, batch_size=batch, metrics=[], seed=3)
    finally:
        for undo in restore:
            undo()
    batches = epochs * -(-samples // batch)
    wall = sum(row["seconds"] for row in history)
    print(f"net ({net}) batch {batch}: {wall / batches * 1e6:8.1f} us per step ({samples * epochs / wall:,.0f} "
          f"samples/s incl. wrapper overhead)")
    for label, seconds in sorted(totals.items(), key=lambda kv: kv[0]):
        print(f"  {label:32s} {seconds / batches * 1e6:8.1f} us")
    rest = wall - sum(totals.values())
    print(f"  {'rest of the fit loop':32s} {rest / batches * 1e6:8.1f} us")

    opt = optimizers.get("adam")
    params, grads = model.params.copy(), model.grads.copy()
    opt.build(params, model.segments)
    g = np.empty_like(grads)
    reps = 300
    t0 = time.perf_counter()
    for _ in range(reps):
        np.copyto(g, grads)
        opt.step(params, g)
    t1 = time.perf_counter()
    for _ in range(reps):
        np.copyto(g, grads)
    copy = time.perf_counter() - t1
    print(f"  Adam step alone on {params.size:,} {params.dtype} parameters: "
          f"{(t1 - t0 - copy) / reps * 1e6:.1f} us")


if __name__ == "__main__":
    for arg in [a for a in sys.argv[1:] if not a.startswith("--")] or ["a"]:
        profile(arg)
