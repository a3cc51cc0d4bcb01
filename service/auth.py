"""API keys: random secrets stored only as a clear prefix (to find the row) and a SHA-256 hash.

A key looks like ``bp_<43 url-safe characters>`` (32 random bytes). The first :data:`PREFIX_LEN` characters are
stored in clear and indexed; the whole key is stored as its SHA-256 hex digest and compared in constant time.
Keys are never logged. These functions only flush: the caller (a request, or the CLI) commits.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import weakref

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


class KeyCache:
    """key digest -> owner id of keys that authenticated, each for ``ttl_s`` seconds, so that a request with a
    known key needs neither a database session nor a query (one per process, see ``service.api.deps``).

    Only digests are kept (never keys) and only of valid keys, so random bearer strings cannot grow it; it holds
    at most ``max_entries`` (then it starts over). Revocation: :func:`revoke_api_key` empties every cache of
    this process at once; a key revoked by another process (the CLI, another API process) keeps working here
    for at most ``ttl_s`` seconds. ``ttl_s <= 0`` disables the cache.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000, *, clock=time.monotonic) -> None:
        self.ttl_s = float(ttl_s)
        self.max_entries = max_entries
        self._clock = clock
        self._items: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        #: Bumped by clear(): a lookup that started before a revocation must not re-add its result.
        self.generation = 0
        _CACHES.add(self)

    def get(self, digest: str) -> str | None:
        hit = self._items.get(digest)
        if hit is None:
            return None
        if hit[1] <= self._clock():
            with self._lock:
                self._items.pop(digest, None)
            return None
        return hit[0]

    def put(self, digest: str, owner_id: str, generation: int | None = None) -> None:
        """Remember a lookup's result; ``generation`` (read before the lookup) drops it if a clear came since."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            if len(self._items) >= self.max_entries:
                self._items.clear()
            self._items[digest] = (owner_id, self._clock() + self.ttl_s)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.generation += 1

    def __len__(self) -> int:
        return len(self._items)


_CACHES: weakref.WeakSet[KeyCache] = weakref.WeakSet()


def forget_cached_keys() -> None:
    """Empty every key cache of this process (after a revocation)."""
    for cache in list(_CACHES):
        cache.clear()


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
    # In this process the revocation is immediate; other processes' caches expire within their TTL.
    forget_cached_keys()
    return len(rows)


def well_formed(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and PREFIX_LEN + 8 <= len(key) <= 256


def authenticate(session: Session, key: str) -> str | None:
    """Return the owner id of a valid, unrevoked ``key``, else None."""
    if not well_formed(key):
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
