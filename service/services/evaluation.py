"""Evaluate a trained version on a stored dataset: its loss and metrics on rows it was not trained on.

The dataset is read in the version's terms (service.services.dataset_matching: labels by value, same-named
columns in the version's order). The loss and metrics default to those of the job that trained the version.
The forward pass runs on a fresh copy of the version (the cached copy's work buffers serve concurrent
predictions), in inference mode, in chunks.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Dataset
from service.errors import Invalid
from service.serving import class_probabilities, forward, labels_on
from service.services import dataset_matching as matching
from service.services import datasets as datasets_service
from service.services import engine_port
from service.services import models as models_service
from service.training_data import TargetMismatch, loss_name, n_outputs_of, targets_for_loss, unpack_arrays


def evaluate(session: Session, owner_id: str, model_id: str, body: Any) -> dict[str, Any]:
    model, version = models_service.get_version(session, owner_id, model_id, body.version, with_data=True)
    dataset = datasets_service.get(session, owner_id, body.dataset_id)
    net = engine_port.from_bytes(version.data)
    trained_with = net.fit_config or {}
    asked = {"loss": body.loss if body.loss is not None else trained_with.get("loss"),
             "metrics": body.metrics if body.metrics is not None else trained_with.get("metrics", [])}
    config = engine_port.normalize_fit_config(asked)
    loss, metrics = config["loss"], list(config.get("metrics") or [])

    shape = tuple(int(d) for d in model.input_shape)
    matching.check(version, dataset, math.prod(shape), dataset.n_features, ["body", "dataset_id"],
                   "the model version")
    X, y = unpack_arrays(session.scalar(select(Dataset.data).where(Dataset.id == dataset.id)))
    X = matching.features(version, dataset, X).reshape((X.shape[0], *shape))
    truth = matching.targets(version, dataset, y)
    n_classes = len(version.classes or []) if version.task == "classification" else None
    try:
        y = targets_for_loss(truth, version.task, loss, n_outputs_of(model.summary), n_classes)
    except TargetMismatch as exc:
        raise Invalid(f"loss {loss_name(loss)} cannot evaluate this model on this dataset: {exc}",
                      loc=["body", "loss"]) from None
    results = net.evaluate(X, y, loss=loss, metrics=metrics)
    return {
        "model_id": model.id,
        "version": version.version,
        "dataset_id": dataset.id,
        "n_samples": int(X.shape[0]),
        "loss": loss_name(loss),
        "metrics": {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in results.items()},
        "confusion": confusion(version.task, list(version.classes or []), forward(net, X), truth),
    }


# ---------------------------------------------------------------------------------------------- confusion
def _scores(labels: list[Any], tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> list[dict[str, Any]]:
    """Per label: precision tp/predicted, recall tp/support, their harmonic mean f1; 0 where a denominator is 0
    (scikit-learn's zero_division=0)."""
    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros(len(a)), where=b > 0)

    precision, recall = ratio(tp, predicted), ratio(tp, support)
    f1 = ratio(2 * precision * recall, precision + recall)
    return [{"label": label, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for label, p, r, f, n in zip(labels, precision, recall, f1, support)]


def confusion(task: str, classes: list[Any], out: np.ndarray, truth: np.ndarray) -> dict[str, Any] | None:
    """How the version's predictions (decided as ``predict`` decides them) meet the true targets.

    classification: ``matrix[i][j]`` rows of class i predicted as j; multilabel: per label ``[[tn, fp], [fn,
    tp]]``; both with per-label precision, recall, f1 and support. Regression: None."""
    if task == "classification":
        k = len(classes)
        predicted = class_probabilities(out, k).argmax(axis=1)
        matrix = np.zeros((k, k), dtype=np.int64)
        np.add.at(matrix, (truth, predicted), 1)
        return {"classes": classes, "matrix": matrix.tolist(),
                "per_class": _scores(classes, np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1))}
    if task == "multilabel":
        _, on = labels_on(out)
        true = truth.astype(bool)
        tp, fp = (on & true).sum(axis=0), (on & ~true).sum(axis=0)
        fn, tn = (~on & true).sum(axis=0), (~on & ~true).sum(axis=0)
        matrices = [[[int(a), int(b)], [int(c), int(d)]] for a, b, c, d in zip(tn, fp, fn, tp)]
        return {"classes": classes, "matrices": matrices, "per_class": _scores(classes, tp, tp + fp, tp + fn)}
    return None
