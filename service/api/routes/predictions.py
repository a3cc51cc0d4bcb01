"""/v1/models/{id}/predict"""
from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ModelCacheDep, OwnerDep, SessionDep, SettingsDep
from service.errors import problem_responses
from service.schemas.predictions import PredictIn, PredictOut
from service.services import predictions as service

router = APIRouter(prefix="/v1/models", tags=["predictions"])


# A plain ``def``: FastAPI runs it in the threadpool, so the NumPy forward pass never blocks the event loop.
@router.post("/{model_id}/predict", response_model=PredictOut, responses=problem_responses(401, 404, 409, 413, 422))
def predict(
    model_id: str, body: PredictIn, session: SessionDep, owner: OwnerDep, settings: SettingsDep, cache: ModelCacheDep
) -> PredictOut:
    return PredictOut(**service.predict(session, settings, cache, owner, model_id, body.inputs, body.version))
