"""The collector's short path (``CollectorApp.hot_routes``) answers exactly as FastAPI's stack.

One real uvicorn server over a real DuckDB file; every request below is sent twice, once with the
short path on and once with it off (``app.hot_routes = {}``), and the two answers must agree
byte for byte: status, body and the headers SDKs read. The request metrics must count both.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import Request

import funnelscope
from funnelscope.api import ApiSettings, create_app
from funnelscope.api.app import CollectorApp
from funnelscope.api.collect import HOT_ROUTES
from funnelscope.api.server import BackgroundServer
from funnelscope.keys import create_key
from funnelscope.workspace import Workspace
from tests.unit.test_api_collect import ph_event

TS = "2024-05-01T10:00:00Z"
#: The headers an SDK or a proxy reads; both paths must send the same.
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "retry-after",
    "x-ratelimit-reset",
    "www-authenticate",
    "access-control-allow-origin",
)


@dataclass
class Served:
    ws: Workspace
    app: CollectorApp
    http: httpx.Client
    calls: dict[str, int]  # requests the short path served, by path

    def new_key(self) -> str:
        """A fresh write key (its own rate-limit bucket), visible at once."""
        token = create_key(self.ws.store, "write", "web", now=datetime.now(UTC)).token
        self.app.state.keys.reload()
        return token


def _counting(
    path: str, route: Callable[[Request], Awaitable[Any]], calls: dict[str, int]
) -> Callable[[Request], Awaitable[Any]]:
    async def counted(request: Request) -> Any:
        calls[path] = calls.get(path, 0) + 1
        return await route(request)

    return counted


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ws = funnelscope.open(tmp_path_factory.mktemp("hot") / "store.duckdb")
    settings = ApiSettings(
        max_body_bytes=64 * 1024,
        max_decoded_bytes=256 * 1024,
        max_batch_events=50,
        # two requests per key: one per path, then 429 for both
        rate_limit_per_second=0.001,
        rate_limit_burst=2,
        webhooks_every_seconds=0,
        segments_every_seconds=0,
        goals_every_seconds=0,
        overview_warm_seconds=0,
    )
    app = create_app(ws, settings)
    assert isinstance(app, CollectorApp)
    calls: dict[str, int] = {}
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Served(ws, app, http, calls)
    ws.close()


def _both(
    served: Served, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The same request through the short path, then through FastAPI's stack."""
    hot = dict(served.app.hot_routes)
    served.app.hot_routes = {p: _counting(p, r, served.calls) for p, r in HOT_ROUTES.items()}
    try:
        short = served.http.request(method, url, **kwargs)
        served.app.hot_routes = {}
        full = served.http.request(method, url, **kwargs)
    finally:
        served.app.hot_routes = hot
    return short, full


def _assert_same(short: httpx.Response, full: httpx.Response) -> None:
    assert short.status_code == full.status_code
    assert short.content == full.content
    for name in COMPARED_HEADERS:
        assert short.headers.get(name) == full.headers.get(name), name


def track(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"u{i}",
        "messageId": f"hot-{i}",
        "timestamp": TS,
        "properties": {"order_id": f"o{i}", "revenue": 12.5, "currency": "EUR"},
        **extra,
    }


def _basic(key: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _gzip_bomb() -> bytes:
    return gzip.compress(b'{"batch": [' + b" " * (1024 * 1024) + b"]}")


# (name, path, request kwargs given a fresh key, expected status, expected code or None)
CASES: list[tuple[str, str, Callable[[str], dict[str, Any]], int, str | None]] = [
    (
        "segment batch, one bad message",
        "/v1/batch",
        lambda k: {
            "json": {"batch": [track(1), {"type": "launch"}, track(2)], "sentAt": TS},
            "headers": _basic(k),
        },
        200,
        None,
    ),
    (
        "analytics.js text/plain, key in the body",
        "/v1/b",
        lambda k: {
            "content": json.dumps({"batch": [track(3)], "writeKey": k}).encode(),
            "headers": {"content-type": "text/plain"},
        },
        200,
        None,
    ),
    (
        "rudder import, gzip",
        "/v1/import",
        lambda k: {
            "content": gzip.compress(json.dumps({"batch": [track(4)]}).encode()),
            "headers": {**_basic(k), "content-encoding": "gzip"},
        },
        200,
        None,
    ),
    (
        "rudder beacon, key in the query",
        "/beacon/v1/batch?writeKey={k}",
        lambda k: {"json": {"batch": [track(5)]}},
        200,
        None,
    ),
    ("no key", "/v1/batch", lambda k: {"json": {"batch": [track(6)]}}, 401, "auth.missing_key"),
    (
        "unknown key",
        "/v1/batch",
        lambda k: {"json": {"batch": [track(6)]}, "headers": _basic("nope")},
        401,
        "auth.unknown_key",
    ),
    (
        "not JSON",
        "/v1/batch",
        lambda k: {"content": b"{nope", "headers": _basic(k)},
        400,
        None,
    ),
    (
        "empty batch",
        "/v1/batch",
        lambda k: {"json": {"batch": []}, "headers": _basic(k)},
        400,
        "batch.empty",
    ),
    (
        "too many events",
        "/v1/batch",
        lambda k: {"json": {"batch": [track(i) for i in range(51)]}, "headers": _basic(k)},
        413,
        "batch.too_many_events",
    ),
    (
        "body too large",
        "/v1/batch",
        lambda k: {"content": b" " * (65 * 1024), "headers": _basic(k)},
        413,
        "body.too_large",
    ),
    (
        "gzip bomb",
        "/v1/batch",
        lambda k: {
            "content": _gzip_bomb(),
            "headers": {**_basic(k), "content-encoding": "gzip"},
        },
        413,
        "body.too_large",
    ),
    (
        "posthog batch with a bad event",
        "/batch/",
        lambda k: {"json": {"api_key": k, "batch": [ph_event(1), ph_event(2, timestamp="x")]}},
        200,
        None,
    ),
    (
        "posthog beacon",
        "/batch?beacon=1",
        lambda k: {"json": {"api_key": k, "batch": [ph_event(3)]}},
        204,
        None,
    ),
    (
        "posthog-js gzip-js to /e/",
        "/e/?compression=gzip-js",
        lambda k: {
            "content": gzip.compress(json.dumps([ph_event(4, api_key=k)]).encode()),
            "headers": {"content-type": "text/plain"},
        },
        200,
        None,
    ),
    (
        "posthog different tokens",
        "/batch/",
        lambda k: {"json": [ph_event(5, api_key=k), ph_event(6, api_key="other")]},
        401,
        "auth.multiple_keys",
    ),
    (
        "native events, one bad",
        "/api/v1/events",
        lambda k: {
            "json": {
                "events": [
                    {"event_id": "n1", "event": "Product Viewed", "user_id": "u", "timestamp": TS},
                    {"event_id": "n2", "event": "Product Viewed", "timestamp": "nope"},
                ]
            },
            "headers": {"authorization": f"Bearer {k}"},
        },
        200,
        None,
    ),
]


@pytest.mark.parametrize(
    ("path", "make", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_both_paths_answer_the_same(
    served: Served, path: str, make: Callable[[str], dict[str, Any]], status: int, code: str | None
) -> None:
    key = served.new_key()
    url = path.replace("{k}", key)
    before = dict(served.calls)
    short, full = _both(served, "POST", url, **make(key))
    _assert_same(short, full)
    assert short.status_code == status
    if code is not None:
        assert short.json()["code"] == code
    route = url.partition("?")[0]
    assert served.calls.get(route, 0) == before.get(route, 0) + 1  # the short path served it


def test_rate_limited_is_429_on_both(served: Served) -> None:
    key = served.new_key()
    body = {"batch": [track(7)]}
    for _ in range(2):  # the key's burst
        assert served.http.post("/v1/batch", json=body, headers=_basic(key)).status_code == 200
    short, full = _both(served, "POST", "/v1/batch", json=body, headers=_basic(key))
    _assert_same(short, full)
    assert short.status_code == 429
    assert short.json()["code"] == "rate.limited"
    assert int(short.headers["retry-after"]) >= 1


def test_browser_requests_take_the_full_stack_with_cors(served: Served) -> None:
    key = served.new_key()
    before = dict(served.calls)
    short, full = _both(
        served,
        "POST",
        "/v1/batch",
        json={"batch": [track(8)], "writeKey": key},
        headers={"origin": "https://shop.example.com"},
    )
    _assert_same(short, full)
    assert short.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert served.calls.get("/v1/batch", 0) == before.get("/v1/batch", 0)


def test_retries_across_the_paths_are_stored_once(served: Served) -> None:
    key = served.new_key()
    batch = [track(100 + i, messageId=f"dedup-{i}") for i in range(3)]
    short, full = _both(served, "POST", "/v1/batch", json={"batch": batch}, headers=_basic(key))
    assert short.json() == full.json() == {"success": True, "accepted": 3, "rejected": []}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and served.app.state.writer.backlog_events:
        time.sleep(0.05)
    stored = served.ws.store.query(
        "SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_id LIKE 'dedup-%'"
    )[0]
    assert tuple(stored) == (3, 3)


def test_request_metrics_count_both_paths(served: Served) -> None:
    key = served.new_key()
    _both(served, "POST", "/v1/batch", json={"batch": [track(9)]}, headers=_basic(key))
    _both(served, "POST", "/v1/batch", json={"batch": []}, headers=_basic(key))  # 429 by now
    text = served.http.get("/metrics").text
    counts = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("funnelscope_requests_total{")
    }
    # every request above and in the other tests went once each way: even counts per label
    posted = {k: v for k, v in counts.items() if 'route="/v1/batch"' in k}
    assert posted and all(v % 2 == 0 for v in posted.values()), posted
    assert 'funnelscope_requests_total{route="/v1/batch",status="429"}' in counts


def test_an_unexpected_error_is_a_500_and_counted(served: Served) -> None:
    async def broken(request: Request) -> Any:
        raise RuntimeError("a bug")

    hot = served.app.hot_routes
    served.app.hot_routes = {"/v1/batch": broken}
    try:
        r = served.http.post("/v1/batch", json={"batch": [track(10)]})
    finally:
        served.app.hot_routes = hot
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    text = served.http.get("/metrics").text
    assert 'funnelscope_requests_total{route="/v1/batch",status="500"} 1.0' in text
