"""Hyperparameter sweeps on the wire."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import UTCDateTime
from service.schemas.jobs import JobStatus

SweepStatus = Literal["running", "succeeded", "failed", "cancelled"]
#: Values one grid key may take.
MAX_VALUES_PER_KEY = 100

GridValues = Annotated[list[Any], Field(min_length=1, max_length=MAX_VALUES_PER_KEY)]


class SweepCreate(BaseModel):
    """A grid of job-config values to try: one training job per combination."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    dataset_id: str
    config: dict[str, Any] = Field(
        default_factory=dict,
        examples=[{"loss": "sparse_categorical_crossentropy", "optimizer": "adam", "epochs": 20,
                   "validation_split": 0.2, "metrics": ["accuracy"]}],
        description="The base job config: any field of POST /v1/jobs but model_id and dataset_id. With no seed "
        "(here or in the grid) the sweep draws one, the same for every trial.")
    grid: dict[str, GridValues] = Field(
        min_length=1,
        examples=[{"optimizer.learning_rate": [0.001, 0.01, 0.1], "batch_size": [16, 64]}],
        description="Dotted job-config paths and the values to try at each. The trials are the cartesian product "
        "in the keys' order, the last key varying fastest; each is the base config with its values set at their "
        "paths (objects are created on the way; a name such as \"optimizer\": \"adam\" becomes "
        "{\"type\": \"adam\"}).")
    objective: str | None = Field(
        default=None, max_length=64, examples=["val_accuracy"],
        description="What ranks the trials: loss, or one of the jobs' metrics, with or without val_ (val_ needs "
        "validation data). Default: val_loss when every trial has validation data, else loss.")
    mode: Literal["auto", "min", "max"] = Field(
        default="auto", description="Whether a lower or a higher objective is better; auto: higher for accuracy "
        "and r2, lower for the rest.")
    name: str | None = Field(default=None, max_length=200, description="Default: the grid's keys.")
    folds: int | None = Field(
        default=None, ge=2, le=MAX_VALUES_PER_KEY,
        description="k-fold cross-validation: every grid point is trained k times, each holding out one fold "
        "(the grid gains the key validation_fold.fold: 1..k; the config's validation_rows deals the rows to the "
        "folds: last, random or stratified), and the points are ranked by the objective's mean over their folds. "
        "The config may then set no validation_split, validation_fold or validation_dataset_id.")


class TrialOut(BaseModel):
    job_id: str
    params: dict[str, Any] = Field(description="The grid's values this trial trained with, by path.")
    status: JobStatus
    epochs_done: int
    objective: float | None = Field(
        description="The objective's value for the version the job made (with early stopping that restored "
        "the best weights: in the epoch those weights come from); null until the job succeeds.")
    result_version: int | None


class CrossValidationPoint(BaseModel):
    params: dict[str, Any] = Field(description="The grid's values of this point, without the fold.")
    job_ids: list[str] = Field(description="Its trials, fold 1 first.")
    folds_succeeded: int
    objective_mean: float | None = Field(description="The mean of its folds' objectives, once every fold has one.")
    objective_std: float | None = Field(description="Their standard deviation (ddof 0, as numpy's std).")


class CrossValidation(BaseModel):
    folds: int
    points: list[CrossValidationPoint]
    best: CrossValidationPoint | None = Field(
        description="The point with the best mean over complete folds (ties: the earlier point). To serve its "
        "values, train them on every row: each fold's version saw only (k-1)/k of the rows.")


class SweepOut(BaseModel):
    id: str
    name: str
    model_id: str
    dataset_id: str | None
    grid: dict[str, list[Any]]
    config: dict[str, Any]
    objective: str
    mode: Literal["min", "max"]
    status: SweepStatus = Field(
        description="running while a trial is queued or running; then succeeded when one trial did, else "
        "cancelled when one was cancelled, else failed.")
    created_at: UTCDateTime
    trials: list[TrialOut]
    best: TrialOut | None = Field(description="The succeeded trial with the best objective (ties: the earlier "
                                              "trial); null while none has one, and in a cross-validation sweep.")
    cross_validation: CrossValidation | None = Field(
        default=None, description="A sweep with folds: each grid point's objective over its folds, and the best.")
    warnings: list[str] = Field(
        default_factory=list,
        description="In POST /v1/sweeps's answer only (not stored): what POST /v1/jobs would warn about its "
        "trials (each warning once), e.g. a validation_split whose last rows hold only some classes.")
