"""/healthz and /readyz"""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from service.errors import problem_responses

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    broker: str


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


def _database_ok(request: Request) -> bool:
    try:
        with request.app.state.session_factory() as s:
            s.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def _broker_state(request: Request) -> str:
    probe = getattr(request.app.state, "broker_ok", None)
    if probe is None:
        try:
            from service.celery_client import broker_ok as probe
        except ImportError:
            return "unknown"
    try:
        result = probe(request.app.state.settings) if _takes_settings(probe) else probe()
    except Exception:
        return "down"
    return "ok" if result else "down"


def _takes_settings(fn) -> bool:
    import inspect

    try:
        return len(inspect.signature(fn).parameters) >= 1
    except (TypeError, ValueError):
        return False


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
def readyz(request: Request) -> JSONResponse | Readiness:
    database = "ok" if _database_ok(request) else "down"
    broker = _broker_state(request)
    if database != "ok" or broker == "down":
        down = [name for name, state in (("database", database), ("broker", broker)) if state == "down"]
        return JSONResponse(
            {
                "type": "https://backprop.dev/problems/unavailable",
                "title": "Service unavailable",
                "status": 503,
                "detail": f"not ready: the {' and the '.join(down)} did not answer",
                "database": database,
                "broker": broker,
            },
            status_code=503,
            media_type="application/problem+json",
        )
    return Readiness(status="ok", database=database, broker=broker)
