"""Predictions: check the rows, run the cached model of the requested version, map outputs to labels."""
from __future__ import annotations

import logging
import math
import sys
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings
from service.db.models import ModelVersion
from service.errors import BackpropError, Invalid, PayloadTooLarge
from service.serving import ModelCache, forward, map_outputs
from service.services import engine_port
from service.services import models as models_service

LOC = ["body", "inputs"]
log = logging.getLogger("backprop.predictions")


class StoredDataError(BackpropError):
    """A stored blob that cannot be read (corrupt, or not the archive it should be): the server's fault."""

    status, title, slug = 500, "Internal server error", "stored-data-invalid"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _first_bad_row(rows: list[Any], width: int) -> tuple[int, str]:
    for i, row in enumerate(rows):
        flat = np.asarray(row, dtype=object).reshape(-1) if isinstance(row, list) else None
        if flat is None:
            return i, "is not a list of numbers"
        for v in flat.tolist():
            if not _is_number(v):
                return i, f"{str(v)[:40]!r} is not a number"
            if isinstance(v, int) and abs(v) > sys.float_info.max:
                return i, "contains a number too large"
            if not math.isfinite(v):
                return i, "contains NaN or an infinite value"
        if flat.size != width:
            return i, f"has {flat.size} values; the model takes {width}"
    return 0, "is not a list of numbers"


def to_matrix(inputs: list[Any], feature_names: list[str], width: int) -> np.ndarray:
    """Rows (lists in feature order, or objects by feature name) -> float64 (n, width); 422 naming the row."""
    if not inputs:
        raise Invalid("inputs is empty: send at least one row", loc=LOC)
    if isinstance(inputs[0], dict) or any(isinstance(r, dict) for r in inputs):
        names = list(feature_names)
        wanted = set(names)
        rows = []
        for i, row in enumerate(inputs):
            if not isinstance(row, dict):
                raise Invalid(f"row {i + 1}: mix of lists and objects; send one form", loc=[*LOC, i])
            missing = [n for n in names if n not in row]
            extra = [k for k in row if k not in wanted]
            if missing or extra:
                parts = []
                if missing:
                    parts.append(f"missing feature(s) {', '.join(map(repr, missing[:5]))}")
                if extra:
                    parts.append(f"unknown feature(s) {', '.join(map(repr, extra[:5]))}")
                raise Invalid(f"row {i + 1}: {'; '.join(parts)}", loc=[*LOC, i])
            rows.append([row[n] for n in names])
    else:
        rows = inputs
    try:
        arr = np.array(rows)
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.dtype.kind not in "iuf" or arr.ndim < 2 or arr.shape[0] != len(rows):
        i, why = _first_bad_row(rows, width)
        raise Invalid(f"row {i + 1} {why}", loc=[*LOC, i])
    arr = arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)
    if arr.shape[1] != width:
        raise Invalid(f"row 1 has {arr.shape[1]} values; the model takes {width}", loc=[*LOC, 0])
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise Invalid(f"row {i + 1} contains NaN or an infinite value", loc=[*LOC, i])
    return arr


def predict(
    session: Session,
    settings: Settings,
    cache: ModelCache,
    owner_id: str,
    model_id: str,
    inputs: list[Any],
    version: int | None,
) -> dict[str, Any]:
    model, row = models_service.get_version(session, owner_id, model_id, version)
    if len(inputs) > settings.max_predict_rows:
        raise PayloadTooLarge(
            f"{len(inputs)} rows is over the limit of max_predict_rows={settings.max_predict_rows} per request"
        )
    shape = [int(d) for d in model.input_shape]
    X = to_matrix(inputs, list(row.feature_names), math.prod(shape))

    key = (model.id, row.version)

    def load() -> tuple[Any, int]:
        data = session.scalar(select(ModelVersion.data).where(ModelVersion.id == row.id))
        try:
            # allow_pickle=False inside: an archive with object arrays is refused, never unpickled
            return engine_port.from_bytes(data), len(data)
        except ValueError as exc:
            log.error("model %s version %s: the stored archive cannot be loaded: %s", model.id, row.version, exc)
            raise StoredDataError(
                f"model {model.id} version {row.version} cannot be loaded: its stored archive is invalid"
            ) from None

    net = cache.get(key, load)
    out = forward(net, X.reshape((X.shape[0], *shape)))
    return {
        "model_id": model.id,
        "version": row.version,
        "task": row.task,
        **map_outputs(out, row.task, row.classes),
    }
