"""Collector routes over a real uvicorn server (in a thread) and a real DuckDB file.

One test per behaviour: each SDK family's wire shape and response, partial batches, dedup,
limits (413), overload (503), CORS and the operations endpoints.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import lzstring
import pytest
from fastapi import FastAPI

import funnelscope
from funnelscope.api import ApiSettings, create_app
from funnelscope.api.collect import PIXEL_GIF
from funnelscope.api.journal import JournalSettings
from funnelscope.api.server import BackgroundServer
from funnelscope.keys import create_key
from funnelscope.workspace import Workspace

SAMPLES = Path(__file__).parent.parent / "data" / "ingest-samples"
TS = "2024-05-01T10:00:00Z"


@dataclass
class Api:
    ws: Workspace
    http: httpx.Client
    key: str
    app: FastAPI

    def basic(self) -> dict[str, str]:
        return {"authorization": "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()}

    def count(self, where: str = "TRUE") -> int:
        return int(self.ws.store.query(f"SELECT count(*) FROM events WHERE {where}")[0][0])

    def quarantined(self) -> list[tuple[Any, ...]]:
        return self.ws.store.query(
            "SELECT row_number, reason_code FROM quarantine ORDER BY row_number"
        )


@contextmanager
def served(
    tmp_path: Path, settings: ApiSettings, journal: JournalSettings | None = None
) -> Iterator[Api]:
    ws = funnelscope.open(tmp_path / "store.duckdb")
    key = create_key(ws.store, "write", "web", now=datetime.now(UTC)).token
    app = create_app(ws, settings, journal=journal)
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        yield Api(ws, http, key, app)
    ws.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with served(
        tmp_path, ApiSettings(max_body_bytes=64 * 1024, max_decoded_bytes=256 * 1024)
    ) as client:
        yield client


def track(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": f"u{i}",
        "messageId": f"m{i}",
        "timestamp": TS,
        **extra,
    }


def ph_event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "event": "$pageview",
        "distinct_id": f"d{i}",
        "uuid": f"00000000-0000-4000-8000-{i:012d}",
        "timestamp": TS,
        "properties": {"$current_url": "https://s.example/"},
        **extra,
    }


# -- Segment / RudderStack -----------------------------------------------------------------------


def test_segment_batch_with_basic_auth(api: Api) -> None:
    r = api.http.post(
        "/v1/batch", json={"batch": [track(1), track(2)], "sentAt": TS}, headers=api.basic()
    )
    assert r.status_code == 200
    assert r.json() == {"success": True, "accepted": 2, "rejected": []}
    assert api.count("source = 'segment:web'") == 2


def test_partial_batch_is_200_with_rejected_indices_and_quarantine(api: Api) -> None:
    batch = [
        track(1),
        "not an object",
        track(3, timestamp="yesterday"),
        track(4),
        {"type": "launch", "userId": "u"},
    ]
    r = api.http.post("/v1/batch", json={"batch": batch, "writeKey": api.key})
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2
    assert [(x["index"], x["code"]) for x in body["rejected"]] == [
        (1, "event.not_an_object"),
        (2, "event.bad_timestamp"),
        (4, "event.unknown_type"),
    ]
    assert all(x["message"] for x in body["rejected"])
    assert api.count() == 2
    assert [code for _, code in api.quarantined()] == [
        "event.not_an_object",
        "event.bad_timestamp",
        "event.unknown_type",
    ]


def test_retried_batch_is_stored_once(api: Api) -> None:
    body = {"batch": [track(1), track(2)], "writeKey": api.key}
    for _ in range(3):
        assert api.http.post("/v1/batch", json=body).status_code == 200
    assert api.count() == 2


@pytest.mark.parametrize("route", ["/v1/track", "/v1/t"])
def test_segment_single_call_text_plain(api: Api, route: str) -> None:
    msg = {
        "event": "Order Completed",
        "userId": "u1",
        "messageId": f"x{route}",
        "timestamp": TS,
        "writeKey": api.key,
        "properties": {"revenue": 12.5, "currency": "EUR"},
    }
    r = api.http.post(route, content=json.dumps(msg), headers={"content-type": "text/plain"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert api.ws.store.query("SELECT event, revenue FROM events")[0] == (
        "order_completed",
        pytest.approx(12.5),
    )


def test_segment_single_call_type_comes_from_the_route(api: Api) -> None:
    r = api.http.post(
        "/v1/p",
        content=json.dumps(
            {
                "name": "Home",
                "anonymousId": "a1",
                "messageId": "p1",
                "timestamp": TS,
                "writeKey": api.key,
            }
        ),
        headers={"content-type": "text/plain"},
    )
    assert r.status_code == 200
    assert api.ws.store.query("SELECT event, page_title FROM events")[0] == ("page_viewed", "Home")


def test_segment_browser_batch_and_gzip(api: Api) -> None:
    body = gzip.compress(json.dumps({"batch": [track(7)], "writeKey": api.key}).encode())
    r = api.http.post("/v1/b", content=body, headers={"content-encoding": "gzip"})
    assert r.status_code == 200 and api.count() == 1


def test_settings_point_analytics_js_here(api: Api) -> None:
    r = api.http.get(f"/v1/projects/{api.key}/settings")
    assert r.status_code == 200
    segment = r.json()["integrations"]["Segment.io"]
    assert segment["apiKey"] == api.key
    assert segment["apiHost"] == f"{api.http.base_url.host}:{api.http.base_url.port}/v1"
    assert api.http.get("/v1/projects/fsw_nope/settings").status_code == 401


def test_unknown_segment_call_is_404(api: Api) -> None:
    r = api.http.post("/v1/launch", json={"writeKey": api.key}, headers=api.basic())
    assert r.status_code == 404 and r.json()["code"] == "route.not_found"


# -- PostHog ---------------------------------------------------------------------------------------


def test_posthog_batch_answers_status_1(api: Api) -> None:
    r = api.http.post(
        "/batch/", json={"api_key": api.key, "batch": [ph_event(1), ph_event(2)], "sent_at": TS}
    )
    assert (r.status_code, r.json()) == (200, {"status": 1})
    assert api.count("source = 'posthog:web'") == 2


def test_posthog_js_gzip_js_array_with_token_in_properties(api: Api) -> None:
    events = [
        ph_event(i, properties={"token": api.key, "$current_url": "https://s.example/"})
        for i in range(3)
    ]
    body = gzip.compress(json.dumps(events).encode())
    r = api.http.post(
        "/e/?compression=gzip-js&ver=1.200&_=1714557600000",
        content=body,
        headers={"content-type": "text/plain"},
    )
    assert r.status_code == 200 and r.json() == {"status": 1}
    assert api.count() == 3


@pytest.mark.parametrize(
    "route", ["/i/v0/e/", "/capture/", "/e", "/capture", "/batch", "/track/", "/engage"]
)
def test_posthog_routes_form_base64(api: Api, route: str) -> None:
    data = base64.b64encode(json.dumps([ph_event(9, api_key=api.key)]).encode()).decode()
    r = api.http.post(
        route,
        content=f"data={quote(data)}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and api.count() == 1


def test_posthog_lz64_and_get_with_data(api: Api) -> None:
    lz = lzstring.LZString().compressToBase64(json.dumps([ph_event(1, api_key=api.key)]))
    assert api.http.post("/e/?compression=lz64", content=lz).status_code == 200
    data = base64.b64encode(json.dumps(ph_event(2, api_key=api.key)).encode()).decode()
    assert api.http.get("/e/", params={"data": data}).status_code == 200
    assert api.count() == 2


def test_posthog_beacon_is_204(api: Api) -> None:
    r = api.http.post("/e/?beacon=1", json=[ph_event(1, api_key=api.key)])
    assert r.status_code == 204 and api.count() == 1


def test_posthog_rejected_events_are_listed(api: Api) -> None:
    r = api.http.post(
        "/batch/",
        json={"api_key": api.key, "batch": [ph_event(1), {"distinct_id": "x", "uuid": "u"}]},
    )
    assert r.status_code == 200
    assert r.json() == {
        "status": 1,
        "rejected": [
            {"index": 1, "code": "event.missing_name", "message": "event name is missing or empty"}
        ],
    }


def test_posthog_different_tokens_are_401(api: Api) -> None:
    r = api.http.post("/e/", json=[ph_event(1, api_key=api.key), ph_event(2, api_key="phc_x")])
    assert r.status_code == 401 and r.json()["code"] == "auth.multiple_keys"


def test_posthog_v1_results_map(api: Api) -> None:
    batch = [ph_event(1), {"uuid": "bad-one", "distinct_id": "x", "timestamp": TS}]
    r = api.http.post(
        "/i/v1/analytics/events",
        json={"created_at": TS, "batch": batch},
        headers={"authorization": f"Bearer {api.key}"},
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert results[batch[0]["uuid"]] == {"result": "ok"}
    assert results["bad-one"]["result"] == "drop"


def test_posthog_flags_stub(api: Api) -> None:
    r = api.http.post("/flags/?v=4", json={"api_key": api.key, "distinct_id": "d"})
    assert r.status_code == 200 and r.json()["flags"] == {}


# -- Snowplow -------------------------------------------------------------------------------------


def test_snowplow_post_sample(api: Api) -> None:
    sample = json.loads((SAMPLES / "snowplow-python-tp2-post.json").read_text())
    body = sample["requests"][0]["body"]
    for event in body["data"]:
        event["aid"] = "web"  # the write key's source name
    r = api.http.post("/com.snowplowanalytics.snowplow/tp2", json=body)
    assert r.status_code == 200 and r.json() == {"accepted": 3, "rejected": []}
    assert api.count("source = 'snowplow:web'") == 3


def test_snowplow_pixel_answers_a_gif(api: Api) -> None:
    r = api.http.get(
        "/i",
        params={
            "e": "pv",
            "aid": "web",
            "eid": "e1",
            "duid": "d1",
            "url": "https://s.example/?utm_source=fb&utm_medium=cpc",
        },
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/gif" and r.content == PIXEL_GIF
    assert api.ws.store.query("SELECT utm_source, channel FROM events")[0] == ("fb", "paid_social")


def test_rudder_pixel_nests_dotted_keys_and_counts_every_load(api: Api) -> None:
    params = {
        "writeKey": api.key,
        "anonymousId": "anon-1",
        "event": "Email Opened",
        "properties.campaign_id": "c9",
        "context.page.url": "https://s.example/?utm_source=newsletter&utm_medium=email",
    }
    for _ in range(2):  # an email opened twice is two opens
        r = api.http.get("/pixel/v1/track", params=params)
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/gif" and r.content == PIXEL_GIF
    rows = api.ws.store.query(
        "SELECT event, anonymous_id, json_extract_string(properties, '$.campaign_id'), "
        "utm_source, channel FROM events"
    )
    assert rows == [("email_opened", "anon-1", "c9", "newsletter", "email")] * 2
    page = api.http.get(
        "/pixel/v1/page", params={"writeKey": api.key, "anonymousId": "a2", "name": "Home"}
    )
    assert page.status_code == 200 and api.count("event = 'page_viewed'") == 1


def test_rudder_merge_links_two_identifiers_into_one_person(api: Api) -> None:
    anonymous = track(1, userId=None, anonymousId="anon-9")
    signed_in = track(2, userId="shopper@example.com")
    r = api.http.post("/v1/batch", json={"batch": [anonymous, signed_in]}, headers=api.basic())
    assert r.json()["accepted"] == 2
    assert api.count("person_id IS NOT NULL") == 2
    assert len(api.ws.store.query("SELECT DISTINCT person_id FROM events")) == 2
    merge = {
        "messageId": "merge-1",
        "timestamp": TS,
        "mergeProperties": [
            {"type": "anonymous_id", "value": "anon-9"},
            {"type": "email", "value": "shopper@example.com"},
        ],
    }
    r = api.http.post("/v1/merge", json=merge, headers=api.basic())
    assert r.status_code == 200 and r.json()["accepted"] == 1
    # the merge is stored as an alias, and stitching now counts the two events as one person
    alias = api.ws.store.query(
        "SELECT event, user_id, json_extract_string(properties, '$.merge_types[1]') "
        "FROM events WHERE event_id = 'merge-1'"
    )
    assert alias == [("alias", "shopper@example.com", "email")]
    people = api.ws.store.query(
        "SELECT count(DISTINCT coalesce(m.canonical_id, e.person_id)) FROM events e "
        "LEFT JOIN person_map m USING (person_id) WHERE e.event_id IN ('m1', 'm2')"
    )
    assert people == [(1,)]
    # a merge without two identifiers is rejected with its reason, not stored
    bad = {**merge, "messageId": "merge-2", "mergeProperties": [{"type": "email"}]}
    r = api.http.post("/v1/batch", json={"batch": [{**bad, "type": "merge"}]}, headers=api.basic())
    assert r.status_code == 200
    assert [x["code"] for x in r.json()["rejected"]] == ["event.bad_merge"]


def test_rudder_pixel_errors(api: Api) -> None:
    assert api.http.get("/pixel/v1/page", params={"anonymousId": "a"}).status_code == 401
    r = api.http.get("/pixel/v1/identify", params={"writeKey": api.key, "anonymousId": "a"})
    assert r.status_code == 404 and r.json()["code"] == "route.not_found"
    bad = api.http.get("/pixel/v1/track", params={"writeKey": api.key, "anonymousId": "a"})
    assert bad.status_code == 200 and bad.headers["x-funnelscope-rejected"] == "event.missing_name"
    assert api.quarantined() == [(0, "event.missing_name")]


def test_snowplow_unknown_app_is_401(api: Api) -> None:
    r = api.http.get("/i", params={"e": "pv", "aid": "nope", "eid": "e1", "duid": "d1"})
    assert r.status_code == 401 and r.json()["code"] == "auth.unknown_app_id"


# -- native and ad spend --------------------------------------------------------------------------


def test_native_events(api: Api) -> None:
    events = [
        {
            "event_id": "n1",
            "event": "purchase",
            "user_id": "u1",
            "timestamp": TS,
            "revenue": "30.00",
            "currency": "EUR",
            "order_id": "o1",
            "items": [{"item_id": "p1", "price": 30, "quantity": 1}],
        },
        {"event_id": "n2", "user_id": "u1", "timestamp": TS},
    ]
    r = api.http.post(
        "/api/v1/events", json={"events": events}, headers={"authorization": f"Bearer {api.key}"}
    )
    assert r.status_code == 200
    assert r.json() == {
        "accepted": 1,
        "rejected": [
            {"index": 1, "code": "event.missing_name", "message": "event name is missing or empty"}
        ],
    }
    assert api.ws.store.query("SELECT event, order_id, items[1].product_id FROM events")[0] == (
        "order_completed",
        "o1",
        "p1",
    )


def test_ad_spend(api: Api) -> None:
    rows = [
        {
            "date": "2024-05-01",
            "channel": "paid_search",
            "source": "google",
            "campaign": "spring",
            "impressions": 1000,
            "clicks": 50,
            "spend": 120.5,
            "currency": "EUR",
        },
        {"date": "2024-05-01", "channel": "telepathy", "impressions": 1, "clicks": 0, "spend": 1},
    ]
    r = api.http.post(
        "/api/v1/ad_spend", json={"rows": rows}, headers={"authorization": f"Bearer {api.key}"}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 1 and [x["index"] for x in body["rejected"]] == [1]
    assert api.ws.store.query("SELECT clicks, spend FROM ad_spend")[0] == (50, pytest.approx(120.5))


# -- bad requests, limits, overload ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "headers", "status", "code"),
    [
        pytest.param("/v1/batch", b"{not json", {}, 400, "body.bad_json", id="bad-json"),
        pytest.param("/v1/batch", b"[1, 2]", {}, 400, "batch.invalid", id="batch-not-object"),
        pytest.param("/v1/batch", b'{"batch": []}', {}, 400, "batch.empty", id="empty-batch"),
        pytest.param("/v1/batch", b'{"batch": {}}', {}, 400, "batch.invalid", id="batch-object"),
        pytest.param("/batch/", b"", {}, 400, "body.empty", id="posthog-empty"),
        pytest.param("/e/", b"\x1f\x8b\x08garbage", {}, 400, "body.bad_gzip", id="bad-gzip"),
        pytest.param(
            "/v1/batch", b"x" * (65 * 1024), {}, 413, "body.too_large", id="body-over-limit"
        ),
        pytest.param(
            "/v1/batch",
            gzip.compress(b" " * (1024 * 1024)),
            {"content-encoding": "gzip"},
            413,
            "body.too_large",
            id="gzip-bomb",
        ),
    ],
)
def test_rejected_requests_carry_a_code(
    api: Api, route: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    r = api.http.post(route, content=body, headers={**api.basic(), **headers})
    assert r.status_code == status
    assert r.json()["code"] == code
    assert r.json()["message"] == r.json()["detail"]


def test_too_many_events_is_413(tmp_path: Path) -> None:
    with served(tmp_path, ApiSettings(max_batch_events=3)) as api:
        r = api.http.post(
            "/v1/batch", json={"batch": [track(i) for i in range(4)]}, headers=api.basic()
        )
        assert r.status_code == 413 and r.json()["code"] == "batch.too_many_events"


def test_chunked_body_over_the_limit_is_413(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    r = api.http.post("/v1/batch", content=chunks(), headers=api.basic())
    assert r.status_code == 413


def _send_in_thread(api: Api, i: int, results: list[int]) -> threading.Thread:
    def send() -> None:
        r = api.http.post(
            "/v1/batch", json={"batch": [track(i), track(100 + i)]}, headers=api.basic()
        )
        results.append(r.status_code)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _assert_overloaded(api: Api) -> None:
    r = api.http.post("/v1/batch", json={"batch": [track(3), track(103)]}, headers=api.basic())
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json()["code"] == "server.overloaded"


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    with served(tmp_path, ApiSettings(max_queue_events=4, commit_timeout_seconds=20)) as api:
        results: list[int] = []
        # hold the journal: the ack thread blocks on its first group, so the queue fills
        with api.app.state.writer.journal._lock:
            first = _send_in_thread(api, 1, results)
            time.sleep(0.5)  # the ack thread takes the first batch and waits for the journal
            second = _send_in_thread(api, 2, results)
            time.sleep(0.5)  # the second batch waits in the queue: 4 of 4 events
            _assert_overloaded(api)
        first.join()
        second.join()
        assert results == [200, 200]
        assert api.count() == 4
        metrics = api.http.get("/metrics").text
        assert "funnelscope_overload_rejections_total 1.0" in metrics


def test_journal_backlog_bound_answers_503(tmp_path: Path) -> None:
    journal = JournalSettings(max_backlog_events=4)
    with served(tmp_path, ApiSettings(), journal=journal) as api:
        results: list[int] = []
        # hold the store: the loader cannot load, so acknowledged events pile up in the journal
        with api.ws.store._lock:
            _send_in_thread(api, 1, results).join()
            _send_in_thread(api, 2, results).join()
            assert results == [200, 200]  # acknowledged while the store is blocked
            assert api.app.state.writer.backlog_events == 4
            _assert_overloaded(api)
            metrics = api.http.get("/metrics").text
            assert "funnelscope_journal_backlog_events 4.0" in metrics
        assert api.count() == 4  # the read waits for the loader, which now catches up
        assert api.app.state.writer.backlog_events == 0


# -- CORS, operations -----------------------------------------------------------------------------


def test_cors_preflight_and_simple_request(api: Api) -> None:
    origin = "https://shop.example.com"
    r = api.http.options(
        "/e/",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    r = api.http.post(
        "/v1/t",
        content=json.dumps({**track(5), "writeKey": api.key}),
        headers={"origin": origin, "content-type": "text/plain"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin


def test_cors_origin_list_is_enforced(tmp_path: Path) -> None:
    with served(tmp_path, ApiSettings(cors_origins=("https://shop.example.com",))) as api:
        r = api.http.options(
            "/v1/batch",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in r.headers


def test_health_ready_metrics(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "writer": True,
        "queue": True,
        "store": True,
    }
    api.http.post("/v1/batch", json={"batch": [track(1), 7], "writeKey": api.key})
    text = api.http.get("/metrics").text
    assert 'funnelscope_events_accepted_total{family="segment"} 1.0' in text
    assert (
        'funnelscope_events_rejected_total{family="segment",reason="event.not_an_object"} 1.0'
        in text
    )
    assert 'funnelscope_request_duration_seconds_count{route="/v1/batch"}' in text
    assert "funnelscope_queue_events 0.0" in text


def test_openapi_lists_the_ingestion_routes(api: Api) -> None:
    paths = api.http.get("/openapi.json").json()["paths"]
    for route in (
        "/v1/batch",
        "/v1/{call}",
        "/batch/",
        "/e/",
        "/i/v0/e/",
        "/capture/",
        "/com.snowplowanalytics.snowplow/tp2",
        "/i",
        "/api/v1/events",
        "/api/v1/ad_spend",
        "/api/v1/live",
        "/healthz",
        "/metrics",
    ):
        assert route in paths, route
