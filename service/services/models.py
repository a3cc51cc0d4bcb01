"""Models: validate a spec with the engine, keep it normalized with its summary; versions; export."""
from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from service.config import Settings
from service.db.models import Model, ModelVersion
from service.errors import Invalid, LimitExceeded, NotFound
from service.exports import export_model
from service.services import engine_port
from service.services.queries import get_owned, page


def _estimate_params(spec: dict[str, Any]) -> int:
    """An upper-bound-ish parameter count from a normalized spec, computed without allocating anything, so a
    gigantic spec is refused before ``engine.build`` would allocate its weights."""
    width = math.prod(int(d) for d in spec.get("input_shape") or [1])
    total = 0
    for layer in spec.get("layers") or []:
        kind = layer.get("type")
        if kind == "dense":
            units = int(layer.get("units") or 0)
            total += width * units + units
            width = units
        elif kind == "batch_normalization":
            total += 4 * width
    return total


def create(session: Session, settings: Settings, owner_id: str, body: Any) -> Model:
    if body.keras is not None:
        keras = body.keras
        if isinstance(keras, str):
            import json

            try:
                keras = json.loads(keras)
            except ValueError as exc:
                raise Invalid(f"keras is not valid JSON: {exc}", loc=["body", "keras"]) from None
            except RecursionError:
                raise Invalid("keras is nested too deeply to be a Keras model", loc=["body", "keras"]) from None
        raw: dict[str, Any] = {"keras": keras}
    else:
        raw = {"input_shape": body.input_shape, "layers": body.layers}
    engine_port.check_numbers(raw, ["body"])
    spec = engine_port.normalize_spec(raw)
    estimate = _estimate_params(spec)
    if estimate > settings.max_params:
        raise LimitExceeded(
            f"the model has about {estimate:,} parameters, over the limit of max_params={settings.max_params:,}",
            loc=["body", "layers"],
        )
    summary = engine_port.summarize(spec)
    if summary["total_params"] > settings.max_params:
        raise LimitExceeded(
            f"the model has {summary['total_params']:,} parameters, over the limit of "
            f"max_params={settings.max_params:,}",
            loc=["body", "layers"],
        )
    row = Model(
        owner_id=owner_id,
        name=body.name,
        input_shape=list(spec["input_shape"]),
        spec=spec,
        summary=summary,
        latest_version=None,
    )
    session.add(row)
    session.flush()
    return row


def get(session: Session, owner_id: str, model_id: str) -> Model:
    return get_owned(session, Model, "model", owner_id, model_id)


def list_(session: Session, owner_id: str, limit: int, offset: int) -> tuple[list[Model], int]:
    return page(session, Model, [Model.owner_id == owner_id], [Model.created_at.desc(), Model.id.desc()],
                limit, offset)


def delete(session: Session, owner_id: str, model_id: str) -> None:
    """Delete a model with its versions, jobs and their checkpoints (foreign-key cascades).

    A running job's worker finds its job gone and stops at its next write.
    """
    row = get(session, owner_id, model_id)
    session.delete(row)
    session.flush()


def default_version(model: Model) -> int | None:
    """The version a request that names none gets: the pinned one, else the latest (None: none trained)."""
    return model.serving_version if model.serving_version is not None else model.latest_version


def update(session: Session, owner_id: str, model_id: str, changes: dict[str, Any]) -> Model:
    """Rename a model, or pin (a version number) or unpin (None) the version it serves by default.

    ``changes`` holds only the fields the client sent. A pin must name an existing version (422 otherwise); it
    holds until changed, whatever versions later jobs make.
    """
    row = get(session, owner_id, model_id)
    if "name" in changes:
        row.name = changes["name"]
    if "serving_version" in changes:
        version = changes["serving_version"]
        if version is not None and session.scalar(
                select(ModelVersion.version).where(ModelVersion.model_id == model_id,
                                                   ModelVersion.version == version)) is None:
            have = f"its latest is {row.latest_version}" if row.latest_version else "it has none yet"
            raise Invalid(f"model {model_id} has no version {version} to serve ({have})",
                          loc=["body", "serving_version"])
        row.serving_version = version
    session.flush()
    return row


def list_versions(
    session: Session, owner_id: str, model_id: str, limit: int, offset: int
) -> tuple[list[ModelVersion], int]:
    get(session, owner_id, model_id)
    return page(session, ModelVersion, [ModelVersion.model_id == model_id], [ModelVersion.version.desc()],
                limit, offset)


def get_version(
    session: Session, owner_id: str, model_id: str, version: int | None, *, with_data: bool = False
) -> tuple[Model, ModelVersion]:
    """The model and one of its versions (when ``version`` is None: the pinned serving version, else the
    latest).

    Raises NotFound for a missing model or version, and :class:`NoVersion` (409) when nothing is trained yet.
    """
    from service.errors import Conflict

    model = get(session, owner_id, model_id)
    if version is None:
        version = default_version(model)
        if version is None:
            raise Conflict(f"model {model_id} has no trained version yet: run a training job first")
    stmt = select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.version == version)
    if with_data:
        stmt = stmt.options(undefer(ModelVersion.data))
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise NotFound(f"model {model_id} has no version {version}")
    return model, row


def export(session: Session, owner_id: str, model_id: str, fmt: str, version: int | None) -> tuple[bytes, str, str]:
    """(content, media type, file name) of a trained version in ``fmt`` (npz, keras or onnx)."""
    _model, row = get_version(session, owner_id, model_id, version, with_data=True)
    content, media_type, suffix = export_model(row.data, fmt)
    return content, media_type, f"model-{model_id}-v{row.version}{suffix}"
