"""Model specs: validate the API's ``{"input_shape", "layers"}`` body or a Keras 3 Sequential
``model.to_json()`` and return the normalized spec, every default filled in.

Normalized layers (Keras defaults; ``alpha`` only for leaky_relu (default 0.01, the seed's slope) and
elu (1.0)):

* ``{"type": "dense", "name", "units", "activation", ["alpha",] "use_bias", "kernel_initializer",
  "bias_initializer", "kernel_regularizer": null | {"l1", "l2"}}``; initializers as
  ``{"type", ...params, "seed"}``
* ``{"type": "batch_normalization", "name", "momentum": 0.99, "epsilon": 0.001}``
* ``{"type": "dropout", "name", "rate"}``, ``{"type": "gaussian_noise", "name", "stddev"}``
* ``{"type": "flatten", "name"}``, ``{"type": "activation", "name", "activation", ["alpha"]}``

Dense and batch normalization need flat inputs (put a flatten after an image-shaped input), and the
network's output must be flat.
"""
from __future__ import annotations

import json
import math
import re

from . import activations, initializers
from .errors import SpecError

LAYER_FIELDS = {
    "dense": {"type", "name", "units", "activation", "alpha", "use_bias", "kernel_initializer",
              "bias_initializer", "kernel_regularizer"},
    "batch_normalization": {"type", "name", "momentum", "epsilon"},
    "dropout": {"type", "name", "rate"},
    "gaussian_noise": {"type", "name", "stddev"},
    "flatten": {"type", "name"},
    "activation": {"type", "name", "activation", "alpha"},
}
ACTIVATIONS = set(activations.NAMES)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(v, index, field, *, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    if not _is_number(v):
        raise SpecError(index, field, f"must be a finite number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise SpecError(index, field, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise SpecError(index, field, f"must be {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if any(c.isupper() for c in name) else name


def normalize_initializer(value, index: int, field: str) -> dict:
    """``"he_normal"`` or ``{"type": "random_normal", "stddev": 0.1, "seed": 3}`` → the full dict."""
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise SpecError(index, field, "must be an initializer name or {\"type\": name, ...}")
    kind = _snake(value["type"])
    if kind not in initializers.DEFAULTS:
        raise SpecError(index, field, f"unknown initializer {value['type']!r}; expected one of "
                                      f"{', '.join(initializers.DEFAULTS)}")
    out = {"type": kind}
    defaults = initializers.DEFAULTS[kind]
    for key in value:
        if key not in defaults and key not in ("type", "seed"):
            raise SpecError(index, f"{field}.{key}", f"unknown parameter of {kind}")
    for key, default in defaults.items():
        out[key] = _number(value.get(key, default), index, f"{field}.{key}")
    if kind in ("random_normal", "truncated_normal") and out["stddev"] < 0:
        raise SpecError(index, f"{field}.stddev", "must be >= 0")
    if kind == "random_uniform" and out["minval"] > out["maxval"]:
        raise SpecError(index, f"{field}.minval", "must be <= maxval")
    seed = value.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise SpecError(index, f"{field}.seed", "must be a non-negative integer or null")
    out["seed"] = seed
    return out


def normalize_regularizer(value, index: int, field: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError(index, field, "must be null or {\"l1\": λ, \"l2\": λ}")
    for key in value:
        if key not in ("l1", "l2", "type"):
            raise SpecError(index, f"{field}.{key}", "unknown key; expected l1 and/or l2")
    return {"l1": _number(value.get("l1", 0.0), index, f"{field}.l1", lo=0.0),
            "l2": _number(value.get("l2", 0.0), index, f"{field}.l2", lo=0.0)}


def _activation(layer: dict, index: int, out: dict) -> None:
    name = layer.get("activation", "linear" if layer.get("type") == "dense" else None)
    if name is None:
        raise SpecError(index, "activation", "is required")
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise SpecError(index, "activation", f"unknown activation {name!r}; expected one of "
                                             f"{', '.join(activations.NAMES)}")
    out["activation"] = name
    if name in activations.DEFAULT_ALPHA:
        out["alpha"] = _number(layer.get("alpha", activations.DEFAULT_ALPHA[name]), index, "alpha")
    elif "alpha" in layer:
        raise SpecError(index, "alpha", f"only leaky_relu and elu take alpha, not {name}")


def _check_shape(shape, field="input_shape") -> list[int]:
    if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
        raise SpecError(None, field, f"must be a list of 1 to 3 positive integers, got {shape!r}")
    return list(shape)


def normalize_spec(spec: dict) -> dict:
    """The normalized ``{"input_shape", "layers"}``; raises SpecError naming the layer and field."""
    if not isinstance(spec, dict):
        raise SpecError(None, "spec", "must be an object")
    if "keras" in spec:
        spec = keras_to_spec(spec["keras"])
    for key in spec:
        if key not in ("input_shape", "layers", "name"):
            raise SpecError(None, key, "unknown field; expected input_shape and layers (or keras)")
    if "input_shape" not in spec:
        raise SpecError(None, "input_shape", "is required")
    shape = _check_shape(spec["input_shape"])
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError(None, "layers", "must be a non-empty list")
    counters: dict[str, int] = {}
    names: set[str] = set()
    out_layers = []
    current = tuple(shape)
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise SpecError(i, "type", "each layer must be an object")
        kind = layer.get("type")
        if not isinstance(kind, str) or kind not in LAYER_FIELDS:
            raise SpecError(i, "type", f"unknown layer type {str(kind)[:40]!r}; expected one of "
                            f"{', '.join(LAYER_FIELDS)}")
        for key in layer:
            if key not in LAYER_FIELDS[kind]:
                raise SpecError(i, key, f"unknown field of a {kind} layer")
        name = layer.get("name")
        if name is None:
            k = counters.get(kind, 0)
            name = kind if k == 0 else f"{kind}_{k}"
            while name in names:
                k += 1
                name = f"{kind}_{k}"
            counters[kind] = k + 1
        elif not isinstance(name, str) or not name:
            raise SpecError(i, "name", "must be a non-empty string")
        if name in names:
            raise SpecError(i, "name", f"duplicate layer name {name!r}")
        names.add(name)
        out = {"type": kind, "name": name}
        if kind == "dense":
            units = layer.get("units")
            if not isinstance(units, int) or isinstance(units, bool) or units < 1:
                raise SpecError(i, "units", f"must be an integer >= 1, got {units!r}")
            if len(current) != 1:
                raise SpecError(i, "type", f"dense needs a flat input, got shape {list(current)}: "
                                           "add a flatten layer before it")
            out["units"] = units
            _activation(layer, i, out)
            use_bias = layer.get("use_bias", True)
            if not isinstance(use_bias, bool):
                raise SpecError(i, "use_bias", "must be true or false")
            out["use_bias"] = use_bias
            out["kernel_initializer"] = normalize_initializer(layer.get("kernel_initializer", "glorot_uniform"),
                                                              i, "kernel_initializer")
            out["bias_initializer"] = normalize_initializer(layer.get("bias_initializer", "zeros"),
                                                            i, "bias_initializer")
            out["kernel_regularizer"] = normalize_regularizer(layer.get("kernel_regularizer"), i,
                                                              "kernel_regularizer")
            current = (units,)
        elif kind == "batch_normalization":
            if len(current) != 1:
                raise SpecError(i, "type", f"batch_normalization needs a flat input, got shape {list(current)}: "
                                           "add a flatten layer before it")
            out["momentum"] = _number(layer.get("momentum", 0.99), i, "momentum", lo=0.0, hi=1.0)
            out["epsilon"] = _number(layer.get("epsilon", 1e-3), i, "epsilon", lo=0.0, lo_open=True)
        elif kind == "dropout":
            if "rate" not in layer:
                raise SpecError(i, "rate", "is required")
            out["rate"] = _number(layer["rate"], i, "rate", lo=0.0, hi=1.0, hi_open=True)
        elif kind == "gaussian_noise":
            if "stddev" not in layer:
                raise SpecError(i, "stddev", "is required")
            out["stddev"] = _number(layer["stddev"], i, "stddev", lo=0.0)
        elif kind == "flatten":
            current = (math.prod(current),)
        elif kind == "activation":
            _activation(layer, i, out)
        out_layers.append(out)
    if len(current) != 1:
        raise SpecError(len(layers) - 1, "type", f"the network's output must be flat, got shape {list(current)}")
    return {"input_shape": shape, "layers": out_layers}


def output_units(spec: dict) -> int:
    """Width of the output of a normalized spec."""
    current = math.prod(spec["input_shape"])
    for layer in spec["layers"]:
        if layer["type"] == "dense":
            current = layer["units"]
    return current


# -- Keras 3 Sequential JSON ------------------------------------------------------------------

_KERAS_LEAKY_DEFAULT = 0.2          # keras.activations.leaky_relu's negative_slope
_DEFAULT_BN_INITIALIZERS = {"beta_initializer": "zeros", "gamma_initializer": "ones",
                            "moving_mean_initializer": "zeros", "moving_variance_initializer": "ones"}


def _keras_activation(value, index: int, field: str = "activation") -> dict:
    if isinstance(value, dict):
        cfg = value.get("config")
        value = cfg if isinstance(cfg, str) else (cfg or {}).get("name", value.get("class_name"))
    if value is None:
        value = "linear"
    if not isinstance(value, str):
        raise SpecError(index, field, f"unsupported activation {value!r}")
    if value not in ACTIVATIONS:
        raise SpecError(index, field, f"unsupported activation {value!r}")
    out = {"activation": value}
    if value == "leaky_relu":
        out["alpha"] = _KERAS_LEAKY_DEFAULT
    return out


def _keras_initializer(value, index: int, field: str):
    if value is None:
        raise SpecError(index, field, "must not be null")
    if isinstance(value, str):
        return {"type": _snake(value)}
    if not isinstance(value, dict):
        raise SpecError(index, field, f"unsupported initializer {value!r}")
    cls = value.get("class_name", "")
    cfg = dict(value.get("config") or {})
    kind = _snake(cls)
    if kind == "variance_scaling":
        triple = (float(cfg.get("scale", 1.0)), cfg.get("mode", "fan_in"), cfg.get("distribution"))
        if triple[2] == "normal":
            triple = (triple[0], triple[1], "truncated_normal")
        for name, spec_triple in initializers.VARIANCE_SCALING.items():
            if spec_triple == triple:
                kind = name
                break
        else:
            raise SpecError(index, field, f"unsupported VarianceScaling configuration {cfg!r}")
        cfg = {"seed": cfg.get("seed")}
    if kind not in initializers.DEFAULTS:
        raise SpecError(index, field, f"unsupported initializer {cls!r}")
    return {"type": kind, **{k: v for k, v in cfg.items() if k in initializers.DEFAULTS[kind] or k == "seed"}}


def _keras_regularizer(value, index: int, field: str):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError(index, field, f"unsupported regularizer {value!r}")
    cls = value.get("class_name", "")
    cfg = value.get("config") or {}
    if cls in ("L1", "L2", "L1L2", "l1", "l2", "l1_l2"):
        return {"l1": float(cfg.get("l1", 0.0) or 0.0), "l2": float(cfg.get("l2", 0.0) or 0.0)}
    raise SpecError(index, field, f"unsupported regularizer {cls!r}")


def _shape_tail(value, field: str, index: int | None):
    """``[batch, *shape]`` -> ``shape``; a SpecError for anything but a non-empty list."""
    if not isinstance(value, list) or not value:
        raise SpecError(index, field, "must be a list [batch, *shape]")
    return value[1:]


def _batch_shape(cfg: dict, index: int | None = None):
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key):
            return _shape_tail(cfg[key], key, index)
    return None


def keras_to_spec(keras) -> dict:
    """Translate a Keras 3 (or 2) Sequential ``to_json()`` into the API's spec form (not yet normalized)."""
    if isinstance(keras, (str, bytes)):
        try:
            keras = json.loads(keras)
        except ValueError as exc:
            raise SpecError(None, "keras", f"not valid JSON: {exc}") from None
    if not isinstance(keras, dict) or keras.get("class_name") != "Sequential":
        raise SpecError(None, "keras", "must be the JSON of a Keras Sequential model (class_name \"Sequential\")")
    config = keras.get("config") or {}
    if not isinstance(config, dict):
        raise SpecError(None, "keras.config", "must be an object")
    klayers = config.get("layers")
    if not isinstance(klayers, list):
        raise SpecError(None, "keras.config.layers", "must be a list")
    input_shape = None
    layers = []
    index = 0
    for obj in klayers:
        if not isinstance(obj, dict):
            raise SpecError(index, "class_name", "each Keras layer must be an object")
        cls = obj.get("class_name")
        cfg = obj.get("config") or {}
        if not isinstance(cfg, dict):
            raise SpecError(index, "config", "each Keras layer's config must be an object")
        dtype = cfg.get("dtype")
        if dtype is not None and not isinstance(dtype, (str, dict)):
            raise SpecError(index, "dtype", f"unsupported dtype {dtype!r}")
        if cls == "InputLayer":
            input_shape = _batch_shape(cfg, index) or input_shape
            continue
        if input_shape is None:
            build = obj.get("build_config") or {}
            built = build.get("input_shape") if isinstance(build, dict) else None
            input_shape = _batch_shape(cfg, index) or (
                _shape_tail(built, "build_config.input_shape", index) if built is not None else None) or None
        layer: dict = {"name": cfg["name"]} if isinstance(cfg.get("name"), str) else {}
        if cls == "Dense":
            for key in ("bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"):
                if cfg.get(key) is not None:
                    raise SpecError(index, key, "is not supported (only kernel_regularizer)")
            layer.update(type="dense", units=cfg.get("units"), use_bias=cfg.get("use_bias", True),
                         **_keras_activation(cfg.get("activation"), index))
            if "kernel_initializer" in cfg:
                layer["kernel_initializer"] = _keras_initializer(cfg["kernel_initializer"], index, "kernel_initializer")
            if "bias_initializer" in cfg:
                layer["bias_initializer"] = _keras_initializer(cfg["bias_initializer"], index, "bias_initializer")
            layer["kernel_regularizer"] = _keras_regularizer(cfg.get("kernel_regularizer"), index, "kernel_regularizer")
        elif cls == "BatchNormalization":
            axis = cfg.get("axis", -1)
            if isinstance(axis, list):
                axis = axis[0] if len(axis) == 1 else None
            if axis not in (-1, 1):
                raise SpecError(index, "axis", "only the last axis is supported")
            if cfg.get("center", True) is not True or cfg.get("scale", True) is not True:
                raise SpecError(index, "center", "center and scale must be true")
            for key, default in _DEFAULT_BN_INITIALIZERS.items():
                if key in cfg and _keras_initializer(cfg[key], index, key)["type"] != default:
                    raise SpecError(index, key, f"only the default {default} initializer is supported")
            for key in ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint"):
                if cfg.get(key) is not None:
                    raise SpecError(index, key, "is not supported")
            layer.update(type="batch_normalization", momentum=cfg.get("momentum", 0.99),
                         epsilon=cfg.get("epsilon", 1e-3))
        elif cls == "Dropout":
            if cfg.get("noise_shape") is not None:
                raise SpecError(index, "noise_shape", "is not supported")
            layer.update(type="dropout", rate=cfg.get("rate"))
        elif cls == "GaussianNoise":
            layer.update(type="gaussian_noise", stddev=cfg.get("stddev"))
        elif cls == "Flatten":
            layer.update(type="flatten")
        elif cls == "Activation":
            layer.update(type="activation", **_keras_activation(cfg.get("activation"), index))
        elif cls == "LeakyReLU":
            slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
            layer.update(type="activation", activation="leaky_relu", alpha=slope)
        elif cls == "ReLU":
            if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
                raise SpecError(index, "max_value", "only a plain ReLU is supported")
            layer.update(type="activation", activation="relu")
        elif cls == "ELU":
            layer.update(type="activation", activation="elu", alpha=cfg.get("alpha", 1.0))
        elif cls == "Softmax":
            layer.update(type="activation", activation="softmax")
        else:
            raise SpecError(index, "class_name", f"unsupported Keras layer {cls!r}")
        layers.append(layer)
        index += 1
    if input_shape is None and config.get("build_input_shape"):
        input_shape = _shape_tail(config["build_input_shape"], "build_input_shape", None)
    if input_shape is None:
        raise SpecError(None, "input_shape", "the Keras model has no input shape (no InputLayer, "
                                             "batch_shape or build_input_shape)")
    return {"input_shape": list(input_shape), "layers": layers}
