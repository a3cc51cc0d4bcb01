"""Predictions: check the rows, run the cached model of the requested version, map outputs to labels.

Two paths give the same answers. :func:`predict_fast` serves a version already in the model cache with one
single-row query (the model's owner and default version, its pinned serving version or else its latest:
ownership and the default are never cached, so a new version, a new pin or a deletion is seen by the next
request, whatever process made it) and no ORM session; anything
else (a model not found or not owned, no version yet, a version not loaded) goes through :func:`predict`, which
raises the documented errors and loads the version into the cache.""" 
from __future__ import annotations

import logging
import math
import sys
import threading
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Engine, bindparam, func, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.db.models import Model, ModelVersion
from service.errors import BackpropError, Invalid, PayloadTooLarge
from service.serving import ModelCache, Served, forward, map_outputs
from service.services import engine_port
from service.services import models as models_service

LOC = ["body", "inputs"]
NPY_LOC = ["body"]
#: JSON rows (lists or objects), or an array of rows at least 2-D read from a .npy body.
Rows = list[Any] | np.ndarray
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


def _array_rows(rows: np.ndarray, shape: tuple[int, ...], width: int) -> np.ndarray:
    """An array of rows from a .npy body (service.api.npy_body) -> (n, width), float64 or float32 as sent;
    422 naming the row."""
    if rows.shape[0] == 0:
        raise Invalid("the array has no rows: send at least one", loc=NPY_LOC)
    row_shape = tuple(rows.shape[1:])
    if row_shape not in ((width,), shape):
        takes = f"{width} values" + (f" or shape {shape}" if len(shape) > 1 else "")
        raise Invalid(f"each row of the array has shape {row_shape}; the model takes {takes}", loc=NPY_LOC)
    arr = rows.reshape(rows.shape[0], width)
    if arr.dtype != np.float32:   # float32 rows go to the model as they are (float64 would round back to them)
        arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise Invalid(f"row {i + 1} contains NaN or an infinite value", loc=[*NPY_LOC, i])
    return arr


def to_matrix(inputs: Rows, feature_names: list[str], width: int, shape: tuple[int, ...] = ()) -> np.ndarray:
    """Rows (lists in feature order, objects by feature name, or an array of rows whose each row is ``width``
    values or ``shape``) -> (n, width), float64 (a float32 array stays float32); 422 naming the row."""
    if isinstance(inputs, np.ndarray):
        return _array_rows(inputs, shape, width)
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


def check_rows(settings: Settings, inputs: Rows) -> None:
    if len(inputs) > settings.max_predict_rows:
        raise PayloadTooLarge(
            f"{len(inputs)} rows is over the limit of max_predict_rows={settings.max_predict_rows} per request"
        )


def _run(served: Served, model_id: str, version: int, inputs: Rows) -> dict[str, Any]:
    X = to_matrix(inputs, served.feature_names, served.width, served.input_shape)
    out = forward(served.net, X.reshape((X.shape[0], *served.input_shape)))
    return {
        "model_id": model_id,
        "version": version,
        "task": served.task,
        **map_outputs(out, served.task, served.classes),
    }


def predict(
    session: Session,
    settings: Settings,
    cache: ModelCache,
    owner_id: str,
    model_id: str,
    inputs: Rows,
    version: int | None,
) -> dict[str, Any]:
    model, row = models_service.get_version(session, owner_id, model_id, version)
    check_rows(settings, inputs)
    shape = tuple(int(d) for d in model.input_shape)
    to_matrix(inputs, list(row.feature_names), math.prod(shape), shape)  # 422 before loading anything
    return _run(served_version(session, cache, model, row), model.id, row.version, inputs)


def load_version(session: Session, model: Any, row: Any) -> tuple[Any, int]:
    """(a new engine model from the stored archive of version ``row`` of ``model``, the archive's size);
    a 500 naming the version if it cannot load."""
    data = session.scalar(select(ModelVersion.data).where(ModelVersion.id == row.id))
    try:
        # allow_pickle=False inside: an archive with object arrays is refused, never unpickled
        return engine_port.from_bytes(data), len(data)
    except ValueError as exc:
        log.error("model %s version %s: the stored archive cannot be loaded: %s", model.id, row.version, exc)
        raise StoredDataError(
            f"model {model.id} version {row.version} cannot be loaded: its stored archive is invalid"
        ) from None


def served_version(session: Session, cache: ModelCache, model: Any, row: Any) -> Served:
    """The cached copy of version ``row`` of ``model``, loaded from the database on a miss."""
    def load() -> tuple[Any, int]:
        net, size = load_version(session, model, row)
        shape = tuple(int(d) for d in model.input_shape)
        n_params = int(net.count_params()) if hasattr(net, "count_params") else 0
        served = Served(net, row.task, row.classes, list(row.feature_names), shape, math.prod(shape), n_params)
        return served, size

    return cache.get((model.id, row.version), load)


#: (owner, the version a request naming none gets: the pinned serving version, else the latest)
_OWNER_AND_DEFAULT = select(Model.owner_id, func.coalesce(Model.serving_version, Model.latest_version)).where(
    Model.id == bindparam("model_id"))
#: Rows x parameters under which a cached prediction runs on the event loop (tens of microseconds of NumPy).
INLINE_WORK = 2_000_000


def cached_version(
    found: Any, cache: ModelCache, owner_id: str, model_id: str, version: int | None
) -> tuple[Served, int] | None:
    """(served version, its number) when ``found`` = (owner id, default version) of the model shows the request
    is the owner's and the version is cached; None when the full path must decide (and report errors)."""
    if found is None or found[0] != owner_id:
        return None
    if version is None:
        version = found[1]
        if version is None:
            return None
    served = cache.peek((model_id, version))
    if not isinstance(served, Served):
        return None
    return served, version


def run_cached(settings: Settings, served: Served, model_id: str, version: int, inputs: Rows) -> dict[str, Any]:
    check_rows(settings, inputs)
    return _run(served, model_id, version, inputs)


def predict_fast(
    db_engine: Engine,
    settings: Settings,
    cache: ModelCache,
    owner_id: str,
    model_id: str,
    inputs: Rows,
    version: int | None,
) -> dict[str, Any] | None:
    """The answer of :func:`predict` for a cached version (one single-row query on any database, no ORM
    session), or None when the full path must decide."""
    with db_engine.connect() as conn:
        found = conn.execute(_OWNER_AND_DEFAULT, {"model_id": model_id}).first()
    hit = cached_version(found, cache, owner_id, model_id, version)
    if hit is None:
        return None
    return run_cached(settings, hit[0], model_id, hit[1], inputs)


class SqliteReader:
    """The owner-and-latest-version read on SQLite, cheap enough for the event loop: its own autocommit
    connection (each read sees every committed version) with a 5 ms busy timeout, so a locked database costs
    the loop at most that; the caller then takes the threadpool path (``sqlite3.Error``)."""

    def __init__(self, path: str) -> None:
        import sqlite3

        # A plain connection, not service.db.fork_safe_sqlite's: the API process never forks, and this
        # read is on the single-row predict path, where the gate's microsecond per call would show.
        self._conn = sqlite3.connect(path, timeout=0.005, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        from sqlalchemy.dialects import sqlite as sqlite_dialect

        self._sql = str(_OWNER_AND_DEFAULT.compile(dialect=sqlite_dialect.dialect()))

    def owner_and_default_version(self, model_id: str) -> Any:
        if not self._lock.acquire(False):  # in use (another loop thread): let the caller take the slow path
            import sqlite3

            raise sqlite3.OperationalError("reader busy")
        try:
            return self._conn.execute(self._sql, (model_id,)).fetchone()
        finally:
            self._lock.release()

    def close(self) -> None:
        self._conn.close()


def sqlite_reader(state: Any) -> SqliteReader | None:
    """The app's inline reader when its database is a SQLite file, else None (made once per app)."""
    reader = getattr(state, "predict_sqlite_reader", False)
    if reader is False:
        reader = None
        url = state.db_engine.url
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" and \
                not url.database.startswith("file:"):
            try:
                reader = SqliteReader(url.database)
            except Exception:  # pragma: no cover - the threadpool path still works
                reader = None
        state.predict_sqlite_reader = reader
    return reader


def inline_ok(served: Served, n_rows: int) -> bool:
    return n_rows * served.n_params <= INLINE_WORK


_RESPONSE_FIELDS = ("model_id", "version", "task", "predictions", "probabilities", "classes")


def to_json(result: dict[str, Any]) -> bytes:
    """``PredictOut`` as JSON (its fields, in order; absent ones null) without building the model: the values
    are already plain JSON types. NaN and infinities become null, as pydantic writes them."""
    return orjson.dumps({k: result.get(k) for k in _RESPONSE_FIELDS})
