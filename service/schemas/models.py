"""Models and versions on the wire."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from service.schemas.common import ORMModel, UTCDateTime

_INITIALIZER = {
    "anyOf": [
        {"type": "string"},
        {"type": "object", "properties": {"type": {"type": "string"}, "seed": {"type": ["integer", "null"]}},
         "required": ["type"], "additionalProperties": True},
    ]
}
_ACTIVATION = {
    "type": "string",
    "enum": ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "silu", "swish",
             "softplus"],
}
# The layer grammar, documented in OpenAPI. Validation itself is the engine's (engine.SpecError), so that the
# API and the engine can never disagree about what a valid layer is.
LAYER_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"title": "Dense", "type": "object", "required": ["type", "units"], "properties": {
            "type": {"const": "dense"}, "units": {"type": "integer", "minimum": 1}, "activation": _ACTIVATION,
            "alpha": {"type": "number"}, "use_bias": {"type": "boolean"},
            "kernel_initializer": _INITIALIZER, "bias_initializer": _INITIALIZER,
            "kernel_regularizer": {"type": ["object", "null"], "properties": {
                "l1": {"type": "number"}, "l2": {"type": "number"}}},
            "name": {"type": "string"}}},
        {"title": "BatchNormalization", "type": "object", "required": ["type"], "properties": {
            "type": {"const": "batch_normalization"}, "momentum": {"type": "number"}, "epsilon": {"type": "number"},
            "name": {"type": "string"}}},
        {"title": "Dropout", "type": "object", "required": ["type", "rate"], "properties": {
            "type": {"const": "dropout"}, "rate": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "name": {"type": "string"}}},
        {"title": "Flatten", "type": "object", "required": ["type"], "properties": {
            "type": {"const": "flatten"}, "name": {"type": "string"}}},
        {"title": "Activation", "type": "object", "required": ["type", "activation"], "properties": {
            "type": {"const": "activation"}, "activation": _ACTIVATION, "alpha": {"type": "number"},
            "name": {"type": "string"}}},
        {"title": "GaussianNoise", "type": "object", "required": ["type", "stddev"], "properties": {
            "type": {"const": "gaussian_noise"}, "stddev": {"type": "number", "minimum": 0},
            "name": {"type": "string"}}},
    ]
}
Layer = Annotated[dict[str, Any], WithJsonSchema(LAYER_SCHEMA)]


class ModelCreate(BaseModel):
    """Either ``input_shape`` + ``layers``, or ``keras`` (the JSON of Keras's ``model.to_json()``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")
    input_shape: list[int] | None = Field(default=None, examples=[[64]])
    layers: list[Layer] | None = None
    keras: dict[str, Any] | str | None = Field(
        default=None, description="A Keras 3 Sequential model as written by model.to_json() (object or string)."
    )

    @model_validator(mode="after")
    def _one_form(self) -> ModelCreate:
        if self.keras is not None:
            if self.layers is not None:
                raise ValueError("give either layers (with input_shape) or keras, not both")
        elif self.layers is None or self.input_shape is None:
            raise ValueError("input_shape and layers are required (or give keras)")
        return self


class LayerSummary(BaseModel):
    name: str
    type: str
    output_shape: list[int | None]
    params: int
    trainable_params: int


class ModelUpdate(BaseModel):
    """The fields to change; those left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]*$")
    serving_version: int | None = Field(
        default=None, ge=1, le=2**31 - 1,
        description="Pin the version that predict, evaluate and export use when a request names none (null: "
                    "unpin, so that the latest version serves). New versions from later jobs do not move a pin.")

    @model_validator(mode="after")
    def _name_not_null(self) -> "ModelUpdate":
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null")
        return self


class ModelSummary(BaseModel):
    layers: list[LayerSummary]
    total_params: int
    trainable_params: int
    non_trainable_params: int


class ModelOut(ORMModel):
    id: str
    name: str
    input_shape: list[int]
    layers: list[dict[str, Any]] = Field(description="The normalized layers, every default filled in.")
    summary: ModelSummary
    latest_version: int | None
    serving_version: int | None = Field(
        description="The pinned version requests that name none get; null: the latest version serves.")
    created_at: UTCDateTime

    @classmethod
    def from_row(cls, row: Any) -> ModelOut:
        return cls(
            id=row.id,
            name=row.name,
            input_shape=row.input_shape,
            layers=row.spec.get("layers", []),
            summary=row.summary,
            latest_version=row.latest_version,
            serving_version=row.serving_version,
            created_at=row.created_at,
        )


class VersionOut(ORMModel):
    version: int
    job_id: str | None
    metrics: dict[str, Any]
    created_at: UTCDateTime


ExportFormat = Literal["npz", "keras", "onnx"]
