"""The webhook outbox against a real HTTP receiver in a thread: downtime, errors, lost acks."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from funnelscope.errors import InvalidInputError
from funnelscope.store.store import Store
from funnelscope.webhooks import (
    DEFAULT_BACKOFF,
    deliver_pending,
    enqueue,
    outbox,
    sign,
    verify_signature,
)

SECRET = "whsec-test"
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


class Receiver:
    """A tiny webhook receiver that dedups by Idempotency-Key and can misbehave on purpose.

    ``plan`` holds the answers for the next requests: an HTTP status, or ``"lost-ack"``
    (process the delivery, then answer 500 as if the response never reached the sender).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.plan: list[int | str] = []
        self.requests: list[dict[str, Any]] = []  # every POST that arrived
        self.processed: Counter[str] = Counter()  # keys acted upon (after dedup)
        self.bad_signatures = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                ok = verify_signature(
                    SECRET,
                    body,
                    self.headers["Funnelscope-Timestamp"],
                    self.headers["Funnelscope-Signature"],
                    now=datetime.fromtimestamp(int(self.headers["Funnelscope-Timestamp"]), UTC),
                )
                receiver.requests.append({"key": key, "body": json.loads(body)})
                if not ok:
                    receiver.bad_signatures += 1
                    self._answer(401)
                    return
                answer = receiver.plan.pop(0) if receiver.plan else 200
                if answer in (200, "lost-ack") and key not in receiver.processed:
                    receiver.processed[key] += 1
                elif answer in (200, "lost-ack"):
                    receiver.processed[key] += 0  # duplicate: acknowledged, not acted upon
                self._answer(500 if answer == "lost-ack" else int(answer))

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(_free_port())
    yield r
    r.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


def test_downtime_errors_and_lost_acks_lose_and_duplicate_nothing(
    tmp_path: Path, receiver: Receiver, client: httpx.Client
) -> None:
    path = tmp_path / "store.duckdb"
    store = Store(path)
    keys = [f"segment.changed:vip:{i}" for i in range(5)]
    for i, key in enumerate(keys):
        enqueue(store, receiver.url, SECRET, "segment.changed", {"n": i}, key, now=T0)
    store.close()
    store = Store(path)  # the queue survives a restart

    # receiver down: every attempt fails with a connection error and is rescheduled
    report = deliver_pending(store, T0, client)
    assert report.to_dict() == {"attempted": 5, "delivered": 0, "retrying": 5, "failed": 0}
    assert {row["attempts"] for row in outbox(store)} == {1}
    # backoff: nothing is due 10 s later
    assert deliver_pending(store, T0 + timedelta(seconds=10), client).attempted == 0

    # receiver up but flaky: two 503s and one processed delivery whose 2xx is lost
    receiver.start()
    receiver.plan = [503, 503, "lost-ack"]
    report = deliver_pending(store, T0 + DEFAULT_BACKOFF, client)
    assert report.to_dict() == {"attempted": 5, "delivered": 2, "retrying": 3, "failed": 0}
    # second backoff step is twice the first
    assert deliver_pending(store, T0 + DEFAULT_BACKOFF * 2, client).attempted == 0
    report = deliver_pending(store, T0 + DEFAULT_BACKOFF * 3, client)
    assert report.to_dict() == {"attempted": 3, "delivered": 3, "retrying": 0, "failed": 0}

    # nothing lost, nothing acted on twice; the lost ack caused exactly one redelivery
    assert receiver.processed == Counter({k: 1 for k in keys})
    arrived = Counter(r["key"] for r in receiver.requests)
    assert sorted(arrived.values()) == [1, 1, 2, 2, 2]
    assert receiver.bad_signatures == 0
    assert {r["body"]["data"]["n"] for r in receiver.requests} == set(range(5))
    rows = outbox(store)
    assert [r["status"] for r in rows] == ["delivered"] * 5
    assert all(r["delivered_at"] is not None for r in rows)

    # enqueuing a fact already sent does nothing
    enqueue(store, receiver.url, SECRET, "segment.changed", {"n": 0}, keys[0], now=T0)
    assert deliver_pending(store, T0 + timedelta(days=1), client).attempted == 0
    store.close()


def test_a_refusing_receiver_fails_the_delivery_at_once(
    tmp_path: Path, receiver: Receiver, client: httpx.Client
) -> None:
    store = Store(tmp_path / "s.duckdb")
    receiver.start()
    receiver.plan = [422]
    enqueue(store, receiver.url, SECRET, "goal.status_changed", {"goal": "g"}, "g-1", now=T0)
    report = deliver_pending(store, T0, client)
    assert (report.failed, report.retrying) == (1, 0)
    (row,) = outbox(store)
    assert (row["status"], row["last_status"]) == ("failed", 422)
    store.close()


def test_deliveries_give_up_after_max_attempts(tmp_path: Path, client: httpx.Client) -> None:
    store = Store(tmp_path / "s.duckdb")
    url = f"http://127.0.0.1:{_free_port()}/down"
    enqueue(store, url, SECRET, "t", {}, "k", now=T0)
    now = T0
    outcomes = []
    for _ in range(3):
        r = deliver_pending(store, now, client, max_attempts=3)
        outcomes.append((r.retrying, r.failed))
        now += timedelta(hours=7)
    assert outcomes == [(1, 0), (1, 0), (0, 1)]
    assert outbox(store, status="failed")[0]["attempts"] == 3
    store.close()


def test_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, body) == "sha256=" + expected
    now = datetime.fromtimestamp(1700000000, UTC)
    assert verify_signature("k", body, "1700000000", "sha256=" + expected, now=now)
    assert not verify_signature("k", body + b" ", "1700000000", "sha256=" + expected, now=now)
    assert not verify_signature("other", body, "1700000000", "sha256=" + expected, now=now)
    late = now + timedelta(minutes=6)
    assert not verify_signature("k", body, "1700000000", "sha256=" + expected, now=late)


@pytest.mark.parametrize(
    ("url", "secret", "event_type", "key", "code"),
    [
        pytest.param("ftp://x", "s", "t", "k", "webhook.bad_url", id="bad-url"),
        pytest.param("http://x", "", "t", "k", "webhook.missing_secret", id="no-secret"),
        pytest.param("http://x", "s", "", "k", "webhook.missing_type", id="no-type"),
        pytest.param("http://x", "s", "t", "", "webhook.bad_key", id="no-key"),
        pytest.param("http://x", "s", "t", "k" * 201, "webhook.bad_key", id="long-key"),
    ],
)
def test_bad_enqueue_arguments(
    tmp_path: Path, url: str, secret: str, event_type: str, key: str, code: str
) -> None:
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(InvalidInputError) as err:
        enqueue(store, url, secret, event_type, {}, key)
    assert err.value.code == code
    store.close()
