"""Evaluate a trained version on a stored dataset: its loss and metrics on rows it was not trained on.

The dataset is matched to the version, not the other way round: class labels are mapped to the version's
output units by value (a test set may hold only some of the classes, in any order), multilabel and regression
target columns and the feature columns are put in the version's order by name when both sides name the same
columns differently ordered, and otherwise taken by position. The loss and metrics default to those of the job
that trained the version. The forward pass runs on a fresh copy of the version (the cached copy's work buffers
serve concurrent predictions), in inference mode, in chunks.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Dataset, ModelVersion
from service.errors import Invalid
from service.services import datasets as datasets_service
from service.services import engine_port
from service.services import models as models_service
from service.training_data import TargetMismatch, loss_name, n_outputs_of, targets_for_loss, unpack_arrays


def _by_name_or_position(have: list[str], want: list[str]) -> list[int] | None:
    """Column indices that put ``have`` in ``want``'s order when both name the same columns in another order;
    None to keep the columns as they are."""
    if have != want and sorted(have) == sorted(want) and len(set(want)) == len(want):
        return [have.index(name) for name in want]
    return None


def _class_indices(dataset: Dataset, version: ModelVersion, y: np.ndarray) -> np.ndarray:
    """The dataset's class indices (into its own classes) as indices into the version's classes."""
    trained = list(version.classes or [])
    unknown = [c for c in dataset.classes or [] if c not in trained]
    if unknown:
        raise Invalid(f"the dataset has labels the model was not trained on: {', '.join(map(repr, unknown[:5]))} "
                      f"(its classes are {trained[:20]!r})", loc=["body", "dataset_id"])
    mapping = np.array([trained.index(c) for c in dataset.classes or []], dtype=np.int64)
    return mapping[y]


def _targets(dataset: Dataset, version: ModelVersion, y: np.ndarray) -> np.ndarray:
    """The dataset's stored targets in the version's terms (see service.training_data for the stored forms)."""
    if version.task != dataset.task:
        raise Invalid(f"the model version was trained for {version.task} and the dataset is {dataset.task}; "
                      f"upload the dataset with task={version.task}", loc=["body", "dataset_id"])
    if version.task == "classification":
        return _class_indices(dataset, version, y)
    want = list(version.classes if version.task == "multilabel" else version.target_names)
    have = list(dataset.classes if dataset.task == "multilabel" else dataset.target_names)
    if len(have) != len(want):
        raise Invalid(f"the dataset has {len(have)} target column(s) ({', '.join(have[:10])}) and the model "
                      f"version {len(want)} ({', '.join(want[:10])})", loc=["body", "dataset_id"])
    if version.task == "multilabel" and sorted(have) != sorted(want):
        raise Invalid(f"the dataset's labels {have[:10]} are not the model's {want[:10]}", loc=["body", "dataset_id"])
    order = _by_name_or_position(have, want)
    return y if order is None else y[:, order]


def _features(dataset: Dataset, version: ModelVersion, X: np.ndarray, width: int) -> np.ndarray:
    if dataset.n_features != width:
        raise Invalid(f"the model takes {width} values per row and the dataset's rows have {dataset.n_features}",
                      loc=["body", "dataset_id"])
    X = X.reshape(X.shape[0], width)
    order = _by_name_or_position(list(dataset.feature_names), list(version.feature_names))
    return X if order is None else X[:, order]


def evaluate(session: Session, owner_id: str, model_id: str, body: Any) -> dict[str, Any]:
    model, version = models_service.get_version(session, owner_id, model_id, body.version, with_data=True)
    dataset = datasets_service.get(session, owner_id, body.dataset_id)
    net = engine_port.from_bytes(version.data)
    trained_with = net.fit_config or {}
    asked = {"loss": body.loss if body.loss is not None else trained_with.get("loss"),
             "metrics": body.metrics if body.metrics is not None else trained_with.get("metrics", [])}
    config = engine_port.normalize_fit_config(asked)
    loss, metrics = config["loss"], list(config.get("metrics") or [])

    data = session.scalar(select(Dataset.data).where(Dataset.id == dataset.id))
    X, y = unpack_arrays(data)
    shape = tuple(int(d) for d in model.input_shape)
    X = _features(dataset, version, X, math.prod(shape))
    y = _targets(dataset, version, y)
    n_classes = len(version.classes or []) if version.task == "classification" else None
    try:
        y = targets_for_loss(y, version.task, loss, n_outputs_of(model.summary), n_classes)
    except TargetMismatch as exc:
        raise Invalid(f"loss {loss_name(loss)} cannot evaluate this model on this dataset: {exc}",
                      loc=["body", "loss"]) from None
    results = net.evaluate(X.reshape((X.shape[0], *shape)), y, loss=loss, metrics=metrics)
    return {
        "model_id": model.id,
        "version": version.version,
        "dataset_id": dataset.id,
        "n_samples": int(X.shape[0]),
        "loss": loss_name(loss),
        "metrics": {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in results.items()},
    }
