"""One error hierarchy for the service and the single handler that turns it into RFC 9457 problems.

Code below the routers raises :class:`BackpropError` subclasses (never ``HTTPException``); each carries its
HTTP status. :func:`install_error_handlers` registers the handlers that render every error the app can
produce (ours, request validation, routing, and unexpected exceptions) as ``application/problem+json``.
No handler ever returns a stack trace or an HTML page.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("backprop.errors")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://backprop.dev/problems/"

Loc = Sequence[str | int]


class BackpropError(Exception):
    """Base of every domain error. Subclasses set ``status``, ``title`` and ``slug``."""

    status: int = 500
    title: str = "Internal server error"
    slug: str = "internal"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers
        super().__init__(self.detail)

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class Unauthorized(BackpropError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str = "A valid API key is required: Authorization: Bearer <key>.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(BackpropError):
    status, title, slug = 404, "Not found", "not-found"

    @classmethod
    def of(cls, kind: str, ident: str) -> NotFound:
        return cls(f"{kind} {ident} was not found.")


class Conflict(BackpropError):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(BackpropError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class UnsupportedMediaType(BackpropError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class Invalid(BackpropError):
    """422 with ``errors``: one ``{"loc", "msg"}`` per offending field."""

    status, title, slug = 422, "Unprocessable content", "validation"

    def __init__(self, detail: str, *, loc: Loc | None = None, errors: list[dict[str, Any]] | None = None):
        if errors is None:
            errors = [{"loc": list(loc) if loc is not None else [], "msg": detail}]
        super().__init__(detail, errors=errors)


class LimitExceeded(Invalid):
    """A configured limit on a spec (rows, features, parameters, epochs...) was exceeded: 422."""

    slug = "limit-exceeded"


class TooManyRequests(BackpropError):
    """429: a rate or concurrency limit; ``retry_after`` (seconds) becomes the ``Retry-After`` header."""

    status, title, slug = 429, "Too many requests", "too-many-requests"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        import math

        super().__init__(detail, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class Unavailable(BackpropError):
    status, title, slug = 503, "Service unavailable", "unavailable"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + (slug or str(status)),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _jsonable_loc(loc: Sequence[Any]) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": _jsonable_loc(err.get("loc", ())), "msg": str(err.get("msg", ""))} for err in exc.errors()]


_STATUS_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


async def _backprop_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BackpropError)
    body = exc.problem()
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON, headers=exc.headers)


async def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc)
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    detail = f"{where}: {first['msg']}" if where else first["msg"]
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return problem_response(422, "Unprocessable content", detail, slug="validation", errors=errors)


def _allowed_methods(request: Request) -> set[str]:
    """Every method the OpenAPI document lists at this path (the router answers 405 from the first route whose
    path matched, so its own Allow names one method where there may be several)."""
    import re

    app = request.app
    table = getattr(app.state, "allowed_methods_table", None)
    if table is None:
        table = []
        for template, ops in (app.openapi().get("paths") or {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
            table.append((pattern, {m.upper() for m in ops}))
        app.state.allowed_methods_table = table
    path = request.url.path
    return set().union(*(methods for pattern, methods in table if pattern.match(path)))


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = _STATUS_TITLES.get(exc.status_code, "Error")
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        methods = _allowed_methods(request)
        if methods:
            headers["Allow"] = ", ".join(sorted(methods))
    return problem_response(exc.status_code, title, detail, headers=headers or None)


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    """The database refused a value of the request (a NUL character in a text, a number out of its column's
    range): the client's input, so a 422. The request's transaction is rolled back; the statement and its
    parameters are neither logged nor returned."""
    orig = getattr(exc, "orig", None)
    reason = str(orig or "").strip().splitlines()[0][:200] if orig else "invalid value"
    log.info("database refused a value on %s %s: %s", request.method, request.url.path, reason)
    return problem_response(
        422, "Unprocessable content", f"a value in the request cannot be stored or searched: {reason}",
        slug="validation", errors=[{"loc": [], "msg": reason}],
    )


#: Seconds a client is told to wait when the database does not answer.
DATABASE_RETRY_AFTER_S = 2


def is_database_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or the connection broke (server stopped or restarting,
    network, pool exhausted, SQLite locked past its busy timeout): a transient condition, not a bug."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                        sa_exc.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 problem+json with Retry-After when the database is unreachable (e.g. PostgreSQL restarting);
    any other database error is a 500. Neither the statement nor its parameters are logged or returned."""
    if not is_database_unavailable(exc):
        return await _unhandled(request, exc)
    orig = getattr(exc, "orig", None) or exc
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, reason)
    return problem_response(
        503, "Service unavailable", "the database is unavailable; retry shortly",
        slug="database-unavailable", headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "Internal server error", "An unexpected error occurred.", slug="internal")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BackpropError, _backprop_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, TimeoutError as PoolTimeout

    app.add_exception_handler(DataError, _data_error)
    # Connection failures: 503 (DBAPIError also covers OperationalError and InterfaceError; other
    # DBAPIErrors fall through to the 500 handler).
    for cls in (DBAPIError, DisconnectionError, PoolTimeout):
        app.add_exception_handler(cls, _database_error)
    app.add_exception_handler(Exception, _unhandled)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json errors for a route."""
    from service.schemas.common import Problem, ValidationProblem

    out: dict[int | str, dict[str, Any]] = {}
    if 401 in statuses and 429 not in statuses:
        statuses = (*statuses, 429)  # every authenticated route is rate limited per key
    for status in statuses:
        model = ValidationProblem if status == 422 else Problem
        out[status] = {
            "model": model,
            "description": _STATUS_TITLES.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    return out
