"""Shapes shared by every resource: problems, pages."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

T = TypeVar("T")


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UTCDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Path to the offending field, e.g. [\"body\", \"layers\", 2, \"units\"].")
    msg: str


class ValidationProblem(Problem):
    errors: list[FieldError] = []


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
