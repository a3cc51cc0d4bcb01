"""The FastAPI application factory."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.routes import datasets, jobs, models, operations, predictions, sweeps
from service.config import Settings, get_settings
from service.db.session import make_engine
from service.errors import install_error_handlers, problem_response
from service.queue import training_sender
from service.ratelimit import RateLimiter
from service.serving import ModelCache

log = logging.getLogger("backprop.app")


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length before reading anything, and while
    streaming for bodies sent without one (the app's own response is then replaced by the 413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Callable:
        return problem_response(
            413, "Payload too large", f"the request body is over the limit of max_upload_bytes={self.max_bytes}",
            slug="payload-too-large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._too_large()(scope, receive, send)
                    return
        seen = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                started = True
                await self._too_large()(scope, receive, send)
                return
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if exceeded and not started:
                await self._too_large()(scope, receive, send)
                return
            raise


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, with every error response described as what we send: problem+json."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    problem = "#/components/schemas/ValidationProblem"
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            if "requestBody" in op:
                # A body that cannot be parsed at all (broken multipart, JSON nested too deeply) is a 400.
                op.setdefault("responses", {}).setdefault(
                    "400", {"description": "Bad request: the body cannot be parsed"}
                )
            for code, response in (op.get("responses") or {}).items():
                if not code.isdigit() or int(code) < 400:
                    continue
                content = response.get("content") or {}
                schema = (content.get("application/problem+json") or content.get("application/json") or {}).get(
                    "schema", {"$ref": "#/components/schemas/Problem"}
                )
                if schema.get("$ref", "").endswith("/HTTPValidationError"):
                    schema = {"$ref": problem}
                    response["description"] = "Unprocessable content"
                response["content"] = {"application/problem+json": {"schema": schema}}
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = doc
    return doc


def freeze_startup_objects() -> int:
    """Collect once, then move every object the process holds into the collector's permanent generation
    (``gc.freeze``): those objects live as long as the process, and without this each full collection scans
    them all again, holding the GIL for ~70 ms on this project's hosts while a request waits. Returns how many
    objects were frozen."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def create_app(
    settings: Settings | None = None,
    *,
    enqueue: Callable[[str], None] | None = None,
    migrate: bool | None = None,
) -> FastAPI:
    """Build the app. ``settings`` defaults to :func:`get_settings`; ``enqueue(job_id)`` sends a training
    message (default: Celery); ``migrate`` applies the Alembic migrations at startup (default:
    ``settings.auto_migrate``)."""
    settings = settings or get_settings()
    if settings.embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db_url = settings.resolved_database_url
    should_migrate = settings.auto_migrate if migrate is None else migrate

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        if should_migrate:
            from service.migrate import upgrade_to_head

            await run_in_threadpool(upgrade_to_head, db_url)
        stop_reconciler = None
        if settings.api_reconciler and enqueue is None:
            # With an injected enqueue (tests) the broker is not real: nothing to reconcile against.
            from service.reconciler import start_reconciler_thread

            stop_reconciler = start_reconciler_thread(settings, app.state.session_factory)
        if settings.gc_freeze_at_startup:
            freeze_startup_objects()
        yield
        if stop_reconciler is not None:
            await run_in_threadpool(stop_reconciler)
        await app.state.event_hub.close()
        app.state.model_cache.clear()
        app.state.db_engine.dispose()

    app = FastAPI(
        title="Backprop",
        version="1.0.0",
        summary="Train dense neural networks over HTTP and serve their predictions.",
        lifespan=lifespan,
    )
    from sqlalchemy.orm import sessionmaker

    db_engine = make_engine(db_url)
    app.state.settings = settings
    app.state.db_engine = db_engine
    app.state.session_factory = sessionmaker(db_engine, expire_on_commit=False)
    app.state.model_cache = ModelCache(settings.model_cache_bytes)
    app.state.enqueue = enqueue or training_sender(settings)
    from service.events import EventHub
    from service.metrics import Metrics, MetricsMiddleware

    app.state.event_hub = EventHub(app.state.session_factory, settings.events_poll_interval_s)
    app.state.metrics = Metrics(app.state.session_factory, settings, app.state.event_hub)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    install_error_handlers(app)
    for module in (operations, datasets, models, predictions, jobs, sweeps):
        app.include_router(module.router)
    from service.dashboard import router as dashboard_router

    app.include_router(dashboard_router)  # GET / and its static files
    from service.api.routes import events as events_routes, metrics as metrics_routes

    for module in (events_routes, metrics_routes):  # GET /v1/jobs/{id}/events, GET /metrics
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: sees every response
    return app
