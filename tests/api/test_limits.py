"""Configured limits: body size 413, rows and features 422 naming the limit."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def settings_overrides():
    return {"max_upload_bytes": 4000, "max_rows": 20, "max_features": 5}


def test_upload_over_the_byte_limit_is_413(client, auth):
    big = "a,y\n" + "\n".join(f"{i},{i % 2}" for i in range(2000))
    r = client.post("/v1/datasets", headers=auth, data={"name": "b", "target": "y"},
                    files={"file": ("d.csv", big.encode(), "text/csv")})
    assert r.status_code == 413
    assert "max_upload_bytes" in r.json()["detail"]


def test_streamed_body_over_the_limit_is_413(client, auth):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    r = client.post("/v1/models", headers={**auth, "content-type": "application/json"}, content=chunks())
    assert r.status_code == 413


def test_rows_and_features_over_the_limit_are_422(client, auth):
    rows = "a,y\n" + "\n".join(f"{i},{i % 2}" for i in range(25))
    r = client.post("/v1/datasets", headers=auth, data={"name": "b", "target": "y"},
                    files={"file": ("d.csv", rows.encode(), "text/csv")})
    assert r.status_code == 422 and "max_rows" in r.json()["detail"]
    r = client.post("/v1/datasets", headers=auth, json={"name": "w", "features": [[1] * 6, [2] * 6], "targets": [0, 1]})
    assert r.status_code == 422 and "max_features" in r.json()["detail"]
