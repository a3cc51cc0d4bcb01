"""The optimizers against PyTorch and against a direct NumPy transcription of Keras's formulas.

Every run starts from the same weights and takes 20 steps on the gradient of a fixed loss, computed on each side
from that side's own weights: for variable i, L_i = s_i * (0.5 * sum(a * (w - c)^2) + sum(noise_t * w)), so that the
gradient s_i * (a * (w - c) + noise_t) feeds the trajectory back and has a different scale per variable (some
variables are clipped by clipnorm, some are not).
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest

from engine import optimizers
from engine.errors import ConfigError

SHAPES = [(5, 3), (3,), (3, 2), (2,)]
SCALES = [3.0, 0.05, 1.0, 0.2]
SIZES = [math.prod(s) for s in SHAPES]
SEGMENTS = [(sum(SIZES[:i]), sum(SIZES[: i + 1])) for i in range(len(SIZES))]
N = sum(SIZES)
STEPS = 20

_rng = np.random.default_rng(20240601)
W0 = _rng.normal(size=N)
CURVATURE = _rng.uniform(0.5, 2.0, size=N)
TARGET = _rng.normal(size=N)
NOISE = _rng.normal(size=(STEPS, N))
SCALE = np.concatenate([np.full(n, s) for n, s in zip(SIZES, SCALES)])

KERAS_DEFAULTS = {
    "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "rmsprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
    "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False},
    "adamw": {"learning_rate": 0.001, "weight_decay": 0.004, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
              "amsgrad": False},
    "adadelta": {"learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-7},
    "adagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
    "nadam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
}
COMMON_DEFAULTS = {"weight_decay": None, "clipnorm": None, "clipvalue": None, "global_clipnorm": None}

# Each case: the engine's config. Learning rates are large enough for 20 steps to move the weights a lot, and some
# epsilons are large so that where epsilon enters the formula shows in the result.
CASES = {
    "sgd": {"type": "sgd", "learning_rate": 0.1},
    "sgd_momentum": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9},
    "sgd_nesterov": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    "sgd_momentum_weight_decay": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.8, "weight_decay": 0.3},
    "sgd_clipvalue": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9, "clipvalue": 0.5},
    "rmsprop": {"type": "rmsprop", "learning_rate": 0.01, "epsilon": 1e-2},
    "rmsprop_centered_momentum": {"type": "rmsprop", "learning_rate": 0.01, "rho": 0.8, "momentum": 0.5,
                                  "centered": True, "epsilon": 1e-3},
    "rmsprop_momentum_clipnorm": {"type": "rmsprop", "learning_rate": 0.01, "momentum": 0.9, "clipnorm": 1.0},
    "adam": {"type": "adam", "learning_rate": 0.05, "epsilon": 1e-2},
    "adam_amsgrad": {"type": "adam", "learning_rate": 0.05, "beta_1": 0.8, "beta_2": 0.99, "amsgrad": True},
    "adam_clipnorm": {"type": "adam", "learning_rate": 0.05, "clipnorm": 1.0},
    "adam_global_clipnorm": {"type": "adam", "learning_rate": 0.05, "global_clipnorm": 2.0},
    "adam_clipvalue_weight_decay": {"type": "adam", "learning_rate": 0.05, "clipvalue": 0.5, "weight_decay": 0.2},
    "adamw": {"type": "adamw", "learning_rate": 0.05, "weight_decay": 0.1},
    "adamw_default": {"type": "adamw"},
    "adadelta": {"type": "adadelta", "learning_rate": 1.0, "epsilon": 1e-3},
    "adadelta_global_clipnorm": {"type": "adadelta", "learning_rate": 1.0, "rho": 0.9, "global_clipnorm": 2.0},
    "adagrad": {"type": "adagrad", "learning_rate": 0.1, "epsilon": 1e-2},
    "adagrad_weight_decay_clipnorm": {"type": "adagrad", "learning_rate": 0.1, "initial_accumulator_value": 0.5,
                                      "weight_decay": 0.1, "clipnorm": 1.0},
    "nadam": {"type": "nadam", "learning_rate": 0.05, "epsilon": 1e-2},
    "nadam_global_clipnorm": {"type": "nadam", "learning_rate": 0.05, "beta_1": 0.95, "global_clipnorm": 2.0},
}


def gradient(w: np.ndarray, t: int) -> np.ndarray:
    """The gradient at step t (1-based), in w's dtype."""
    dt = w.dtype
    return (SCALE.astype(dt) * (CURVATURE.astype(dt) * (w - TARGET.astype(dt)) + NOISE[t - 1].astype(dt))).astype(dt)


def full_config(config: dict) -> dict:
    out = {**KERAS_DEFAULTS[config["type"]], **COMMON_DEFAULTS}
    if config["type"] == "adamw":
        out["weight_decay"] = 0.004
    out.update(config)
    return out


def run_engine(config, dtype=np.float64, steps=STEPS, lr_at=None):
    """The engine's weights after ``steps`` steps; ``lr_at`` maps a step to a new learning rate."""
    opt = optimizers.get(config)
    w = W0.astype(dtype)
    opt.build(w, SEGMENTS)
    for t in range(1, steps + 1):
        if lr_at and t in lr_at:
            opt.learning_rate = lr_at[t]
        opt.step(w, gradient(w, t))
    assert opt.iterations == steps
    return w


# ------------------------------------------------------------------------------------ NumPy reference (Keras)
def reference_run(config, dtype=np.float64, steps=STEPS, lr_at=None):
    """Keras 3's update rules transcribed line by line, one array per variable."""
    cfg = full_config(config)
    kind = cfg["type"]
    f = np.dtype(dtype).type
    ws = [W0[a:b].astype(dtype) for a, b in SEGMENTS]
    zeros = [np.zeros_like(w) for w in ws]
    m, v, vhat, acc, gbar, dacc = ([z.copy() for z in zeros] for _ in range(6))
    if kind == "adagrad":
        acc = [np.full_like(w, cfg["initial_accumulator_value"]) for w in ws]
    u_product = 1.0
    lr = cfg["learning_rate"]
    for t in range(1, steps + 1):
        if lr_at and t in lr_at:
            lr = lr_at[t]
        g_flat = gradient(np.concatenate(ws), t)
        gs = [g_flat[a:b].copy() for a, b in SEGMENTS]
        # clipping
        if cfg["clipvalue"] is not None:
            gs = [np.clip(g, -cfg["clipvalue"], cfg["clipvalue"]) for g in gs]
        if cfg["clipnorm"] is not None:
            c = cfg["clipnorm"]
            gs = [g * f(c) / f(max(np.sqrt(np.sum(g * g)), c)) for g in gs]
        if cfg["global_clipnorm"] is not None:
            c = cfg["global_clipnorm"]
            norm = np.sqrt(sum(np.sum(g * g) for g in gs))
            gs = [g * f(c) / f(max(norm, c)) for g in gs]
        # decoupled weight decay
        if cfg["weight_decay"]:
            ws = [w - w * f(cfg["weight_decay"]) * f(lr) for w in ws]
        for i, g in enumerate(gs):
            w = ws[i]
            if kind == "sgd":
                if cfg["momentum"] > 0:
                    m[i] = m[i] * f(cfg["momentum"]) - g * f(lr)
                    if cfg["nesterov"]:
                        w = w + (m[i] * f(cfg["momentum"]) - g * f(lr))
                    else:
                        w = w + m[i]
                else:
                    w = w - g * f(lr)
            elif kind == "rmsprop":
                rho = f(cfg["rho"])
                v[i] = rho * v[i] + f(1 - cfg["rho"]) * g * g
                if cfg["centered"]:
                    gbar[i] = rho * gbar[i] + f(1 - cfg["rho"]) * g
                    denominator = v[i] - gbar[i] * gbar[i] + f(cfg["epsilon"])
                else:
                    denominator = v[i] + f(cfg["epsilon"])
                increment = f(lr) * g / np.sqrt(denominator)
                if cfg["momentum"] > 0:
                    m[i] = f(cfg["momentum"]) * m[i] + increment
                    w = w - m[i]
                else:
                    w = w - increment
            elif kind in ("adam", "adamw"):
                b1, b2 = cfg["beta_1"], cfg["beta_2"]
                alpha = f(lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t))
                m[i] = m[i] + (g - m[i]) * f(1 - b1)
                v[i] = v[i] + (g * g - v[i]) * f(1 - b2)
                vv = v[i]
                if cfg["amsgrad"]:
                    vhat[i] = np.maximum(vhat[i], v[i])
                    vv = vhat[i]
                w = w - m[i] * alpha / (np.sqrt(vv) + f(cfg["epsilon"]))
            elif kind == "adadelta":
                rho, eps = f(cfg["rho"]), f(cfg["epsilon"])
                acc[i] = rho * acc[i] + (f(1) - rho) * g * g
                delta = -np.sqrt(dacc[i] + eps) * g / np.sqrt(acc[i] + eps)
                dacc[i] = rho * dacc[i] + (f(1) - rho) * delta * delta
                w = w + f(lr) * delta
            elif kind == "adagrad":
                acc[i] = acc[i] + g * g
                w = w - f(lr) * g / np.sqrt(acc[i] + f(cfg["epsilon"]))
            elif kind == "nadam":
                b1, b2 = cfg["beta_1"], cfg["beta_2"]
                u_t = b1 * (1 - 0.5 * 0.96 ** t)
                u_next = b1 * (1 - 0.5 * 0.96 ** (t + 1))
                if i == 0:
                    u_product *= u_t
                u_product_next = u_product * u_next
                m[i] = m[i] + (g - m[i]) * f(1 - b1)
                v[i] = v[i] + (g * g - v[i]) * f(1 - b2)
                m_hat = f(u_next) * m[i] / f(1 - u_product_next) + f(1 - u_t) * g / f(1 - u_product)
                v_hat = v[i] / f(1 - b2 ** t)
                w = w - m_hat * f(lr) / (np.sqrt(v_hat) + f(cfg["epsilon"]))
            ws[i] = w
    return np.concatenate(ws)


@pytest.mark.parametrize("case", CASES)
def test_matches_numpy_reference_float64(case):
    np.testing.assert_allclose(run_engine(CASES[case]), reference_run(CASES[case]), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("case", CASES)
def test_float32_is_as_accurate_as_keras_float32(case):
    """Against the float64 result, the engine in float32 is about as close as Keras's formulas in float32."""
    ours = run_engine(CASES[case], np.float32)
    assert ours.dtype == np.float32
    truth = reference_run(CASES[case])
    keras_error = np.abs(reference_run(CASES[case], np.float32) - truth).max()
    assert np.abs(ours - truth).max() <= 2 * keras_error + 1e-7


@pytest.mark.parametrize("case", ["sgd_momentum", "sgd_nesterov", "rmsprop_centered_momentum", "adam", "nadam"])
def test_learning_rate_change_mid_run(case):
    """reduce-on-plateau assigns learning_rate between steps; Keras's SGD velocity keeps the old rate's steps."""
    lr_at = {8: 0.003, 15: 0.0007}
    np.testing.assert_allclose(run_engine(CASES[case], lr_at=lr_at), reference_run(CASES[case], lr_at=lr_at),
                               rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------------------------ PyTorch
def _keras_clip_(params, cfg, torch):
    """Keras's clipping on torch gradients (torch's clip_grad_norm_ adds 1e-6 to the norm)."""
    grads = [p.grad for p in params]
    if cfg["clipvalue"] is not None:
        torch.nn.utils.clip_grad_value_(params, cfg["clipvalue"])
    elif cfg["clipnorm"] is not None:
        c = cfg["clipnorm"]
        for g in grads:
            g.mul_(c / max(g.norm().item(), c))
    elif cfg["global_clipnorm"] is not None:
        c = cfg["global_clipnorm"]
        norm = torch.sqrt(sum((g * g).sum() for g in grads)).item()
        for g in grads:
            g.mul_(c / max(norm, c))


class _KerasRule:
    """Keras's rule by hand with torch tensor ops, where torch's own optimizer puts epsilon elsewhere."""

    def __init__(self, params, cfg, torch):
        self.params, self.cfg, self.torch = params, cfg, torch
        self.state = [dict() for _ in params]

    def step(self):
        cfg, torch = self.cfg, self.torch
        lr = cfg["learning_rate"]
        for p, st in zip(self.params, self.state):
            g = p.grad
            if cfg["type"] == "rmsprop":   # epsilon inside the square root
                rho = cfg["rho"]
                st.setdefault("v", torch.zeros_like(p)).mul_(rho).addcmul_(g, g, value=1 - rho)
                denominator = st["v"].clone()
                if cfg["centered"]:
                    st.setdefault("gbar", torch.zeros_like(p)).mul_(rho).add_(g, alpha=1 - rho)
                    denominator -= st["gbar"] * st["gbar"]
                increment = lr * g / torch.sqrt(denominator + cfg["epsilon"])
                if cfg["momentum"] > 0:
                    st.setdefault("m", torch.zeros_like(p)).mul_(cfg["momentum"]).add_(increment)
                    p.sub_(st["m"])
                else:
                    p.sub_(increment)
            elif cfg["type"] == "adagrad":   # epsilon inside the square root
                acc = st.setdefault("acc", torch.full_like(p, cfg["initial_accumulator_value"]))
                acc.addcmul_(g, g)
                p.sub_(lr * g / torch.sqrt(acc + cfg["epsilon"]))
            else:
                raise AssertionError(cfg["type"])


def run_torch(config, steps=STEPS, native_epsilon=False):
    torch = pytest.importorskip("torch")
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)   # torch keeps NAdam's mu product in the default dtype
    try:
        return _run_torch(torch, config, steps, native_epsilon)
    finally:
        torch.set_default_dtype(default_dtype)


def _run_torch(torch, config, steps, native_epsilon):
    cfg = full_config(config)
    kind, lr = cfg["type"], cfg["learning_rate"]
    params = [torch.tensor(W0[a:b].reshape(shape), dtype=torch.float64, requires_grad=True)
              for (a, b), shape in zip(SEGMENTS, SHAPES)]

    def const(x):
        return [torch.tensor(x[a:b].reshape(shape), dtype=torch.float64) for (a, b), shape in zip(SEGMENTS, SHAPES)]

    curvature, target = const(CURVATURE), const(TARGET)
    decay_by_hand = bool(cfg["weight_decay"]) and kind != "adamw"
    eps = cfg.get("epsilon")
    if kind == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], nesterov=cfg["nesterov"])
    elif kind in ("adam", "adamw"):
        cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
        extra = {"weight_decay": cfg["weight_decay"]} if kind == "adamw" else {}
        opt = cls(params, lr=lr, betas=(cfg["beta_1"], cfg["beta_2"]), eps=eps, amsgrad=cfg["amsgrad"],
                  foreach=False, **extra)
    elif kind == "adadelta":   # torch's rule is Keras's (epsilon inside both roots)
        opt = torch.optim.Adadelta(params, lr=lr, rho=cfg["rho"], eps=eps, foreach=False)
    elif kind == "nadam":      # torch's momentum_decay psi gives mu_t = b1(1 - 0.5*0.96^(t*psi)); Keras: psi = 1
        opt = torch.optim.NAdam(params, lr=lr, betas=(cfg["beta_1"], cfg["beta_2"]), eps=eps, momentum_decay=1.0,
                                foreach=False)
    elif native_epsilon and kind == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=lr, alpha=cfg["rho"], eps=eps, momentum=cfg["momentum"],
                                  centered=cfg["centered"], foreach=False)
    elif native_epsilon and kind == "adagrad":
        opt = torch.optim.Adagrad(params, lr=lr, eps=eps, initial_accumulator_value=cfg["initial_accumulator_value"],
                                  foreach=False)
    else:
        opt = _KerasRule(params, cfg, torch)
    for t in range(1, steps + 1):
        for p in params:
            p.grad = None
        noise = const(NOISE[t - 1])
        loss = sum(s * (0.5 * (a * (p - c) ** 2).sum() + (n * p).sum())
                   for s, p, a, c, n in zip(SCALES, params, curvature, target, noise))
        loss.backward()
        with torch.no_grad():
            _keras_clip_(params, cfg, torch)
            if decay_by_hand:   # decoupled, before the update (torch's weight_decay on these is an L2 term)
                for p in params:
                    p.sub_(p * cfg["weight_decay"] * lr)
            if kind in ("adam", "adamw"):   # Keras adds epsilon before bias correction: eps/sqrt(1 - b2^t) in torch
                opt.param_groups[0]["eps"] = eps / math.sqrt(1 - cfg["beta_2"] ** t)
            opt.step()
    return np.concatenate([p.detach().numpy().ravel() for p in params])


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES)
def test_matches_torch(case):
    np.testing.assert_allclose(run_engine(CASES[case]), run_torch(CASES[case]), rtol=1e-12, atol=1e-13)


@pytest.mark.torch
@pytest.mark.parametrize("config", [
    {"type": "rmsprop", "learning_rate": 0.01, "epsilon": 1e-30},
    {"type": "rmsprop", "learning_rate": 0.01, "rho": 0.8, "momentum": 0.5, "centered": True, "epsilon": 1e-30},
    {"type": "adagrad", "learning_rate": 0.1, "epsilon": 1e-30},
], ids=["rmsprop", "rmsprop_centered_momentum", "adagrad"])
def test_matches_torch_native_where_epsilon_vanishes(config):
    """torch puts epsilon outside the root; with a negligible epsilon torch's own optimizer must agree too."""
    np.testing.assert_allclose(run_engine(config), run_torch(config, native_epsilon=True), rtol=1e-12, atol=1e-13)


@pytest.mark.torch
def test_torch_check_tells_epsilon_placement_apart():
    """The comparison is sharp enough to see where epsilon goes: Adam with torch's plain eps differs."""
    torch = pytest.importorskip("torch")
    config = CASES["adam"]
    params = [torch.tensor(W0, dtype=torch.float64, requires_grad=True)]
    opt = torch.optim.Adam(params, lr=config["learning_rate"], eps=config["epsilon"])
    for t in range(1, STEPS + 1):
        params[0].grad = torch.from_numpy(gradient(params[0].detach().numpy().copy(), t))
        opt.step()
    assert not np.allclose(run_engine(config), params[0].detach().numpy(), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------- state, resume
def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_resume_is_bit_identical(case, dtype):
    lr_at = {5: 0.004}   # a reduce-on-plateau before the checkpoint must survive it
    straight = run_engine(CASES[case], dtype, lr_at=lr_at)

    first = optimizers.get(CASES[case])
    w = W0.astype(dtype)
    first.build(w, SEGMENTS)
    for t in range(1, 11):
        if t in lr_at:
            first.learning_rate = lr_at[t]
        first.step(w, gradient(w, t))
    state = first.state()
    for value in state.values():
        assert isinstance(value, np.ndarray) and value.dtype.kind in "iuf"
    assert int(state["iterations"]) == 10 and float(state["learning_rate"]) == 0.004
    saved, config, checkpoint_weights = _roundtrip(state), first.get_config(), w.copy()
    for t in range(11, STEPS + 1):   # the original keeps going: the saved copy must not move with it
        first.step(w, gradient(w, t))
    np.testing.assert_array_equal(w, straight)

    # resume into a fresh optimizer built from the saved config, on the checkpointed weights
    second = optimizers.get(config)
    second.load_state(saved)   # before build: kept, applied by build
    second.build(checkpoint_weights, SEGMENTS)
    assert second.iterations == 10 and second.learning_rate == 0.004
    for t in range(11, STEPS + 1):
        second.step(checkpoint_weights, gradient(checkpoint_weights, t))
    np.testing.assert_array_equal(checkpoint_weights, straight)
    final = first.state()
    for key, value in second.state().items():
        np.testing.assert_array_equal(value, final[key], err_msg=key)


def test_load_state_after_build_and_mismatches():
    opt = optimizers.get("adam")
    w = W0.astype(np.float32)
    opt.build(w, SEGMENTS)
    opt.step(w, gradient(w, 1))
    state = opt.state()
    other = optimizers.get("adam")
    other.build(W0.astype(np.float32), SEGMENTS)
    other.load_state(state)
    assert other.iterations == 1
    for key, value in other.state().items():
        np.testing.assert_array_equal(value, state[key])
    with pytest.raises(ValueError, match="missing"):
        other.load_state({k: v for k, v in state.items() if k != "m_sum"})
    with pytest.raises(ValueError, match="shape"):
        other.load_state({**state, "m_sum": state["m_sum"][:-1]})
    with pytest.raises(ValueError, match="unexpected"):
        other.load_state({**state, "velocity": state["m_sum"]})


# ---------------------------------------------------------------------------------------------- float32
class _Float32Numpy:
    """Stands in for numpy inside engine.optimizers: every array or numpy scalar given to a numpy function, and
    every array it returns, must be float32 (a float64 scalar would silently promote a whole pass)."""

    def __init__(self):
        self.calls = 0

    def __getattr__(self, name):
        real = getattr(np, name)
        if not callable(real) or isinstance(real, type) or name in ("dtype",):
            return real

        def checked(*args, **kwargs):
            for x in list(args) + list(kwargs.values()):
                if isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind == "f":
                    assert x.dtype == np.float32, f"np.{name} got a {x.dtype} operand"
            result = real(*args, **kwargs)
            if isinstance(result, (np.ndarray, np.generic)) and result.dtype.kind == "f":
                assert result.dtype == np.float32, f"np.{name} returned {result.dtype}"
            self.calls += 1
            return result

        return checked


@pytest.mark.parametrize("case", CASES)
def test_float32_is_never_promoted(case, monkeypatch):
    fake = _Float32Numpy()
    monkeypatch.setattr(optimizers, "np", fake)
    opt = optimizers.get(CASES[case])
    w = W0.astype(np.float32)
    opt.build(w, SEGMENTS)
    for t in range(1, 4):
        g = gradient(w, t)
        opt.step(w, g)
    assert fake.calls >= 2 * 3 and w.dtype == np.float32
    monkeypatch.undo()
    for key, value in opt.state().items():
        if key not in ("iterations", "learning_rate", "u_product"):
            assert value.dtype == np.float32, key


def test_gradient_buffer_may_be_any_dtype_matching_params_only():
    opt = optimizers.get("adam")
    w = W0.astype(np.float32)
    opt.build(w, SEGMENTS)
    with pytest.raises(ValueError):
        opt.step(w, gradient(W0, 1))   # float64 gradients for float32 weights
    with pytest.raises(RuntimeError):
        optimizers.get("adam").step(w, gradient(w, 1))


# ---------------------------------------------------------------------------------------------- clipping
@pytest.mark.parametrize("clip", [{"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 1.0}])
def test_zero_gradient_is_safe_to_clip(clip):
    opt = optimizers.get({"type": "sgd", "learning_rate": 1.0, **clip})
    w = W0.copy()
    opt.build(w, SEGMENTS)
    g = np.zeros(N)
    g[SEGMENTS[0][0]:SEGMENTS[0][1]] = 10.0   # one variable far above the clip, the others exactly zero
    before = w.copy()
    opt.step(w, g)
    assert np.all(np.isfinite(w))
    np.testing.assert_array_equal(w[SEGMENTS[0][1]:], before[SEGMENTS[0][1]:])
    step = before[:SEGMENTS[0][1]] - w[:SEGMENTS[0][1]]
    expected = 1.0 if "clipvalue" in clip else 1.0 / math.sqrt(SIZES[0])
    np.testing.assert_allclose(step, expected, rtol=1e-12)


def test_clipnorm_is_per_variable_and_global_is_not():
    g = np.concatenate([np.full(SIZES[0], 1.0), np.full(sum(SIZES[1:]), 0.01)])
    per_var = optimizers.get({"type": "sgd", "learning_rate": 1.0, "clipnorm": 1.0})
    glob = optimizers.get({"type": "sgd", "learning_rate": 1.0, "global_clipnorm": 1.0})
    w1, w2 = np.zeros(N), np.zeros(N)
    per_var.build(w1, SEGMENTS)
    glob.build(w2, SEGMENTS)
    per_var.step(w1, g.copy())
    glob.step(w2, g.copy())
    a, b = SEGMENTS[0]
    assert np.linalg.norm(w1[a:b]) == pytest.approx(1.0)
    np.testing.assert_allclose(w1[b:], -0.01)             # small variables untouched by clipnorm
    assert np.linalg.norm(w2) == pytest.approx(1.0)       # global_clipnorm scales everything together


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("kind", KERAS_DEFAULTS)
def test_keras_defaults_and_config_round_trip(kind):
    config = optimizers.get(kind).get_config()
    expected = {"type": kind, **KERAS_DEFAULTS[kind], **COMMON_DEFAULTS}
    if kind == "adamw":
        expected["weight_decay"] = 0.004
    assert config == expected
    assert list(config)[:2] == ["type", "learning_rate"]
    assert optimizers.get(config).get_config() == config
    assert optimizers.get(kind.upper() if kind != "rmsprop" else "RMSprop").get_config() == config
    assert isinstance(optimizers.get(kind), optimizers.OPTIMIZERS[kind])


def test_get_config_reports_the_current_learning_rate_and_options():
    opt = optimizers.get({"type": "nadam", "learning_rate": 0.01, "clipvalue": 0.5, "weight_decay": 0.01})
    opt.learning_rate = 0.001
    config = opt.get_config()
    assert config["learning_rate"] == 0.001 and config["clipvalue"] == 0.5 and config["weight_decay"] == 0.01
    with pytest.raises(ValueError):
        opt.learning_rate = -1.0


@pytest.mark.parametrize("config, field", [
    ("nonsense", "optimizer.type"),
    ({"learning_rate": 0.1}, "optimizer.type"),
    ({"type": 3}, "optimizer.type"),
    (42, "optimizer"),
    ({"type": "adam", "learning_rate": 0}, "optimizer.learning_rate"),
    ({"type": "adam", "learning_rate": "fast"}, "optimizer.learning_rate"),
    ({"type": "adam", "learning_rate": float("nan")}, "optimizer.learning_rate"),
    ({"type": "adam", "learning_rate": True}, "optimizer.learning_rate"),
    ({"type": "adam", "beta_1": 1.0}, "optimizer.beta_1"),
    ({"type": "nadam", "beta_2": -0.1}, "optimizer.beta_2"),
    ({"type": "adam", "epsilon": 0}, "optimizer.epsilon"),
    ({"type": "adam", "amsgrad": 1}, "optimizer.amsgrad"),
    ({"type": "adam", "momentum": 0.9}, "optimizer.momentum"),
    ({"type": "adam", "lr": 0.1}, "optimizer.lr"),
    ({"type": "sgd", "momentum": 1.5}, "optimizer.momentum"),
    ({"type": "sgd", "nesterov": "yes"}, "optimizer.nesterov"),
    ({"type": "rmsprop", "rho": 1.0}, "optimizer.rho"),
    ({"type": "rmsprop", "centered": None}, "optimizer.centered"),
    ({"type": "adadelta", "rho": 2}, "optimizer.rho"),
    ({"type": "adagrad", "initial_accumulator_value": -0.1}, "optimizer.initial_accumulator_value"),
    ({"type": "adamw", "weight_decay": None}, "optimizer.weight_decay"),
    ({"type": "adam", "weight_decay": -1}, "optimizer.weight_decay"),
    ({"type": "adam", "clipnorm": 0}, "optimizer.clipnorm"),
    ({"type": "adam", "global_clipnorm": -1}, "optimizer.global_clipnorm"),
    ({"type": "adam", "clipnorm": 1.0, "clipvalue": 0.5}, "optimizer.clipvalue"),
    ({"type": "sgd", "clipvalue": 1.0, "global_clipnorm": 0.5}, "optimizer.global_clipnorm"),
])
def test_bad_config_raises_config_error(config, field):
    with pytest.raises(ConfigError) as info:
        optimizers.get(config)
    assert info.value.field == field
    assert isinstance(info.value, ValueError) and field in str(info.value)


def test_registry_and_build_checks():
    assert set(optimizers.OPTIMIZERS) == {"sgd", "rmsprop", "adam", "adamw", "adadelta", "adagrad", "nadam"}
    opt = optimizers.get("sgd")
    with pytest.raises(ValueError):
        opt.build(np.zeros((2, 2)), [(0, 4)])
    with pytest.raises(ValueError):
        opt.build(np.zeros(4, dtype=np.int64), [(0, 4)])
    with pytest.raises(ValueError):
        opt.build(np.zeros(4), [(0, 3), (2, 4)])   # overlapping
    with pytest.raises(ValueError):
        opt.build(np.zeros(4), [(0, 5)])


@pytest.mark.parametrize("config", [
    {"type": "nadam", "global_clipnorm": 100.0},
    {"type": "adam", "clipvalue": 1.0, "weight_decay": 0.1},
    {"type": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "clipnorm": 10.0},
    {"type": "adadelta", "learning_rate": 1.0},
], ids=["nadam", "adam", "sgd", "adadelta"])
def test_chunked_step_equals_one_pass(config):
    """Chunked passes (and the clipping and decay folded into them) give what one pass over the buffer gives."""
    rng = np.random.default_rng(3)
    n = 300_001
    w0 = rng.normal(size=n).astype(np.float32)
    grads = rng.normal(size=(3, n)).astype(np.float32)
    results = []
    for chunk_bytes in (optimizers.Optimizer.CHUNK_BYTES, 1 << 40):
        opt = optimizers.get(config)
        opt.CHUNK_BYTES = chunk_bytes
        w = w0.copy()
        opt.build(w, [(0, 1000), (1000, n)])
        for g in grads:
            opt.step(w, g.copy())
        results.append(w)
        assert len(opt._chunks) == (1 if chunk_bytes == 1 << 40 else 9)
    np.testing.assert_array_equal(results[0], results[1])
