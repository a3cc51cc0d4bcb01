"""Learning-rate schedules: Keras 3's formulas, PyTorch's schedulers, and fits that follow them and resume exactly.

The rate of the t-th step (1-based) is ``schedule(t - 1)``, as in Keras (evaluated at ``iterations`` before the
increment) and in PyTorch (the scheduler starts at the initial rate and is stepped after each optimizer step).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import optimizers, schedules
from engine.errors import ConfigError
from tests.engine.test_optimizers import (CURVATURE, NOISE, SCALES, SEGMENTS, SHAPES, STEPS, TARGET, W0,
                                          gradient)
from tests.engine.test_training import (ALL_FEATURES, XS, YS, checkpoint_of_a_fit_stopped_after, fit_config,
                                        same_weights, strip_seconds)

STEP_RANGE = np.arange(0, 400)


# --------------------------------------------------------------------- the formulas, transcribed independently
def ref_exponential(s, init, decay_steps, decay_rate, staircase=False):
    e = s / decay_steps
    return init * decay_rate ** (np.floor(e) if staircase else e)


def ref_inverse_time(s, init, decay_steps, decay_rate, staircase=False):
    q = s / decay_steps
    return init / (1 + decay_rate * (np.floor(q) if staircase else q))


def ref_polynomial(s, init, decay_steps, end_learning_rate=1e-4, power=1.0, cycle=False):
    if cycle:
        steps = decay_steps * np.maximum(1.0, np.ceil(s / decay_steps))
    else:
        steps, s = decay_steps, np.minimum(s, decay_steps)
    return (init - end_learning_rate) * (1 - s / steps) ** power + end_learning_rate


def ref_piecewise(s, boundaries, values):
    # the first boundary >= s picks the value; past the last boundary, the last value
    return np.asarray(values)[np.searchsorted(boundaries, s, side="left")]


def ref_cosine(s, init, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    def cosine(x, peak):
        return peak * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * x / decay_steps)) + alpha)
    if warmup_target is None:
        return cosine(np.minimum(s, decay_steps), init)
    s = np.minimum(s, decay_steps + warmup_steps)
    ramp = init + (warmup_target - init) * s / max(warmup_steps, 1)
    return np.where(s < warmup_steps, ramp, cosine(s - warmup_steps, warmup_target))


def ref_restarts(s, init, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    """Walk the periods one by one (the engine solves for the period with logarithms instead)."""
    out = []
    for step in s:
        start, length, peak = 0.0, float(first_decay_steps), 1.0
        while step >= start + length:
            start, length, peak = start + length, length * t_mul, peak * m_mul
        cosine = 0.5 * peak * (1 + math.cos(math.pi * (step - start) / length))
        out.append(init * ((1 - alpha) * cosine + alpha))
    return np.array(out)


CASES = {
    "exponential": ({"type": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 30,
                     "decay_rate": 0.8}, ref_exponential),
    "exponential_staircase": ({"type": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 30,
                               "decay_rate": 0.8, "staircase": True}, ref_exponential),
    "inverse_time": ({"type": "inverse_time_decay", "initial_learning_rate": 0.05, "decay_steps": 7.5,
                      "decay_rate": 0.3}, ref_inverse_time),
    "inverse_time_staircase": ({"type": "inverse_time_decay", "initial_learning_rate": 0.05, "decay_steps": 7,
                                "decay_rate": 0.3, "staircase": True}, ref_inverse_time),
    "polynomial": ({"type": "polynomial_decay", "initial_learning_rate": 0.1, "decay_steps": 150,
                    "end_learning_rate": 0.01, "power": 0.5}, ref_polynomial),
    "polynomial_cycle": ({"type": "polynomial_decay", "initial_learning_rate": 0.1, "decay_steps": 60, "power": 2.0,
                          "cycle": True}, ref_polynomial),
    "piecewise": ({"type": "piecewise_constant_decay", "boundaries": [10, 100, 250], "values": [1.0, 0.5, 0.1, 0.0]},
                  ref_piecewise),
    "cosine": ({"type": "cosine_decay", "initial_learning_rate": 0.2, "decay_steps": 300, "alpha": 0.1},
               ref_cosine),
    "cosine_warmup": ({"type": "cosine_decay", "initial_learning_rate": 0.0, "decay_steps": 200,
                       "warmup_target": 0.1, "warmup_steps": 50}, ref_cosine),
    "restarts": ({"type": "cosine_decay_restarts", "initial_learning_rate": 0.1, "first_decay_steps": 10,
                  "alpha": 0.05}, ref_restarts),
    "restarts_t_mul_3_m_mul": ({"type": "cosine_decay_restarts", "initial_learning_rate": 0.1,
                                "first_decay_steps": 7, "t_mul": 3.0, "m_mul": 0.5}, ref_restarts),
    "restarts_t_mul_1": ({"type": "cosine_decay_restarts", "initial_learning_rate": 0.1, "first_decay_steps": 25,
                          "t_mul": 1.0, "m_mul": 0.9}, ref_restarts),
    "restarts_t_mul_1_5": ({"type": "cosine_decay_restarts", "initial_learning_rate": 0.1, "first_decay_steps": 4,
                            "t_mul": 1.5}, ref_restarts),
}


@pytest.mark.parametrize("case", CASES)
def test_each_schedule_follows_its_formula(case):
    config, reference = CASES[case]
    schedule = schedules.get(config)
    params = {k: v for k, v in config.items() if k != "type"}
    init = params.pop("initial_learning_rate", None)
    first = params.pop("decay_steps", None) or params.pop("first_decay_steps", None)
    expected = (reference(STEP_RANGE.astype(float), **params) if init is None
                else reference(STEP_RANGE.astype(float), init, first, **params))
    got = np.array([schedule(int(s)) for s in STEP_RANGE])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert np.all(np.isfinite(got)) and np.all(got >= 0)
    assert len(np.unique(np.round(got, 12))) > 2     # the case actually moves within the steps checked


@pytest.mark.parametrize("first, t_mul", [(10, 2.0), (2, 3.0)])
def test_restarts_begin_exactly_at_each_period_boundary(first, t_mul):
    """Each period restarts at the full rate. With t_mul = 3, log(3**5) / log(3) lands a hair below 5, which
    would put the first step of the sixth period (step 242) at the end of the fifth."""
    schedule = schedules.get({"type": "cosine_decay_restarts", "initial_learning_rate": 0.1,
                              "first_decay_steps": first, "t_mul": t_mul})
    starts = [round(first * (t_mul ** i - 1) / (t_mul - 1)) for i in range(12)]
    for start in starts:
        assert schedule(start) == pytest.approx(0.1, rel=1e-12), start
        assert schedule(start + 1) < 0.1


def test_the_optimizer_uses_schedule_of_the_step_count_before_each_step():
    config, reference = CASES["piecewise"]
    opt = optimizers.get({"type": "sgd", "learning_rate": config})
    w = W0.copy()
    opt.build(w, SEGMENTS)
    seen = []
    for t in range(1, 121):
        seen.append(opt.learning_rate)
        before = w.copy()
        g = gradient(w, (t - 1) % STEPS + 1)
        expected_w = before - opt.learning_rate * g
        opt.step(w, g.copy())
        np.testing.assert_allclose(w, expected_w, rtol=1e-14, atol=1e-15)
    assert seen == list(reference(np.arange(120.0), config["boundaries"], config["values"]))


def test_state_round_trip_continues_the_schedule_exactly():
    config = {"type": "adam", "learning_rate": CASES["restarts"][0]}
    a = optimizers.get(config)
    w = W0.astype(np.float32)
    a.build(w, SEGMENTS)
    for t in range(1, 13):
        a.step(w, gradient(w, t))
    state = a.state()
    b = optimizers.get(a.get_config())
    w2 = w.copy()
    b.build(w2, SEGMENTS)
    b.load_state(state)
    assert b.learning_rate == a.learning_rate
    for t in range(13, 21):
        a.step(w, gradient(w, t))
        b.step(w2, gradient(w2, t))
    assert np.array_equal(w, w2)


def test_keras_serialized_form_is_accepted_and_normalized():
    keras_form = {"module": "keras.optimizers.schedules", "class_name": "CosineDecay", "registered_name": None,
                  "config": {"initial_learning_rate": 0.1, "decay_steps": 1000, "alpha": 0.0, "name": "CosineDecay",
                             "warmup_target": None, "warmup_steps": 0}}
    opt = optimizers.get({"type": "adam", "learning_rate": keras_form})
    assert opt.get_config()["learning_rate"] == {"type": "cosine_decay", "initial_learning_rate": 0.1,
                                                 "decay_steps": 1000, "alpha": 0.0, "warmup_target": None,
                                                 "warmup_steps": 0}


@pytest.mark.parametrize("rate, field, message", [
    ({"type": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 0, "decay_rate": 0.5},
     "optimizer.learning_rate.decay_steps", "> 0"),
    ({"type": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 10},
     "optimizer.learning_rate.decay_rate", "required"),
    ({"type": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 1.5},
     "optimizer.learning_rate.decay_rate", "<= 1"),
    ({"type": "exponential_decay", "initial_learning_rate": -0.1, "decay_steps": 10, "decay_rate": 0.5},
     "optimizer.learning_rate.initial_learning_rate", ">= 0"),
    ({"type": "cosine_decay", "initial_learning_rate": 0.1, "decay_steps": 10, "warmup": 5},
     "optimizer.learning_rate.warmup", "unknown parameter"),
    ({"type": "step_decay"}, "optimizer.learning_rate.type", "unknown schedule"),
    ({"type": "piecewise_constant_decay", "boundaries": [10, 20], "values": [0.1, 0.01]},
     "optimizer.learning_rate.values", "3 learning rates"),
    ({"type": "piecewise_constant_decay", "boundaries": [10, 10], "values": [0.1, 0.01, 0.001]},
     "optimizer.learning_rate.boundaries.1", "greater"),
    ({"type": "piecewise_constant_decay", "boundaries": [2.5], "values": [0.1, 0.01]},
     "optimizer.learning_rate.boundaries.0", "whole number"),
    ({"type": "polynomial_decay", "initial_learning_rate": 0.1, "decay_steps": 10, "power": -1},
     "optimizer.learning_rate.power", "> 0"),
    ({"type": "cosine_decay_restarts", "initial_learning_rate": 0.1, "first_decay_steps": 10, "t_mul": 0.5},
     "optimizer.learning_rate.t_mul", ">= 1"),
    ({"type": "cosine_decay_restarts", "initial_learning_rate": 0.1, "first_decay_steps": 10, "m_mul": 2},
     "optimizer.learning_rate.m_mul", "<= 1"),
    ({"class_name": "OneCycle", "config": {}}, "optimizer.learning_rate.class_name", "unknown Keras schedule"),
    ({"type": "cosine_decay", "initial_learning_rate": "0.1", "decay_steps": 10},
     "optimizer.learning_rate.initial_learning_rate", "finite number"),
])
def test_bad_schedules_name_the_field(rate, field, message):
    with pytest.raises(ConfigError, match=message) as info:
        engine.config.normalize_fit_config({"loss": "mse", "optimizer": {"type": "sgd", "learning_rate": rate}})
    assert info.value.field == field


def test_a_schedule_excludes_reduce_on_plateau_and_cannot_be_assigned():
    rate = CASES["exponential"][0]
    with pytest.raises(ConfigError, match="schedule") as info:
        engine.config.normalize_fit_config({"loss": "mse", "optimizer": {"type": "adam", "learning_rate": rate},
                                            "reduce_lr_on_plateau": {"monitor": "loss"}})
    assert info.value.field == "reduce_lr_on_plateau"
    opt = optimizers.get({"type": "adam", "learning_rate": rate})
    with pytest.raises(ValueError, match="schedule"):
        opt.learning_rate = 0.5


# --------------------------------------------------------------------------------------------- fits
def test_history_reports_the_rate_of_the_next_step():
    rate = {"type": "exponential_decay", "initial_learning_rate": 0.05, "decay_steps": 5, "decay_rate": 0.5}
    model = engine.build(ALL_FEATURES, seed=2)
    history = model.fit(XS, YS, **fit_config(optimizer={"type": "sgd", "learning_rate": rate}))
    steps_per_epoch = math.ceil(90 / 16)        # 120 rows, validation_split 0.25
    schedule = schedules.get(rate)
    assert [row["learning_rate"] for row in history] == [schedule(steps_per_epoch * e) for e in range(1, 5)]


@pytest.mark.parametrize("rate", [CASES["cosine_warmup"][0], CASES["restarts"][0], CASES["piecewise"][0]],
                         ids=["cosine_warmup", "restarts", "piecewise"])
def test_resume_and_carry_on_are_bit_identical_with_a_schedule(rate):
    cfg = fit_config(optimizer={"type": "adam", "learning_rate": rate},
                     early_stopping={"patience": 10, "restore_best_weights": True})
    full = engine.build(ALL_FEATURES, seed=5)
    history = full.fit(XS, YS, **{**cfg, "epochs": 6})
    checkpoint = checkpoint_of_a_fit_stopped_after(2, ALL_FEATURES, 5, XS, YS, cfg)
    resumed, resumed_history = engine.resume(checkpoint, XS, YS, epochs=6)
    assert same_weights(full, resumed)
    assert strip_seconds(resumed_history) == strip_seconds(history)
    assert len({row["learning_rate"] for row in history}) > 1    # the schedule moved the rate within the fit


# --------------------------------------------------------------------------------------------- PyTorch
def _torch_trajectory(torch, kind, lr, make_scheduler, steps):
    """Weights after ``steps`` steps of torch's optimizer driven by one of torch's own schedulers."""
    params = [torch.tensor(W0[a:b].reshape(shape), dtype=torch.float64, requires_grad=True)
              for (a, b), shape in zip(SEGMENTS, SHAPES)]

    def const(x):
        return [torch.tensor(x[a:b].reshape(shape), dtype=torch.float64) for (a, b), shape in zip(SEGMENTS, SHAPES)]

    curvature, target = const(CURVATURE), const(TARGET)
    if kind in ("sgd", "momentum"):
        # torch's momentum keeps v <- mu*v + g and steps lr*v, which is Keras's v <- mu*v - lr*g only while the
        # rate is constant; under a schedule the two differ, so Keras's rule is written out below
        opt = torch.optim.SGD(params, lr=lr)
    else:
        opt = torch.optim.Adam(params, lr=lr, eps=1e-7, foreach=False)
    scheduler = make_scheduler(torch.optim.lr_scheduler, opt)
    velocity = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        for p in params:
            p.grad = None
        noise = const(NOISE[(t - 1) % STEPS])
        loss = sum(s * (0.5 * (a * (p - c) ** 2).sum() + (n * p).sum())
                   for s, p, a, c, n in zip(SCALES, params, curvature, target, noise))
        loss.backward()
        if kind == "adam":     # Keras adds epsilon before bias correction: eps/sqrt(1 - b2^t) in torch
            opt.param_groups[0]["eps"] = 1e-7 / math.sqrt(1 - 0.999 ** t)
        if kind == "momentum":
            with torch.no_grad():
                rate = opt.param_groups[0]["lr"]
                for p, v in zip(params, velocity):
                    v.mul_(0.9).sub_(rate * p.grad)
                    p.add_(v)
        else:
            opt.step()
        scheduler.step()
    return np.concatenate([p.detach().numpy().ravel() for p in params])


def _engine_trajectory(kind, rate, steps):
    options = {"type": "sgd", "momentum": 0.9} if kind == "momentum" else {"type": kind}
    opt = optimizers.get({**options, "learning_rate": rate})
    w = W0.copy()
    opt.build(w, SEGMENTS)
    for t in range(1, steps + 1):
        opt.step(w, gradient(w, (t - 1) % STEPS + 1))
    return w


LR = 0.05
TORCH_CASES = {
    # name: (the engine's schedule, torch's scheduler for an optimizer whose lr is LR, or the warmup's target)
    "exponential": ({"type": "exponential_decay", "initial_learning_rate": LR, "decay_steps": 1, "decay_rate": 0.9},
                    lambda s, o: s.ExponentialLR(o, gamma=0.9)),
    "inverse_time": ({"type": "inverse_time_decay", "initial_learning_rate": LR, "decay_steps": 4, "decay_rate": 0.5},
                     lambda s, o: s.LambdaLR(o, lambda k: 1 / (1 + 0.5 * k / 4))),
    "polynomial": ({"type": "polynomial_decay", "initial_learning_rate": LR, "decay_steps": 25,
                    "end_learning_rate": 0.0, "power": 2.0},
                   lambda s, o: s.PolynomialLR(o, total_iters=25, power=2.0)),
    "piecewise": ({"type": "piecewise_constant_decay", "boundaries": [5, 17], "values": [LR, LR * 0.3, LR * 0.09]},
                  # torch's milestone m changes the rate of step m + 1 (0-based); Keras's boundary b that of b + 1
                  lambda s, o: s.MultiStepLR(o, milestones=[6, 18], gamma=0.3)),
    "cosine": ({"type": "cosine_decay", "initial_learning_rate": LR, "decay_steps": 30, "alpha": 0.2},
               lambda s, o: s.CosineAnnealingLR(o, T_max=30, eta_min=0.2 * LR)),
    "restarts": ({"type": "cosine_decay_restarts", "initial_learning_rate": LR, "first_decay_steps": 3,
                  "alpha": 0.1}, lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.1 * LR)),
    "restarts_t_mul_1": ({"type": "cosine_decay_restarts", "initial_learning_rate": LR, "first_decay_steps": 7,
                          "t_mul": 1.0}, lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=7, T_mult=1)),
    # torch's cosine annealing rises again after T_max where Keras's stays at its floor: the runs stop before
    "cosine_warmup": ({"type": "cosine_decay", "initial_learning_rate": 0.1 * LR, "decay_steps": 22,
                       "warmup_target": LR, "warmup_steps": 8},
                      lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=8),
                                                      s.CosineAnnealingLR(o, T_max=22)], milestones=[8])),
}


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")   # momentum by hand
@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("case", TORCH_CASES)
def test_matches_torch_schedulers(case, kind):
    torch = pytest.importorskip("torch")
    rate, make_scheduler = TORCH_CASES[case]
    steps = 30     # past the polynomial's end and through the restarts' second period
    ours = _engine_trajectory(kind, rate, steps)
    theirs = _torch_trajectory(torch, kind, LR, make_scheduler, steps)
    np.testing.assert_allclose(ours, theirs, rtol=1e-11, atol=1e-13)
    # and the schedule mattered: a constant rate ends elsewhere
    assert not np.allclose(ours, _engine_trajectory(kind, LR, steps), rtol=1e-6)
