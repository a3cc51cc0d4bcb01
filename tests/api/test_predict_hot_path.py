"""The prediction hot path: cached keys and versions must change nothing a client can see.

A new version is served by the next request, a deleted model or another owner's answers 404 even after its
version was cached, the cached answer equals the first (loading) answer, and the API-key cache expires and
forgets revoked keys.
"""
from __future__ import annotations

from service.auth import KeyCache, revoke_api_key
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(16)) + "\n"
ROW = {"inputs": [[1, 0]]}


def test_cached_versions_and_ownership(client, make_key, session_factory):
    auth = {"Authorization": f"Bearer {make_key('hot')}"}
    other = {"Authorization": f"Bearer {make_key('hot-other')}"}
    ds = make_dataset(client, auth, XOR)
    m = make_model(client, auth)
    path = f"/v1/models/{m['id']}/predict"
    assert client.post(path, headers=auth, json=ROW).status_code == 409
    run_job_in_process(session_factory, make_job(client, auth, m["id"], ds["id"], epochs=2)["id"])
    first = client.post(path, headers=auth, json=ROW)      # loads version 1
    again = client.post(path, headers=auth, json=ROW)      # served from the cache
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and again.json()["version"] == 1
    assert again.headers["content-type"].startswith("application/json")
    assert set(again.json()) == {"model_id", "version", "task", "predictions", "probabilities", "classes"}
    # the documented errors on the cached path too
    assert client.post(path, headers=other, json=ROW).status_code == 404
    bad = client.post(path, headers=auth, json={"inputs": [[1, "x"]]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "inputs", 0]
    assert client.post(path, headers=auth, json={"inputs": [[1, 0]], "version": 2}).status_code == 404
    # a new version is seen by the very next request
    run_job_in_process(session_factory, make_job(client, auth, m["id"], ds["id"], epochs=1)["id"])
    assert client.post(path, headers=auth, json=ROW).json()["version"] == 2
    assert client.post(path, headers=auth, json={**ROW, "version": 1}).json() == first.json()
    # a deleted model is gone, cached or not
    assert client.delete(f"/v1/models/{m['id']}", headers=auth).status_code == 204
    assert client.post(path, headers=auth, json=ROW).status_code == 404


def test_cached_key_is_forgotten_on_revocation(client, make_key, session_factory):
    key = make_key("hot-revoke")
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/models", headers=auth).status_code == 200     # now cached
    assert client.get("/v1/models", headers=auth).status_code == 200
    with session_factory() as s, s.begin():
        assert revoke_api_key(s, key[:12]) == 1
    assert client.get("/v1/models", headers=auth).status_code == 401
    assert client.post("/v1/models/x/predict", headers=auth, json=ROW).status_code == 401


def test_key_cache_ttl_and_generation():
    now = [100.0]
    cache = KeyCache(5.0, max_entries=2, clock=lambda: now[0])
    cache.put("d1", "owner")
    assert cache.get("d1") == "owner" and cache.get("d2") is None
    now[0] += 5.0
    assert cache.get("d1") is None and len(cache) == 0             # expired
    generation = cache.generation
    cache.clear()                                                   # a revocation during a lookup...
    cache.put("d1", "owner", generation)
    assert cache.get("d1") is None                                  # ...does not re-add the stale result
    for i in range(3):
        cache.put(f"k{i}", "o")
    assert len(cache) <= 2                                          # bounded
    off = KeyCache(0)
    off.put("d", "o")
    assert off.get("d") is None

