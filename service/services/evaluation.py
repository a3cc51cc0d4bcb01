"""Evaluate a trained version on a stored dataset: its loss and metrics on rows it was not trained on, or on
the rows its own job validated (or trained) on, split exactly as that job's fit split them.

The dataset is read in the version's terms (service.services.dataset_matching: labels by value, same-named
columns in the version's order). The loss and metrics default to those of the job that trained the version.
The forward pass runs on a fresh copy of the version (the layers' work arrays of the cached copy may be
running an explanation), in inference mode, in chunks.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Dataset, Job
from service.errors import Invalid
from service.serving import class_probabilities, forward, labels_on
from service.services import dataset_matching as matching
from service.services import datasets as datasets_service
from service.services import engine_port
from service.services import models as models_service
from service.services.predictions import load_version
from service.training_data import TargetMismatch, loss_name, n_outputs_of, targets_for_loss, unpack_arrays


def evaluate(session: Session, owner_id: str, model_id: str, body: Any) -> dict[str, Any]:
    model, version = models_service.get_version(session, owner_id, model_id, body.version)
    rows = body.rows or "all"
    dataset_id, split_by = _rows_to_score(session, owner_id, version, rows, body.dataset_id)
    dataset = datasets_service.get(session, owner_id, dataset_id)
    net, _ = load_version(session, model, version)
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
    n_outputs = n_outputs_of(model.summary)
    if split_by is not None:
        # the rows as the job's fit split them: its targets in its own loss's form, its seed and its split
        job_targets = targets_for_loss(truth, version.task, split_by["loss"], n_outputs, n_classes)
        train, held = engine_port.split_rows(split_by, job_targets)
        picked = held if rows == "validation" else train
        X, truth = X[picked], truth[picked]
    try:
        y = targets_for_loss(truth, version.task, loss, n_outputs, n_classes)
    except TargetMismatch as exc:
        raise Invalid(f"loss {loss_name(loss)} cannot evaluate this model on this dataset: {exc}",
                      loc=["body", "loss"]) from None
    results = net.evaluate(X, y, loss=loss, metrics=metrics)
    return {
        "model_id": model.id,
        "version": version.version,
        "dataset_id": dataset.id,
        "rows": rows,
        "n_samples": int(X.shape[0]),
        "loss": loss_name(loss),
        "metrics": {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in results.items()},
        "confusion": confusion(version.task, list(version.classes or []), forward(net, X), truth),
    }


def _rows_to_score(session: Session, owner_id: str, version: Any, rows: str,
                   dataset_id: str | None) -> tuple[str, dict[str, Any] | None]:
    """The dataset to score and, for rows "validation" or "training" of the version's own training dataset, the
    config of the job that split it (None: every row of the dataset). Invalid names the field that cannot be."""
    if rows == "all":
        if dataset_id is None:
            raise Invalid('give a dataset_id, or rows "validation" or "training" to score the version on the '
                          "rows its job held out or trained on", loc=["body", "dataset_id"])
        return dataset_id, None
    job = session.get(Job, version.job_id) if version.job_id else None
    if job is None or job.owner_id != owner_id or version.dataset_id is None:
        raise Invalid(f"the job that trained version {version.version} is gone, and with it which rows it held out",
                      loc=["body", "rows"])
    config = dict(job.config)
    if rows == "validation" and config.get("validation_dataset_id"):
        own = config["validation_dataset_id"]         # the job validated on a dataset of its own: all of it
        if dataset_id is not None and dataset_id != own:
            raise Invalid(f"version {version.version} validated on dataset {own}; rows validation scores that "
                          "dataset (leave dataset_id out)", loc=["body", "dataset_id"])
        return own, None
    if dataset_id is not None and dataset_id != version.dataset_id:
        raise Invalid(f"rows {rows} are rows of dataset {version.dataset_id}, the one version {version.version} "
                      "was trained on (leave dataset_id out)", loc=["body", "dataset_id"])
    if rows == "validation" and not (float(config.get("validation_split") or 0.0) > 0
                                     or config.get("validation_fold")):
        raise Invalid(f"the job that trained version {version.version} held out no rows (it had no "
                      "validation_split or validation_fold)", loc=["body", "rows"])
    return version.dataset_id, config


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
