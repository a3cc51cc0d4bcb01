"""/v1/datasets"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from service.api.deps import OwnerDep, PageDep, SessionDep, SettingsDep
from service.api.downloads import attachment, file_responses
from service.api.json_body import request_body_doc, with_json_body
from service.errors import Invalid, PayloadTooLarge, UnsupportedMediaType, problem_responses
from service.schemas.common import Page
from service.schemas.datasets import DatasetDetail, DatasetJSONIn, DatasetOut
from service.services import dataset_export
from service.services import datasets as service

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "name"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description":
                                 "CSV with a header row, or a .npz archive (numpy.savez) of the arrays features "
                                 "(rows, features) or (rows, *input_shape) and targets (rows,) or (rows, targets), "
                                 "optionally feature_names and target_names"},
                        "name": {"type": "string"},
                        "target": {"type": "string", "description":
                                   "CSV: the target column, or comma-separated columns (required). Not for .npz"},
                        "task": {"type": "string", "enum": ["classification", "multilabel", "regression"]},
                        "input_shape": {"type": "string", "description": "e.g. 28,28"},
                    },
                }
            },
            "application/json": request_body_doc(DatasetJSONIn)["content"]["application/json"],
        },
    }
}


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the file is over the limit of max_upload_bytes={limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def _form_str(form: Any, key: str, required: bool) -> str | None:
    value = form.get(key)
    if value is None or isinstance(value, UploadFile):
        if required:
            raise Invalid(f"the form field {key!r} is required", loc=["body", key])
        return None
    return str(value)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetDetail,
    summary="Upload a dataset (multipart CSV or .npz, or JSON)",
    openapi_extra=_UPLOAD_DOC,
    responses=problem_responses(401, 413, 415, 422),
)
async def create_dataset(
    request: Request, session: SessionDep, owner: OwnerDep, settings: SettingsDep
) -> DatasetDetail:
    from starlette.concurrency import run_in_threadpool

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with request.form(max_files=1, max_fields=16, max_part_size=1024 * 1024) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise Invalid("the form field 'file' (a CSV file or a .npz archive) is required",
                              loc=["body", "file"])
            raw = await _read_upload(upload, settings.max_upload_bytes)
            name = _form_str(form, "name", True) or ""
            target = _form_str(form, "target", False)
            task = _form_str(form, "task", False) or None
            input_shape = _form_str(form, "input_shape", False)
        if not name.strip():
            raise Invalid("name must not be empty", loc=["body", "name"])
        if len(name) > 200 or "\x00" in name:
            raise Invalid("name must be at most 200 characters, with no NUL character", loc=["body", "name"])
        if task is not None and task not in service.TASKS:
            raise Invalid(f"task must be one of {', '.join(service.TASKS)}", loc=["body", "task"])
        if service.is_npz(raw):
            if target is not None:
                raise Invalid("a .npz archive names its arrays (features, targets): leave out the form field "
                              "'target'", loc=["body", "target"])
            row = await run_in_threadpool(
                service.create_from_npz, session, settings, owner,
                name=name, raw=raw, task=task, input_shape=input_shape,
            )
        else:
            if target is None:
                raise Invalid("the form field 'target' is required for a CSV file", loc=["body", "target"])
            row = await run_in_threadpool(
                service.create_from_csv, session, settings, owner,
                name=name, raw=raw, target=target, task=task, input_shape=input_shape,
            )
    elif ctype == "application/json" or ctype.endswith("+json"):
        # BodyLimit has capped the body at max_upload_bytes
        row = await with_json_body(request, DatasetJSONIn, lambda body: run_in_threadpool(
            service.create_from_json, session, settings, owner, body))
    else:
        raise UnsupportedMediaType("send multipart/form-data (a CSV file or a .npz archive) or application/json")
    return DatasetDetail.model_validate(row)


@router.get("", response_model=Page[DatasetOut], responses=problem_responses(401, 422))
def list_datasets(session: SessionDep, owner: OwnerDep, page: PageDep) -> Page[DatasetOut]:
    rows, total = service.list_(session, owner, page.limit, page.offset)
    return Page[DatasetOut](items=[DatasetOut.model_validate(r) for r in rows], total=total)


@router.get("/{dataset_id}", response_model=DatasetDetail, responses=problem_responses(401, 404))
def get_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep) -> DatasetDetail:
    return DatasetDetail.model_validate(service.get(session, owner, dataset_id))


@router.delete(
    "/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    responses=problem_responses(401, 404, 409),
)
def delete_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep) -> Response:
    service.delete(session, owner, dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{dataset_id}/export",
    response_class=Response,
    responses=file_responses(
        "The dataset as it can be uploaded again: a .npz archive (features, targets, feature_names, target_names) "
        "or a CSV file (feature columns, then target columns)", ("application/octet-stream", "text/csv"), 401, 404,
        422),
)
def export_dataset(
    dataset_id: str,
    session: SessionDep,
    owner: OwnerDep,
    format: Annotated[Literal["npz", "csv"], Query(description="npz or csv")] = "npz",
) -> Response:
    row = service.get(session, owner, dataset_id)
    headers = attachment(f"dataset-{row.id}.{format}")
    media_type = dataset_export.MEDIA_TYPES[format]
    if format == "npz":
        return Response(dataset_export.to_npz(row), media_type=media_type, headers=headers)
    return StreamingResponse(dataset_export.csv_chunks(row), media_type=media_type, headers=headers)
