"""Datasets: parse CSV or JSON uploads into checked arrays, infer the task, store them as npz.

Every rejection is an :class:`~service.errors.Invalid` naming the row (1-based, counting data rows; the CSV line
number is in the message too) or the column, raised before anything is added to the session.
"""
from __future__ import annotations

import csv
import io
import math
import re
import sys
import zipfile
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings
from service.db.models import Dataset, Job
from service.errors import Conflict, Invalid, LimitExceeded, PayloadTooLarge
from service.npy import NUMBER_KINDS, NpyError, check_kind, read_header, read_stream
from service.services import dataset_profile
from service.services.queries import get_owned, page
from service.training_data import pack_arrays

TASKS = ("classification", "multilabel", "regression")
# JSON integers beyond the float64 range (Python parses them exactly) are refused, not overflowed.
_FLOAT_MAX = sys.float_info.max
_FLOAT_MIN = -_FLOAT_MAX
# An integer-valued target with at most this many distinct values (and repeats) is read as class labels.
MAX_INFERRED_CLASSES = 50


@dataclass
class Parsed:
    X: np.ndarray  # float32 (n, n_features)
    y: np.ndarray  # canonical form, see service.training_data
    task: str
    feature_names: list[str]
    target_names: list[str]
    classes: list[Any] | None


# ---------------------------------------------------------------------------------------------- labels and tasks
def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def _label_value(value: Any) -> Any:
    """Integer-valued numbers become ints; other floats stay floats; strings stay strings."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _infer_task(columns: list[list[Any]], n: int) -> str:
    """``columns``: the target columns as Python values (numbers already converted where possible)."""
    if len(columns) > 1:
        if all(all(isinstance(v, (int, float)) and v in (0, 1) for v in col) for col in columns):
            return "multilabel"
        return "regression"
    col = columns[0]
    if any(isinstance(v, str) for v in col):
        return "classification"
    if all(float(v).is_integer() for v in col):
        distinct = len(set(col))
        if distinct <= 2 or (distinct <= MAX_INFERRED_CLASSES and distinct <= n // 2):
            return "classification"
    return "regression"


def _where(i: int, lines: list[int] | None) -> str:
    return f"row {i + 1} (line {lines[i]})" if lines else f"row {i + 1}"


def _loc(root: list[str | int], i: int, name: str, lines: list[int] | None) -> list[str | int]:
    # CSV: ["body", "file", <1-based data row>, <column name>]; JSON: ["body", "targets", <0-based index>].
    return [*root, i + 1, name] if lines else [*root, i]


def _as_float32(values: np.ndarray) -> tuple[np.ndarray, tuple[int, int, str] | None]:
    """``values`` (2-D, any real dtype) as float32, and the first cell that is not a finite float32 (row, column, why):
    a finite float64 beyond float32's range would otherwise become infinity on the way into training."""
    with np.errstate(over="ignore"):      # reported through the return value, with the place
        x = values.astype(np.float32, copy=False)   # float32 already (a .npz archive's features): no copy
    bad = ~np.isfinite(x)
    if not bad.any():
        return x, None
    i, j = map(int, np.argwhere(bad)[0])
    why = "beyond the float32 range (about 3.4e38)" if math.isfinite(values[i, j]) else "NaN or infinite value"
    return x, (i, j, why)


def _build_targets(
    columns: list[list[Any]], task: str, target_names: list[str], lines: list[int] | None, loc_root: list[str | int]
) -> tuple[np.ndarray, list[Any] | None]:
    n = len(columns[0])
    if task == "classification":
        if len(columns) != 1:
            raise Invalid(
                f"classification takes one target column; got {len(columns)} ({', '.join(target_names)})",
                loc=["body", "target"],
            )
        labels = [_label_value(v) for v in columns[0]]
        kinds = {str if isinstance(v, str) else float for v in labels}
        if len(kinds) > 1:
            labels = [str(v) for v in labels]
        for i, v in enumerate(labels):
            if isinstance(v, float) and not math.isfinite(v):
                raise Invalid(
                    f"{_where(i, lines)}, column {target_names[0]!r}: the label is not finite",
                    loc=_loc(loc_root, i, target_names[0], lines),
                )
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise Invalid(
                f"column {target_names[0]!r}: classification needs at least 2 classes; every row is "
                f"{classes[0]!r}" if classes else f"column {target_names[0]!r} is empty",
                loc=[*loc_root, target_names[0]],
            )
        index = {c: i for i, c in enumerate(classes)}
        y = np.fromiter((index[v] for v in labels), dtype=np.int64, count=n)
        return y, classes

    values = np.empty((n, len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        for i, v in enumerate(col):
            if isinstance(v, str) or isinstance(v, bool) or v is None:
                raise Invalid(
                    f"{_where(i, lines)}, column {target_names[j]!r}: {v!r} is not a number "
                    f"({task} targets are numbers)",
                    loc=_loc(loc_root, i, target_names[j], lines),
                )
            values[i, j] = v
    values32, bad = _as_float32(values)
    if bad:
        i, j, why = bad
        raise Invalid(
            f"{_where(i, lines)}, column {target_names[j]!r}: {why}", loc=_loc(loc_root, i, target_names[j], lines)
        )
    if task == "multilabel":
        off = ~np.isin(values, (0.0, 1.0))
        if off.any():
            i, j = map(int, np.argwhere(off)[0])
            raise Invalid(
                f"{_where(i, lines)}, column {target_names[j]!r}: multilabel targets are 0 or 1, "
                f"got {values[i, j]:g}",
                loc=_loc(loc_root, i, target_names[j], lines),
            )
        return values32, list(target_names)
    return values32, None


def _check_limits(n: int, n_features: int, settings: Settings) -> None:
    if n > settings.max_rows:
        raise LimitExceeded(f"{n} rows is over the limit of max_rows={settings.max_rows}", loc=["body"])
    if n_features > settings.max_features:
        raise LimitExceeded(
            f"{n_features} features is over the limit of max_features={settings.max_features}", loc=["body"]
        )


def _resolve_shape(input_shape: Sequence[int] | None, n_features: int, loc: list[str | int]) -> list[int]:
    if not input_shape:
        return [n_features]
    shape = [int(d) for d in input_shape]
    if any(d < 1 for d in shape) or math.prod(shape) != n_features:
        raise Invalid(
            f"input_shape {shape} does not hold {n_features} features (its product must be {n_features})", loc=loc
        )
    return shape


def parse_input_shape(text: str | None) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError:
        raise Invalid(f"input_shape {text!r} is not a list of integers such as 28,28", loc=["body", "input_shape"])


# ---------------------------------------------------------------------------------------------- CSV
# A line ends at \r\n, \r or \n, as io.StringIO(newline="") splits it, without that copy of the whole text at
# four bytes per character.
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")


def _lines(text: str) -> Iterator[str]:
    return (match.group() for match in _LINE.finditer(text))


def _picker(indices: list[int]) -> Callable[[list[str]], tuple[str, ...]]:
    """The cells at ``indices`` of a row, as a tuple (itemgetter works in C; a comprehension per row does not)."""
    if len(indices) == 1:
        only = indices[0]
        return lambda row: (row[only],)
    return itemgetter(*indices)


class _FeatureBlocks:
    """Feature cells to float32, a block of rows at a time.

    Holding every cell as a Python string until the end (about 90 bytes a cell with the list and array around
    it) took 2.9 GiB for an 80 MiB file; a block at a time, only the float32 result grows. The first bad cell is
    reported as a whole-file pass would: a cell that is not a number anywhere before a NaN, infinite or
    out-of-range value anywhere.
    """

    CELLS = 1 << 16       # per block: about 4 MiB of cell strings while a block is pending

    def __init__(self, names: list[str], loc_root: list[str | int]):
        self.names, self.loc_root = names, loc_root
        self.rows = max(16, self.CELLS // len(names))
        self.pending: list[tuple[str, ...]] = []
        self.blocks: list[np.ndarray] = []
        self.start = 0                          # 0-based data row of pending[0]
        self.not_number: Invalid | None = None
        self.not_finite: Invalid | None = None

    def add(self, cells: tuple[str, ...], lines: array) -> None:
        self.pending.append(cells)
        if len(self.pending) >= self.rows:
            self._convert(lines)

    def finish(self, lines: array) -> np.ndarray:
        if self.pending:
            self._convert(lines)
        if self.not_number or self.not_finite:
            raise self.not_number or self.not_finite
        return self.blocks[0] if len(self.blocks) == 1 else np.concatenate(self.blocks)

    def _convert(self, lines: array) -> None:
        block, start = self.pending, self.start
        self.pending, self.start = [], start + len(block)
        if self.not_number is not None:
            return                              # the answer is known; the rest need not be converted
        try:
            values = np.array(block, dtype=np.float64)
        except ValueError:
            self.not_number = self._first_non_number(block, start, lines)
            if self.not_number is not None:
                return
            # numpy refused a cell that Python's float() reads (such as "1_000"): convert the slow way
            values = np.array([[float(cell) for cell in cells] for cells in block], dtype=np.float64)
        if self.not_finite is not None:
            return
        x, bad = _as_float32(values)
        if bad:
            r, j, why = bad
            i, name = start + r, self.names[j]
            self.not_finite = Invalid(f"row {i + 1} (line {lines[i]}), column {name!r}: {why}",
                                      loc=[*self.loc_root, i + 1, name])
            return
        self.blocks.append(x)

    def _first_non_number(self, block: list[tuple[str, ...]], start: int, lines: array) -> Invalid | None:
        for r, cells in enumerate(block):
            for j, cell in enumerate(cells):
                if _number(cell) is None:
                    i, name = start + r, self.names[j]
                    return Invalid(f"row {i + 1} (line {lines[i]}), column {name!r}: {cell[:40]!r} is not a number",
                                   loc=[*self.loc_root, i + 1, name])
        return None


def parse_csv(
    raw: bytes, target: str, task: str | None, settings: Settings
) -> Parsed:
    loc_root: list[str | int] = ["body", "file"]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Invalid(f"the file is not UTF-8 text (byte {exc.start})", loc=loc_root)
    if "\x00" in text:
        raise Invalid("the file is not a CSV text file (it contains NUL bytes)", loc=loc_root)
    # A header far over max_features is refused from its comma count, before the CSV reader builds a list of
    # (possibly millions of) column names. Only for an unquoted header: quoted names may hold commas.
    newline = text.find("\n")
    first_line = text if newline < 0 else text[:newline]
    if first_line.count(",") + 1 > settings.max_features + 64 and '"' not in first_line:
        raise LimitExceeded(
            f"{first_line.count(',') + 1} columns is over the limit of max_features={settings.max_features}",
            loc=loc_root,
        )
    del first_line
    reader = csv.reader(_lines(text))
    try:
        header = next(reader)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader)
    except StopIteration:
        raise Invalid("the file is empty: expected a header row and data rows", loc=loc_root)
    except csv.Error as exc:
        raise Invalid(f"the CSV header cannot be read: {exc}", loc=loc_root)
    header = [h.strip() for h in header]
    if len(header) > settings.max_features + 64:
        raise LimitExceeded(
            f"{len(header)} columns is over the limit of max_features={settings.max_features}", loc=loc_root
        )
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise Invalid(f"column {dup!r} appears more than once in the header", loc=[*loc_root, dup])
    targets = [t.strip() for t in target.split(",") if t.strip()]
    if not targets:
        raise Invalid("target names no column", loc=["body", "target"])
    missing = [t for t in targets if t not in header]
    if missing:
        raise Invalid(
            f"target column {missing[0][:80]!r} is not in the header (columns: "
            f"{', '.join(h[:40] for h in header[:20])}"
            f"{', ...' if len(header) > 20 else ''})",
            loc=["body", "target"],
        )
    target_idx = [header.index(t) for t in targets]
    feature_idx = [i for i in range(len(header)) if i not in set(target_idx)]
    if not feature_idx:
        raise Invalid("no feature columns: every column is a target", loc=["body", "target"])
    feature_names = [header[i] for i in feature_idx]
    width = len(header)

    if len(feature_idx) > settings.max_features:   # before any row is converted
        raise LimitExceeded(
            f"{len(feature_idx)} features is over the limit of max_features={settings.max_features}", loc=["body"]
        )
    features_of = _picker(feature_idx)
    targets_of = _picker(target_idx)
    converter = _FeatureBlocks(feature_names, loc_root)
    target_rows: list[tuple[str, ...]] = []
    lines = array("q")        # the CSV line of each data row, for messages
    n = 0
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            n += 1
            if len(row) != width:
                raise Invalid(
                    f"row {n} (line {reader.line_num}) has {len(row)} fields; the header has {width}",
                    loc=[*loc_root, n],
                )
            if n > settings.max_rows:
                raise LimitExceeded(f"more rows than the limit of max_rows={settings.max_rows}", loc=loc_root)
            lines.append(reader.line_num)
            target_rows.append(targets_of(row))
            converter.add(features_of(row), lines)
    except csv.Error as exc:
        raise Invalid(f"row {n + 1} (line {reader.line_num}) cannot be read: {exc}", loc=[*loc_root, n + 1])
    if not n:
        raise Invalid("the file has a header but no data rows", loc=loc_root)
    _check_limits(n, len(feature_idx), settings)
    X = converter.finish(lines)

    columns: list[list[Any]] = []
    for t, name in enumerate(targets):
        col: list[Any] = []
        for i, cells in enumerate(target_rows):
            cell = cells[t].strip()
            if not cell:
                raise Invalid(
                    f"row {i + 1} (line {lines[i]}), column {name!r}: the target is empty",
                    loc=[*loc_root, i + 1, name],
                )
            num = _number(cell)
            col.append(cell if num is None else num)
        columns.append(col)
    # Keep string labels that look numeric as numbers only when every label is numeric.
    if len(columns) == 1 and task in (None, "classification") and any(isinstance(v, str) for v in columns[0]):
        columns = [[cells[0].strip() for cells in target_rows]]
    task = task or _infer_task(columns, n)
    y, classes = _build_targets(columns, task, targets, lines, loc_root)
    return Parsed(X, y, task, feature_names, targets, classes)


# ---------------------------------------------------------------------------------------------- JSON
def _parse_targets(
    targets: list[Any], task: str | None, target_names: list[str] | None, loc_t: list[str | int]
) -> tuple[np.ndarray, list[Any] | None, list[str], str]:
    """Targets as JSON values (one value, or one list of values, per row) -> (y, classes, target names, task)."""
    nested = [isinstance(t, list) for t in targets]
    if any(nested) and not all(nested):
        i = nested.index(not nested[0])
        raise Invalid(f"row {i + 1}: targets mix single values and lists", loc=[*loc_t, i])
    if all(nested):
        k = len(targets[0])
        for i, t in enumerate(targets):
            if len(t) != k or k == 0:
                raise Invalid(f"row {i + 1} has {len(t)} targets; row 1 has {k}", loc=[*loc_t, i])
        columns = [[_label_value(t[j]) if not isinstance(t[j], str) else t[j] for t in targets] for j in range(k)]
    else:
        columns = [[_label_value(t) if not isinstance(t, str) else t for t in targets]]
    for j, col in enumerate(columns):
        for i, v in enumerate(col):
            if v is None or isinstance(v, (list, dict)):
                raise Invalid(f"row {i + 1}: target {str(v)[:40]} is not a label or a number", loc=[*loc_t, i])
            if isinstance(v, int) and not _FLOAT_MIN <= v <= _FLOAT_MAX:
                raise Invalid(f"row {i + 1}: the target is too large a number", loc=[*loc_t, i])
    tnames = target_names or (["target"] if len(columns) == 1 else [f"y{j}" for j in range(len(columns))])
    if len(tnames) != len(columns):
        raise Invalid(
            f"target_names has {len(tnames)} names for {len(columns)} targets", loc=[*loc_t[:-1], "target_names"]
        )
    task = task or _infer_task(columns, len(targets))
    y, classes = _build_targets(columns, task, tnames, None, loc_t)
    return y, classes, list(tnames), task


def _check_names(feature_names: list[str], target_names: list[str], root: list[str | int]) -> None:
    """Every column named once, as a CSV header must: a repeated name would make rows given by name ambiguous
    and the dataset's CSV export unreadable."""
    for key, names in (("feature_names", feature_names), ("target_names", target_names)):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise Invalid(f"{key}: {name!r} appears more than once", loc=[*root, key])
            seen.add(name)
    both = sorted(set(feature_names) & set(target_names))
    if both:
        raise Invalid(f"{both[0]!r} names both a feature and a target: give target_names (or feature_names)",
                      loc=[*root, "target_names"])


def parse_json(
    features: list[list[Any]],
    targets: list[Any],
    task: str | None,
    feature_names: list[str] | None,
    target_names: list[str] | None,
    settings: Settings,
) -> Parsed:
    loc_f: list[str | int] = ["body", "features"]
    n = len(features)
    if n == 0:
        raise Invalid("features is empty: at least one row is needed", loc=loc_f)
    if len(targets) != n:
        raise Invalid(f"features has {n} rows but targets has {len(targets)}", loc=["body", "targets"])
    width = len(features[0])
    _check_limits(n, width, settings)
    if width == 0:
        raise Invalid("row 1 has no values", loc=[*loc_f, 0])
    for i, row in enumerate(features):
        if len(row) != width:
            raise Invalid(f"row {i + 1} has {len(row)} values; row 1 has {width}", loc=[*loc_f, i])
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise Invalid(f"row {i + 1}, column {j + 1}: {str(v)[:40]!r} is not a number", loc=[*loc_f, i, j])
            if isinstance(v, int) and not _FLOAT_MIN <= v <= _FLOAT_MAX:
                raise Invalid(f"row {i + 1}, column {j + 1}: the number is too large", loc=[*loc_f, i, j])
    X = np.empty((n, width), dtype=np.float64)
    for i in range(0, n, 4096):      # in slices: one call over millions of values would hold the GIL throughout
        X[i:i + 4096] = features[i:i + 4096]
    names = feature_names or [f"x{j}" for j in range(width)]
    if len(names) != width:
        raise Invalid(f"feature_names has {len(names)} names for {width} features", loc=["body", "feature_names"])
    X, bad = _as_float32(X)
    if bad:
        i, j, why = bad
        raise Invalid(f"row {i + 1}, column {names[j]!r}: {why}", loc=[*loc_f, i, j])

    y, classes, tnames, task = _parse_targets(targets, task, target_names, ["body", "targets"])
    _check_names(list(names), tnames, ["body"])
    return Parsed(X, y, task, list(names), list(tnames), classes)


# ---------------------------------------------------------------------------------------------- .npz archives
#: The arrays a dataset archive may hold, with the dtype kinds each accepts (see service.npy).
NPZ_ARRAYS = {"features": NUMBER_KINDS, "targets": NUMBER_KINDS + "bU", "feature_names": "U", "target_names": "U"}
_NPZ_LOC: list[str | int] = ["body", "file"]


def is_npz(raw: bytes) -> bool:
    """A zip archive (what numpy.savez writes) rather than CSV text: by its first bytes."""
    return raw[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def _npz_arrays(raw: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """The arrays of a dataset archive, each read by service.npy from its header: only the names and dtype kinds
    of NPZ_ARRAYS, and at most ``max_bytes`` of array data in all, checked from the headers before each read
    (a compressed member never inflates past what its header declares)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise Invalid(f"the file is not a readable .npz archive: {str(exc)[:200]}", loc=_NPZ_LOC) from None
    arrays: dict[str, np.ndarray] = {}
    total = 0
    for member in members:
        name = member.filename.removesuffix(".npy")
        loc = [*_NPZ_LOC, name]
        if name not in NPZ_ARRAYS or not member.filename.endswith(".npy"):
            raise Invalid(f"the archive holds {member.filename!r}; a dataset archive holds features.npy, "
                          f"targets.npy and optionally feature_names.npy, target_names.npy", loc=loc)
        if name in arrays:
            raise Invalid(f"the archive holds {member.filename!r} twice", loc=loc)
        try:
            with archive.open(member) as fp:
                header = read_header(fp)
                check_kind(header, NPZ_ARRAYS[name], name)
                total += header.nbytes
                if total > max_bytes:
                    raise PayloadTooLarge(f"the archive's arrays hold over {total} bytes, over the limit of "
                                          f"max_upload_bytes={max_bytes}")
                arrays[name] = read_stream(fp, header)
        except NpyError as exc:
            raise Invalid(f"{member.filename}: {exc}", loc=loc) from None
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, zlib.error) as exc:
            raise Invalid(f"{member.filename} cannot be read from the archive: {str(exc)[:200]}", loc=loc) from None
    for name in ("features", "targets"):
        if name not in arrays:
            raise Invalid(f"the archive has no {name}.npy (save it with numpy.savez(file, features=X, targets=y))",
                          loc=[*_NPZ_LOC, name])
    return arrays


def _names(arrays: dict[str, np.ndarray], key: str) -> list[str] | None:
    names = arrays.get(key)
    if names is None:
        return None
    if names.ndim != 1:
        raise Invalid(f"{key} has shape {names.shape}: give one name per column, 1-D", loc=[*_NPZ_LOC, key])
    return [str(v) for v in names.tolist()]


def parse_npz(raw: bytes, task: str | None, settings: Settings) -> tuple[Parsed, list[int] | None]:
    """A dataset archive written by ``numpy.savez(file, features=X, targets=y)`` -> (parsed, the input shape
    that features of three or more dimensions carry, else None). The checks are JSON's and CSV's: the limits,
    finite float32 features named by row and column, and the targets of :func:`_parse_targets`."""
    arrays = _npz_arrays(raw, settings.max_upload_bytes)
    features, targets = arrays["features"], arrays["targets"]
    loc_f = [*_NPZ_LOC, "features"]
    if features.ndim < 2:
        raise Invalid(f"features has shape {features.shape}: give rows, shaped (rows, features) or "
                      f"(rows, *input_shape)", loc=loc_f)
    n = features.shape[0]
    width = math.prod(features.shape[1:])
    _check_limits(n, width, settings)
    if n == 0 or width == 0:
        raise Invalid(f"features has shape {features.shape}: at least one row of at least one value is needed",
                      loc=loc_f)
    if targets.ndim not in (1, 2) or targets.shape[0] != n:
        raise Invalid(f"targets has shape {targets.shape}; features has {n} rows: give (rows,) or "
                      f"(rows, targets)", loc=[*_NPZ_LOC, "targets"])
    names = _names(arrays, "feature_names") or [f"x{j}" for j in range(width)]
    if len(names) != width:
        raise Invalid(f"feature_names has {len(names)} names for {width} features",
                      loc=[*_NPZ_LOC, "feature_names"])
    X, bad = _as_float32(features.reshape(n, width))
    if bad:
        i, j, why = bad
        raise Invalid(f"row {i + 1}, column {names[j]!r}: {why}", loc=[*loc_f, i, j])
    y, classes, tnames, task = _parse_targets(targets.tolist(), task, _names(arrays, "target_names"),
                                              [*_NPZ_LOC, "targets"])
    _check_names(names, tnames, _NPZ_LOC)
    shape = [int(d) for d in features.shape[1:]] if features.ndim > 2 else None
    return Parsed(X, y, task, names, tnames, classes), shape


# ---------------------------------------------------------------------------------------------- storage
def store(session: Session, owner_id: str, name: str, parsed: Parsed, input_shape: Sequence[int] | None) -> Dataset:
    n, n_features = parsed.X.shape
    shape = _resolve_shape(input_shape, n_features, ["body", "input_shape"])
    X = parsed.X.reshape((n, *shape))
    data = pack_arrays(X, parsed.y)
    row = Dataset(
        owner_id=owner_id,
        name=name,
        task=parsed.task,
        n_samples=n,
        n_features=n_features,
        input_shape=shape,
        feature_names=parsed.feature_names,
        target_names=parsed.target_names,
        classes=parsed.classes,
        profile=dataset_profile.profile(parsed.X, parsed.y, parsed.task, parsed.feature_names, parsed.target_names,
                                        parsed.classes),
        size_bytes=len(data),
        data=data,
    )
    session.add(row)
    session.flush()
    return row


def create_from_csv(
    session: Session,
    settings: Settings,
    owner_id: str,
    *,
    name: str,
    raw: bytes,
    target: str,
    task: str | None,
    input_shape: str | None,
) -> Dataset:
    shape = parse_input_shape(input_shape)
    parsed = parse_csv(raw, target, task, settings)
    return store(session, owner_id, name, parsed, shape)


def create_from_npz(
    session: Session,
    settings: Settings,
    owner_id: str,
    *,
    name: str,
    raw: bytes,
    task: str | None,
    input_shape: str | None,
) -> Dataset:
    parsed, carried_shape = parse_npz(raw, task, settings)
    return store(session, owner_id, name, parsed, parse_input_shape(input_shape) or carried_shape)


def create_from_json(session: Session, settings: Settings, owner_id: str, body: Any) -> Dataset:
    parsed = parse_json(body.features, body.targets, body.task, body.feature_names, body.target_names, settings)
    return store(session, owner_id, body.name, parsed, body.input_shape)


def get(session: Session, owner_id: str, dataset_id: str) -> Dataset:
    return get_owned(session, Dataset, "dataset", owner_id, dataset_id)


def list_(session: Session, owner_id: str, limit: int, offset: int) -> tuple[list[Dataset], int]:
    return page(session, Dataset, [Dataset.owner_id == owner_id], [Dataset.created_at.desc(), Dataset.id.desc()],
                limit, offset)


def delete(session: Session, owner_id: str, dataset_id: str) -> None:
    row = get(session, owner_id, dataset_id)
    busy = session.scalar(
        select(Job.id).where(Job.dataset_id == row.id, Job.status.in_(("queued", "running"))).limit(1)
    )
    if busy is None:    # or validates one: the id is in the job's config (an owner has at most a few active jobs)
        active = session.execute(select(Job.id, Job.config).where(
            Job.owner_id == row.owner_id, Job.status.in_(("queued", "running"))))
        busy = next((job_id for job_id, config in active
                     if (config or {}).get("validation_dataset_id") == row.id), None)
    if busy is not None:
        raise Conflict(f"dataset {dataset_id} is used by job {busy}, which is queued or running; cancel it first")
    session.delete(row)
    session.flush()
