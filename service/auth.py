"""API keys: random secrets stored only as a clear prefix (to find the row) and a SHA-256 hash.

A key looks like ``bp_<43 url-safe characters>`` (32 random bytes). The first :data:`PREFIX_LEN` characters are
stored in clear and indexed; the whole key is stored as its SHA-256 hex digest and compared in constant time.
Keys are never logged. These functions only flush: the caller (a request, or the CLI) commits.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.db.models import ApiKey, Owner, utcnow

KEY_PREFIX = "bp_"
PREFIX_LEN = 12


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_digest(key: str) -> str:
    """The SHA-256 hex digest of a key: what is stored, and an id for it that is safe to keep in memory."""
    return _hash(key)


def create_api_key(session: Session, name: str, owner_id: str | None = None) -> str:
    """Create a key for ``owner_id`` (a new owner named ``name`` when None) and return it.

    The returned string is the only time the secret exists in clear; show it once.
    """
    if owner_id is None:
        owner = Owner(name=name)
        session.add(owner)
        session.flush()
        owner_id = owner.id
    elif session.get(Owner, owner_id) is None:
        raise LookupError(f"owner {owner_id} does not exist")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(owner_id=owner_id, name=name, prefix=key[:PREFIX_LEN], key_hash=_hash(key)))
    session.flush()
    return key


def revoke_api_key(session: Session, prefix_or_id: str) -> int:
    """Revoke the key(s) whose id or prefix is ``prefix_or_id``; return how many were revoked.

    A full key is accepted too (its prefix is used). Already revoked keys are left as they were.
    """
    prefix = prefix_or_id[:PREFIX_LEN]
    rows = session.scalars(
        select(ApiKey).where(
            or_(ApiKey.id == prefix_or_id, ApiKey.prefix == prefix), ApiKey.revoked_at.is_(None)
        )
    ).all()
    now = utcnow()
    for row in rows:
        row.revoked_at = now
    session.flush()
    return len(rows)


def authenticate(session: Session, key: str) -> str | None:
    """Return the owner id of a valid, unrevoked ``key``, else None."""
    if not key.startswith(KEY_PREFIX) or len(key) < PREFIX_LEN + 8 or len(key) > 256:
        return None
    digest = _hash(key)
    rows = session.execute(
        select(ApiKey.owner_id, ApiKey.key_hash).where(
            ApiKey.prefix == key[:PREFIX_LEN], ApiKey.revoked_at.is_(None)
        )
    ).all()
    owner_id = None
    for row_owner, row_hash in rows:
        # Compare every candidate so the time does not depend on which one matches.
        if hmac.compare_digest(row_hash, digest):
            owner_id = row_owner
    return owner_id
