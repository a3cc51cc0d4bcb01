"""Training and inference speed of the NumPy engine beside PyTorch (CPU) and scikit-learn, in one run.

    python -m benchmarks.engine            # the full run (a few minutes)
    python -m benchmarks.engine --quick    # about a minute: fewer samples and rounds

Reference networks (float32, Adam, synthetic data; issue 2's Speed section):
  (a) 784-256-128-10 relu, batch 128        (b) 784-1024-1024-10 relu, batch 256
  (c) 20-64-64-1 tanh, batch 32, MSE        (d) (a) with batch normalization + dropout 0.2 after each hidden layer

Printed: training samples/s (timed epochs after the first, best of ``rounds`` interleaved measurements, since
other processes share the machine) of the engine with 1 and with ``--threads`` BLAS threads (set through
threadpoolctl), PyTorch with ``torch.set_num_threads(--threads)`` and ``Adam(fused=True)``, and scikit-learn's
MLP (adam, same batch size, its BLAS at ``--threads``; no BN or dropout there), and the ratios of the engine's
better setting to each; the engine's matmul FLOP rate on (b) against the float32 matmul peak measured in the same
run with the same thread count; the time of each optimizer's step on (a)'s parameters; single-row and 1,024-row
predict latency of a model restored with ``engine.from_bytes(model.to_bytes())``; the peak RSS of a fit on a
100,000 x 784 float32 set beyond the data.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (set on this machine; the first pins OpenBLAS to its Haswell kernel,
half the float32 matmul speed) are removed for this process: it re-executes itself without them before numpy is
imported, unless ``--keep-env``. The BLAS libraries and kernels in use are printed (threadpoolctl).
"""
from __future__ import annotations

import os
import sys

_STRIPPED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if "--keep-env" not in sys.argv and any(k in os.environ for k in _STRIPPED) and "numpy" not in sys.modules:
    env = {k: v for k, v in os.environ.items() if k not in _STRIPPED}
    env["_BACKPROP_BENCH_STRIPPED"] = ",".join(f"{k}={os.environ[k]}" for k in _STRIPPED if k in os.environ)
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import engine  # noqa: E402
from engine import optimizers  # noqa: E402

THREADS = 2      # PyTorch's threads and numpy's BLAS threads (--threads)

NETS = {
    # name: (input features, hidden units, outputs, activation, batch size, loss, with BN + dropout)
    "a": (784, (256, 128), 10, "relu", 128, "sparse_categorical_crossentropy", False),
    "b": (784, (1024, 1024), 10, "relu", 256, "sparse_categorical_crossentropy", False),
    "c": (20, (64, 64), 1, "tanh", 32, "mse", False),
    "d": (784, (256, 128), 10, "relu", 128, "sparse_categorical_crossentropy", True),
}
DESCRIPTIONS = {"a": "784-256-128-10 relu, batch 128", "b": "784-1024-1024-10 relu, batch 256",
                "c": "20-64-64-1 tanh, batch 32, MSE", "d": "(a) + BN + dropout 0.2"}


# ------------------------------------------------------------------------------------------------ data
def make_data(net: str, n: int, seed: int = 0):
    n_in, _, n_out, _, _, loss, _ = NETS[net]
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in), dtype=np.float32)
    if loss == "mse":
        w = rng.standard_normal(n_in).astype(np.float32)
        y = (np.tanh(X @ w / np.sqrt(n_in)) + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
        return X, y.reshape(-1, 1)
    return X, rng.integers(0, n_out, size=n).astype(np.int64)


def engine_spec(net: str) -> dict:
    n_in, hidden, n_out, act, _, loss, bn = NETS[net]
    layers = []
    for units in hidden:
        layers.append({"type": "dense", "units": units, "activation": act})
        if bn:
            layers += [{"type": "batch_normalization"}, {"type": "dropout", "rate": 0.2}]
    layers.append({"type": "dense", "units": n_out, "activation": "linear" if loss == "mse" else "softmax"})
    return {"input_shape": [n_in], "layers": layers}


def matmul_flops_per_sample(net: str) -> int:
    """Multiply-adds x 2 of one training sample: forward, weight gradients, and input gradients of every dense
    layer but the first (nothing before it needs them)."""
    n_in, hidden, n_out, *_ = NETS[net]
    sizes = [n_in, *hidden, n_out]
    pairs = [a * b for a, b in zip(sizes, sizes[1:])]
    return 2 * (2 * sum(pairs) + sum(pairs[1:]))


# ------------------------------------------------------------------------------------------------ engine
def engine_rate(net: str, X, y, epochs: int, diagnostics: bool = False) -> float:
    *_, batch, loss, _ = NETS[net]
    model = engine.build(engine_spec(net), seed=1)
    history = model.fit(X, y, loss=loss, optimizer="adam", epochs=epochs, batch_size=batch, shuffle=True,
                        seed=3, metrics=[], diagnostics=diagnostics)
    seconds = [row["seconds"] for row in history[1:]]       # epoch 1 warms the work arrays up
    return X.shape[0] / min(seconds)


# ------------------------------------------------------------------------------------------------ torch
def torch_setup():
    try:
        import torch
    except ImportError:
        print("torch is not installed: no PyTorch column")
        return None
    torch.set_num_threads(THREADS)
    return torch


def limit_blas_threads(n: int):
    """A context in which numpy's (and scikit-learn's) BLAS use ``n`` threads (threadpoolctl; without it, the
    BLAS's own setting)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def torch_model(torch, net: str):
    n_in, hidden, n_out, act, *_ , bn = NETS[net]
    layers, prev = [], n_in
    for units in hidden:
        layers += [torch.nn.Linear(prev, units), torch.nn.ReLU() if act == "relu" else torch.nn.Tanh()]
        if bn:   # Keras defaults: momentum 0.99 (torch's 0.01), epsilon 1e-3
            layers += [torch.nn.BatchNorm1d(units, eps=1e-3, momentum=0.01), torch.nn.Dropout(0.2)]
        prev = units
    layers.append(torch.nn.Linear(prev, n_out))
    return torch.nn.Sequential(*layers)


def torch_adam(torch, params):
    try:
        return torch.optim.Adam(params, lr=1e-3, eps=1e-7, fused=True), "Adam(fused=True)"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=1e-3, eps=1e-7, foreach=True), "Adam(foreach=True)"


def torch_rate(torch, net: str, X, y, epochs: int) -> tuple[float, str]:
    *_, batch, loss, _ = NETS[net]
    torch.manual_seed(1)
    model = torch_model(torch, net)
    opt, label = torch_adam(torch, model.parameters())
    criterion = torch.nn.MSELoss() if loss == "mse" else torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n = Xt.shape[0]
    model.train()
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            xb, yb = Xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            criterion(model(xb), yb).backward()
            opt.step()
        seconds.append(time.perf_counter() - t0)
    return n / min(seconds[1:]), label


# ------------------------------------------------------------------------------------------------ sklearn
def sklearn_rate(net: str, X, y, epochs: int) -> float | None:
    n_in, hidden, _, act, batch, loss, bn = NETS[net]
    if bn:
        return None      # no batch normalization or dropout in scikit-learn's MLP
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    cls = MLPRegressor if loss == "mse" else MLPClassifier
    kwargs = dict(hidden_layer_sizes=hidden, activation=act, solver="adam", batch_size=batch, alpha=0.0,
                  learning_rate_init=1e-3, epsilon=1e-7, shuffle=True, tol=0.0, n_iter_no_change=10 ** 9,
                  random_state=1)
    target = y.ravel() if loss == "mse" else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cls(max_iter=1, **kwargs).fit(X[:batch * 4], target[:batch * 4])     # imports and first-call costs
        t0 = time.perf_counter()
        cls(max_iter=epochs, **kwargs).fit(X, target)
    return epochs * X.shape[0] / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ others
def matmul_peak(size: int = 2048, repeats: int = 8) -> float:
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeats))
    return 2 * size ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def predict_latency(net: str, X, y) -> tuple[float, float]:
    *_, batch, loss, _ = NETS[net]
    model = engine.build(engine_spec(net), seed=1)
    model.fit(X[:2048], y[:2048], loss=loss, optimizer="adam", epochs=1, batch_size=batch, metrics=[])
    served = engine.from_bytes(model.to_bytes())
    one, many = np.ascontiguousarray(X[:1]), np.ascontiguousarray(X[:1024])
    return _per_call(lambda: served.predict(one), 20000), _per_call(lambda: served.predict(many), 200)


def explain_latency(torch, X, y, steps: int = 64) -> tuple[float, float | None]:
    """Seconds for the integrated gradients of one row of (a) over ``steps`` points: the engine's
    ``attributions`` on a served copy, and the same work in PyTorch (the path points' forward pass and one
    backward of the target output's sum, autograd on the input only), softmax output in both."""
    *_, batch, loss, _ = NETS["a"]
    model = engine.build(engine_spec("a"), seed=1)
    model.fit(X[:2048], y[:2048], loss=loss, optimizer="adam", epochs=1, batch_size=batch, metrics=[])
    served = engine.from_bytes(model.to_bytes())
    row = np.ascontiguousarray(X[:1])
    ours = _per_call(lambda: served.attributions(row, steps=steps), 500)
    if torch is None:
        return ours, None
    net = torch.nn.Sequential(torch_model(torch, "a"), torch.nn.Softmax(dim=1)).eval()
    for p in net.parameters():
        p.requires_grad_(False)          # the input's gradient only, as the engine computes
    x, base = torch.from_numpy(row), torch.zeros_like(torch.from_numpy(row))
    alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps)[:, None]

    def torch_ig():
        points = (base + alphas * (x - base)).requires_grad_(True)
        net(points)[:, 0].sum().backward()
        return (x - base) * points.grad.mean(dim=0)

    return ours, _per_call(torch_ig, 500)


def _per_call(fn, n: int) -> float:
    for _ in range(min(n, 200)):
        fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n // 5):
            fn()
        best = min(best, (time.perf_counter() - t0) / (n // 5))
    return best


def _vm_hwm() -> int | None:
    """The peak RSS of this process image (VmHWM, bytes); unlike ru_maxrss it is not inherited across exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_child(rows: int) -> None:
    """Run in a subprocess: one epoch of net (a) on a rows x 784 float32 set; print the RSS figures (JSON)."""
    X, y = make_data("a", rows, seed=5)
    data_bytes = X.nbytes + y.nbytes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = engine.build(engine_spec("a"), seed=1)
    model.fit(X, y, loss="sparse_categorical_crossentropy", optimizer="adam", epochs=1, batch_size=128,
              metrics=["accuracy"], validation_split=0.1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"data": data_bytes, "before_fit": before, "peak": peak, "vm_hwm": _vm_hwm()}))


def peak_rss(rows: int) -> dict:
    """Started while this process is still small: Linux carries ru_maxrss over fork and exec."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-child", str(rows), "--keep-env"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def optimizer_steps(net: str = "a", reps: int = 300, names=None) -> dict[str, float]:
    """Seconds per optimizer step on the parameters of ``net`` (default Keras settings; the gradient copy that
    each step needs, since a step overwrites its gradients, is timed apart and subtracted); ``names``: only
    these optimizers."""
    model = engine.build(engine_spec(net), seed=1)
    grads = np.random.default_rng(2).standard_normal(model.params.size, dtype=np.float32) * np.float32(0.01)
    g = np.empty_like(grads)
    copy = min(_timed(lambda: [np.copyto(g, grads) for _ in range(reps)]) for _ in range(3)) / reps
    out = {}
    for name in names or optimizers.OPTIMIZERS:
        opt = optimizers.get(name)
        params = model.params.copy()
        opt.build(params, model.segments)

        def run():
            for _ in range(reps):
                np.copyto(g, grads)
                opt.step(params, g)

        out[name] = min(_timed(run) for _ in range(3)) / reps - copy
    return out


def cpu_model() -> str:
    """The processor's name from /proc/cpuinfo (the figures differ a lot between hosts), or the platform's."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:
        return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    import platform
    return platform.processor() or platform.machine()


def blas_report() -> list[str]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed"]
    lines = []
    for info in threadpool_info():
        lib = os.path.basename(info.get("filepath", ""))
        lines.append(f"{info.get('internal_api')} {info.get('version')} ({lib}): "
                     f"kernel {info.get('architecture', '-')}, {info.get('num_threads')} threads")
    return lines


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and rounds (about a minute)")
    parser.add_argument("--nets", default="abcd", help="which reference networks, e.g. 'ab'")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved measurements per framework")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help=f"PyTorch threads and numpy BLAS threads (default {THREADS})")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also time the engine with diagnostics on (activation counts), beside off")
    parser.add_argument("--keep-env", action="store_true", help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child is not None:
        rss_child(args.rss_child)
        return

    quick = args.quick
    rounds = args.rounds or (1 if quick else 5)
    epochs = 3 if quick else 4
    samples = {"a": 16384, "b": 4096, "c": 16384, "d": 16384} if quick else \
        {"a": 32768, "b": 8192, "c": 32768, "d": 32768}

    THREADS = args.threads
    rss = None if args.no_rss else peak_rss(rows_for_rss(quick))   # first, while this process is small
    torch = None if args.no_torch else torch_setup()
    if not args.no_sklearn:
        try:
            import sklearn.neural_network  # noqa: F401  (loads scipy's BLAS too, so thread limits reach it)
        except ImportError:
            print("scikit-learn is not installed: no scikit-learn column")
            args.no_sklearn = True
    try:
        import threadpoolctl  # noqa: F401
        settings = sorted({1, THREADS})   # the engine's BLAS threads: on 2 shared vCPUs one is sometimes faster
    except ImportError:
        settings = [THREADS]
    print(f"backprop engine benchmark ({'quick' if quick else 'full'}): float32, Adam, synthetic data, "
          f"{os.cpu_count()} CPUs, best of {rounds} interleaved round(s), load average {os.getloadavg()[0]:.2f} "
          f"at start")
    stripped = os.environ.get("_BACKPROP_BENCH_STRIPPED")
    print(f"cpu: {cpu_model()}")
    print(f"environment: {'removed ' + stripped if stripped else 'unchanged'}; numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch else ""))

    peak = {k: 0.0 for k in settings}    # matmul peak per BLAS thread count, measured in every round
    results = {}
    torch_label = ""
    for net in args.nets:
        X, y = make_data(net, samples[net])
        best = {**{k: 0.0 for k in settings}, "torch": 0.0, "sklearn": 0.0}
        for _ in range(rounds):
            gc.collect()
            for k in settings:
                with limit_blas_threads(k):
                    peak[k] = max(peak[k], matmul_peak(repeats=4))
                    best[k] = max(best[k], engine_rate(net, X, y, epochs))
                    if args.diagnostics:
                        best[f"{k}d"] = max(best.get(f"{k}d", 0.0), engine_rate(net, X, y, epochs, True))
            if torch is not None:
                rate, torch_label = torch_rate(torch, net, X, y, epochs)
                best["torch"] = max(best["torch"], rate)
        if not args.no_sklearn:
            with limit_blas_threads(THREADS):
                rate = sklearn_rate(net, X, y, 2 if quick else 3)
            best["sklearn"] = rate if rate is not None else None
        results[net] = best
    for line in blas_report():       # after the runs, so torch's and scikit-learn's libraries are loaded too
        print("blas:", line)

    print()
    engine_cols = "".join(f" {f'engine {k}T':>10s}" for k in settings)
    print(f"{'samples/s':36s}{engine_cols} {f'torch {THREADS}T':>10s} {'ratio':>7s} {'bound':>7s} {'+adam':>7s} "
          f"{f'sklearn {THREADS}T':>10s} {'ratio':>7s}")
    top = max(peak.values())
    for net, best in results.items():
        e = max(best[k] for k in settings)
        t, s = best["torch"], best["sklearn"]
        batch = NETS[net][4]
        matmul_s = batch * matmul_flops_per_sample(net) / top     # one step's matmuls at the peak
        bound = batch / matmul_s                        # samples/s if matmuls ran at peak and nothing else cost
        adam_s = optimizer_steps(net, reps=50 if net == "b" else 300, names=("adam",))["adam"]
        bound_adam = batch / (matmul_s + adam_s)        # ... and Adam took its own time, alone, as measured here
        t_cols = (f"{t:10,.0f} {e / t:6.2f}x {bound / t:6.2f}x {bound_adam / t:6.2f}x" if t
                  else f"{'-':>10s} {'-':>7s} {'-':>7s} {'-':>7s}")
        s_cols = f"{s:10,.0f} {e / s:6.2f}x" if s else f"{'n/a' if s is None else '-':>10s} {'-':>7s}"
        engines = "".join(f" {best[k]:10,.0f}" for k in settings)
        print(f"({net}) {DESCRIPTIONS[net]:32s}{engines} {t_cols} {s_cols}")
    print("ratios: the engine's best thread setting over the other framework (targets: >= 1.5x torch on each net)")
    if args.diagnostics:
        for net, best in results.items():
            off, on = max(best[k] for k in settings), max(best[f"{k}d"] for k in settings)
            print(f"({net}) with diagnostics: {on:10,.0f} samples/s = {on / off:.3f}x of the same engine without")
    print("bound: the ratio to torch of any NumPy engine whose matmuls ran at this run's measured matmul peak and "
          "whose every other\n       operation (activations, loss, optimizer, batch gather) took no time at all; "
          "+adam: the same with the engine's Adam\n       step (ten passes, Keras's rule) taking the time it takes "
          "alone on that net's parameters")
    if torch is not None:
        print(f"torch: {torch_label}, torch.set_num_threads({THREADS}); load average {os.getloadavg()[0]:.2f} at the "
              f"end (other processes on the machine distort multi-threaded BLAS most)")

    print()
    for k in settings:
        line = (f"float32 matmul peak, {k} BLAS thread(s) (np.matmul 2048^2, best over the run): "
                f"{peak[k] / 1e9:6.1f} GFLOP/s")
        if "b" in results:
            rate = results["b"][k] * matmul_flops_per_sample("b")
            line += f"; engine on (b): {rate / 1e9:6.1f} GFLOP/s = {100 * rate / peak[k]:5.1f}% of it"
        print(line)
    if "b" in results:
        print(f"(target >= 60% of peak; (b) does {matmul_flops_per_sample('b') / 1e6:.2f} MFLOP of matmuls per "
              f"training sample)")

    steps = optimizer_steps("a")
    print(f"optimizer step on (a)'s {engine.build(engine_spec('a')).params.size:,} float32 parameters (us): "
          + ", ".join(f"{k} {v * 1e6:.0f}" for k, v in steps.items()))

    X, y = make_data("a", 4096)
    one, many = predict_latency("a", X, y)
    print(f"predict on (a), engine.from_bytes(model.to_bytes()).predict: 1 row {one * 1e6:6.1f} us "
          f"(target <= 15 us), 1,024 rows {many * 1e6:8.1f} us ({1024 / many:,.0f} rows/s)")

    ig, ig_torch = explain_latency(torch, X, y)
    print(f"explain on (a), integrated gradients of 1 row over 64 steps: engine {ig * 1e6:7.1f} us"
          + (f", torch {ig_torch * 1e6:7.1f} us (autograd on the path points): {ig_torch / ig:.2f}x" if ig_torch
             else ""))

    if rss is not None:
        mb = 1024 * 1024
        print(f"peak RSS of a fit of (a) on {rows_for_rss(quick):,} x 784 float32 rows (1 epoch, validation_split "
              f"0.1; subprocess, getrusage ru_maxrss): {rss['peak'] / mb:.0f} MiB = data {rss['data'] / mb:.0f} MiB "
              f"+ {(rss['peak'] - rss['data']) / mb:.0f} MiB; the process held {rss['before_fit'] / mb:.0f} MiB with "
              f"the data before the fit, so the fit itself added {(rss['peak'] - rss['before_fit']) / mb:.0f} MiB")


def rows_for_rss(quick: bool) -> int:
    return 20_000 if quick else 100_000


if __name__ == "__main__":
    main()
