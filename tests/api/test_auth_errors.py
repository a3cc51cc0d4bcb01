"""Auth on every /v1 route, problem+json errors, key revocation."""
from __future__ import annotations

from service.auth import authenticate, create_api_key, revoke_api_key
from service.db.models import ApiKey


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["database"] == "ok"


def test_every_v1_route_needs_a_key(client):
    doc = client.get("/openapi.json").json()
    checked = 0
    for path, ops in doc["paths"].items():
        if not path.startswith("/v1"):
            continue
        url = path.replace("{dataset_id}", "x").replace("{model_id}", "x").replace("{job_id}", "x")
        for method in ops:
            for headers in ({}, {"Authorization": "Bearer bp_wrongwrongwrongwrongwrong"}, {"Authorization": "Basic eDp5"}):
                r = client.request(method.upper(), url, headers=headers)
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["status"] == 401
                checked += 1
    assert checked >= 13 * 3


def test_keys_are_hashed_and_revocable(client, session_factory, make_key):
    key = make_key("rev")
    assert key.startswith("bp_") and len(key) > 40
    with session_factory() as s:
        rows = s.query(ApiKey).all()
        assert all(key not in (r.key_hash, r.prefix) for r in rows)
        assert authenticate(s, key) is not None
    r = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    with session_factory() as s, s.begin():
        assert revoke_api_key(s, key[:12]) == 1
    r = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401


def test_second_key_for_the_same_owner(session_factory):
    with session_factory() as s, s.begin():
        k1 = create_api_key(s, "one")
        owner = authenticate(s, k1)
        k2 = create_api_key(s, "two", owner_id=owner)
        assert authenticate(s, k2) == owner
        assert revoke_api_key(s, s.query(ApiKey).filter_by(name="two").one().id) == 1
        assert authenticate(s, k2) is None and authenticate(s, k1) == owner


def test_unknown_route_and_method_are_problems(client, auth):
    r = client.get("/v1/nothing", headers=auth)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = client.put("/v1/models", headers=auth, json={})
    assert r.status_code == 405 and r.json()["status"] == 405


def test_request_validation_is_422_with_locs(client, auth):
    r = client.get("/v1/models?limit=501", headers=auth)
    assert r.status_code == 422
    body = r.json()
    assert body["errors"][0]["loc"] == ["query", "limit"]
    assert {"type", "title", "status", "detail"} <= body.keys()
    r = client.post("/v1/jobs", headers=auth, content=b"{not json", )
    assert r.status_code == 422


def test_malformed_json_is_a_problem_not_a_500(client, auth):
    r = client.post("/v1/models", headers={**auth, "content-type": "application/json"}, content=b"[1, 2")
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")


def test_openapi_document_is_complete(client):
    import json
    import re

    doc = client.get("/openapi.json").json()
    text = json.dumps(doc)
    assert set(re.findall(r"#/components/schemas/(\w+)", text)) <= set(doc["components"]["schemas"])
    assert "HTTPValidationError" not in text
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            if path.startswith("/v1"):
                assert "401" in codes, (method, path)
                assert op.get("security"), (method, path)
            for code, response in op["responses"].items():
                if int(code) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (method, path, code)
    assert client.get("/docs").status_code == 200
