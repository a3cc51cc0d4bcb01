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


def get_owner(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    key = credentials.credentials.strip()
    owner_id = auth.authenticate(session, key)
    if owner_id is None:
        raise Unauthorized("The API key is not valid (or was revoked).")
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None and limiter.enabled:
        # Only authenticated keys get a bucket (by the key's hash, never the key itself).
        wait = limiter.acquire(auth.key_digest(key))
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
