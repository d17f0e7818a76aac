"""Per-key token buckets: a sustained rate with a burst above it, answered 429 + Retry-After."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

__all__ = ["TokenBuckets"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key: ``rate`` tokens per second refill up to ``burst``; a request takes one.

    Time comes from the caller (``now``, monotonic seconds), so tests drive it explicitly.

    Examples
    --------
    >>> buckets = TokenBuckets(rate=1.0, burst=2.0)
    >>> [buckets.take("k", now=0.0) for _ in range(3)]
    [0.0, 0.0, 1.0]
    >>> buckets.take("k", now=1.0)
    0.0
    """

    #: Buckets kept at most; the fullest (idle) ones are dropped first when over.
    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, *, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; 0.0 when allowed, else the seconds until it would be."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.MAX_KEYS:
                    self._buckets.clear()  # a flood of distinct keys: forget, start full
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return 0.0
            return (cost - bucket.tokens) / self.rate

    @staticmethod
    def retry_after_header(wait: float) -> str:
        """Whole seconds for ``Retry-After`` (at least 1)."""
        return str(max(1, math.ceil(wait)))
