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
    """What a classification job's validation_split with Keras's "last" rows would do badly on this dataset: hold
    out rows of only some classes, or leave a class out of training. Empty when it cannot tell (no profile)."""
    fraction = float(config.get("validation_split") or 0.0)
    if (profile_ is None or task != "classification" or not fraction > 0
            or config.get("validation_rows", "last") != "last"):
        return []
    n_train = int(math.floor(n_samples * (1.0 - fraction)))
    present = [t for t in profile_.get("targets") or [] if t.get("count")]
    held = [t["label"] for t in present if t["last_row"] >= n_train]
    trained = [t["label"] for t in present if t["first_row"] < n_train]
    out = []
    held_out = n_samples - n_train
    if len(held) < len(present):
        out.append(f"validation_split={fraction:g} holds out the last {held_out} rows (Keras's rule), and they hold "
                   f"only {_labels(held)} ({len(held)} of {len(present)} classes): set validation_rows to "
                   f'"stratified" (or "random") to draw them from every class')
    missing = [t["label"] for t in present if t["label"] not in trained]
    if missing:
        out.append(f"the training rows (the first {n_train}) hold no {_labels(missing)}: the model cannot learn "
                   f"{'that class' if len(missing) == 1 else 'those classes'}")
    return out


def _labels(labels: list[Any]) -> str:
    shown = ", ".join(repr(label) if isinstance(label, str) else str(label) for label in labels[:5])
    return shown + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
