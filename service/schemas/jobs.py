"""Training jobs on the wire."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import ORMModel, UTCDateTime

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Loss = Literal[
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "mean_squared_error",
    "mean_absolute_error",
    "mean_squared_logarithmic_error",
    "huber",
]


class JobCreate(BaseModel):
    """The model and dataset to train, and the fit configuration (engine defaults fill what is left out)."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    dataset_id: str
    loss: Loss | str | dict[str, Any] | None = None
    optimizer: str | dict[str, Any] | None = Field(
        default=None, examples=[{"type": "adam", "learning_rate": 0.001, "clipnorm": 1.0}]
    )
    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | Literal["full"] | None = None
    shuffle: bool | None = None
    validation_split: float | None = Field(default=None, ge=0, lt=1)
    validation_rows: Literal["last", "random", "stratified"] | None = Field(
        default=None,
        description='Which rows validation_split holds out: "last" (the default, as Keras: the last rows, '
        'before any shuffling; on a dataset sorted by class that is one class), "random" (as many rows, drawn '
        'from the seed) or "stratified" (as many rows, each class giving its share; classification only). '
        "Training rows keep the dataset's order either way.")
    validation_fold: dict[str, Any] | None = Field(
        default=None, examples=[{"fold": 1, "folds": 5}],
        description="k-fold cross-validation: hold out fold `fold` of `folds` (1-based) instead of a "
        "validation_split; validation_rows deals the rows to the folds (last: contiguous blocks, as scikit-learn's "
        "KFold; random; stratified). The folds follow the seed, so k jobs with one seed validate on every row once. "
        "A sweep's `folds` runs them for every grid point and averages the objective.")
    validation_dataset_id: str | None = Field(
        default=None, max_length=64,
        description="Validate on a stored dataset (rows held out of training) instead of a validation_split: "
        "its labels are read as the training dataset's, by value, and same-named columns in its order.")
    seed: int | None = None
    metrics: list[str] | None = None
    regularization: dict[str, Any] | None = None
    early_stopping: dict[str, Any] | None = None
    reduce_lr_on_plateau: dict[str, Any] | None = None
    augmentation: dict[str, Any] | None = None
    standardize: bool | None = None
    class_weight: Literal["balanced"] | dict[str, Any] | None = Field(
        default=None, examples=["balanced", {"setosa": 1.0, "virginica": 4.0}],
        description="Keras's class_weight: a weight per class, keyed by the dataset's own labels (a class left "
        'out weighs 1.0), or "balanced" (n / (classes · count) over the training rows). Each training row\'s '
        "loss is multiplied by its class's weight and the batch loss divided by the batch size (Keras's "
        "sum_over_batch_size, not a weighted mean); training metrics are weighted, validation is not. "
        "Classification datasets with one label per row, crossentropy losses.")
    diagnostics: bool | None = Field(
        default=None,
        description="Measure, every epoch, where the network stops learning. Each history row then has "
        "`weight_changes`: {layer: ||w_end - w_start|| / ||w_start|| over the epoch} (vanishing gradients leave "
        "the lower layers' weights nearly unchanged), and `activations`: {layer: {inactive, dead_units}} for each "
        "hidden relu, sigmoid or tanh layer: `inactive` the share of the epoch's (training row, unit) pairs where "
        "the unit's output was 0 (relu) or within 0.01 of a bound of its range (sigmoid, tanh), `dead_units` the "
        "share of units inactive on every training row. Off by default.")
    checkpoint_every: int | None = Field(default=None, ge=0, description="Checkpoint every N epochs (0: never).")


class JobContinue(BaseModel):
    """Carry a finished job's fit on from its latest checkpoint."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(
        default=None, ge=1, description="Epochs of the whole fit, past the checkpoint's (default: the job's own, "
        "which finishes a cancelled job).")


class Progress(BaseModel):
    epoch: int
    epochs: int
    fraction: float


class JobError(BaseModel):
    code: str
    message: str


class JobOut(ORMModel):
    id: str
    model_id: str
    dataset_id: str | None
    status: JobStatus
    config: dict[str, Any]
    progress: Progress
    history: list[dict[str, Any]]
    result_version: int | None
    error: JobError | None
    attempts: int
    cancel_requested: bool
    sweep_id: str | None = Field(default=None, description="The sweep this job is a trial of, if any.")
    warnings: list[str] = Field(
        default_factory=list,
        description="In POST /v1/jobs's answer only (not stored): what the config will do badly on this dataset, "
        "e.g. a validation_split whose last rows hold only some classes. The job is queued all the same.")
    created_at: UTCDateTime
    started_at: UTCDateTime | None
    finished_at: UTCDateTime | None

    @classmethod
    def from_row(cls, row: Any, history: list[dict[str, Any]]) -> JobOut:
        """``row``: the job; ``history``: the rows to show (services.job_history reads them)."""
        epochs = max(int(row.epochs or 0), 0)
        epoch = int(row.epoch or 0)
        return cls(
            id=row.id,
            model_id=row.model_id,
            dataset_id=row.dataset_id,
            status=row.status,
            config=row.config,
            progress=Progress(epoch=epoch, epochs=epochs, fraction=min(epoch / epochs, 1.0) if epochs else 0.0),
            history=history,
            result_version=row.result_version,
            error=row.error,
            attempts=row.attempts,
            cancel_requested=bool(row.cancel_requested),
            sweep_id=row.sweep_id,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


class CheckpointOut(ORMModel):
    epoch: int
    metrics: dict[str, Any]
    is_best: bool
    size_bytes: int
    created_at: UTCDateTime
