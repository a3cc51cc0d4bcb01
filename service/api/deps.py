"""Request dependencies, as ``Annotated`` aliases so that route signatures read like types.

``SessionDep`` opens one session per request and commits when the route returns (before the response is sent),
or rolls back on any error; then it runs the session's after-commit hooks (``service.services.hooks``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service import auth
from service.config import Settings
from service.errors import TooManyRequests, Unauthorized
from service.ratelimit import RateLimiter
from service.serving import ModelCache
from service.services.hooks import pop_after_commit

log = logging.getLogger("backprop.api")


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        pop_after_commit(session)
        raise
    finally:
        session.close()
    for hook in pop_after_commit(session):
        try:
            hook()
        except Exception:  # pragma: no cover - hooks log their own failures
            log.exception("after-commit hook failed")


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer bp_...`")


def key_cache(request: Request) -> auth.KeyCache:
    """The app's API-key cache (one per app, made on first use; ``Settings.api_key_cache_ttl_s``)."""
    state = request.app.state
    cache = getattr(state, "key_cache", None)
    if cache is None:
        cache = state.key_cache = auth.KeyCache(state.settings.api_key_cache_ttl_s)
    return cache


def _lookup_owner(request: Request, key: str) -> str | None:
    session: Session = request.app.state.session_factory()
    try:
        return auth.authenticate(session, key)
    finally:
        session.close()


async def get_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The key's owner. A key seen valid in the last ``api_key_cache_ttl_s`` seconds is served from memory
    (no database session, no thread hop); otherwise the key is looked up (hash, prefix, constant-time
    comparison) in the threadpool and remembered."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    key = credentials.credentials.strip()
    if not auth.well_formed(key):
        raise Unauthorized("The API key is not valid (or was revoked).")
    digest = auth.key_digest(key)
    cache = key_cache(request)
    owner_id = cache.get(digest)
    if owner_id is None:
        generation = cache.generation
        owner_id = await run_in_threadpool(_lookup_owner, request, key)
        if owner_id is None:
            raise Unauthorized("The API key is not valid (or was revoked).")
        cache.put(digest, owner_id, generation)
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None and limiter.enabled:
        # Only authenticated keys get a bucket (by the key's hash, never the key itself).
        wait = limiter.acquire(digest)
        if wait is not None:
            raise TooManyRequests(
                f"this API key is over its rate limit of rate_limit_per_s={limiter.rate:g} "
                f"(rate_limit_burst={limiter.burst:g}); retry after the Retry-After delay",
                retry_after=wait,
            )
    return owner_id


OwnerDep = Annotated[str, Depends(get_owner)]


def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache


ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]


def get_enqueue(request: Request) -> Callable[[str], None]:
    return request.app.state.enqueue


EnqueueDep = Annotated[Callable[[str], None], Depends(get_enqueue)]


#: Integers that reach a query are bounded by the smallest integer column type (PostgreSQL INTEGER), so that an
#: absurd value is a 422 rather than a database overflow.
MAX_DB_INT = 2**31 - 1


class PageParams:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=500, description="At most 500.")] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    ) -> None:
        self.limit = limit
        self.offset = offset


PageDep = Annotated[PageParams, Depends()]
