"""/v1/models/{id}/predict"""
from __future__ import annotations

import sqlite3
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import OwnerDep, SessionDep, SettingsDep
from service.api.json_body import request_body_doc, with_json_body
from service.api.npy_body import is_npy, read_npy
from service.api.npy_body import request_body_doc as with_npy_doc
from service.errors import Invalid, problem_responses
from service.schemas.predictions import EvaluateIn, EvaluateOut, ExplainIn, ExplainOut, PredictIn, PredictOut
from service.services import evaluation, explanations
from service.services import predictions as service
from service.services.predictions import Rows

router = APIRouter(prefix="/v1/models", tags=["predictions"])

VersionQuery = Annotated[int | None, Query(
    ge=1, le=2**31 - 1,
    description="The version to use (default: the model's serving version, else the latest). A JSON body may "
                "carry it as `version` instead; a .npy body can only take it here.")]


def _predict(request: Request, owner: str, model_id: str, inputs: Rows, version: int | None) -> bytes:
    state = request.app.state
    settings, cache = state.settings, state.model_cache
    result = service.predict_fast(state.db_engine, settings, cache, owner, model_id, inputs, version)
    if result is None:  # not cached yet, or an error to report: the full path, in a session
        session = state.session_factory()
        try:
            result = service.predict(session, settings, cache, owner, model_id, inputs, version)
        finally:
            session.close()  # read-only: nothing to commit
    return service.to_json(result)


def _one_version(body: PredictIn, query: int | None) -> int | None:
    if query is not None and body.version is not None and query != body.version:
        raise Invalid(f"version is {body.version} in the body and {query} in the query: send one",
                      loc=["query", "version"])
    return body.version if body.version is not None else query


# ``async``: a cached version on a SQLite database is served on the event loop (a point read with a 5 ms busy
# limit and a forward pass of at most ``INLINE_WORK`` rows x parameters: tens of microseconds); everything else
# takes one threadpool hop for the database and NumPy. The owner comes from the in-memory key cache; the response
# is serialized once, by orjson, from plain values (``PredictOut`` documents it).
# The body is read by with_json_body rather than declared as a parameter: a batch of 10,000 rows is up to
# ~150 MiB of JSON, which must not be decoded on the event loop. A .npy body is read from its header on the
# loop (microseconds, no copy) and its rows are checked where the forward pass runs.
@router.post("/{model_id}/predict", response_model=PredictOut, responses=problem_responses(401, 404, 409, 413, 422),
             openapi_extra={"requestBody": with_npy_doc(request_body_doc(PredictIn))})
async def predict(request: Request, model_id: str, owner: OwnerDep, version: VersionQuery = None) -> Response:
    if is_npy(request.headers.get("content-type")):
        rows = read_npy(await request.body(), request.app.state.settings.max_predict_rows)
        return await _predict_rows(request, model_id, owner, rows, version)
    return await with_json_body(request, PredictIn, lambda body: _predict_rows(
        request, model_id, owner, body.inputs, _one_version(body, version)))


async def _predict_rows(request: Request, model_id: str, owner: str, inputs: Rows, version: int | None) -> Response:
    state = request.app.state
    reader = service.sqlite_reader(state)
    if reader is not None:
        try:
            found = reader.owner_and_default_version(model_id)
        except sqlite3.Error:  # locked or busy: the threadpool path waits instead
            found = None
        hit = service.cached_version(found, state.model_cache, owner, model_id, version)
        if hit is not None and service.inline_ok(hit[0], len(inputs)):
            result = service.run_cached(state.settings, hit[0], model_id, hit[1], inputs)
            return Response(service.to_json(result), media_type="application/json")
    content = await run_in_threadpool(_predict, request, owner, model_id, inputs, version)
    return Response(content, media_type="application/json")


@router.post("/{model_id}/evaluate", response_model=EvaluateOut, responses=problem_responses(401, 404, 409, 422))
def evaluate(model_id: str, body: EvaluateIn, session: SessionDep, owner: OwnerDep) -> EvaluateOut:
    """The loss and metrics of a trained version on a stored dataset (rows held out of training, say)."""
    return EvaluateOut(**evaluation.evaluate(session, owner, model_id, body))


@router.post("/{model_id}/explain", response_model=ExplainOut,
             responses=problem_responses(401, 404, 409, 413, 422))
def explain(model_id: str, body: ExplainIn, request: Request, session: SessionDep, owner: OwnerDep,
            settings: SettingsDep) -> ExplainOut:
    """Each feature's integrated gradient for one output of each row: how much of the output's departure from
    its value at a baseline row (the training mean by default) the feature carries; they add up to it."""
    cache = request.app.state.model_cache
    return ExplainOut(**explanations.explain(session, settings, cache, owner, model_id, body))
