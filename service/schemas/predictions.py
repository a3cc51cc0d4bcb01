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
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="Defaults to the latest version.")


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
