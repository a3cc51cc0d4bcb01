"""Evaluate a trained version on a stored dataset: its loss and metrics on rows it was not trained on.

The dataset is read in the version's terms (service.services.dataset_matching: labels by value, same-named
columns in the version's order). The loss and metrics default to those of the job that trained the version.
The forward pass runs on a fresh copy of the version (the cached copy's work buffers serve concurrent
predictions), in inference mode, in chunks.
"""
from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Dataset
from service.errors import Invalid
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
    X = matching.features(version, dataset, X)
    y = matching.targets(version, dataset, y)
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
