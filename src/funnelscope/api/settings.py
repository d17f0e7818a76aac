"""ApiSettings: every knob of the HTTP app, resolved once at the edge (CLI, tests) and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_QUEUE_EVENTS",
    "ApiSettings",
]

#: A request body larger than this (as sent, before decompression) gets 413. RudderStack's SDK
#: sends batches up to 4 MB, PostHog's up to about 5 MiB.
DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
#: A body that inflates beyond this (gzip, base64, LZ-string) gets 413: the gzip-bomb guard.
DEFAULT_MAX_DECODED_BYTES: Final = 20 * 1024 * 1024
#: Events waiting for the writer; beyond this, new requests get 503 + Retry-After.
DEFAULT_MAX_QUEUE_EVENTS: Final = 100_000
#: Events in one batch request; beyond this the request gets 413 (Segment allows 2,500).
DEFAULT_MAX_BATCH_EVENTS: Final = 10_000


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Limits, rate limits, CORS and auth of one app.

    Examples
    --------
    >>> ApiSettings(rate_limit_per_second=10.0).rate_limit_burst
    2000.0
    """

    #: Refuse ingestion without a valid write key and queries without a read key. Turn off
    #: only for local experiments: every request is then accepted as source ``default``.
    require_auth: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    max_queue_events: int = DEFAULT_MAX_QUEUE_EVENTS
    #: Most events the writer commits in one transaction (group commit).
    max_group_events: int = 50_000
    #: How long a request waits for its commit before answering 503.
    commit_timeout_seconds: float = 30.0
    #: Token bucket per key: sustained requests per second and the burst allowed above it.
    rate_limit_per_second: float = 1000.0
    rate_limit_burst: float = 2000.0
    #: Origins allowed to call the collector from a browser; ``("*",)`` mirrors any origin.
    cors_origins: tuple[str, ...] = field(default=("*",))
    #: How often the in-memory key ring re-reads the keys table (revocations take this long).
    key_refresh_seconds: float = 5.0
    #: Interval between two frames of the live SSE stream.
    live_interval_seconds: float = 1.0
    #: The dashboard's reporting time zone for "today" in the live view (IANA name).
    timezone: str = "UTC"
    #: Background jobs (api/schedule.py): seconds between runs; 0 turns a job off.
    webhooks_every_seconds: float = 60.0
    segments_every_seconds: float = 900.0
    goals_every_seconds: float = 900.0
    #: The Overview's answers are computed ahead (api/overview.py) at start and after new data,
    #: at most this often; 0 turns the warm-up off.
    overview_warm_seconds: float = 10.0
