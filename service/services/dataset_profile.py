"""A dataset's profile, computed once at upload: what a user checks before training, and what job creation
reads to warn about a validation split that would hold out only some classes.

``features``: per feature, min, max, mean and standard deviation (ddof 0, float64 over float32 values, in chunks
of rows so that no copy of the whole array is made). Left out (null) past MAX_PROFILED_FEATURES features.
``targets``: classification, per class its row count and its first and last row (0-based); multilabel, per
label the rows that carry it; regression, the statistics of each target.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Wider datasets (images, say) get no per-feature statistics: the list would outweigh what it tells.
MAX_PROFILED_FEATURES = 4096
_CHUNK_ROWS = 8192


def _statistics(values: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    """min, max, mean and std (ddof 0) of each column of the 2-D ``values``, in float64, by chunks of rows."""
    n = values.shape[0]
    total = np.zeros(values.shape[1])
    low = np.full(values.shape[1], np.inf)
    high = np.full(values.shape[1], -np.inf)
    for i in range(0, n, _CHUNK_ROWS):
        chunk = values[i:i + _CHUNK_ROWS]
        total += chunk.sum(axis=0, dtype=np.float64)
        np.minimum(low, chunk.min(axis=0), out=low)
        np.maximum(high, chunk.max(axis=0), out=high)
    mean = total / max(n, 1)
    squares = np.zeros(values.shape[1])
    for i in range(0, n, _CHUNK_ROWS):
        deviation = values[i:i + _CHUNK_ROWS] - mean
        squares += np.einsum("ij,ij->j", deviation, deviation)
    std = np.sqrt(squares / max(n, 1))
    return [{"name": name, "min": float(lo), "max": float(hi), "mean": float(m), "std": float(s)}
            for name, lo, hi, m, s in zip(names, low, high, mean, std)]


def profile(X: np.ndarray, y: np.ndarray, task: str, feature_names: list[str], target_names: list[str],
            classes: list[Any] | None) -> dict[str, Any]:
    """The profile of a parsed dataset (``X`` (n, features) float32, ``y`` in its task's canonical form)."""
    n = X.shape[0]
    flat = X.reshape(n, -1)
    features = _statistics(flat, feature_names) if flat.shape[1] <= MAX_PROFILED_FEATURES else None
    if task == "classification":
        labels = np.asarray(y).reshape(n).astype(np.int64)
        counts = np.bincount(labels, minlength=len(classes or []))
        targets = []
        for index, label in enumerate(classes or []):
            rows = np.flatnonzero(labels == index)
            targets.append({"label": label, "count": int(counts[index]),
                            "first_row": int(rows[0]) if rows.size else None,
                            "last_row": int(rows[-1]) if rows.size else None})
    elif task == "multilabel":
        carried = np.asarray(y).reshape(n, -1).sum(axis=0)
        targets = [{"label": label, "count": int(c)} for label, c in zip(classes or target_names, carried)]
    else:
        targets = _statistics(np.asarray(y, dtype=np.float32).reshape(n, -1), target_names)
    return {"features": features, "targets": targets}


def split_warnings(profile_: dict[str, Any] | None, task: str, n_samples: int, config: dict[str, Any]) -> list[str]:
    """What a classification job's held-out rows would do badly on this dataset, from each class's first and last
    row: Keras's last rows of a validation_split, or a contiguous validation_fold ("last"), that hold only some
    classes or take a whole class out of training; a stratified validation_fold with fewer rows of a class than
    folds. Each warning is certain, not a guess: a class whose rows all lie outside the held-out block has none
    in it. Empty when it cannot tell (no profile, another task, no held-out rows)."""
    if profile_ is None or task != "classification":
        return []
    present = [t for t in profile_.get("targets") or [] if t.get("count")]
    mode = config.get("validation_rows", "last")
    fold = config.get("validation_fold")
    fraction = float(config.get("validation_split") or 0.0)
    if fold and mode == "stratified":
        few = [t["label"] for t in present if t["count"] < fold["folds"]]
        return [f"validation_fold: {_labels(few)} {'has' if len(few) == 1 else 'have'} fewer rows than the "
                f"{fold['folds']} folds, so some folds validate on none of {'it' if len(few) == 1 else 'them'}"
                ] if few else []
    if mode != "last":
        return []
    if fold:
        k, i = fold["folds"], fold["fold"] - 1
        start = i * (n_samples // k) + min(i, n_samples % k)
        stop = start + n_samples // k + (i < n_samples % k)
        what = f"validation_fold {fold['fold']} of {k} holds out rows {start} to {stop - 1} (contiguous folds)"
        fix = 'set validation_rows to "stratified" (or "random") to deal the folds from every class'
    elif fraction > 0:
        start, stop = int(math.floor(n_samples * (1.0 - fraction))), n_samples
        what = f"validation_split={fraction:g} holds out the last {stop - start} rows (Keras's rule)"
        fix = 'set validation_rows to "stratified" (or "random") to draw them from every class'
    else:
        return []
    held = [t["label"] for t in present if not (t["last_row"] < start or t["first_row"] >= stop)]
    out = []
    if len(held) < len(present):
        out.append(f"{what}, and they hold only {_labels(held)} ({len(held)} of {len(present)} classes): {fix}")
    missing = [t["label"] for t in present if t["first_row"] >= start and t["last_row"] < stop]
    if missing:
        out.append(f"the training rows (all but rows {start} to {stop - 1}) hold no {_labels(missing)}: the model "
                   f"cannot learn {'that class' if len(missing) == 1 else 'those classes'}")
    return out


def _labels(labels: list[Any]) -> str:
    shown = ", ".join(repr(label) if isinstance(label, str) else str(label) for label in labels[:5])
    return shown + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
