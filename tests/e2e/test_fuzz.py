"""Bad input on every ingestion route: schemathesis from the OpenAPI spec, and a hypothesis fuzzer
sending broken encodings, broken JSON and strange events. No 5xx, no crash; every rejection
(a 4xx, or an event listed as rejected in a 200) carries a reason code.

Example counts are kept small so the module runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import lzstring
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funnelscope
from funnelscope.api import ApiSettings, create_app
from funnelscope.api.server import BackgroundServer
from funnelscope.keys import create_key
from funnelscope.workspace import Workspace

pytestmark = pytest.mark.e2e


@dataclass
class Server:
    url: str
    write: str
    read: str
    ws: Workspace


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = funnelscope.open(tmp_path_factory.mktemp("fuzz") / "store.duckdb")
    now = datetime.now(UTC)
    write = create_key(ws.store, "write", "web", now=now).token
    read = create_key(ws.store, "read", "dash", now=now).token
    settings_ = ApiSettings(
        max_body_bytes=256 * 1024,
        max_decoded_bytes=1024 * 1024,
        max_batch_events=200,
        rate_limit_per_second=0,
    )
    with BackgroundServer(create_app(ws, settings_)) as srv:
        yield Server(srv.url, write, read, ws)
    ws.close()


def check_rejections(status: int, content_type: str, body: bytes) -> None:
    assert status < 500, body[:500]
    if status >= 400 and status != 405:
        payload = json.loads(body)
        assert isinstance(payload.get("code"), str) and payload["code"], payload
        assert payload.get("message"), payload
    elif status == 200 and content_type.startswith("application/json"):
        payload = json.loads(body)
        rejected = payload.get("rejected", []) if isinstance(payload, dict) else []
        assert all(r["code"] and isinstance(r["index"], int) for r in rejected), payload


# -- schemathesis ---------------------------------------------------------------------------------

#: Every operation of the collector in the OpenAPI spec (the live stream never ends: left out).
OPERATIONS = [
    ("POST", "/api/v1/events"),
    ("POST", "/v1/batch"),
    ("POST", "/v1/b"),
    ("POST", "/v1/{call}"),
    ("GET", "/v1/projects/{write_key}/settings"),
    ("POST", "/batch/"),
    ("GET", "/e/"),
    ("POST", "/e/"),
    ("GET", "/i/v0/e/"),
    ("POST", "/i/v0/e/"),
    ("GET", "/capture/"),
    ("POST", "/capture/"),
    ("POST", "/i/v1/analytics/events"),
    ("POST", "/com.snowplowanalytics.snowplow/tp2"),
    ("GET", "/i"),
    ("POST", "/api/v1/ad_spend"),
    ("GET", "/api/v1/live"),
]


@pytest.fixture(scope="module")
def api_schema(server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_openapi_operations_never_fail(
    api_schema: Any, server: Server, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    key = server.read if path.startswith("/api/v1/live") else server.write

    @settings(
        max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(headers={"authorization": f"Bearer {key}"}, timeout=30)
        content_type = response.headers.get("content-type") or [""]
        check_rejections(response.status_code, content_type[0], response.content)

    run()


# -- hypothesis fuzzer ----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
timestamps = (
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    | st.integers(-(2**40), 2**45)
    | st.text(max_size=30)
    | st.none()
)
products = st.lists(
    st.dictionaries(
        st.sampled_from(["product_id", "item_id", "sku", "name", "price", "quantity", "brand"]),
        scalars,
        max_size=5,
    ),
    max_size=3,
)
properties = (
    st.dictionaries(
        st.sampled_from(
            [
                "revenue",
                "value",
                "total",
                "currency",
                "order_id",
                "products",
                "items",
                "product_id",
                "price",
                "quantity",
                "utm_source",
                "$current_url",
                "$set",
                "token",
                "distinct_id",
                "$device_id",
                "other",
            ]
        ),
        scalars | products | json_values,
        max_size=6,
    )
    | json_values
)


def segment_message() -> st.SearchStrategy[Any]:
    return (
        st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["track", "page", "identify", "alias", "group", "screen"])
                | scalars,
                "event": scalars,
                "userId": scalars,
                "anonymousId": scalars,
                "previousId": scalars,
                "messageId": st.uuids().map(str) | scalars,
                "timestamp": timestamps,
                "properties": properties,
                "traits": json_values,
                "context": st.fixed_dictionaries(
                    {},
                    optional={
                        "page": json_values,
                        "campaign": json_values,
                        "userAgent": scalars,
                        "locale": scalars,
                        "traits": json_values,
                    },
                ),
            },
        )
        | json_values
    )


def posthog_event() -> st.SearchStrategy[Any]:
    return (
        st.fixed_dictionaries(
            {},
            optional={
                "event": scalars | st.sampled_from(["$pageview", "$identify", "$create_alias"]),
                "distinct_id": json_values,
                "uuid": st.uuids().map(str) | scalars,
                "timestamp": timestamps,
                "offset": scalars,
                "properties": properties,
                "$set": json_values,
            },
        )
        | json_values
    )


def snowplow_event() -> st.SearchStrategy[Any]:
    return (
        st.dictionaries(
            st.sampled_from(
                [
                    "e",
                    "eid",
                    "uid",
                    "duid",
                    "dtm",
                    "stm",
                    "ttm",
                    "url",
                    "se_ac",
                    "ue_px",
                    "ue_pr",
                    "cx",
                    "co",
                    "tr_tt",
                    "ti_pr",
                    "aid",
                ]
            ),
            st.text(max_size=40) | st.sampled_from(["pv", "se", "ue", "tr", "ti", "web"]),
            max_size=8,
        ).map(lambda d: {**d, "aid": "web"} if "aid" not in d else d)
        | json_values
    )


def encoded(payload: Any, how: str) -> tuple[bytes, dict[str, str], dict[str, str]]:
    """(body, headers, params) for a JSON payload wrapped the way ``how`` says."""
    raw = json.dumps(payload).encode()
    if how == "gzip":
        return gzip.compress(raw), {"content-encoding": "gzip"}, {}
    if how == "gzip-js":
        return gzip.compress(raw), {"content-type": "text/plain"}, {"compression": "gzip-js"}
    if how == "base64":
        return base64.b64encode(raw), {}, {"compression": "base64"}
    if how == "lz64":
        return (
            lzstring.LZString().compressToBase64(raw.decode()).encode(),
            {},
            {"compression": "lz64"},
        )
    if how == "truncated":
        return raw[: max(len(raw) // 2, 1)], {}, {}
    if how == "bad-gzip":
        return b"\x1f\x8b" + raw, {"content-encoding": "gzip"}, {}
    return raw, {"content-type": "application/json"}, {}


ENCODINGS = st.sampled_from(
    ["json", "json", "gzip", "gzip-js", "base64", "lz64", "truncated", "bad-gzip"]
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: st.SearchStrategy[Any]


def batch_of(events: st.SearchStrategy[Any], key: str, extra: dict[str, Any]) -> Any:
    return (
        st.builds(
            lambda b, e: {key: b, **e},
            st.lists(events, min_size=0, max_size=6),
            st.fixed_dictionaries({}, optional=extra),
        )
        | json_values
    )


ROUTES = [
    Route(
        "POST",
        "/v1/batch",
        batch_of(segment_message(), "batch", {"sentAt": timestamps, "context": json_values}),
    ),
    Route("POST", "/v1/track", segment_message()),
    Route("POST", "/v1/i", segment_message()),
    Route("POST", "/v1/b", batch_of(segment_message(), "batch", {})),
    Route("POST", "/batch/", batch_of(posthog_event(), "batch", {"sent_at": timestamps})),
    Route("POST", "/e/", st.lists(posthog_event(), max_size=5) | posthog_event()),
    Route("POST", "/i/v0/e/", st.lists(posthog_event(), max_size=5)),
    Route("POST", "/capture/", posthog_event()),
    Route(
        "POST",
        "/i/v1/analytics/events",
        batch_of(posthog_event(), "batch", {"created_at": timestamps}),
    ),
    Route(
        "POST",
        "/com.snowplowanalytics.snowplow/tp2",
        batch_of(snowplow_event(), "data", {"schema": scalars}),
    ),
    Route(
        "POST",
        "/api/v1/events",
        batch_of(
            json_values
            | st.dictionaries(
                st.sampled_from(
                    [
                        "event_id",
                        "event",
                        "user_id",
                        "timestamp",
                        "revenue",
                        "currency",
                        "items",
                        "properties",
                    ]
                ),
                json_values,
                max_size=6,
            ),
            "events",
            {},
        ),
    ),
    Route(
        "POST",
        "/api/v1/ad_spend",
        batch_of(
            st.dictionaries(
                st.sampled_from(["date", "channel", "impressions", "clicks", "spend", "currency"]),
                scalars,
                max_size=6,
            ),
            "rows",
            {},
        ),
    ),
]


@pytest.mark.parametrize("route", ROUTES, ids=[r.path for r in ROUTES])
def test_fuzz_ingestion_route(server: Server, route: Route) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:

        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(payload=route.body, how=ENCODINGS, key_in=st.sampled_from(["header", "body"]))
        def run(payload: Any, how: str, key_in: str) -> None:
            if key_in == "body" and isinstance(payload, dict):
                payload = {**payload, "writeKey": server.write, "api_key": server.write}
            body, headers, params = encoded(payload, how)
            if key_in == "header":
                headers["authorization"] = f"Bearer {server.write}"
            r = http.request(route.method, route.path, content=body, headers=headers, params=params)
            check_rejections(r.status_code, r.headers.get("content-type", ""), r.content)

        run()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(params=snowplow_event().filter(lambda p: isinstance(p, dict)))
def test_fuzz_snowplow_pixel(server: Server, params: dict[str, Any]) -> None:
    r = httpx.get(f"{server.url}/i", params={k: str(v) for k, v in params.items()}, timeout=30)
    assert r.status_code < 500
    if r.status_code == 200:
        assert r.headers["content-type"] == "image/gif"
    else:
        assert json.loads(r.content)["code"]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    body=st.binary(max_size=2000),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
    ),
    encoding=st.sampled_from(["", "gzip", "deflate", "br", "x-nonsense"]),
    path=st.sampled_from(
        ["/v1/batch", "/e/", "/batch/", "/api/v1/events", "/com.snowplowanalytics.snowplow/tp2"]
    ),
)
def test_fuzz_raw_bytes(
    server: Server, body: bytes, content_type: str, encoding: str, path: str
) -> None:
    headers = {"authorization": f"Bearer {server.write}"}
    if content_type:
        headers["content-type"] = content_type
    if encoding:
        headers["content-encoding"] = encoding
    r = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=30)
    check_rejections(r.status_code, r.headers.get("content-type", ""), r.content)


def test_quarantine_rows_all_have_reasons(server: Server) -> None:
    rows = server.ws.store.query(
        "SELECT count(*), count(reason_code), count(*) FILTER (WHERE reason_code = '') "
        "FROM quarantine"
    )
    total, with_reason, empty = rows[0]
    assert total == with_reason and empty == 0
