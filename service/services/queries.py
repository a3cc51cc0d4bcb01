"""Queries the services share: one of an owner's rows by id, and one page of a listing with its total."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.errors import NotFound

T = TypeVar("T")


def get_owned(session: Session, entity: type[T], kind: str, owner_id: str, ident: str) -> T:
    """The ``entity`` row ``ident`` when ``owner_id`` owns it; NotFound (404) otherwise, so that another owner's
    row is indistinguishable from a missing one."""
    row = session.get(entity, ident)
    if row is None or row.owner_id != owner_id:  # type: ignore[attr-defined]
        raise NotFound.of(kind, ident)
    return row


def page(
    session: Session,
    entity: type[T],
    where: Sequence[Any],
    order_by: Sequence[Any],
    limit: int,
    offset: int,
) -> tuple[list[T], int]:
    """The rows of ``entity`` matching ``where``, in ``order_by`` order, ``offset`` to ``offset + limit``; and
    how many match in all."""
    total = session.scalar(select(func.count()).select_from(entity).where(*where)) or 0
    rows = session.scalars(select(entity).where(*where).order_by(*order_by).limit(limit).offset(offset)).all()
    return list(rows), int(total)
