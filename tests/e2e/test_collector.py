"""Real time over a real server: an acknowledged event is in the live view within 1 s, both
in ``GET /api/v1/live`` and in the server-sent-events stream.

Acknowledged means journaled; the loader moves the journal into the store about once a second, and a
read of the store in the server process first waits for what was acknowledged before it."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import funnelscope
from funnelscope.api import ApiSettings, create_app
from funnelscope.api.server import BackgroundServer
from funnelscope.keys import create_key

pytestmark = pytest.mark.e2e


class Live:
    def __init__(self, url: str, write: str, read: str) -> None:
        self.url, self.write, self.read = url, write, read
        self.http = httpx.Client(base_url=url, timeout=30)

    def send(self, events: list[dict[str, Any]]) -> float:
        """Post a Segment batch; return the time the acknowledgement arrived."""
        auth = base64.b64encode(f"{self.write}:".encode()).decode()
        r = self.http.post(
            "/v1/batch", json={"batch": events}, headers={"authorization": f"Basic {auth}"}
        )
        assert r.status_code == 200 and not r.json()["rejected"], r.text
        return time.monotonic()

    def live(self) -> dict[str, Any]:
        r = self.http.get("/api/v1/live", headers={"authorization": f"Bearer {self.read}"})
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        return body


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    ws = funnelscope.open(tmp_path / "store.duckdb")
    now = datetime.now(UTC)
    write = create_key(ws.store, "write", "web", now=now).token
    read = create_key(ws.store, "read", "dash", now=now).token
    with BackgroundServer(create_app(ws, ApiSettings(live_interval_seconds=0.1))) as server:
        client = Live(server.url, write, read)
        yield client
        client.http.close()
    ws.close()


def event(n: int, name: str, ts: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "messageId": f"m{n}",
        "timestamp": ts.isoformat(),
        **extra,
    }


def test_live_numbers_right_after_the_acknowledgement(live: Live) -> None:
    now = datetime.now(UTC)
    since_midnight = now - now.replace(hour=0, minute=0, second=0, microsecond=0)
    if since_midnight < timedelta(seconds=30):
        # 'today' would split the journey across two days: wait until the day has begun
        time.sleep((timedelta(seconds=31) - since_midnight).total_seconds())
        now = datetime.now(UTC)
    ts = now - timedelta(seconds=5)
    before = live.live()
    assert (before["orders"], before["active_visitors"], before["events_last_minute"]) == (0, 0, 0)
    live.send(
        [
            event(1, "Product Viewed", ts, userId="u1"),
            event(2, "Product Added", ts, userId="u1"),
            event(
                3, "Order Completed", ts, userId="u1", properties={"revenue": 45, "currency": "EUR"}
            ),
            {"type": "page", "anonymousId": "a2", "messageId": "m4", "timestamp": ts.isoformat()},
            # u3 ordered two days ago and again now: a repeat order is Retention, not Action
            event(
                5,
                "Order Completed",
                now - timedelta(days=2),
                userId="u3",
                properties={"revenue": 10, "currency": "EUR"},
            ),
            event(
                6,
                "Order Completed",
                ts,
                userId="u3",
                properties={"revenue": 12.5, "currency": "USD"},
            ),
        ]
    )
    # no waiting on our side: the live view's read waits until the journal is loaded
    snap = live.live()
    assert snap["events_last_minute"] == 5
    assert sum(m["events"] for m in snap["events_per_minute"]) == 5
    assert len(snap["events_per_minute"]) == 30
    assert snap["active_visitors"] == 3
    assert snap["orders"] == 2
    assert snap["revenue"] == [
        {"currency": "EUR", "amount": "45.0000"},
        {"currency": "USD", "amount": "12.5000"},
    ]
    assert {s["stage"]: s["persons"] for s in snap["today"]["stages"]} == {
        "awareness": 0,
        "interest": 2,
        "decision": 1,
        "action": 1,
        "retention": 1,
    }


def test_stream_shows_an_event_within_a_second_of_its_acknowledgement(live: Live) -> None:
    frames: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(timeout=30) as client,
            client.stream("GET", f"{live.url}/api/v1/live/stream", params={"key": live.read}) as r,
        ):
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    frames.append((time.monotonic(), json.loads(line[6:])))
                if stop.is_set():
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    deadline = time.monotonic() + 10
    while not frames and time.monotonic() < deadline:
        time.sleep(0.02)
    assert frames and frames[-1][1]["orders"] == 0
    acked = live.send(
        [
            event(
                1,
                "Order Completed",
                datetime.now(UTC),
                userId="u1",
                properties={"revenue": 30, "currency": "EUR"},
            )
        ]
    )
    seen = None
    while seen is None and time.monotonic() < acked + 5:
        seen = next((t for t, f in list(frames) if t >= acked and f["orders"] == 1), None)
        time.sleep(0.01)
    stop.set()
    assert seen is not None, "the order never appeared in the stream"
    assert seen - acked < 1.0
    listener.join(timeout=5)
