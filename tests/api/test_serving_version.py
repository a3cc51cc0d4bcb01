"""A pinned serving version: what predict, evaluate and export use when a request names no version.

Pinning is what lets a team train again without changing what production answers: later jobs add versions,
the pin stays until someone moves it, and every path (the cached single-row path, the full path, .npy bodies,
evaluate, export) sees a change on the very next request.
"""
from __future__ import annotations

import io

import numpy as np

from service.db.models import Model
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(16)) + "\n"
ROW = {"inputs": [[1, 0]]}


def _npy(rows) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(rows, dtype=np.float32))
    return buf.getvalue()


def _trained(client, auth, session_factory, versions: int) -> tuple[dict, dict]:
    ds, m = make_dataset(client, auth, XOR), make_model(client, auth)
    for seed in range(versions):
        run_job_in_process(session_factory, make_job(client, auth, m["id"], ds["id"], epochs=1 + seed,
                                                     seed=seed)["id"])
    return ds, m


def test_a_pin_serves_until_moved_and_unpinning_serves_the_latest(client, auth, session_factory):
    ds, m = _trained(client, auth, session_factory, versions=2)
    path, model_path = f"/v1/models/{m['id']}/predict", f"/v1/models/{m['id']}"
    npy = {**auth, "Content-Type": "application/x-npy"}
    answers = {v: client.post(path, headers=auth, json={**ROW, "version": v}).json() for v in (1, 2)}
    assert answers[1]["probabilities"] != answers[2]["probabilities"]     # the two versions tell apart
    assert client.post(path, headers=auth, json=ROW).json()["version"] == 2           # latest, now cached
    assert client.get(model_path, headers=auth).json()["serving_version"] is None

    r = client.patch(model_path, headers=auth, json={"serving_version": 1})
    assert r.status_code == 200 and r.json()["serving_version"] == 1 and r.json()["latest_version"] == 2
    for _ in range(2):     # the first request after the pin and a cached one
        assert client.post(path, headers=auth, json=ROW).json() == answers[1]
        assert client.post(path, headers=npy, content=_npy([[1, 0]])).json() == answers[1]
    assert client.post(path, headers=auth, json={**ROW, "version": 2}).json() == answers[2]   # named: as asked

    # a later job makes version 3; the pin holds
    run_job_in_process(session_factory, make_job(client, auth, m["id"], ds["id"], epochs=1, seed=9)["id"])
    assert client.get(model_path, headers=auth).json()["latest_version"] == 3
    assert client.post(path, headers=auth, json=ROW).json()["version"] == 1
    evaluated = client.post(f"{model_path}/evaluate", headers=auth, json={"dataset_id": ds["id"]})
    assert evaluated.status_code == 200 and evaluated.json()["version"] == 1
    exported = client.get(f"{model_path}/export?format=npz", headers=auth)
    assert exported.status_code == 200 and "-v1.npz" in exported.headers["content-disposition"]

    r = client.patch(model_path, headers=auth, json={"serving_version": None})
    assert r.status_code == 200 and r.json()["serving_version"] is None
    assert client.post(path, headers=auth, json=ROW).json()["version"] == 3


def test_pins_and_renames_are_checked(client, auth, make_key, session_factory):
    _, m = _trained(client, auth, session_factory, versions=1)
    untrained = make_model(client, auth)
    model_path = f"/v1/models/{m['id']}"
    cases = [
        (model_path, {"serving_version": 2}, ["body", "serving_version"], "no version 2"),
        (f"/v1/models/{untrained['id']}", {"serving_version": 1}, ["body", "serving_version"], "has none yet"),
        (model_path, {"serving_version": 0}, ["body", "serving_version"], None),
        (model_path, {"serving_version": "1.5"}, ["body", "serving_version"], None),
        (model_path, {"name": ""}, ["body", "name"], None),
        (model_path, {"name": None}, ["body"], "name cannot be null"),
        (model_path, {"latest_version": 1}, ["body", "latest_version"], None),
    ]
    for path, body, loc, words in cases:
        r = client.patch(path, headers=auth, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0]["loc"][: len(loc)] == loc, (body, r.json())
        if words:
            assert words in r.text, r.text
    with session_factory() as s:
        row = s.get(Model, m["id"])
        assert row.serving_version is None and row.name == m["name"]

    r = client.patch(model_path, headers=auth, json={"name": "xor, pinned", "serving_version": 1})
    assert r.status_code == 200 and r.json()["name"] == "xor, pinned" and r.json()["serving_version"] == 1
    r = client.patch(model_path, headers=auth, json={})
    assert r.status_code == 200 and r.json()["name"] == "xor, pinned" and r.json()["serving_version"] == 1
    other = {"Authorization": f"Bearer {make_key('pin-other')}"}
    assert client.patch(model_path, headers=other, json={"serving_version": None}).status_code == 404
    assert client.patch("/v1/models/nope", headers=auth, json={"name": "x"}).status_code == 404
    assert client.get(model_path, headers=auth).json()["serving_version"] == 1
