"""/v1/models, their versions and exports."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from service.api.deps import ModelCacheDep, OwnerDep, PageDep, SessionDep, SettingsDep
from service.api.downloads import attachment, file_responses
from service.errors import problem_responses
from service.schemas.common import Page
from service.schemas.models import ExportFormat, ModelCreate, ModelOut, ModelUpdate, VersionOut
from service.services import models as service

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=ModelOut, responses=problem_responses(401, 422)
)
def create_model(body: ModelCreate, session: SessionDep, owner: OwnerDep, settings: SettingsDep) -> ModelOut:
    return ModelOut.from_row(service.create(session, settings, owner, body))


@router.get("", response_model=Page[ModelOut], responses=problem_responses(401, 422))
def list_models(session: SessionDep, owner: OwnerDep, page: PageDep) -> Page[ModelOut]:
    rows, total = service.list_(session, owner, page.limit, page.offset)
    return Page[ModelOut](items=[ModelOut.from_row(r) for r in rows], total=total)


@router.get("/{model_id}", response_model=ModelOut, responses=problem_responses(401, 404))
def get_model(model_id: str, session: SessionDep, owner: OwnerDep) -> ModelOut:
    return ModelOut.from_row(service.get(session, owner, model_id))


@router.patch("/{model_id}", response_model=ModelOut, responses=problem_responses(401, 404, 422))
def update_model(model_id: str, body: ModelUpdate, session: SessionDep, owner: OwnerDep) -> ModelOut:
    """Rename the model, or pin the version it serves by default (``serving_version``; null unpins)."""
    return ModelOut.from_row(service.update(session, owner, model_id, body.model_dump(exclude_unset=True)))


@router.delete(
    "/{model_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    responses=problem_responses(401, 404),
)
def delete_model(model_id: str, session: SessionDep, owner: OwnerDep, cache: ModelCacheDep) -> Response:
    service.delete(session, owner, model_id)
    cache.evict_model(model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{model_id}/versions", response_model=Page[VersionOut], responses=problem_responses(401, 404, 422))
def list_versions(model_id: str, session: SessionDep, owner: OwnerDep, page: PageDep) -> Page[VersionOut]:
    rows, total = service.list_versions(session, owner, model_id, page.limit, page.offset)
    return Page[VersionOut](items=[VersionOut.model_validate(r) for r in rows], total=total)


@router.get(
    "/{model_id}/export",
    response_class=Response,
    responses=file_responses(
        "The trained version as a file: npz (engine archive), keras (zip of JSON config and npz weights) or onnx "
        "(graph with standardization inside)", ("application/octet-stream", "application/zip"), 401, 404, 409, 422),
)
def export_model(
    model_id: str,
    session: SessionDep,
    owner: OwnerDep,
    format: Annotated[ExportFormat, Query(description="npz, keras or onnx")] = "npz",
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="default: the serving version, else "
                                                                          "the latest")] = None,
) -> Response:
    content, media_type, filename = service.export(session, owner, model_id, format, version)
    return Response(content, media_type=media_type, headers=attachment(filename))
