"""Weight initializers with Keras's formulas, fans and truncation constant.

Every draw comes from an ``np.random.Generator`` handed in by the caller; there is no global RNG.
Draws are made in float64 and cast, so the same seed gives the same values in float32 and float64
(up to rounding).
"""
from __future__ import annotations

import math

import numpy as np

# Standard deviation of N(0, 1) truncated to [-2, 2]; Keras divides by it so that the truncated
# normal keeps the requested variance.
TRUNCATION_STD = 0.87962566103423978

# name -> default parameters (besides "seed")
DEFAULTS: dict[str, dict] = {
    "zeros": {},
    "ones": {},
    "random_normal": {"mean": 0.0, "stddev": 0.05},
    "random_uniform": {"minval": -0.05, "maxval": 0.05},
    "truncated_normal": {"mean": 0.0, "stddev": 0.05},
    "glorot_normal": {},
    "glorot_uniform": {},
    "he_normal": {},
    "he_uniform": {},
    "lecun_normal": {},
    "lecun_uniform": {},
}

# name -> (scale, mode, distribution) of Keras's VarianceScaling
VARIANCE_SCALING = {
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
}


def compute_fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """Keras's fans: (in, units) kernels give (in, units); a vector gives (n, n)."""
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = float(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def truncated_normal(rng: np.random.Generator, shape, mean: float, stddev: float) -> np.ndarray:
    """N(mean, stddev²) redrawn until inside mean ± 2·stddev."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * stddev + mean


def initialize(config: dict, shape: tuple[int, ...], rng: np.random.Generator,
               dtype=np.float32) -> np.ndarray:
    """Values for one variable. ``config`` is a normalized initializer ``{"type", ...params, "seed"}``;
    a non-null ``seed`` overrides ``rng`` (a fixed initializer, as in Keras)."""
    kind = config["type"]
    if config.get("seed") is not None:
        rng = np.random.Generator(np.random.PCG64(int(config["seed"])))
    if kind == "zeros":
        values = np.zeros(shape)
    elif kind == "ones":
        values = np.ones(shape)
    elif kind == "random_normal":
        values = rng.normal(config["mean"], config["stddev"], size=shape)
    elif kind == "random_uniform":
        values = rng.uniform(config["minval"], config["maxval"], size=shape)
    elif kind == "truncated_normal":
        values = truncated_normal(rng, shape, config["mean"], config["stddev"])
    elif kind in VARIANCE_SCALING:
        scale, mode, distribution = VARIANCE_SCALING[kind]
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        s = scale / max(1.0, n)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * s)
            values = rng.uniform(-limit, limit, size=shape)
        else:
            values = truncated_normal(rng, shape, 0.0, math.sqrt(s) / TRUNCATION_STD)
    else:  # normalize_spec rejects unknown names before this point
        raise ValueError(f"unknown initializer {kind!r}")
    return np.asarray(values, dtype=dtype)
