"""The service's only doorway into ``engine``: calls plus the translation of engine errors into 422s.

``engine.SpecError(layer_index, field, message)`` becomes ``loc: ["body", "layers", i, field]`` (or
``["body", "keras", ...]`` for a Keras spec); ``engine.ConfigError(field, message)`` with a dotted field becomes
``["body", "optimizer", "learning_rate"]``.
"""
from __future__ import annotations

from typing import Any

from service.errors import Invalid


def _engine():
    import engine

    return engine


def _spec_error(exc: Exception, keras: bool) -> Invalid:
    index = getattr(exc, "layer_index", None)
    field = getattr(exc, "field", None)
    message = getattr(exc, "message", None) or str(exc)
    root: list[str | int] = ["body", "keras"] if keras else ["body"]
    if index is not None:
        loc = [*root, "layers", int(index)] if not keras else [*root, "layers", int(index)]
        if field:
            loc.append(str(field))
        detail = f"layer {index}" + (f", field {field!r}" if field else "") + f": {message}"
    else:
        loc = [*root, str(field)] if field else root
        detail = (f"{field}: " if field else "") + message
    return Invalid(detail, loc=loc)


#: JSON integers are exact in Python; beyond this magnitude one is refused before the engine turns it into a float
#: (OverflowError) or a seed.
MAX_ABS_INT = 2**63


def check_numbers(value: Any, loc: list[str | int]) -> None:
    """422 naming the first integer in ``value`` (any JSON) whose magnitude is over :data:`MAX_ABS_INT`.

    Iterative, so a deeply nested value cannot exhaust the stack."""
    stack: list[tuple[Any, list[str | int]]] = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            if abs(item) > MAX_ABS_INT:
                field = ".".join(str(p) for p in where[1:]) or "body"
                raise Invalid(f"{field}: the number is too large (at most {MAX_ABS_INT:.3g} in magnitude)",
                              loc=where)
        elif isinstance(item, dict):
            stack.extend((v, [*where, str(k)]) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, [*where, i]) for i, v in enumerate(item))


def normalize_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"input_shape", "layers"}`` or ``{"keras": ...}`` -> the normalized ``{"input_shape", "layers"}``."""
    engine = _engine()
    keras = "keras" in spec
    try:
        return engine.normalize_spec(spec)
    except engine.SpecError as exc:
        raise _spec_error(exc, keras) from None


def summarize(spec: dict[str, Any]) -> dict[str, Any]:
    """The model's summary, counted from its layers' shapes: no weight is allocated or initialized (building a
    36.8M-parameter model to count them took 0.2-1 s of the request)."""
    engine = _engine()
    try:
        return engine.summarize(spec)
    except engine.SpecError as exc:
        raise _spec_error(exc, "keras" in spec) from None


def _dotted_loc(field: str) -> list[str | int]:
    return ["body", *[int(p) if p.isdigit() else p for p in str(field).split(".") if p]]


def normalize_fit_config(config: dict[str, Any], input_rank: int | None = None) -> dict[str, Any]:
    engine = _engine()
    try:
        return engine.normalize_fit_config(config, input_rank=input_rank)
    except (engine.ConfigError, engine.SpecError) as exc:
        field = getattr(exc, "field", None) or ""
        message = getattr(exc, "message", None) or str(exc)
        raise Invalid(f"{field}: {message}" if field else message, loc=_dotted_loc(field)) from None


def check_compatible(
    spec: dict[str, Any], config: dict[str, Any], x_shape: tuple[int, ...], y_shape: tuple[int, ...]
) -> None:
    """The engine's check that the data and the loss fit the model, from shapes only: ``y`` is a zero-filled
    broadcast view (no memory), so no dataset has to be loaded to validate a job."""
    import numpy as np

    engine = _engine()
    try:
        # the shapes, not a built model: building initializes every weight (1 s for 37M of them), once per job
        # and once per trial of a sweep
        model = engine.shapes(spec)
        engine.check_compatible(model, config, tuple(x_shape), np.broadcast_to(np.float32(0), tuple(y_shape)))
    except (engine.ConfigError, engine.SpecError) as exc:
        field = getattr(exc, "field", None) or ""
        message = getattr(exc, "message", None) or str(exc)
        field = {"input_shape": "dataset_id"}.get(field, field)
        raise Invalid(message if not field else f"{field}: {message}", loc=_dotted_loc(field)) from None


def monitor_names(metrics: list[str]) -> set[str]:
    """What early stopping may monitor in a fit with these (normalized) metrics: loss and each metric, with or
    without ``val_``."""
    base = {"loss", *metrics}
    return base | {f"val_{name}" for name in base}


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """'min' or 'max' for a monitored quantity, as early stopping decides it (auto: max for accuracy and r2)."""
    from engine.config import monitor_mode as engine_monitor_mode

    return engine_monitor_mode({"monitor": monitor, "mode": mode})


def draw_seed() -> int:
    """A fresh seed, drawn as the engine draws one for a fit that names none."""
    from engine.config import draw_seed as engine_draw_seed

    return engine_draw_seed()


def from_bytes(data: bytes) -> Any:
    return _engine().from_bytes(data)


def split_rows(config: dict[str, Any], y: Any) -> tuple[Any, Any]:
    """(training rows, validation rows) of the fit a job of ``config`` runs on targets ``y`` (engine.split_rows)."""
    return _engine().split_rows(config, y)
