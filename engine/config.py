"""The training config (the job keys of API.md): validation and defaults.

``normalize_fit_config`` returns a JSON-serializable dict with every default filled in; a missing
``seed`` is drawn here and recorded, so that the recorded config always reproduces the fit.
"""
from __future__ import annotations

import math

import numpy as np

from . import augmentation, class_weight, holdout, losses, metrics
from .errors import ConfigError

SERVICE_KEYS = ("model_id", "dataset_id", "checkpoint_every", "max_attempts")
EARLY_STOPPING_DEFAULTS = {"monitor": "val_loss", "min_delta": 0.0, "patience": 0, "mode": "auto",
                           "baseline": None, "restore_best_weights": False, "start_from_epoch": 0}
PLATEAU_DEFAULTS = {"monitor": "val_loss", "factor": 0.1, "patience": 10, "mode": "auto", "min_delta": 1e-4,
                    "cooldown": 0, "min_lr": 0.0}
KEYS = ("loss", "optimizer", "epochs", "batch_size", "shuffle", "validation_split", "validation_rows",
        "validation_fold", "validation_data",
        "seed", "metrics", "regularization", "early_stopping", "reduce_lr_on_plateau", "augmentation",
        "standardize", "class_weight", "diagnostics")


def _num(v, field, *, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise ConfigError(field, f"must be a finite number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ConfigError(field, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ConfigError(field, f"must be {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def _int(v, field, *, lo=None) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(field, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(field, f"must be >= {lo}, got {v}")
    return v


def _bool(v, field) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(field, f"must be true or false, got {v!r}")
    return v


def normalize_loss(value):
    if isinstance(value, str):
        name = losses.ALIASES.get(value, value)
        if name not in losses.NAMES:
            raise ConfigError("loss", f"unknown loss {value!r}; expected one of {', '.join(losses.NAMES)}")
        return name
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        name = losses.ALIASES.get(value["type"], value["type"])
        if name not in losses.NAMES:
            raise ConfigError("loss.type", f"unknown loss {value['type']!r}")
        defaults = losses.PARAMS.get(name, {})
        out = {"type": name}
        for key in value:
            if key != "type" and key not in defaults:
                raise ConfigError(f"loss.{key}", f"unknown parameter of {name}")
        for key, default in defaults.items():
            if key == "label_smoothing":
                out[key] = _num(value.get(key, default), f"loss.{key}", lo=0.0, hi=1.0)
            else:
                out[key] = _num(value.get(key, default), f"loss.{key}", lo=0.0, lo_open=True)
        return out
    raise ConfigError("loss", "is required: a loss name or {\"type\": name, ...}")


def loss_name(loss) -> str:
    return loss if isinstance(loss, str) else loss["type"]


def normalize_optimizer(value) -> dict:
    from . import optimizers   # written alongside; imported late so the rest works without it
    try:
        return optimizers.get(value).get_config()
    except ConfigError as exc:
        field = exc.field if exc.field.startswith("optimizer") else f"optimizer.{exc.field}"
        raise ConfigError(field, exc.message) from None
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError("optimizer", str(exc)) from None


def _monitor_names(metric_names: list[str]) -> set[str]:
    base = {"loss", *metric_names}
    return base | {f"val_{n}" for n in base}


def _normalize_callback(value, defaults: dict, field: str, metric_names: list[str]) -> dict | None:
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(field, "must be null or an object")
    for key in value:
        if key not in defaults:
            raise ConfigError(f"{field}.{key}", "unknown option")
    out = dict(defaults)
    out.update(value)
    monitor = out["monitor"]
    if not isinstance(monitor, str) or monitor not in _monitor_names(metric_names):
        raise ConfigError(f"{field}.monitor", f"must be loss, val_loss or one of the fit's metrics "
                                              f"(with or without val_), got {monitor!r}")
    if out["mode"] not in ("auto", "min", "max"):
        raise ConfigError(f"{field}.mode", "must be auto, min or max")
    out["min_delta"] = _num(out["min_delta"], f"{field}.min_delta")
    out["patience"] = _int(out["patience"], f"{field}.patience", lo=0)
    if "restore_best_weights" in out:
        out["restore_best_weights"] = _bool(out["restore_best_weights"], f"{field}.restore_best_weights")
        out["start_from_epoch"] = _int(out["start_from_epoch"], f"{field}.start_from_epoch", lo=0)
        if out["baseline"] is not None:
            out["baseline"] = _num(out["baseline"], f"{field}.baseline")
    else:
        out["factor"] = _num(out["factor"], f"{field}.factor", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        out["cooldown"] = _int(out["cooldown"], f"{field}.cooldown", lo=0)
        out["min_lr"] = _num(out["min_lr"], f"{field}.min_lr", lo=0.0)
    return out


def monitor_mode(cfg: dict) -> str:
    """'min' or 'max' for an early-stopping / plateau config (auto: max for accuracy and r2)."""
    if cfg["mode"] != "auto":
        return cfg["mode"]
    name = cfg["monitor"][4:] if cfg["monitor"].startswith("val_") else cfg["monitor"]
    return "max" if name in metrics.HIGHER_IS_BETTER else "min"


def draw_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])


def _validation_fold(value) -> dict | None:
    """{"fold": i, "folds": k} (1 <= i <= k, k >= 2): hold out fold i of k (engine/holdout.py)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError("validation_fold", f'must be {{"fold": i, "folds": k}}, got {value!r}')
    for key in value:
        if key not in ("fold", "folds"):
            raise ConfigError(f"validation_fold.{key}", "unknown option")
    folds = _int(value.get("folds"), "validation_fold.folds", lo=2)
    fold = _int(value.get("fold"), "validation_fold.fold", lo=1)
    if fold > folds:
        raise ConfigError("validation_fold.fold", f"must be <= folds ({folds}), got {fold}")
    return {"fold": fold, "folds": folds}


def normalize_fit_config(config: dict, input_rank: int | None = None) -> dict:
    """Validate the job keys and fill every default; raise ConfigError with a dotted field."""
    if not isinstance(config, dict):
        raise ConfigError("config", "must be an object")
    for key in config:
        if key not in KEYS and key not in SERVICE_KEYS:
            raise ConfigError(key, "unknown option")
    out: dict = {}
    out["loss"] = normalize_loss(config.get("loss"))
    out["optimizer"] = normalize_optimizer(config.get("optimizer", "rmsprop"))
    out["epochs"] = _int(config.get("epochs", 1), "epochs", lo=1)
    bs = config.get("batch_size", 32)
    if bs is None:
        bs = 32
    if bs != "full":
        bs = _int(bs, "batch_size", lo=1)
    out["batch_size"] = bs
    out["shuffle"] = _bool(config.get("shuffle", True), "shuffle")
    out["validation_split"] = _num(config.get("validation_split", 0.0) or 0.0, "validation_split",
                                   lo=0.0, hi=1.0, hi_open=True)
    out["validation_fold"] = _validation_fold(config.get("validation_fold"))
    if out["validation_fold"] is not None and out["validation_split"] > 0:
        raise ConfigError("validation_fold", "give validation_split or validation_fold, not both")
    rows = config.get("validation_rows", "last")
    if rows not in holdout.MODES:
        raise ConfigError("validation_rows", f"must be one of {', '.join(holdout.MODES)}, got {rows!r}")
    if rows != "last" and not out["validation_split"] > 0 and out["validation_fold"] is None:
        raise ConfigError("validation_rows", f"{rows} says which rows a validation_split or a validation_fold "
                                             "holds out; set one of them too")
    out["validation_rows"] = rows
    seed = config.get("seed")
    out["seed"] = draw_seed() if seed is None else _int(seed, "seed", lo=0)
    names = config.get("metrics") or []
    if not isinstance(names, (list, tuple)):
        raise ConfigError("metrics", "must be a list of metric names")
    canon = []
    for i, m in enumerate(names):
        name = metrics.ALIASES.get(m, m) if isinstance(m, str) else m
        if name not in metrics.NAMES:
            raise ConfigError(f"metrics.{i}", f"unknown metric {m!r}; expected one of {', '.join(metrics.NAMES)}")
        if name == "accuracy" and metrics.accuracy_form(loss_name(out["loss"])) is None:
            raise ConfigError(f"metrics.{i}", "accuracy needs a crossentropy loss")
        if name not in canon:
            canon.append(name)
    out["metrics"] = canon
    reg = config.get("regularization")
    if reg is not None:
        if not isinstance(reg, dict) or reg.get("type") not in ("l1", "l2"):
            raise ConfigError("regularization.type", "must be l1 or l2")
        for key in reg:
            if key not in ("type", "lambda"):
                raise ConfigError(f"regularization.{key}", "unknown option")
        reg = {"type": reg["type"], "lambda": _num(reg.get("lambda", 0.01), "regularization.lambda", lo=0.0)}
    out["regularization"] = reg
    has_validation = out["validation_split"] > 0 or out["validation_fold"] is not None \
        or config.get("validation_data") is not None
    for key, defaults in (("early_stopping", EARLY_STOPPING_DEFAULTS), ("reduce_lr_on_plateau", PLATEAU_DEFAULTS)):
        cb = _normalize_callback(config.get(key), defaults, key, canon)
        if cb is not None and cb["monitor"].startswith("val_") and not has_validation:
            raise ConfigError(f"{key}.monitor", f"monitors {cb['monitor']} but the fit has no validation data: "
                                                "set validation_split or monitor loss")
        out[key] = cb
    if out["reduce_lr_on_plateau"] is not None and isinstance(out["optimizer"]["learning_rate"], dict):
        # Keras refuses it too: the plateau callback would overwrite the rate the schedule gives each step
        raise ConfigError("reduce_lr_on_plateau", "cannot be combined with a learning-rate schedule "
                                                  "(optimizer.learning_rate); use one or the other")
    out["augmentation"] = augmentation.normalize(config.get("augmentation"), input_rank)
    out["standardize"] = _bool(config.get("standardize", True), "standardize")
    out["class_weight"] = class_weight.normalize(config.get("class_weight"), loss_name(out["loss"]))
    diagnostics = config.get("diagnostics")
    out["diagnostics"] = False if diagnostics is None else _bool(diagnostics, "diagnostics")
    for key in SERVICE_KEYS:
        if key in config:
            out[key] = config[key]
    return out
