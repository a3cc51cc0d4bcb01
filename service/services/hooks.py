"""Work to do once the request's transaction has committed (e.g. send a broker message for a new job)."""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

_KEY = "backprop.after_commit"


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` after the session's transaction commits (dropped if it rolls back)."""
    session.info.setdefault(_KEY, []).append(fn)


def pop_after_commit(session: Session) -> list[Callable[[], None]]:
    return session.info.pop(_KEY, [])
