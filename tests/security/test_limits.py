"""Every limit is a setting, and going over it is a clear problem that names the setting and stores nothing.

| setting                         | over it                                   |
|---------------------------------|-------------------------------------------|
| max_upload_bytes                | 413 (by Content-Length, or while streaming) |
| max_rows, max_features          | 422 limit-exceeded                        |
| max_params                      | 422 limit-exceeded                        |
| max_epochs                      | 422 limit-exceeded                        |
| max_predict_rows                | 413                                       |
| max_concurrent_jobs_per_owner   | 429 + Retry-After                         |
| rate_limit_per_s / _burst       | 429 + Retry-After (tests/security/test_ratelimit.py) |
"""
from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from service.config import Settings
from service.db.models import Dataset, Job, Model
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(20)) + "\n"
LIMITS = {
    "max_upload_bytes": 8000,
    "max_rows": 30,
    "max_features": 4,
    "max_params": 200,
    "max_epochs": 5,
    "max_predict_rows": 3,
    "max_concurrent_jobs_per_owner": 2,
}


@pytest.fixture(scope="module")
def settings_overrides():
    return dict(LIMITS)


def _counts(session_factory) -> tuple[int, int, int]:
    with session_factory() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Dataset, Model, Job))


def _problem(r, status: int, setting: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert setting in body["detail"], body["detail"]
    assert str(LIMITS[setting]) in body["detail"].replace(",", "")
    return body


def test_upload_bytes(client, auth, session_factory):
    before = _counts(session_factory)
    big = ("a,y\n" + "\n".join(f"{i},{i % 2}" for i in range(3000))).encode()
    r = client.post("/v1/datasets", headers=auth, data={"name": "b", "target": "y"},
                    files={"file": ("d.csv", big, "text/csv")})
    _problem(r, 413, "max_upload_bytes")
    r = client.post("/v1/datasets", headers=auth, json={"name": "b", "features": [[1, 2]] * 1500,
                                                         "targets": [0, 1] * 750})
    _problem(r, 413, "max_upload_bytes")
    assert _counts(session_factory) == before


def test_rows_and_features(client, auth, session_factory):
    before = _counts(session_factory)
    rows = "a,y\n" + "\n".join(f"{i},{i % 2}" for i in range(31))
    r = client.post("/v1/datasets", headers=auth, data={"name": "b", "target": "y"},
                    files={"file": ("d.csv", rows.encode(), "text/csv")})
    assert _problem(r, 422, "max_rows")["type"].endswith("limit-exceeded")
    wide = "a,b,c,d,e,y\n1,2,3,4,5,0\n1,2,3,4,5,1\n"
    r = client.post("/v1/datasets", headers=auth, data={"name": "b", "target": "y"},
                    files={"file": ("d.csv", wide.encode(), "text/csv")})
    _problem(r, 422, "max_features")
    r = client.post("/v1/datasets", headers=auth, json={"name": "w", "features": [[1] * 5, [2] * 5],
                                                         "targets": [0, 1]})
    _problem(r, 422, "max_features")
    r = client.post("/v1/datasets", headers=auth, json={"name": "w", "features": [[1]] * 31,
                                                         "targets": [0, 1] * 15 + [0]})
    _problem(r, 422, "max_rows")
    assert _counts(session_factory) == before


def test_params_per_model(client, auth, session_factory):
    before = _counts(session_factory)
    r = client.post("/v1/models", headers=auth, json={"name": "big", "input_shape": [4],
                                                       "layers": [{"type": "dense", "units": 64}]})
    body = _problem(r, 422, "max_params")
    assert body["errors"][0]["loc"] == ["body", "layers"]
    assert _counts(session_factory) == before
    assert client.post("/v1/models", headers=auth, json={"name": "ok", "input_shape": [2], "layers": [
        {"type": "dense", "units": 2, "activation": "softmax"}]}).status_code == 201


def test_epochs_predict_rows_and_concurrent_jobs(client, auth, other_auth, session_factory):
    ds = make_dataset(client, auth, "a,b,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    m = make_model(client, auth)
    job = {"model_id": m["id"], "dataset_id": ds["id"], "loss": "categorical_crossentropy"}

    before = _counts(session_factory)
    r = client.post("/v1/jobs", headers=auth, json={**job, "epochs": 6})
    assert _problem(r, 422, "max_epochs")["errors"][0]["loc"] == ["body", "epochs"]
    assert _counts(session_factory) == before

    done = make_job(client, auth, m["id"], ds["id"], epochs=1)
    run_job_in_process(session_factory, done["id"])
    r = client.post(f"/v1/models/{m['id']}/predict", headers=auth, json={"inputs": [[0, 1]] * 4})
    _problem(r, 413, "max_predict_rows")
    assert client.post(f"/v1/models/{m['id']}/predict", headers=auth,
                       json={"inputs": [[0, 1]] * 3}).status_code == 200

    # two jobs queued: the third is refused with 429 and a Retry-After, and not stored
    queued = [make_job(client, auth, m["id"], ds["id"], epochs=1) for _ in range(2)]
    before = _counts(session_factory)
    r = client.post("/v1/jobs", headers=auth, json={**job, "epochs": 1})
    _problem(r, 429, "max_concurrent_jobs_per_owner")
    assert int(r.headers["retry-after"]) >= 1
    assert _counts(session_factory) == before
    # per owner: another owner is not affected
    ds2 = make_dataset(client, other_auth, XOR)
    m2 = make_model(client, other_auth)
    make_job(client, other_auth, m2["id"], ds2["id"], epochs=1)
    # a finished (or cancelled) job frees its place
    assert client.post(f"/v1/jobs/{queued[0]['id']}/cancel", headers=auth).status_code == 202
    make_job(client, auth, m["id"], ds["id"], epochs=1)


def test_429_is_documented_on_job_submission(client):
    doc = client.get("/openapi.json").json()
    assert "429" in doc["paths"]["/v1/jobs"]["post"]["responses"]


def test_limits_are_settings_read_from_the_environment(monkeypatch):
    env = {"BACKPROP_MAX_UPLOAD_BYTES": "1000", "BACKPROP_MAX_ROWS": "11", "BACKPROP_MAX_FEATURES": "12",
           "BACKPROP_MAX_PARAMS": "13", "BACKPROP_MAX_EPOCHS": "14", "BACKPROP_MAX_PREDICT_ROWS": "15",
           "BACKPROP_MAX_CONCURRENT_JOBS_PER_OWNER": "16", "BACKPROP_RATE_LIMIT_PER_S": "2.5",
           "BACKPROP_RATE_LIMIT_BURST": "17"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert (s.max_upload_bytes, s.max_rows, s.max_features, s.max_params, s.max_epochs, s.max_predict_rows,
            s.max_concurrent_jobs_per_owner, s.rate_limit_per_s, s.rate_limit_burst) == \
        (1000, 11, 12, 13, 14, 15, 16, 2.5, 17)
    # nonsense is refused at startup with the setting's name
    monkeypatch.setenv("BACKPROP_RATE_LIMIT_PER_S", "-1")
    with pytest.raises(ValidationError, match="rate_limit_per_s"):
        Settings()


def test_defaults_do_not_throttle_normal_use():
    s = Settings(_env_file=None)
    assert s.max_concurrent_jobs_per_owner >= 50  # the load test submits 50 jobs at once
    assert s.rate_limit_per_s >= 50 and s.rate_limit_burst >= 100


def test_concurrent_submissions_respect_the_job_limit(client, make_key, db_url):
    """Eight submissions at once by one owner with room for two: exactly two are queued (PostgreSQL locks the
    owner's row while counting; SQLite serializes writers)."""
    from concurrent.futures import ThreadPoolExecutor

    key = {"Authorization": f"Bearer {make_key('burst')}"}
    ds = make_dataset(client, key, XOR)
    m = make_model(client, key)
    body = {"model_id": m["id"], "dataset_id": ds["id"], "loss": "categorical_crossentropy", "epochs": 1}
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: client.post("/v1/jobs", headers=key, json=body).status_code, range(8)))
    assert statuses.count(202) == LIMITS["max_concurrent_jobs_per_owner"], statuses
    assert set(statuses) <= {202, 429}, statuses
