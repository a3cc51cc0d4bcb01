"""From a stored dataset to the arrays a fit takes; shared by job validation (API) and training (worker).

A dataset stores ``y`` in one canonical form per task:

- classification: class indices, int64, shape (n,), indexing ``Dataset.classes`` (sorted label values);
- multilabel: a 0/1 float32 matrix (n, k), columns in ``Dataset.classes`` (= target names) order;
- regression: float32 (n, k), k targets.

:func:`targets_for_loss` turns that into what the engine's loss expects for a model with ``n_outputs`` units,
or raises :class:`TargetMismatch` explaining why the loss cannot fit the model's output.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

CROSSENTROPY = {"categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy"}


class TargetMismatch(ValueError):
    """The loss, the model's output units and the dataset's targets do not fit together."""


def loss_name(loss: Any) -> str:
    if isinstance(loss, dict):
        return str(loss.get("type") or loss.get("name") or "")
    return str(loss)


def n_outputs_of(summary: dict[str, Any]) -> int:
    """Number of output units of a model, from its engine summary (last layer's output shape)."""
    shape = [d for d in summary["layers"][-1]["output_shape"] if d is not None]
    return int(prod(shape)) if shape else 1


def n_targets_of(task: str, classes: Sequence[Any] | None, target_names: Sequence[str]) -> int:
    if task == "classification":
        return len(classes or ())
    return len(target_names)


def check_targets(task: str, n_classes_or_targets: int, loss: Any, n_outputs: int) -> None:
    """Metadata-only form of :func:`targets_for_loss`: raise TargetMismatch when they cannot fit."""
    name = loss_name(loss)
    k = n_classes_or_targets
    if task == "classification":
        if name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
            if n_outputs != k:
                raise TargetMismatch(
                    f"{name} needs one output unit per class: the dataset has {k} classes and the model "
                    f"{n_outputs} output unit(s)"
                )
        elif name == "binary_crossentropy":
            if not (k == 2 and n_outputs == 1) and n_outputs != k:
                raise TargetMismatch(
                    f"binary_crossentropy on {k} classes needs {'1 or ' if k == 2 else ''}{k} output units; "
                    f"the model has {n_outputs}"
                )
        elif not (n_outputs == k or (k == 2 and n_outputs == 1)):
            raise TargetMismatch(
                f"{name} on {k} classes needs {k} output units (one-hot targets); the model has {n_outputs}"
            )
    elif task == "multilabel":
        if name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
            raise TargetMismatch(f"{name} needs one label per row; a multilabel dataset needs binary_crossentropy")
        if n_outputs != k:
            raise TargetMismatch(f"the dataset has {k} labels and the model {n_outputs} output unit(s)")
    elif task == "regression":
        if name in CROSSENTROPY:
            raise TargetMismatch(
                f"{name} is a classification loss; a regression dataset needs mean_squared_error, "
                "mean_absolute_error, mean_squared_logarithmic_error or huber"
            )
        if n_outputs != k:
            raise TargetMismatch(f"the dataset has {k} target(s) and the model {n_outputs} output unit(s)")
    else:  # pragma: no cover - tasks are validated on upload
        raise TargetMismatch(f"unknown task {task!r}")


def targets_for_loss(
    y: np.ndarray,
    task: str,
    loss: Any,
    n_outputs: int | None = None,
    n_classes: int | None = None,
    *,
    classes: Sequence[Any] | None = None,
) -> np.ndarray:
    """Return ``y`` in the form the engine's ``loss`` expects for a model with ``n_outputs`` units.

    ``n_classes`` (or ``classes``, the dataset's class list) gives the number of classes of a classification
    dataset; without either it is ``y.max() + 1``. Without ``n_outputs`` the usual output layer is assumed
    (one unit per class; one sigmoid unit for binary_crossentropy on two classes) and not checked.
    """
    name = loss_name(loss)
    if task == "classification":
        idx = np.asarray(y).astype(np.int64, copy=False).reshape(-1)
        if n_classes is None:
            n_classes = len(classes) if classes is not None else int(idx.max()) + 1
        k = int(n_classes)
        if n_outputs is None:
            n_outputs = 1 if (name == "binary_crossentropy" and k == 2) else k
        check_targets(task, k, name, n_outputs)
        if name == "sparse_categorical_crossentropy":
            return idx
        if n_outputs == 1:  # two classes, one sigmoid unit: P(classes[1])
            return idx.astype(np.float32).reshape(-1, 1)
        onehot = np.zeros((idx.shape[0], k), dtype=np.float32)
        onehot[np.arange(idx.shape[0]), idx] = 1.0
        return onehot
    y2 = np.asarray(y, dtype=np.float32)
    if y2.ndim == 1:
        y2 = y2.reshape(-1, 1)
    check_targets(task, y2.shape[1], name, y2.shape[1] if n_outputs is None else n_outputs)
    return y2


def target_shape(task: str, n_samples: int, k: int, loss: Any, n_outputs: int) -> tuple[int, ...]:
    """The shape :func:`targets_for_loss` returns, from metadata only (``k``: classes or targets)."""
    name = loss_name(loss)
    if task == "classification":
        if name == "sparse_categorical_crossentropy":
            return (n_samples,)
        return (n_samples, 1) if n_outputs == 1 else (n_samples, k)
    return (n_samples, k)


def pack_arrays(X: np.ndarray, y: np.ndarray) -> bytes:
    """The stored form of a dataset: an npz of plain numeric arrays (no object arrays, no pickle)."""
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    return buf.getvalue()


def unpack_arrays(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return npz["X"], npz["y"]


def training_arrays(dataset: Any, model_input_shape: Sequence[int], loss: Any, n_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """X shaped for the model and y shaped for the loss, from a ``service.db.models.Dataset`` row."""
    X, y = unpack_arrays(dataset.data)
    shape = tuple(int(d) for d in model_input_shape)
    if X.shape[1:] != shape:
        X = X.reshape((X.shape[0], *shape))
    n_classes = len(dataset.classes) if dataset.task == "classification" else None
    return np.ascontiguousarray(X, dtype=np.float32), targets_for_loss(y, dataset.task, loss, n_outputs, n_classes)
