"""The shapes the API answers with, as ``TypedDict``s (the responses stay plain JSON dicts, typed)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar, Union

T = TypeVar("T")

Task = Literal["classification", "multilabel", "regression"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Label = Union[int, float, str]
FINAL_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
SweepStatus = Literal["running", "succeeded", "failed", "cancelled"]


class Page(TypedDict, Generic[T]):
    items: list[T]
    total: int


class Dataset(TypedDict):
    id: str
    name: str
    task: Task
    n_samples: int
    n_features: int
    input_shape: list[int]
    feature_names: list[str]
    target_names: list[str]
    classes: list[Label] | None
    size_bytes: int
    created_at: str
    #: one dataset (get_dataset, the upload's answer): feature statistics and per-class counts; not in lists
    profile: NotRequired[dict[str, Any] | None]


class LayerSummary(TypedDict):
    name: str
    type: str
    output_shape: list[int | None]
    params: int
    trainable_params: int


class ModelSummary(TypedDict):
    layers: list[LayerSummary]
    total_params: int
    trainable_params: int
    non_trainable_params: int


class Model(TypedDict):
    id: str
    name: str
    input_shape: list[int]
    layers: list[dict[str, Any]]
    summary: ModelSummary
    latest_version: int | None
    serving_version: int | None
    created_at: str


class Version(TypedDict):
    version: int
    job_id: str | None
    metrics: dict[str, Any]
    created_at: str


class Progress(TypedDict):
    epoch: int
    epochs: int
    fraction: float


class JobError(TypedDict):
    code: str
    message: str


class HistoryRow(TypedDict, total=False):
    """One epoch: ``loss``, ``val_loss``, each metric and ``val_<metric>``, ``learning_rate``,
    ``grad_norms`` (by layer name), with ``diagnostics`` ``weight_changes`` (by layer name: the relative change of
    its weights over the epoch) and ``activations`` (by hidden layer name: ``{"inactive", "dead_units"}``), and
    ``seconds``."""

    epoch: int
    loss: float
    val_loss: float
    learning_rate: float
    grad_norms: dict[str, float]
    weight_changes: dict[str, float | None]
    activations: dict[str, dict[str, float]]
    seconds: float


class Job(TypedDict):
    id: str
    model_id: str
    dataset_id: str | None
    status: JobStatus
    config: dict[str, Any]
    progress: Progress
    history: list[HistoryRow]
    result_version: int | None
    error: JobError | None
    attempts: int
    cancel_requested: NotRequired[bool]
    sweep_id: NotRequired[str | None]
    #: create_job's answer only: what the config will do badly on the dataset (the job is queued all the same)
    warnings: NotRequired[list[str]]
    created_at: str
    started_at: str | None
    finished_at: str | None


class SweepTrial(TypedDict):
    job_id: str
    params: dict[str, Any]
    status: JobStatus
    epochs_done: int
    objective: float | None
    result_version: int | None


class CrossValidationPoint(TypedDict):
    params: dict[str, Any]
    job_ids: list[str]
    folds_succeeded: int
    objective_mean: float | None
    objective_std: float | None


class CrossValidation(TypedDict):
    """A sweep with ``folds``: each grid point's objective over its folds, and the point with the best mean."""

    folds: int
    points: list[CrossValidationPoint]
    best: CrossValidationPoint | None


class Sweep(TypedDict):
    """A hyperparameter sweep: ``status`` is ``running`` while a trial is queued or running, then
    ``succeeded``, ``cancelled`` or ``failed``; ``best`` is the succeeded trial with the best objective."""

    id: str
    name: str
    model_id: str
    dataset_id: str | None
    grid: dict[str, list[Any]]
    config: dict[str, Any]
    objective: str
    mode: Literal["min", "max"]
    status: SweepStatus
    created_at: str
    trials: list[SweepTrial]
    best: SweepTrial | None
    cross_validation: NotRequired[CrossValidation | None]
    #: create_sweep's answer only: what its trials' configs will do badly on the dataset, each warning once
    warnings: NotRequired[list[str]]


class Checkpoint(TypedDict):
    epoch: int
    metrics: dict[str, Any]
    is_best: NotRequired[bool]
    size_bytes: int
    created_at: str


class Prediction(TypedDict):
    model_id: str
    version: int
    task: Task
    predictions: list[Any]
    probabilities: NotRequired[list[list[float]] | None]
    classes: NotRequired[list[Label] | None]


class LabelScores(TypedDict):
    label: Label
    precision: float
    recall: float
    f1: float
    support: int


class Confusion(TypedDict):
    classes: list[Label]
    matrix: list[list[int]] | None
    matrices: list[list[list[int]]] | None
    per_class: list[LabelScores]


class Evaluation(TypedDict):
    model_id: str
    version: int
    dataset_id: str
    rows: Literal["all", "validation", "training"]
    n_samples: int
    loss: str
    metrics: dict[str, float | None]
    confusion: Confusion | None


class Explanation(TypedDict):
    """Integrated gradients: per row, each feature's share of ``outputs - baseline_outputs``."""

    model_id: str
    version: int
    task: Task
    feature_names: list[str]
    baseline: list[float]
    targets: list[Label]
    outputs: list[float]
    baseline_outputs: list[float]
    attributions: list[list[float]]
    steps: int


class StatusData(TypedDict):
    id: str
    status: JobStatus
    attempts: int
    progress: Progress
    error: JobError | None
    result_version: int | None


@dataclass(frozen=True)
class Event:
    """One server-sent event of a job's stream: ``type`` is ``"status"`` (``data``: :class:`StatusData`) or
    ``"progress"`` (``data``: a :class:`HistoryRow`)."""

    type: str
    id: str | None
    data: Any

    @property
    def is_final(self) -> bool:
        return self.type == "status" and isinstance(self.data, dict) and self.data.get("status") in FINAL_STATUSES

    @classmethod
    def from_fields(cls, event: str, id_: str | None, data: str) -> Event:
        try:
            payload: Any = json.loads(data) if data else None
        except ValueError:
            payload = data
        return cls(event or "message", id_, payload)
