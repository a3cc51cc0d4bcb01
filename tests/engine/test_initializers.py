"""Initializer statistics with Keras's fans and truncation constant; seeding."""
import math

import numpy as np
import pytest

import engine
from engine.initializers import TRUNCATION_STD, initialize

FAN_IN, FAN_OUT = 400, 300
SHAPE = (FAN_IN, FAN_OUT)       # 120,000 draws: the sample std is within ~0.5% of the true one


def draw(kind, **params):
    return initialize({"type": kind, "seed": None, **params}, SHAPE, np.random.default_rng(0), np.float64)


@pytest.mark.parametrize("kind,limit", [
    ("glorot_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("he_uniform", math.sqrt(6 / FAN_IN)),
    ("lecun_uniform", math.sqrt(3 / FAN_IN)),
])
def test_uniform_limits(kind, limit):
    w = draw(kind)
    assert w.max() <= limit and w.min() >= -limit
    assert w.max() > 0.99 * limit and w.min() < -0.99 * limit
    assert abs(w.std() - limit / math.sqrt(3)) < 0.01 * limit


@pytest.mark.parametrize("kind,std", [
    ("glorot_normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("he_normal", math.sqrt(2 / FAN_IN)),
    ("lecun_normal", math.sqrt(1 / FAN_IN)),
])
def test_truncated_variance_scaling(kind, std):
    w = draw(kind)
    sigma = std / TRUNCATION_STD           # the untruncated sigma Keras draws from
    assert np.abs(w).max() <= 2 * sigma    # truncated at two sigmas
    assert abs(w.std() - std) < 0.01 * std  # ... which brings the std back to the target
    assert abs(w.mean()) < 0.01 * std


def test_random_and_constant_initializers():
    w = draw("random_normal", mean=1.0, stddev=0.05)
    assert abs(w.mean() - 1.0) < 1e-3 and abs(w.std() - 0.05) < 1e-3
    w = draw("random_uniform", minval=-0.05, maxval=0.05)
    assert w.min() >= -0.05 and w.max() <= 0.05 and abs(w.std() - 0.1 / math.sqrt(12)) < 1e-3
    w = draw("truncated_normal", mean=0.0, stddev=0.05)
    assert np.abs(w).max() <= 0.1 and abs(w.std() - 0.05 * TRUNCATION_STD) < 1e-3
    assert np.all(draw("zeros") == 0) and np.all(draw("ones") == 1)


def test_seeded_and_deterministic():
    spec = {"input_shape": [5], "layers": [{"type": "dense", "units": 4, "kernel_initializer": "he_normal"},
                                           {"type": "dense", "units": 2}]}
    a, b, c = engine.build(spec, seed=1), engine.build(spec, seed=1), engine.build(spec, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    # an initializer's own seed fixes its values whatever the model seed
    fixed = {"input_shape": [5], "layers": [{"type": "dense", "units": 4,
                                             "kernel_initializer": {"type": "glorot_normal", "seed": 7}}]}
    assert np.array_equal(engine.build(fixed, seed=1).get_weights()[0], engine.build(fixed, seed=9).get_weights()[0])
    # float32 and float64 models draw the same values
    f64 = engine.build(spec, seed=1, dtype="float64")
    assert np.allclose(f64.get_weights()[0], a.get_weights()[0], rtol=1e-6)
    assert f64.dtype == np.float64 and a.dtype == np.float32
