"""Predictions on the wire."""
from __future__ import annotations

from typing import Any, Literal

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

    dataset_id: str | None = Field(
        default=None, max_length=64,
        description="A stored dataset, typically rows held out of training. May be left out with rows "
        "validation or training: the version's own training dataset.")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                description="Defaults to the model's serving version, else the latest.")
    rows: Literal["all", "validation", "training"] | None = Field(
        default=None,
        description='"all" (the default): every row of dataset_id. "validation": the rows the job that trained the '
        "version validated on (the rows its validation_split held out, as its validation_rows chose them, or its "
        'validation dataset); "training": the rows it trained on.')
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
    rows: Literal["all", "validation", "training"] = Field(description="Which of the dataset's rows were scored.")
    n_samples: int
    loss: str = Field(description="The loss function used.")
    metrics: dict[str, float | None] = Field(
        description='{"loss": value, "<metric>": value, ...} over every row of the dataset, in inference mode; '
        "null where a value is not finite (r2 on constant targets, say).")
    confusion: Confusion | None = Field(
        default=None, description="Classification and multilabel: how the predictions (decided as predict decides "
        "them) meet the true labels, with per-label precision, recall and f1. Regression: null.")


class ExplainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[list[Any] | dict[str, Any]] = Field(
        description="Rows to explain, as predict takes them: lists in the dataset's feature order or objects keyed "
        "by feature name.", examples=[[[6.7, 3.0, 5.2, 2.3]]])
    version: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                description="Defaults to the model's serving version, else the latest.")
    target: Label | None = Field(
        default=None,
        description="The output to explain. Classification: a class (default: each row's predicted class); "
        "multilabel: a label (default: each row's most probable one); regression: a target column (default: the "
        "only one).")
    baseline: list[Any] | dict[str, Any] | None = Field(
        default=None,
        description="The row the attributions start from, as one input row (default: the training rows' mean "
        "when the model standardizes, else zeros).")
    steps: int = Field(default=64, ge=1, le=1024,
                       description="Points of the integral's midpoint rule (more: attributions closer to "
                       "adding up to output - baseline_output).")


class ExplainOut(BaseModel):
    model_id: str
    version: int
    task: Task
    feature_names: list[str]
    baseline: list[float] = Field(description="The baseline row, in raw units and feature order.")
    targets: list[Label] = Field(description="Per row, the output explained (a class, a label or a target column).")
    outputs: list[float] = Field(description="Per row, that output: a probability, or the regression value.")
    baseline_outputs: list[float] = Field(description="Per row, the same output at the baseline.")
    attributions: list[list[float]] = Field(
        description="Per row, each feature's integrated gradient, in feature_names order: how much of output - "
        "baseline_output it carries (they add up to it, to the integral's error).")
    steps: int
