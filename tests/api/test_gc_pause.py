"""Automatic garbage collection is paused while a large request body is alive, and only then: counted across
overlapping bodies, restored after errors, never turned on when something else had turned it off, and bounded
(an overlap that never ends still collects)."""
from __future__ import annotations

import asyncio
import gc
import json
import threading
import weakref

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.requests import Request

from service.api.gc_pause import CollectionPause, collection_paused
from service.api.json_body import INLINE_BYTES, with_json_body


@pytest.fixture(autouse=True)
def collector_on():
    gc.enable()
    yield
    assert collection_paused.holders == 0
    gc.enable()


def test_overlapping_holders_keep_one_pause():
    pause = CollectionPause()
    first_in, second_out = threading.Event(), threading.Event()
    seen = []

    def first():
        with pause():
            first_in.set()
            second_out.wait(5)
            seen.append(("first, after the second left", gc.isenabled()))

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with pause():
        seen.append(("both inside", gc.isenabled()))
    second_out.set()
    thread.join(5)
    assert seen == [("both inside", False), ("first, after the second left", False)]
    assert gc.isenabled() and pause.holders == 0 and pause.collections == 0


def test_a_collector_turned_off_elsewhere_stays_off():
    pause = CollectionPause()
    gc.disable()
    with pause():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_pause_ends_when_the_block_raises():
    pause = CollectionPause()
    with pytest.raises(KeyError):
        with pause():
            raise KeyError("x")
    assert gc.isenabled() and pause.holders == 0


class _Cycle:
    pass


def test_an_unbroken_overlap_still_collects_cycles():
    pause = CollectionPause(max_pause_s=0.0)
    with pause():
        cycle = _Cycle()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle
        with pause():
            pass               # leaves while the outer holder stays: the pause is older than 0 s
        assert gone() is None and pause.collections == 1
        assert not gc.isenabled()
    assert gc.isenabled()


class Rows(BaseModel):
    rows: list[list[float]]


def _request(body: bytes) -> Request:
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-type", b"application/json")],
             "query_string": b""}
    return Request(scope, receive)


def _inside_block(body: bytes) -> tuple[int, bool]:
    async def use(parsed: Rows) -> tuple[int, bool]:
        return len(parsed.rows), gc.isenabled()

    return asyncio.run(with_json_body(_request(body), Rows, use))


def test_a_large_body_is_freed_before_the_pause_ends():
    """Freed by its reference count while collection is still paused, so that the first collection after
    the pause finds none of its rows to traverse."""
    collector_on_when_freed = []

    async def use(parsed: Rows) -> int:
        weakref.finalize(parsed, lambda: collector_on_when_freed.append(gc.isenabled()))
        return len(parsed.rows)

    large = json.dumps({"rows": [[0.5] * 100] * 2000}).encode()
    assert asyncio.run(with_json_body(_request(large), Rows, use)) == 2000
    assert collector_on_when_freed == [False] and gc.isenabled()


def test_json_body_pauses_collection_for_a_large_body_only():
    large = json.dumps({"rows": [[0.5] * 100] * 2000}).encode()
    assert len(large) > INLINE_BYTES
    assert _inside_block(large) == (2000, False)
    assert gc.isenabled()
    assert _inside_block(b'{"rows": [[1, 2]]}') == (1, True)


def test_json_body_ends_the_pause_when_a_large_body_is_refused():
    bad = json.dumps({"rows": [[0.5] * 100] * 2000 + [["x"]]}).encode()
    with pytest.raises(RequestValidationError):
        _inside_block(bad)
    assert gc.isenabled()
