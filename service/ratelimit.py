"""A per-API-key token bucket, in process: ``rate`` requests per second sustained, bursts of up to ``burst``.

Each key's bucket starts full and refills continuously; a request takes one token, and a request that finds less
than one token is refused with the number of seconds after which one will be there (the ``Retry-After`` of the
429). Buckets are keyed by an opaque id (the SHA-256 of the key, never the key itself) and only for keys that
authenticated, so random bearer strings cannot grow the table; idle full buckets are dropped.

The limit is per process: with N API processes a key can reach N times the configured rate. ``rate <= 0``
disables the limiter.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = max(float(burst), 1.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # id -> (tokens, updated at)
        self._last_sweep = clock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, bucket_id: str) -> float | None:
        """Take one token from ``bucket_id``'s bucket: None when allowed, else the seconds to wait."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            tokens, updated = self._buckets.get(bucket_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - updated) * self.rate)
            if tokens >= 1.0:
                self._buckets[bucket_id] = (tokens - 1.0, now)
                allowed = True
            else:
                self._buckets[bucket_id] = (tokens, now)
                allowed = False
            self._sweep(now)
        if allowed:
            return None
        return (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        """Forget buckets that have refilled completely (they behave exactly like a new one)."""
        full_after = self.burst / self.rate
        if now - self._last_sweep < max(full_after, 60.0):
            return
        self._last_sweep = now
        for key, (tokens, updated) in list(self._buckets.items()):
            if tokens + (now - updated) * self.rate >= self.burst:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(seconds)))
