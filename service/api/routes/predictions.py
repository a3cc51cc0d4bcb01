"""/v1/models/{id}/predict"""
from __future__ import annotations

import sqlite3

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import OwnerDep
from service.api.json_body import request_body_doc, with_json_body
from service.errors import problem_responses
from service.schemas.predictions import PredictIn, PredictOut
from service.services import predictions as service

router = APIRouter(prefix="/v1/models", tags=["predictions"])


def _predict(request: Request, owner: str, model_id: str, body: PredictIn) -> bytes:
    state = request.app.state
    settings, cache = state.settings, state.model_cache
    result = service.predict_fast(state.db_engine, settings, cache, owner, model_id, body.inputs, body.version)
    if result is None:  # not cached yet, or an error to report: the full path, in a session
        session = state.session_factory()
        try:
            result = service.predict(session, settings, cache, owner, model_id, body.inputs, body.version)
        finally:
            session.close()  # read-only: nothing to commit
    return service.to_json(result)


# ``async``: a cached version on a SQLite database is served on the event loop (a point read with a 5 ms busy
# limit and a forward pass of at most ``INLINE_WORK`` rows x parameters: tens of microseconds); everything else
# takes one threadpool hop for the database and NumPy. The owner comes from the in-memory key cache; the response
# is serialized once, by orjson, from plain values (``PredictOut`` documents it).
# The body is read by with_json_body rather than declared as a parameter: a batch of 10,000 rows is up to
# ~150 MiB of JSON, which must not be decoded on the event loop.
@router.post("/{model_id}/predict", response_model=PredictOut, responses=problem_responses(401, 404, 409, 413, 422),
             openapi_extra={"requestBody": request_body_doc(PredictIn)})
async def predict(request: Request, model_id: str, owner: OwnerDep) -> Response:
    return await with_json_body(request, PredictIn, lambda body: _predict_body(request, model_id, owner, body))


async def _predict_body(request: Request, model_id: str, owner: str, body: PredictIn) -> Response:
    state = request.app.state
    reader = service.sqlite_reader(state)
    if reader is not None:
        try:
            found = reader.owner_and_latest(model_id)
        except sqlite3.Error:  # locked or busy: the threadpool path waits instead
            found = None
        hit = service.cached_version(found, state.model_cache, owner, model_id, body.version)
        if hit is not None and service.inline_ok(hit[0], len(body.inputs)):
            result = service.run_cached(state.settings, hit[0], model_id, hit[1], body.inputs)
            return Response(service.to_json(result), media_type="application/json")
    content = await run_in_threadpool(_predict, request, owner, model_id, body)
    return Response(content, media_type="application/json")
