"""JSON request bodies that may be large, decoded and validated off the event loop.

FastAPI decodes a body parameter on the event loop. Most bodies are a few hundred bytes and that is the fastest
place; but a 10,000-row predict batch is 34–150 MiB of JSON and a JSON dataset up to ``max_upload_bytes``, and
decoding those takes seconds during which every other request of the process waits (single-row predictions
included). Bodies over ``INLINE_BYTES`` therefore go to the threadpool, and there a thread alone is not enough:
``json.loads`` holds the GIL from start to end (measured: single-row predict p99 503 ms, max 635 ms while
another client uploaded 16 MiB JSON datasets). So a large body's top-level arrays are decoded one element at a
time by the same C scanner, and between elements the interpreter can hand the GIL to the event loop.

Errors keep FastAPI's shape: a ``RequestValidationError`` whose locations start with "body", rendered by the
app's 422 handler.
"""
from __future__ import annotations

import json
import json.decoder
from collections.abc import Awaitable, Callable
from email.message import Message
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.gc_pause import collection_paused

INLINE_BYTES = 64 * 1024      # below this, decoding costs less than the hop to a worker thread

Model = TypeVar("Model", bound=BaseModel)
T = TypeVar("T")


def _is_json(content_type: str | None) -> bool:
    """As FastAPI decides it: no content type, or application/json, or application/*+json."""
    if not content_type:
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


_SCANNER = json.JSONDecoder()
_WHITESPACE = json.decoder.WHITESPACE


class _NotThisWay(Exception):
    """The incremental decoder met something it leaves to ``json.loads`` (which then reports it exactly)."""


def _loads_yielding(raw: bytes) -> Any:
    """``json.loads(raw)``, with every member of an array at the top level or directly under the top-level
    object decoded by its own call into the C scanner, so that the GIL can change hands between members. Any
    text this does not follow (another encoding, a syntax error) is handed to ``json.loads`` as a whole."""
    try:
        text = raw.decode("utf-8")
        return _value(text, _skip(text, 0), top=True)
    except (_NotThisWay, UnicodeDecodeError, StopIteration, ValueError, IndexError, RecursionError):
        return json.loads(raw)


def _skip(text: str, i: int) -> int:
    return _WHITESPACE.match(text, i).end()


def _value(text: str, i: int, top: bool) -> Any:
    """The value at ``i`` (after whitespace); at the top level, the rest of the text must be whitespace."""
    if text.startswith("{", i) and top:
        obj, i = _object(text, i + 1)
    elif text.startswith("[", i):
        obj, i = _array(text, i + 1)
    else:
        obj, i = _SCANNER.scan_once(text, i)
    if top and _skip(text, i) != len(text):
        raise _NotThisWay
    return obj if top else (obj, i)


def _object(text: str, i: int) -> tuple[dict[str, Any], int]:
    obj: dict[str, Any] = {}        # a repeated key keeps its last value, as json.loads does
    i = _skip(text, i)
    if text.startswith("}", i):
        return obj, i + 1
    while True:
        if not text.startswith('"', i):
            raise _NotThisWay
        key, i = json.decoder.scanstring(text, i + 1)
        i = _skip(text, i)
        if not text.startswith(":", i):
            raise _NotThisWay
        i = _skip(text, i + 1)
        obj[key], i = _value(text, i, top=False)
        i, closed = _after_member(text, i, "}")
        if closed:
            return obj, i


def _array(text: str, i: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    append, scan = items.append, _SCANNER.scan_once
    i = _skip(text, i)
    if text.startswith("]", i):
        return items, i + 1
    while True:
        item, i = scan(text, i)      # one row: C code, a fraction of a millisecond
        append(item)
        i, closed = _after_member(text, i, "]")
        if closed:
            return items, i


def _after_member(text: str, i: int, close: str) -> tuple[int, bool]:
    """Past the comma and whitespace after a member (False), or past the closing bracket (True)."""
    i = _skip(text, i)
    if text.startswith(",", i):
        return _skip(text, i + 1), False
    if text.startswith(close, i):
        return i + 1, True
    raise _NotThisWay


def decode(raw: bytes, content_type: str | None, model: type[Model]) -> Model:
    """``raw`` validated as ``model``; a body that is not JSON by its content type is validated as bytes (and
    refused by the model), as FastAPI does."""
    payload: Any = raw
    if not raw:
        payload = None
    elif _is_json(content_type):
        try:
            payload = json.loads(raw) if len(raw) <= INLINE_BYTES else _loads_yielding(raw)
        except json.JSONDecodeError as exc:
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos),
                                           "msg": f"JSON decode error: {exc.msg}", "input": {}}]) from None
        except (ValueError, RecursionError):    # not UTF-8, or nested too deeply for the parser
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body",),
                                           "msg": "the body is not valid JSON (or is nested too deeply)",
                                           "input": {}}]) from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        ) from None


async def with_json_body(request: Request, model: type[Model], use: Callable[[Model], Awaitable[T]]) -> T:
    """``await use(body)`` with the request's body validated as ``model``; returns what ``use`` returns.

    A large body is decoded in the threadpool, and automatic garbage collection stays paused until ``use`` is
    done and the body is freed: its decoded rows are alive that long, and a collection would traverse them all
    while holding the GIL (see :mod:`service.api.gc_pause`). ``use`` must not keep the body: what it still
    holds when the pause ends is left to a collection."""
    raw = await request.body()
    content_type = request.headers.get("content-type")
    if len(raw) <= INLINE_BYTES:
        return await use(decode(raw, content_type, model))
    with collection_paused():
        # Handed over in a list that is emptied at once: the event loop's callback that delivers a
        # threadpool result keeps its own reference to it for a while, past the end of the pause.
        box = await run_in_threadpool(lambda: [decode(raw, content_type, model)])
        body = box.pop()
        del raw
        try:
            return await use(body)
        finally:
            del body   # freed here, by its reference count, while collection is still paused


def request_body_doc(model: type[BaseModel], media_type: str = "application/json") -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads ``model`` with :func:`json_body` (for openapi_extra)."""
    return {"required": True, "content": {media_type: {"schema": model.model_json_schema()}}}
