"""API keys: random, stored only as hashes, compared in constant time, never logged, revocable (function and CLI)."""
from __future__ import annotations

import collections
import inspect
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select, text

from service import auth
from service.db.models import ApiKey

ROOT = Path(__file__).resolve().parents[2]
URLSAFE = re.compile(r"^bp_[A-Za-z0-9_-]{43}$")


def _all_stored_text(session_factory) -> str:
    """Every value of every row of every table, as one string."""
    with session_factory() as s:
        names = sa_inspect(s.get_bind()).get_table_names()
        out = []
        for name in names:
            for row in s.execute(text(f'SELECT * FROM "{name}"')):
                out.extend(repr(v) for v in row)
        return "\n".join(out)


def test_keys_are_random_url_safe_secrets(session_factory):
    with session_factory() as s, s.begin():
        keys = [auth.create_api_key(s, f"k{i}") for i in range(300)]
    assert len(set(keys)) == len(keys)
    assert all(URLSAFE.match(k) for k in keys), keys[0]
    # 32 random bytes: 43 base64url characters after "bp_"; prefixes differ too (the indexed lookup column)
    assert len({k[: auth.PREFIX_LEN] for k in keys}) == len(keys)
    # the characters look uniform: each of the 64 symbols about equally frequent (chi-square, very loose bound)
    body = "".join(k[3:-1] for k in keys)  # the last character carries only 4 bits
    freq = collections.Counter(body)
    expected = len(body) / 64
    chi2 = sum((freq.get(c, 0) - expected) ** 2 / expected for c in
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert chi2 < 150, chi2  # 63 degrees of freedom: mean 63, a 1e-9 tail is about 150
    # entropy per character close to log2(64) = 6 bits
    entropy = -sum(n / len(body) * math.log2(n / len(body)) for n in freq.values())
    assert entropy > 5.95, entropy
    src = inspect.getsource(auth.create_api_key)
    assert "secrets.token_urlsafe(32)" in src and "random." not in src


def test_only_hashes_are_stored(client, session_factory, make_key):
    key = make_key("stored")
    secret = key[auth.PREFIX_LEN:]
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    stored = _all_stored_text(session_factory)
    assert key not in stored and secret not in stored
    with session_factory() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.prefix == key[: auth.PREFIX_LEN])).one()
        assert row.key_hash == auth.key_digest(key) and len(row.key_hash) == 64
        assert row.prefix == key[: auth.PREFIX_LEN] and len(row.prefix) == 12  # 9 random characters, ~54 bits


def test_comparison_is_constant_time(session_factory, make_key, monkeypatch):
    # by inspection: the digest is compared with hmac.compare_digest, never with ==
    src = inspect.getsource(auth.authenticate)
    assert "hmac.compare_digest(" in src
    assert not re.search(r"(key_hash|row_hash|digest)\s*==|==\s*(key_hash|row_hash|digest)", src)
    # by behaviour: every candidate row's hash goes through compare_digest
    key = make_key("ct")
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    with session_factory() as s:
        assert auth.authenticate(s, key) is not None
        assert auth.authenticate(s, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert len(calls) == 2 and all(len(a) == len(b) == 64 for a, b in calls)


def test_keys_are_never_logged(client, make_key, session_factory, caplog):
    good = make_key("logged")
    revoked = make_key("logged-revoked")
    with session_factory() as s, s.begin():
        auth.revoke_api_key(s, revoked)
    wrong = good[:-4] + "AAAA"
    caplog.set_level(logging.DEBUG)
    # the SQL log too (at INFO SQLAlchemy logs statements and their parameters)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    try:
        for key in (good, revoked, wrong, "bp_" + "x" * 60, good + " "):
            for path in ("/v1/models", "/v1/jobs/nope", "/v1/datasets?limit=9999"):
                client.get(path, headers={"Authorization": f"Bearer {key}"})
            client.post("/v1/models", headers={"Authorization": f"Bearer {key}"}, json={"name": 1})
        client.get("/v1/models", headers={"Authorization": f"Basic {good}"})
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    logged = caplog.text + "\n".join(repr(r.args) for r in caplog.records)
    assert caplog.records, "nothing was logged: the capture is not working"
    for key in (good, revoked, wrong):
        assert key not in logged
        assert key[auth.PREFIX_LEN:] not in logged  # not even the secret part after the clear prefix


def test_revoke_by_prefix_id_or_full_key(client, session_factory, make_key):
    keys = [make_key(f"rev{i}") for i in range(3)]
    with session_factory() as s, s.begin():
        ids = {k: s.scalars(select(ApiKey.id).where(ApiKey.prefix == k[: auth.PREFIX_LEN])).one() for k in keys}
    with session_factory() as s, s.begin():
        assert auth.revoke_api_key(s, keys[0][: auth.PREFIX_LEN]) == 1
        assert auth.revoke_api_key(s, ids[keys[1]]) == 1
        assert auth.revoke_api_key(s, keys[2]) == 1
        assert auth.revoke_api_key(s, keys[2]) == 0  # already revoked
        assert auth.revoke_api_key(s, "bp_") == 0  # a short prefix never matches every key
    for k in keys:
        r = client.get("/v1/models", headers={"Authorization": f"Bearer {k}"})
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_keys_revoke(client, settings, session_factory, make_key, tmp_path, db_url):
    from service import cli

    if "revoke" not in inspect.getsource(cli.build_parser):
        pytest.skip("backprop keys revoke is not there yet")
    key = make_key("cli")
    other = make_key("cli-other")
    env = {**os.environ, "BACKPROP_DATABASE_URL": settings.resolved_database_url,
           "BACKPROP_DATA_DIR": str(tmp_path), "BACKPROP_BROKER_URL": "memory://"}
    run = subprocess.run([sys.executable, "-m", "service.cli", "keys", "revoke", key[: auth.PREFIX_LEN]],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "revoked 1" in run.stdout
    assert key[auth.PREFIX_LEN:] not in run.stdout + run.stderr
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    again = subprocess.run([sys.executable, "-m", "service.cli", "keys", "revoke", key[: auth.PREFIX_LEN]],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1  # nothing left to revoke: says so, exits non-zero
