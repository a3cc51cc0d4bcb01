"""Predictions on the wire."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.datasets import Label, Task


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[list[Any] | dict[str, Any]] = Field(
        description="Rows as lists of numbers (the dataset's feature order) or objects keyed by feature name.",
        examples=[[[0.0, 1.0, 2.5]]],
    )
    version: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                description="Defaults to the model's serving version, else the latest.")


class PredictOut(BaseModel):
    model_id: str
    version: int
    task: Task
    predictions: list[Any] = Field(
        description="Classification: one label per row. Multilabel: a list of labels per row. Regression: one "
        "value per row, or a list of values when there are several targets."
    )
    probabilities: list[list[float]] | None = None
    classes: list[Label] | None = None


class EvaluateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=64, description="A stored dataset, typically rows held out of training.")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                description="Defaults to the model's serving version, else the latest.")
    loss: str | dict[str, Any] | None = Field(
        default=None, description="Defaults to the loss of the job that trained the version.")
    metrics: list[str] | None = Field(
        default=None, max_length=16, description="Defaults to the metrics of the job that trained the version.")


class LabelScores(BaseModel):
    label: Label
    precision: float
    recall: float
    f1: float
    support: int = Field(description="Rows whose true targets hold this label.")


class Confusion(BaseModel):
    classes: list[Label]
    matrix: list[list[int]] | None = Field(
        default=None, description="Classification: matrix[i][j] counts rows of classes[i] predicted as classes[j].")
    matrices: list[list[list[int]]] | None = Field(
        default=None, description="Multilabel: per label [[tn, fp], [fn, tp]].")
    per_class: list[LabelScores]


class EvaluateOut(BaseModel):
    model_id: str
    version: int
    dataset_id: str
    n_samples: int
    loss: str = Field(description="The loss function used.")
    metrics: dict[str, float | None] = Field(
        description='{"loss": value, "<metric>": value, ...} over every row of the dataset, in inference mode; '
        "null where a value is not finite (r2 on constant targets, say).")
    confusion: Confusion | None = Field(
        default=None, description="Classification and multilabel: how the predictions (decided as predict decides "
        "them) meet the true labels, with per-label precision, recall and f1. Regression: null.")
