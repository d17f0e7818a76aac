"""Signed, retried, idempotent webhooks through a durable outbox.

Any part of funnelscope that notifies an outside system (segment joins and leaves, goal status
changes) calls :func:`enqueue`, which writes the delivery into the ``webhook_outbox`` table —
inside the caller's transaction when given one, so a change and its notification commit
together. :func:`deliver_pending` (run on a schedule by ``serve``, or by hand) POSTs every due
delivery and keeps it queued until the receiver answers 2xx: nothing is lost while the receiver
is down.

The wire format::

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <the key given to enqueue; the same on every retry>
    Funnelscope-Event: <event_type>
    Funnelscope-Timestamp: <unix seconds of this attempt>
    Funnelscope-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

    {"id": "<delivery id>", "type": "<event_type>", "created_at": "...", "data": {...}}

Retries: a failed attempt (network error, timeout, 408, 429 or 5xx) is retried after
``backoff × 2^(attempts − 1)`` (30 s, 1 min, 2 min, ... capped at 6 h) up to ``max_attempts``;
another 4xx means the receiver refuses the payload and the delivery is marked ``failed`` at once.
Delivery is at least once: a receiver that answered but whose answer was lost sees the delivery
again with the same ``Idempotency-Key`` and must drop it (:func:`verify_signature` checks the
signature and the age of the timestamp).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import duckdb
import httpx

from funnelscope.errors import InvalidInputError, Problem
from funnelscope.store.store import Store

__all__ = [
    "DEFAULT_BACKOFF",
    "MAX_ATTEMPTS",
    "DeliveryReport",
    "deliver_pending",
    "enqueue",
    "outbox",
    "sign",
    "verify_signature",
]

#: The first retry waits this long; each next one twice as long.
DEFAULT_BACKOFF: Final = timedelta(seconds=30)
MAX_BACKOFF: Final = timedelta(hours=6)
#: After this many failed attempts a delivery is marked ``failed`` (kept, never deleted).
MAX_ATTEMPTS: Final = 12
#: Deliveries sent per :func:`deliver_pending` call.
DEFAULT_BATCH: Final = 500
#: :func:`verify_signature` rejects timestamps older than this (replays).
DEFAULT_TOLERANCE: Final = timedelta(minutes=5)
SIGNATURE_HEADER: Final = "Funnelscope-Signature"
TIMESTAMP_HEADER: Final = "Funnelscope-Timestamp"
EVENT_HEADER: Final = "Funnelscope-Event"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
_DUE_IMMEDIATELY: Final = datetime(1970, 1, 1, tzinfo=UTC)
_RETRYABLE_4XX: Final = frozenset({408, 425, 429})


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value: ``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"``.

    Examples
    --------
    >>> sign("s3cret", 1700000000, b'{}')[:15]
    'sha256=97926816'
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    now: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> bool:
    """True when ``signature`` is this body's signature and ``timestamp`` is recent enough.

    For receivers written in Python; others recompute the HMAC the same way.
    """
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now.timestamp() - ts) > tolerance.total_seconds():
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def _validate(url: str, secret: str, event_type: str, idempotency_key: str) -> None:
    problems = []
    if not url.startswith(("http://", "https://")):
        problems.append(
            Problem("webhook.bad_url", "url", "url must start with http:// or https://")
        )
    if not secret:
        problems.append(Problem("webhook.missing_secret", "secret", "a signing secret is required"))
    if not event_type:
        problems.append(Problem("webhook.missing_type", "event_type", "event_type is required"))
    if not idempotency_key or len(idempotency_key) > 200:
        problems.append(
            Problem("webhook.bad_key", "idempotency_key", "idempotency_key must be 1-200 chars")
        )
    if problems:
        raise InvalidInputError(problems)


def enqueue(
    store: Store,
    url: str,
    secret: str,
    event_type: str,
    payload: dict[str, Any],
    idempotency_key: str,
    *,
    now: datetime | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> str:
    """Queue one delivery and return its id. Enqueuing an existing key is a no-op.

    Parameters
    ----------
    store
        The store whose outbox holds the delivery.
    url, secret
        Where to POST and the HMAC key.
    event_type
        e.g. ``segment.changed`` or ``goal.status_changed``.
    payload
        JSON-serialisable data (sent as ``data``).
    idempotency_key
        Identifies the *fact* being reported: the same fact enqueued twice is sent once.
    now
        When it was created (recorded; due immediately). Left empty, the first attempt's time
        is recorded instead.
    con
        A cursor inside the caller's open transaction (``store.write()``), so the delivery
        commits with the change it reports.

    Examples
    --------
    >>> import funnelscope
    >>> ws = funnelscope.open(":memory:")
    >>> a = enqueue(ws.store, "http://localhost:9/h", "k", "test.ping", {"n": 1}, "ping-1")
    >>> enqueue(ws.store, "http://localhost:9/h", "k", "test.ping", {"n": 1}, "ping-1") == a
    True
    """
    _validate(url, secret, event_type, idempotency_key)
    body = json.dumps(payload, sort_keys=True, default=str)
    delivery_id = uuid.uuid5(uuid.NAMESPACE_URL, f"funnelscope-webhook:{idempotency_key}").hex

    def insert(cur: duckdb.DuckDBPyConnection) -> str:
        found = cur.execute(
            "SELECT delivery_id FROM webhook_outbox WHERE idempotency_key = ?", [idempotency_key]
        ).fetchone()
        if found:
            return str(found[0])
        cur.execute(
            "INSERT INTO webhook_outbox (delivery_id, idempotency_key, url, secret, event_type, "
            "payload, created_at, status, attempts, next_attempt_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?)",
            [delivery_id, idempotency_key, url, secret, event_type, body, now, _DUE_IMMEDIATELY],
        )
        return delivery_id

    if con is not None:
        return insert(con)
    with store.write() as cur:
        return insert(cur)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one :func:`deliver_pending` run did."""

    attempted: int
    delivered: int
    retrying: int
    failed: int

    def to_dict(self) -> dict[str, int]:
        return {
            "attempted": self.attempted,
            "delivered": self.delivered,
            "retrying": self.retrying,
            "failed": self.failed,
        }


def _backoff(attempts: int, base: timedelta) -> timedelta:
    delay: timedelta = min(base * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)
    return delay


def deliver_pending(
    store: Store,
    now: datetime,
    client: httpx.Client,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    backoff: timedelta = DEFAULT_BACKOFF,
    batch: int = DEFAULT_BATCH,
) -> DeliveryReport:
    """POST every delivery that is due at ``now``; record each outcome durably.

    ``client`` is the caller's :class:`httpx.Client` (it sets timeouts and transport). Oldest
    deliveries go first. Returns counts of what happened in this run.
    """
    due = store.query(
        "SELECT delivery_id, idempotency_key, url, secret, event_type, CAST(payload AS VARCHAR), "
        "created_at, attempts FROM webhook_outbox "
        "WHERE status = 'pending' AND next_attempt_at <= ? "
        "ORDER BY coalesce(created_at, next_attempt_at), delivery_id LIMIT ?",
        [now, batch],
    )
    delivered = retrying = failed = 0
    stamp = int(now.timestamp())
    for delivery_id, key, url, secret, event_type, payload, created_at, attempts in due:
        created = created_at or now
        body = json.dumps(
            {
                "id": delivery_id,
                "type": event_type,
                "created_at": created.isoformat(),
                "data": json.loads(payload),
            },
            sort_keys=True,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: key,
            EVENT_HEADER: event_type,
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(secret, stamp, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = client.post(url, content=body, headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        tries = int(attempts) + 1
        with store.write() as cur:
            if status is not None and 200 <= status < 300:
                cur.execute(
                    "UPDATE webhook_outbox SET status = 'delivered', attempts = ?, "
                    "delivered_at = ?, last_status = ?, last_error = NULL, "
                    "created_at = coalesce(created_at, ?) WHERE delivery_id = ?",
                    [tries, now, status, now, delivery_id],
                )
                delivered += 1
                continue
            refused = status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX
            give_up = refused or tries >= max_attempts
            cur.execute(
                "UPDATE webhook_outbox SET status = ?, attempts = ?, next_attempt_at = ?, "
                "last_status = ?, last_error = ?, created_at = coalesce(created_at, ?) "
                "WHERE delivery_id = ?",
                [
                    "failed" if give_up else "pending",
                    tries,
                    now + _backoff(tries, backoff),
                    status,
                    error or f"HTTP {status}",
                    now,
                    delivery_id,
                ],
            )
            if give_up:
                failed += 1
            else:
                retrying += 1
    return DeliveryReport(len(due), delivered, retrying, failed)


def outbox(store: Store, *, status: str | None = None) -> list[dict[str, Any]]:
    """The outbox rows (without secrets), oldest first; optionally only one ``status``."""
    rows = store.query(
        "SELECT delivery_id, idempotency_key, url, event_type, status, attempts, created_at, "
        "next_attempt_at, delivered_at, last_status, last_error FROM webhook_outbox "
        "WHERE ? IS NULL OR status = ? ORDER BY coalesce(created_at, next_attempt_at), delivery_id",
        [status, status],
    )
    names = (
        "delivery_id",
        "idempotency_key",
        "url",
        "event_type",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "delivered_at",
        "last_status",
        "last_error",
    )
    return [dict(zip(names, row, strict=True)) for row in rows]
