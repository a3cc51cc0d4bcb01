"""A second dataset read in the terms of a reference: held-out rows against the model version that evaluates
them, or a job's validation dataset against its training dataset.

A reference is anything with ``task``, ``classes``, ``target_names`` and ``feature_names`` (a ModelVersion, a
Dataset, the worker's DatasetInfo). Class labels are mapped to the reference's classes by value (the second
dataset may hold only some of them, in any order); multilabel and regression target columns and the feature
columns are put in the reference's order by name when both name the same columns differently ordered, and
otherwise taken by position. Stored targets are in service.training_data's canonical form.

A job's class weights, keyed by the dataset's labels, meet its classes the same way (:func:`class_weight_for_engine`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.errors import Invalid


def _reordering(have: list[str], want: list[str]) -> list[int] | None:
    """Column indices that put ``have`` in ``want``'s order when both name the same columns in another order;
    None to keep the columns as they are."""
    if have != want and sorted(have) == sorted(want) and len(set(want)) == len(want):
        return [have.index(name) for name in want]
    return None


def _target_columns(ref: Any) -> list[str]:
    return list(ref.classes if ref.task == "multilabel" else ref.target_names)


def check(ref: Any, data: Any, width: int, n_features: int, loc: list[str | int], ref_name: str) -> None:
    """Invalid (at ``loc``) unless ``data``'s rows and targets can be read in ``ref``'s terms: the same task,
    ``width`` values per row, labels among the reference's (classification) or the same label set (multilabel),
    as many target columns (regression)."""
    if ref.task != data.task:
        raise Invalid(f"{ref_name} is for {ref.task} and the dataset is {data.task}; upload the dataset with "
                      f"task={ref.task}", loc=loc)
    if n_features != width:
        raise Invalid(f"the model takes {width} values per row and the dataset's rows have {n_features}", loc=loc)
    if ref.task == "classification":
        known = list(ref.classes or [])
        unknown = [c for c in data.classes or [] if c not in known]
        if unknown:
            raise Invalid(f"the dataset has labels that {ref_name} does not: {', '.join(map(repr, unknown[:5]))} "
                          f"(its classes are {known[:20]!r})", loc=loc)
        return
    have, want = _target_columns(data), _target_columns(ref)
    if len(have) != len(want):
        raise Invalid(f"the dataset has {len(have)} target column(s) ({', '.join(have[:10])}) and {ref_name} "
                      f"{len(want)} ({', '.join(want[:10])})", loc=loc)
    if ref.task == "multilabel" and sorted(have) != sorted(want):
        raise Invalid(f"the dataset's labels {have[:10]} are not those of {ref_name}: {want[:10]}", loc=loc)


def features(ref: Any, data: Any, X: np.ndarray) -> np.ndarray:
    """Stored rows of ``data``, flat (n, width), columns in the reference's order."""
    X = X.reshape(X.shape[0], -1)
    order = _reordering(list(data.feature_names), list(ref.feature_names))
    return X if order is None else X[:, order]


def targets(ref: Any, data: Any, y: np.ndarray) -> np.ndarray:
    """Stored targets of ``data`` as the reference's: class indices into its classes, columns in its order."""
    if ref.task == "classification":
        known = list(ref.classes or [])
        return np.array([known.index(c) for c in data.classes or []], dtype=np.int64)[y]
    order = _reordering(_target_columns(data), _target_columns(ref))
    return y if order is None else y[:, order]


def _as_number(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def label_index(classes: list[Any], label: str) -> int | None:
    """The index among a dataset's stored classes of ``label``, a JSON object key and so always a string, by value:
    "setosa" is the string class "setosa", "1" (or "1.0") the number class 1, stored as 1 or as 1.0."""
    number = _as_number(label)
    for i, c in enumerate(classes):
        if isinstance(c, str):
            if c == label:
                return i
        elif number is not None and c == number:
            return i
    return None


def class_weight_for_engine(dataset: Any, weights: Any, loc: list[str | int]) -> Any:
    """A job's ``class_weight`` as the engine takes it: "balanced" as it is, ``{label: weight}`` with the
    dataset's labels as class indices. Invalid at ``loc`` for a dataset with no one class per row to weigh."""
    if dataset.task != "classification":
        rows = "several labels per row" if dataset.task == "multilabel" else "real-valued targets"
        raise Invalid(f"class_weight: weighs the classes of a classification dataset, one label per row; this "
                      f"dataset is {dataset.task} ({rows})", loc=loc)
    if isinstance(weights, dict):
        return _class_weight_indices(list(dataset.classes or []), weights, loc)
    return weights


def _class_weight_indices(classes: list[Any], weights: dict[str, Any], loc: list[str | int]) -> dict[str, Any]:
    """``{label: weight}`` with the dataset's own labels as ``{"<class index>": weight}``, the engine's form.

    Invalid at ``loc + [label]`` for a label the dataset does not have, a class named twice ("1" and "1.0") or a
    weight that is not a finite number >= 0."""
    out: dict[str, Any] = {}
    for label, weight in weights.items():
        where = [*loc, label]
        index = label_index(classes, label)
        if index is None:
            raise Invalid(f"class_weight.{label}: the dataset has no class {label!r} (its classes are "
                          f"{classes[:20]!r})", loc=where)
        if str(index) in out:
            raise Invalid(f"class_weight.{label}: class {classes[index]!r} is given twice", loc=where)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise Invalid(f"class_weight.{label}: a weight must be a finite number >= 0, got {weight!r}", loc=where)
        out[str(index)] = weight
    return out
