"""Datasets on the wire."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import ORMModel, UTCDateTime

Task = Literal["classification", "multilabel", "regression"]
Label = int | float | str


class DatasetJSONIn(BaseModel):
    """A dataset sent as JSON: one feature row per sample, one target (or a list of targets) per sample."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")
    features: list[list[Any]] = Field(description="Rows of numbers, all of the same length.")
    targets: list[Any] = Field(description="One label or value per row, or a list of values per row.")
    task: Task | None = None
    input_shape: list[int] | None = Field(default=None, description="e.g. [28, 28]; its product is the row length.")
    feature_names: list[str] | None = None
    target_names: list[str] | None = None


class DatasetOut(ORMModel):
    id: str
    name: str
    task: Task
    n_samples: int
    n_features: int
    input_shape: list[int]
    feature_names: list[str]
    target_names: list[str]
    classes: list[Label] | None = Field(
        description="Classification: the label values in the order of the output units. Multilabel: the label "
        "names. Regression: null."
    )
    size_bytes: int
    created_at: UTCDateTime


class DatasetDetail(DatasetOut):
    """One dataset as GET /v1/datasets/{id} and the upload answer it; the list leaves the profile out."""

    profile: dict[str, Any] | None = Field(
        default=None,
        description='Computed at upload (null for datasets uploaded before it existed): "features", per feature '
        'its min, max, mean and std (ddof 0; null past 4,096 features), and "targets": per class its count and '
        "its first and last row (classification), per label its count (multilabel), or per target its "
        "statistics (regression).")
