"""GET /v1/jobs/{id}/events: live progress, resume with Last-Event-ID, the end of the stream, one poll for all."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from service.services import training_results
from service.services.job_events import Cursor, Snapshot, events_since, status_seq
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(40)) + "\n"


@pytest.fixture(scope="module")
def settings_overrides() -> dict[str, Any]:
    return {"events_poll_interval_s": 0.05, "events_keepalive_s": 0.2}


def parse_sse(text: str) -> tuple[list[dict[str, Any]], int]:
    """(events as {"type", "id", "data"}, number of comment lines)."""
    events, comments = [], 0
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev: dict[str, Any] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                comments += 1
            elif line.startswith("event: "):
                ev["type"] = line[7:]
            elif line.startswith("id: "):
                ev["id"] = line[4:]
            elif line.startswith("data: "):
                ev["data"] = json.loads(line[6:])
        if "type" in ev:
            events.append(ev)
    return events, comments


def read_stream(client, job_id: str, auth: dict[str, str], last_event_id: str | None = None) -> str:
    headers = dict(auth)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return "".join(r.iter_text())


def _manual_run(session_factory, job_id: str, epochs: int, pause: float = 0.15) -> None:
    """A worker's writes, one transaction each, with pauses so that watchers see them one by one."""
    time.sleep(pause)
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, job_id, "w")
    for epoch in range(1, epochs + 1):
        time.sleep(pause)
        with session_factory() as s, s.begin():
            training_results.record_epoch(s, job_id, {"loss": 1.0 / epoch, "seconds": 0.01}, epoch, worker="w")
    time.sleep(pause)
    with session_factory() as s, s.begin():
        assert training_results.complete_job(s, job_id, b"model", {"loss": 1.0 / epochs}, worker="w") == 1


def _setup(client, auth, epochs: int = 3) -> dict[str, Any]:
    ds = make_dataset(client, auth, XOR)
    m = make_model(client, auth)
    return make_job(client, auth, m["id"], ds["id"], epochs=epochs, validation_split=0.25)


def test_stream_follows_a_job_to_its_end(client, auth, session_factory):
    job = _setup(client, auth)
    worker = threading.Thread(target=run_job_in_process, args=(session_factory, job["id"]))
    worker.start()
    try:
        events, _ = parse_sse(read_stream(client, job["id"], auth))
    finally:
        worker.join()
    statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
    assert statuses[-1] == "succeeded" and events[-1]["type"] == "status"
    assert statuses[0] in ("queued", "running")
    progress = [e for e in events if e["type"] == "progress"]
    final = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert [e["data"] for e in progress] == final["history"]
    assert [e["data"]["epoch"] for e in progress] == [1, 2, 3]
    assert {"loss", "val_loss", "seconds", "grad_norms"} <= progress[0]["data"].keys()
    assert events[-1]["data"]["result_version"] == final["result_version"]
    assert events[-1]["data"]["progress"] == {"epoch": 3, "epochs": 3, "fraction": 1.0}
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)


def test_last_event_id_resumes_without_duplicates_or_gaps(client, auth, session_factory):
    job = _setup(client, auth, epochs=4)
    run_job_in_process(session_factory, job["id"])
    full, _ = parse_sse(read_stream(client, job["id"], auth))
    # a finished job: every epoch, then the final status
    assert [e["type"] for e in full] == ["progress"] * 4 + ["status"]
    assert [e["id"] for e in full[:4]] == ["1", "2", "3", "4"]
    for k, event in enumerate(full):
        rest, _ = parse_sse(read_stream(client, job["id"], auth, last_event_id=event["id"]))
        assert rest == full[k + 1:], k
    # the query parameter works too (EventSource cannot set headers), and a bad id starts over
    with client.stream("GET", f"/v1/jobs/{job['id']}/events?last_event_id=3", headers=auth) as r:
        assert parse_sse("".join(r.iter_text()))[0] == full[3:]
    assert parse_sse(read_stream(client, job["id"], auth, last_event_id="garbage"))[0] == full


def test_resume_a_running_job_mid_stream(client, auth, session_factory):
    job = _setup(client, auth, epochs=4)
    jid = job["id"]
    first, _ = parse_sse(read_stream_until(client, jid, auth, session_factory))
    # first: queued, running, progress 1, 2 (the job was left running at epoch 2)
    assert [(e["type"], e["data"].get("status") or e["data"].get("epoch")) for e in first] == [
        ("status", "queued"), ("status", "running"), ("progress", 1), ("progress", 2)]
    done = threading.Event()

    def finish() -> None:
        time.sleep(0.3)
        with session_factory() as s, s.begin():
            for epoch in (3, 4):
                training_results.record_epoch(s, jid, {"loss": 0.1, "seconds": 0.01}, epoch, worker="w")
        with session_factory() as s, s.begin():
            training_results.complete_job(s, jid, b"m", {"loss": 0.1}, worker="w")
        done.set()

    t = threading.Thread(target=finish)
    t.start()
    rest, _ = parse_sse(read_stream(client, jid, auth, last_event_id=first[-1]["id"]))
    t.join()
    assert [(e["type"], e["data"].get("status") or e["data"].get("epoch")) for e in rest] == [
        ("progress", 3), ("progress", 4), ("status", "succeeded")]
    assert len({e["id"] for e in first + rest}) == len(first) + len(rest)


def read_stream_until(client, jid: str, auth: dict[str, str], session_factory) -> str:
    """Read a live stream while a thread claims the job and records epochs 1 and 2, then disconnect."""
    def work() -> None:
        time.sleep(0.2)
        with session_factory() as s, s.begin():
            assert training_results.claim_job(s, jid, "w")
        for epoch in (1, 2):
            time.sleep(0.2)
            with session_factory() as s, s.begin():
                training_results.record_epoch(s, jid, {"loss": 1.0, "seconds": 0.01}, epoch, worker="w")

    t = threading.Thread(target=work)
    t.start()
    text = ""
    with client.stream("GET", f"/v1/jobs/{jid}/events", headers=auth) as r:
        for chunk in r.iter_text():
            text += chunk
            if '"epoch":2' in text.split("event: progress")[-1]:
                break
    t.join()
    return text


def test_two_watchers_share_one_poll_and_idle_streams_keep_alive(client, app, auth, session_factory):
    hub = app.state.event_hub
    job = _setup(client, auth, epochs=3)
    polls_before, queries_before = hub.polls, hub.queries
    results: list[str] = []

    def watch() -> None:
        results.append(read_stream(client, job["id"], auth))

    watchers = [threading.Thread(target=watch) for _ in range(2)]
    started = time.monotonic()
    for w in watchers:
        w.start()
    # both are connected and idle (queued): a keep-alive comment every 0.2 s each. Waited for, not slept on: a
    # loaded host once sent none in a fixed 0.6 s
    deadline = time.monotonic() + 15
    keepalives_before = hub.keepalives
    while hub.keepalives < keepalives_before + 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.watchers == 2
    _manual_run(session_factory, job["id"], 3)
    for w in watchers:
        w.join(timeout=30)
    elapsed = time.monotonic() - started
    assert hub.watchers == 0
    a, b = (parse_sse(t) for t in results)
    assert a[0] == b[0] and [e["type"] for e in a[0]][-1] == "status" and a[0][-1]["data"]["status"] == "succeeded"
    assert a[1] >= 2 and b[1] >= 2  # keep-alive comments while nothing happened (plus the retry line)
    assert [e["data"]["epoch"] for e in a[0] if e["type"] == "progress"] == [1, 2, 3]
    # one poll served both watchers; the number of polls follows the clock, not the number of watchers
    assert hub.max_watchers_per_poll >= 2
    polls = hub.polls - polls_before
    assert 1 <= polls <= elapsed / hub.poll_interval_s + 2
    assert hub.queries - queries_before <= 2 * polls


def test_another_owners_job_is_404_and_cancel_ends_the_stream(client, auth, other_auth):
    job = _setup(client, auth)
    r = client.get(f"/v1/jobs/{job['id']}/events", headers=other_auth)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/jobs/nope/events", headers=auth).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/events").status_code == 401

    def cancel() -> None:
        time.sleep(0.4)
        client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)

    t = threading.Thread(target=cancel)
    t.start()
    events, _ = parse_sse(read_stream(client, job["id"], auth))
    t.join()
    assert [(e["type"], e["data"]["status"]) for e in events] == [("status", "queued"), ("status", "cancelled")]


def test_stream_documented_in_openapi(client):
    op = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert {"401", "404"} <= op["responses"].keys()


# --------------------------------------------------------------------------------------------------
# The pure part: ids and ordering
# --------------------------------------------------------------------------------------------------


def _snap(status: str, attempts: int, epochs_done: int) -> Snapshot:
    rows = tuple({"epoch": e, "loss": float("nan") if e == 99 else 1.0} for e in range(1, epochs_done + 1))
    return Snapshot("j", status, attempts, epochs_done, 10, rows, None, None)


def test_status_sequence_grows_with_every_change():
    path = [("queued", 0), ("running", 1), ("queued", 1), ("running", 2), ("failed", 2)]
    seqs = [status_seq(s, a) for s, a in path]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert status_seq("cancelled", 0) > status_seq("queued", 0)


def test_events_since_orders_and_resumes():
    cursor = Cursor()
    out: list = []
    for snap in (_snap("queued", 0, 0), _snap("running", 1, 2), _snap("running", 1, 2),
                 _snap("queued", 1, 2), _snap("running", 2, 3), _snap("succeeded", 2, 4)):
        events, cursor = events_since(snap, cursor)
        out += events
    kinds = [(e.type, e.data.get("status") or e.data.get("epoch")) for e in out]
    assert kinds == [("status", "queued"), ("status", "running"), ("progress", 1), ("progress", 2),
                     ("status", "queued"), ("status", "running"), ("progress", 3), ("progress", 4),
                     ("status", "succeeded")]
    for k, e in enumerate(out):  # any id resumes right after it
        assert Cursor.parse(e.id) == Cursor.parse(str(Cursor.parse(e.id)))
    assert Cursor.parse("x.y") == Cursor() and Cursor.parse("-1") == Cursor()
    nan = Snapshot("j", "failed", 1, 1, 1, ({"epoch": 1, "loss": float("nan")},), {"code": "diverged",
                                                                                    "message": "m"}, None)
    events, _ = events_since(nan, Cursor())
    assert '"loss":null' in events[0].encode()


def test_a_watcher_that_falls_behind_keeps_every_row_it_has_not_taken():
    """The poller hands over only the history rows it had not read before; a watcher that has not taken the
    previous snapshot yet must get those rows ahead of the new ones, with the newest status."""
    import asyncio

    from service.events import Subscription
    from service.services.job_events import Snapshot

    def snap(status, epoch, rows):
        return Snapshot(job_id="j", status=status, attempts=1, epoch=epoch, epochs=9, history=tuple(rows),
                        error=None, result_version=None)

    async def scenario():
        sub = Subscription("j")
        sub.push(snap("running", 2, [{"epoch": 1}, {"epoch": 2}]))
        sub.push(snap("running", 3, [{"epoch": 3}]))
        sub.push(snap("succeeded", 4, [{"epoch": 4}]))
        first = await sub.wait(1.0)
        sub.push(snap("succeeded", 4, []))
        second = await sub.wait(1.0)
        return first, second

    first, second = asyncio.run(scenario())
    assert [r["epoch"] for r in first.history] == [1, 2, 3, 4] and first.status == "succeeded"
    assert second.history == ()            # taken rows are not handed over again
