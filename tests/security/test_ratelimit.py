"""The per-key rate limit: a token bucket per API key, 429 with Retry-After when it is empty."""
from __future__ import annotations

import time

import pytest

from service.ratelimit import RateLimiter, retry_after_header

RATE, BURST = 4.0, 3


@pytest.fixture(scope="module")
def settings_overrides():
    return {"rate_limit_per_s": RATE, "rate_limit_burst": BURST}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_bucket_burst_refill_and_retry_after():
    clock = Clock()
    rl = RateLimiter(2.0, 3, clock=clock)
    assert [rl.acquire("k") for _ in range(3)] == [None, None, None]
    wait = rl.acquire("k")
    assert wait == pytest.approx(0.5)  # one token every 0.5 s
    assert rl.acquire("other") is None  # buckets are per key
    clock.t += 0.5
    assert rl.acquire("k") is None and rl.acquire("k") is not None
    clock.t += 100  # refills up to the burst, not beyond
    assert [rl.acquire("k") for _ in range(4)].count(None) == 3
    assert retry_after_header(0.01) == "1" and retry_after_header(1.2) == "2"


def test_disabled_at_zero_and_idle_buckets_are_dropped():
    rl = RateLimiter(0, 1)
    assert not rl.enabled and all(rl.acquire("k") is None for _ in range(1000)) and len(rl) == 0
    clock = Clock()
    rl = RateLimiter(10.0, 5, clock=clock)
    for i in range(100):
        rl.acquire(f"k{i}")
    assert len(rl) == 100
    clock.t += 120
    rl.acquire("fresh")
    assert len(rl) == 1


def test_over_the_rate_is_429_with_retry_after(client, make_key):
    key = {"Authorization": f"Bearer {make_key('rl')}"}
    other = {"Authorization": f"Bearer {make_key('rl-other')}"}
    statuses = [client.get("/v1/models", headers=key).status_code for _ in range(BURST + 3)]
    assert statuses[:BURST] == [200] * BURST and 429 in statuses[BURST:], statuses
    r = client.get("/v1/datasets", headers=key)
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) >= 1
    assert "rate_limit_per_s" in r.json()["detail"]
    # another key has its own bucket; unauthenticated probes and /healthz are not counted against anyone
    assert client.get("/v1/models", headers=other).status_code == 200
    assert client.get("/healthz").status_code == 200
    # after the advertised wait (one token every 1/RATE s) the key works again
    time.sleep(1.0 / RATE + 0.05)
    assert client.get("/v1/models", headers=key).status_code == 200


def test_wrong_keys_get_401_and_create_no_bucket(client, app):
    limiter = app.state.rate_limiter
    before = len(limiter)
    for i in range(50):
        r = client.get("/v1/models", headers={"Authorization": f"Bearer bp_{i:0>43}"})
        assert r.status_code == 401
    assert len(limiter) == before


def test_429_is_documented_on_every_authenticated_operation(client):
    doc = client.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        if path.startswith("/v1"):
            for method, op in ops.items():
                assert "429" in op["responses"], (method, path)
