"""Learning-rate schedules: Keras 3's six, as functions of the optimizer's step count.

An optimizer's ``learning_rate`` may be an object instead of a number::

    {"type": "exponential_decay", "initial_learning_rate": 0.01, "decay_steps": 1000, "decay_rate": 0.9}

Keras's serialized form (what ``keras.optimizers.schedules.serialize`` prints: ``{"class_name":
"ExponentialDecay", "config": {...}}``) is accepted too and normalized to the form above.

The rate of step ``t`` (1-based) is ``schedule(t - 1)``: Keras evaluates the schedule at the optimizer's
``iterations`` before incrementing it, and PyTorch's schedulers start from their initial rate the same way.
A schedule depends on nothing but that count, which every checkpoint holds, so a resumed fit follows it exactly.

Keras evaluates the formulas in float32 tensors; here they are evaluated in float64 and the rate is then rounded
to the buffers' dtype with the optimizer's other constants, so the float32 rate can differ from Keras's in its
last bit. Parameters that would let a rate grow without bound or turn NaN (a decay rate above 1, a negative
power, ``t_mul`` below 1) are refused, so that every rate is finite and non-negative.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

from .errors import ConfigError

__all__ = ["SCHEDULES", "Schedule", "get", "is_schedule_config"]

_FIELD = "optimizer.learning_rate"
_REQUIRED = object()


def _number(value: Any, key: str, *, lo: float | None = None, lo_open: bool = False,
            hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{_FIELD}.{key}", f"must be a finite number, got {value!r}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ConfigError(f"{_FIELD}.{key}", f"must be {'>' if lo_open else '>='} {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise ConfigError(f"{_FIELD}.{key}", f"must be <= {hi:g}, got {value:g}")
    return value      # an int stays an int, so that the recorded config reads as it was written


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{_FIELD}.{key}", f"must be true or false, got {value!r}")
    return value


def _rate(value: Any, key: str) -> float:
    return _number(value, key, lo=0.0)


def _steps(value: Any, key: str) -> float:
    return _number(value, key, lo=0.0, lo_open=True)


class Schedule:
    """A subclass sets ``name``, ``keras_name`` and ``DEFAULTS`` (every key, ``_REQUIRED`` where there is no
    default), validates its values in ``_check`` and implements ``rate(step)``."""

    name: ClassVar[str] = ""
    keras_name: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any):
        for key in params:
            if key not in self.DEFAULTS:
                raise ConfigError(f"{_FIELD}.{key}", f"unknown parameter of {self.name}; expected one of "
                                                     f"{', '.join(self.DEFAULTS)}")
        values = {}
        for key, default in self.DEFAULTS.items():
            if key not in params and default is _REQUIRED:
                raise ConfigError(f"{_FIELD}.{key}", f"is required by {self.name}")
            values[key] = params.get(key, default)
        self.params = self._check(values)

    def _check(self, p: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def rate(self, step: int) -> float:
        """The learning rate after ``step`` optimizer steps (0 for the first step's)."""
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        return self.rate(step)

    def get_config(self) -> dict[str, Any]:
        return {"type": self.name, **self.params}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


class _StepDecay(Schedule):
    """The two schedules of ``step / decay_steps`` (whole periods only, if staircase) and a decay rate."""

    DEFAULTS = {"initial_learning_rate": _REQUIRED, "decay_steps": _REQUIRED, "decay_rate": _REQUIRED,
                "staircase": False}
    MAX_DECAY_RATE: ClassVar[float | None] = None

    def _check(self, p):
        return {"initial_learning_rate": _rate(p["initial_learning_rate"], "initial_learning_rate"),
                "decay_steps": _steps(p["decay_steps"], "decay_steps"),
                "decay_rate": _number(p["decay_rate"], "decay_rate", lo=0.0, lo_open=self.MAX_DECAY_RATE is not None,
                                      hi=self.MAX_DECAY_RATE),
                "staircase": _flag(p["staircase"], "staircase")}

    def _elapsed(self, step: int) -> float:
        q = step / self.params["decay_steps"]
        return math.floor(q) if self.params["staircase"] else q


class ExponentialDecay(_StepDecay):
    """initial_learning_rate * decay_rate ** (step / decay_steps); the exponent floored if staircase."""

    name, keras_name = "exponential_decay", "ExponentialDecay"
    MAX_DECAY_RATE = 1.0       # 0 < decay_rate <= 1: above 1 the rate would grow without bound

    def rate(self, step):
        return self.params["initial_learning_rate"] * self.params["decay_rate"] ** self._elapsed(step)


class InverseTimeDecay(_StepDecay):
    """initial_learning_rate / (1 + decay_rate * step / decay_steps); the quotient floored if staircase."""

    name, keras_name = "inverse_time_decay", "InverseTimeDecay"

    def rate(self, step):
        return self.params["initial_learning_rate"] / (1.0 + self.params["decay_rate"] * self._elapsed(step))


class PolynomialDecay(Schedule):
    """(initial - end) * (1 - s / decay_steps) ** power + end with s = min(step, decay_steps); with ``cycle``,
    decay_steps grows to the first multiple of itself that is >= step (1 at step 0)."""

    name, keras_name = "polynomial_decay", "PolynomialDecay"
    DEFAULTS = {"initial_learning_rate": _REQUIRED, "decay_steps": _REQUIRED, "end_learning_rate": 0.0001,
                "power": 1.0, "cycle": False}

    def _check(self, p):
        return {"initial_learning_rate": _rate(p["initial_learning_rate"], "initial_learning_rate"),
                "decay_steps": _steps(p["decay_steps"], "decay_steps"),
                "end_learning_rate": _rate(p["end_learning_rate"], "end_learning_rate"),
                "power": _number(p["power"], "power", lo=0.0, lo_open=True),
                "cycle": _flag(p["cycle"], "cycle")}

    def rate(self, step):
        p = self.params
        steps = p["decay_steps"]
        if p["cycle"]:
            steps *= 1.0 if step == 0 else math.ceil(step / steps)
        else:
            step = min(step, steps)
        start, end = p["initial_learning_rate"], p["end_learning_rate"]
        return (start - end) * (1.0 - step / steps) ** p["power"] + end


class PiecewiseConstantDecay(Schedule):
    """values[0] while step <= boundaries[0], values[i] while boundaries[i-1] < step <= boundaries[i], and
    values[-1] past the last boundary."""

    name, keras_name = "piecewise_constant_decay", "PiecewiseConstantDecay"
    DEFAULTS = {"boundaries": _REQUIRED, "values": _REQUIRED}

    def _check(self, p):
        bounds, values = p["boundaries"], p["values"]
        if not isinstance(bounds, list) or not bounds:
            raise ConfigError(f"{_FIELD}.boundaries", "must be a non-empty list of step counts")
        if not isinstance(values, list) or len(values) != len(bounds) + 1:
            raise ConfigError(f"{_FIELD}.values", f"must be a list of {len(bounds) + 1} learning rates, one more "
                                                  f"than the boundaries")
        out_bounds = []
        for i, b in enumerate(bounds):
            # boundaries are compared with the integer step count (Keras casts them to its dtype)
            b = _number(b, f"boundaries.{i}", lo=0.0)
            if not float(b).is_integer():
                raise ConfigError(f"{_FIELD}.boundaries.{i}", f"must be a whole number of steps, got {b:g}")
            if out_bounds and b <= out_bounds[-1]:
                raise ConfigError(f"{_FIELD}.boundaries.{i}", "must be greater than the boundary before it")
            out_bounds.append(int(b))
        return {"boundaries": out_bounds, "values": [_rate(v, f"values.{i}") for i, v in enumerate(values)]}

    def rate(self, step):
        bounds, values = self.params["boundaries"], self.params["values"]
        for b, v in zip(bounds, values):
            if step <= b:
                return v
        return values[-1]


class CosineDecay(Schedule):
    """Without warmup: initial * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha) with
    s = min(step, decay_steps). With a ``warmup_target``: a straight line from initial_learning_rate to
    warmup_target over warmup_steps, then the same cosine from warmup_target over decay_steps."""

    name, keras_name = "cosine_decay", "CosineDecay"
    DEFAULTS = {"initial_learning_rate": _REQUIRED, "decay_steps": _REQUIRED, "alpha": 0.0,
                "warmup_target": None, "warmup_steps": 0}

    def _check(self, p):
        target = p["warmup_target"]
        return {"initial_learning_rate": _rate(p["initial_learning_rate"], "initial_learning_rate"),
                "decay_steps": _steps(p["decay_steps"], "decay_steps"),
                "alpha": _number(p["alpha"], "alpha", lo=0.0, hi=1.0),
                "warmup_target": None if target is None else _rate(target, "warmup_target"),
                "warmup_steps": _number(p["warmup_steps"], "warmup_steps", lo=0.0)}

    def _cosine(self, step: float, peak: float) -> float:
        alpha = self.params["alpha"]
        return peak * ((1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * step / self.params["decay_steps"])) + alpha)

    def rate(self, step):
        p = self.params
        if p["warmup_target"] is None:
            return self._cosine(min(step, p["decay_steps"]), p["initial_learning_rate"])
        warmup = p["warmup_steps"]
        step = min(step, p["decay_steps"] + warmup)
        if step < warmup:
            start = p["initial_learning_rate"]
            return (p["warmup_target"] - start) * (step / warmup) + start
        return self._cosine(step - warmup, p["warmup_target"])


class CosineDecayRestarts(Schedule):
    """SGDR: the cosine from 1 to alpha (times initial_learning_rate) over first_decay_steps, then a restart;
    period i lasts first_decay_steps * t_mul**i steps and starts at m_mul**i times the initial rate."""

    name, keras_name = "cosine_decay_restarts", "CosineDecayRestarts"
    DEFAULTS = {"initial_learning_rate": _REQUIRED, "first_decay_steps": _REQUIRED, "t_mul": 2.0, "m_mul": 1.0,
                "alpha": 0.0}

    def _check(self, p):
        return {"initial_learning_rate": _rate(p["initial_learning_rate"], "initial_learning_rate"),
                "first_decay_steps": _steps(p["first_decay_steps"], "first_decay_steps"),
                # t_mul < 1 would make the periods shrink to nothing (Keras's formula then takes the log of a
                # negative number); m_mul > 1 would grow the rate without bound
                "t_mul": _number(p["t_mul"], "t_mul", lo=1.0),
                "m_mul": _number(p["m_mul"], "m_mul", lo=0.0, hi=1.0),
                "alpha": _number(p["alpha"], "alpha", lo=0.0, hi=1.0)}

    def rate(self, step):
        p = self.params
        fraction = step / p["first_decay_steps"]       # in units of the first period
        t_mul = p["t_mul"]
        if t_mul == 1.0:
            restart = math.floor(fraction)
            fraction -= restart
        else:
            # periods 0..i-1 together last (1 - t_mul**i) / (1 - t_mul) first periods
            restart = math.floor(math.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
            # the logarithms can land a hair below a whole number right at a restart: step to the period
            # that actually holds the step
            while _periods(t_mul, restart + 1) <= fraction:
                restart += 1
            while restart > 0 and _periods(t_mul, restart) > fraction:
                restart -= 1
            done = _periods(t_mul, restart)
            fraction = (fraction - done) / t_mul ** restart
        cosine = 0.5 * p["m_mul"] ** restart * (1.0 + math.cos(math.pi * fraction))
        return p["initial_learning_rate"] * ((1.0 - p["alpha"]) * cosine + p["alpha"])


def _periods(t_mul: float, count: int) -> float:
    """How long the first ``count`` periods of a restarting cosine last, in first periods."""
    return (1.0 - t_mul ** count) / (1.0 - t_mul)


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (ExponentialDecay, InverseTimeDecay, PolynomialDecay, PiecewiseConstantDecay,
                              CosineDecay, CosineDecayRestarts)
}
_BY_KERAS_NAME = {cls.keras_name: cls for cls in SCHEDULES.values()}


def is_schedule_config(value: Any) -> bool:
    return isinstance(value, (dict, Schedule))


def get(config: dict | Schedule) -> Schedule:
    """A schedule from ``{"type": name, ...}`` or Keras's ``{"class_name": ..., "config": {...}}``; raises
    ``ConfigError`` with a field under ``optimizer.learning_rate``."""
    if isinstance(config, Schedule):
        return config
    if not isinstance(config, dict):
        raise ConfigError(_FIELD, f"must be a number or a schedule object, got {config!r}")
    if "class_name" in config:
        cls = _BY_KERAS_NAME.get(config["class_name"])
        if cls is None:
            raise ConfigError(f"{_FIELD}.class_name", f"unknown Keras schedule {config['class_name']!r}; expected "
                                                      f"one of {', '.join(_BY_KERAS_NAME)}")
        params = config.get("config")
        if not isinstance(params, dict):
            raise ConfigError(f"{_FIELD}.config", "must be an object of the schedule's arguments")
        # Keras's name scope means nothing here
        return cls(**{k: v for k, v in params.items() if k != "name"})
    kind = config.get("type")
    cls = SCHEDULES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"{_FIELD}.type", f"unknown schedule {kind!r}; expected one of {', '.join(SCHEDULES)}")
    return cls(**{k: v for k, v in config.items() if k != "type"})
