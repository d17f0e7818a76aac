"""SDK message -> staging row, over the captured SDK payloads in tests/data/ingest-samples."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from funnelscope.errors import InvalidEventError
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.records import (
    from_native,
    from_posthog,
    from_segment,
    from_snowplow,
    lenient_b64decode,
    user_agent_parts,
)
from funnelscope.workspace import Workspace

SAMPLES = Path(__file__).parent.parent / "data" / "ingest-samples"
NOW = datetime(2026, 11, 22, 18, 3, 40, tzinfo=UTC)


def body(name: str, index: int = 0) -> Any:
    return json.loads((SAMPLES / name).read_text())["requests"][index]["body"]


def props(row: dict[str, str | None]) -> dict[str, Any]:
    return json.loads(row["properties"] or "{}")


def items(row: dict[str, str | None]) -> list[dict[str, Any]]:
    return json.loads(row["items"] or "null")


ORDER_ITEMS = [
    {
        "product_id": "p_1",
        "sku": "SKU-1",
        "name": "Blue Mug",
        "price": 19.0,
        "quantity": 1,
        "category": "Kitchen",
        "brand": "Acme",
        "variant": "blue",
    },
    {
        "product_id": "p_2",
        "sku": "SKU-2",
        "name": "Tea Box",
        "price": 13.0,
        "quantity": 2,
        "category": "Food",
    },
]


# -- Segment ----------------------------------------------------------------------------------


def test_segment_batch_maps_every_call_type() -> None:
    batch = body("segment-python-batch.json")
    rows = [from_segment(m, envelope=batch) for m in batch["batch"]]
    assert [set(r) for r in rows] == [set(STAGING_COLUMNS)] * 4
    identify, page, added, order = rows
    assert identify["event"] == "identify"
    assert (identify["user_id"], identify["anonymous_id"]) == ("user_42", "anon_abc")
    assert props(identify)["traits"] == {"email": "jane@example.com", "plan": "pro"}
    assert identify["event_id"] == "b4c8126e-f9bc-4e06-a9be-c4470b2aa479"
    assert identify["timestamp"] == "2026-11-22T18:03:31.742000+00:00"
    # context: page, campaign, device, locale -> columns
    assert page["event"] == "page"
    assert page["page_url"] == "https://shop.example.com/checkout/thanks?utm_source=newsletter"
    assert (page["page_path"], page["page_title"]) == ("/checkout/thanks", "Thank you")
    assert page["referrer"] == "https://shop.example.com/cart"
    assert (page["utm_source"], page["utm_medium"], page["utm_campaign"]) == (
        "newsletter",
        "email",
        "spring_sale",
    )
    assert (page["device_type"], page["os"], page["country"]) == ("desktop", "Linux", "DE")
    assert props(page)["category"] == "Checkout"
    assert "url" not in props(page)
    assert props(page)["context"]["ip"] == "203.0.113.7"
    assert props(page)["context"]["library"] == {"name": "analytics-python", "version": "2.4.0"}
    # product-level event: one-item list, product fields lifted out of properties
    assert (added["event"], added["product_id"], added["cart_id"]) == (
        "Product Added",
        "p_1",
        "cart_9",
    )
    assert items(added) == [ORDER_ITEMS[0]]
    assert set(props(added)) == {"position", "context"}
    # order: revenue (not total), currency, order id, products
    assert (order["revenue"], order["currency"], order["order_id"]) == ("45.0", "EUR", "ord_5001")
    assert items(order) == ORDER_ITEMS
    assert props(order)["total"] == 47.5
    assert "revenue" not in props(order) and "products" not in props(order)


def test_rudder_traits_in_context_and_no_body_key() -> None:
    batch = body("rudder-python-batch-gzip.json")
    rows = [from_segment(m, envelope=batch) for m in batch["batch"]]
    identify = next(r for r in rows if r["event"] == "identify")
    assert props(identify)["traits"] == {"email": "jane@example.com"}
    assert identify["timestamp"] == "2026-11-22T18:03:37.374460+00:00"  # microseconds kept
    order = next(r for r in rows if r["event"] == "Order Completed")
    assert order["revenue"] == "45.0" and items(order) == ORDER_ITEMS


def test_segment_envelope_context_is_merged_under_the_message() -> None:
    env = {"context": {"locale": "fr-FR", "ip": "203.0.113.9"}, "sentAt": "2024-05-01T10:00:10Z"}
    msg = {
        "type": "track",
        "event": "Signed Up",
        "userId": 7,
        "messageId": "m1",
        "timestamp": "2024-05-01T10:00:00Z",
        "context": {"ip": "203.0.113.1"},
    }
    row = from_segment(msg, envelope=env)
    assert row["user_id"] == "7"
    assert row["country"] == "FR"
    assert props(row)["context"] == {"locale": "fr-FR", "ip": "203.0.113.1"}
    # clock skew: the device said 10:00:10 when we received it at 12:00:10 -> +2 h
    received = datetime(2024, 5, 1, 12, 0, 10, tzinfo=UTC)
    skewed = from_segment(msg, envelope=env, received_at=received)
    assert skewed["timestamp"] == "2024-05-01T12:00:00+00:00"


@pytest.mark.parametrize(
    ("msg", "kwargs", "column", "expected"),
    [
        pytest.param(
            {"type": "alias", "previousId": "a1", "userId": "u1"},
            {},
            "previous_id",
            "a1",
            id="alias-previous-id",
        ),
        pytest.param(
            {"event": "Product Viewed", "userId": "u"},
            {},
            "event",
            "Product Viewed",
            id="no-type-but-event-is-track",
        ),
        pytest.param(
            {"userId": "u", "name": "Home"},
            {"default_type": "page"},
            "page_title",
            "Home",
            id="route-implies-type",
        ),
        pytest.param(
            {"type": "track", "event": "x", "userId": "u", "properties": {"value": "12.50"}},
            {},
            "revenue",
            "12.50",
            id="revenue-from-value",
        ),
        pytest.param(
            {"type": "track", "event": "x", "userId": "u", "properties": {"total": 9}},
            {},
            "revenue",
            "9",
            id="revenue-from-total",
        ),
        pytest.param(
            {
                "type": "track",
                "event": "purchase",
                "userId": "u",
                "properties": {"transaction_id": "T1"},
            },
            {},
            "order_id",
            "T1",
            id="ga4-transaction-id",
        ),
        pytest.param(
            {
                "type": "page",
                "userId": "u",
                "properties": {
                    "url": "https://s.example/a?utm_source=fb&utm_medium=cpc&utm_term=mug"
                },
            },
            {},
            "utm_term",
            "mug",
            id="utm-from-url-query",
        ),
        pytest.param(
            {
                "type": "track",
                "event": "x",
                "anonymousId": "a",
                "context": {
                    "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
                    "AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari/604.1"
                },
            },
            {},
            "device_type",
            "mobile",
            id="device-from-user-agent",
        ),
        pytest.param(
            {
                "type": "screen",
                "userId": "u",
                "name": "Cart",
                "context": {"device": {"type": "ios"}, "os": {"name": "iOS"}},
            },
            {},
            "device_type",
            "mobile",
            id="mobile-device-type",
        ),
        pytest.param(
            {"type": "track", "event": "x", "userId": "u", "context": {"sessionId": 123}},
            {},
            "session_id",
            "123",
            id="session",
        ),
    ],
)
def test_segment_fields(
    msg: dict[str, Any], kwargs: dict[str, Any], column: str, expected: str
) -> None:
    assert from_segment(msg, **kwargs)[column] == expected


def test_segment_message_without_id_gets_a_stable_content_id() -> None:
    msg = {"type": "track", "event": "x", "userId": "u", "timestamp": "2024-05-01T10:00:00Z"}
    first, again = from_segment(msg), from_segment(dict(msg))
    assert first["event_id"] == again["event_id"]
    assert first["event_id"].startswith("segment:sha1:")
    assert from_segment({**msg, "event": "y"})["event_id"] != first["event_id"]


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        pytest.param([1, 2], "event.not_an_object", id="not-an-object"),
        pytest.param({"type": "launch", "userId": "u"}, "event.unknown_type", id="unknown-type"),
        pytest.param({"userId": "u"}, "event.unknown_type", id="no-type-no-event"),
        pytest.param(
            {"type": "track", "event": "x", "properties": [1]},
            "event.invalid_properties",
            id="properties-a-list",
        ),
    ],
)
def test_segment_unmappable(msg: Any, code: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        from_segment(msg)
    assert info.value.code == code


# -- PostHog ----------------------------------------------------------------------------------


def test_posthog_batch_v0() -> None:
    batch = body("posthog-python-batch-v0.json")
    rows = [from_posthog(e, sent_at=batch["sent_at"], now=NOW) for e in batch["batch"]]
    pageview, order, set_event, alias, group = rows
    assert pageview["event"] == "$pageview" and pageview["user_id"] == "user_42"
    assert pageview["event_id"] == "9fdaf863-ff8a-470d-bf7e-e8e258f3bd8b"
    assert pageview["page_path"] == "/checkout/thanks"
    assert (pageview["utm_source"], pageview["utm_medium"], pageview["utm_campaign"]) == (
        "newsletter",
        "email",
        "spring_sale",
    )
    assert pageview["os"] is None  # $os of a server SDK is the server's
    assert props(pageview) == {
        "context": {"ip": "203.0.113.7", "library": {"name": "posthog-python", "version": "7.91.1"}}
    }
    # skew: timestamp is sent_at - 0.xxx s; corrected against NOW
    sent = datetime.fromisoformat(batch["sent_at"])
    ts = datetime.fromisoformat(batch["batch"][0]["timestamp"])
    assert datetime.fromisoformat(pageview["timestamp"]) == NOW + (ts - sent)
    assert (order["revenue"], order["currency"], order["order_id"]) == ("45.0", "EUR", "ord_5001")
    assert items(order) == ORDER_ITEMS
    assert props(order)["traits"] == {"email": "jane@example.com", "plan": "pro"}
    assert props(order)["traits_once"] == {"first_order_id": "ord_5001"}
    assert props(set_event)["traits"] == {"lifetime_orders": 3}
    assert (alias["user_id"], alias["previous_id"], alias["anonymous_id"]) == (
        "user_42",
        "anon_abc",
        None,
    )
    assert group["user_id"] is None and group["anonymous_id"] is not None
    assert props(group)["group_id"] == "acme"


def test_posthog_v1_shape_maps_the_same() -> None:
    batch = body("posthog-python-capture-v1.json")
    row = from_posthog(batch["batch"][1], sent_at=batch["created_at"], now=NOW)
    assert row["event"] == "Order Completed" and row["revenue"] == "45.0"
    assert props(row)["traits"] == {"email": "jane@example.com", "plan": "pro"}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(
            {"distinct_id": "d1", "properties": {"$device_id": "d1"}},
            (None, "d1"),
            id="js-before-identify",
        ),
        pytest.param(
            {"distinct_id": "u1", "properties": {"$device_id": "d1"}},
            ("u1", "d1"),
            id="js-after-identify",
        ),
        pytest.param(
            {"event": "$identify", "distinct_id": "u1", "properties": {"$anon_distinct_id": "a1"}},
            ("u1", "a1"),
            id="identify",
        ),
        pytest.param(
            {"distinct_id": "g", "properties": {"$process_person_profile": False}},
            (None, "g"),
            id="personless",
        ),
        pytest.param(
            {"properties": {"distinct_id": 42, "token": "t"}},
            ("42", None),
            id="id-in-properties-stringified",
        ),
        pytest.param({"$distinct_id": "x" * 300}, ("x" * 200, None), id="truncated-200"),
    ],
)
def test_posthog_identity(event: dict[str, Any], expected: tuple[str | None, str | None]) -> None:
    row = from_posthog({"event": "e", "uuid": "u", **event}, now=NOW)
    assert (row["user_id"], row["anonymous_id"]) == expected


def test_posthog_js_event_with_offset_and_session() -> None:
    row = from_posthog(
        {
            "event": "$pageview",
            "uuid": "0190-js",
            "offset": 1500,
            "properties": {
                "token": "phc",
                "distinct_id": "d1",
                "$device_id": "d1",
                "$session_id": "s1",
                "$current_url": "https://s.example/p?utm_source=ig",
                "$referrer": "$direct",
                "title": "Mug",
                "$browser": "Firefox",
                "$os": "Windows",
                "$device_type": "Desktop",
                "$lib": "web",
            },
        },
        now=NOW,
    )
    assert row["timestamp"] == "2026-11-22T18:03:38.500000+00:00"
    assert (row["session_id"], row["page_title"], row["referrer"]) == ("s1", "Mug", None)
    assert (row["browser"], row["os"], row["device_type"]) == ("Firefox", "Windows", "desktop")
    assert row["utm_source"] == "ig"
    assert "token" not in props(row)


def test_posthog_unmappable() -> None:
    with pytest.raises(InvalidEventError) as info:
        from_posthog({"event": "x", "properties": "nope"}, now=NOW)
    assert info.value.code == "event.invalid_properties"


# -- Snowplow ---------------------------------------------------------------------------------


def test_snowplow_tp2_post() -> None:
    data = body("snowplow-python-tp2-post.json")["data"]
    pv, se, ue = (from_snowplow(p) for p in data)
    assert (pv["event"], pv["user_id"], pv["anonymous_id"]) == ("page_view", "user_42", "duid_abc")
    assert pv["timestamp"] == "2026-11-22T18:05:53.973000+00:00"  # dtm, no receive time
    assert (pv["page_title"], pv["page_path"], pv["utm_source"]) == (
        "Thank you",
        "/checkout/thanks",
        "newsletter",
    )
    assert props(pv)["context"]["app_id"] == "demo-shop"
    assert se["event"] == "add-to-cart" and props(se)["se_label"] == "SKU-1"
    assert se["revenue"] is None
    assert (ue["event"], ue["order_id"], ue["revenue"], ue["currency"]) == (
        "transaction",
        "ord_5001",
        "47.5",
        "EUR",
    )
    assert [i["product_id"] for i in items(ue)] == ["p_1", "p_2"]
    assert props(ue)["traits"]["email"] == "jane@example.com"


def test_snowplow_get_and_derived_timestamp() -> None:
    params = json.loads((SAMPLES / "snowplow-python-get-i.json").read_text())
    query = params["requests"][0]["query"]
    received = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
    row = from_snowplow(query, received_at=received)
    # derived = received - (stm - dtm); the python tracker truncates stm to whole seconds, so
    # stm - dtm = 1795370754000 - 1795370754579 = -0.579 s
    assert row["timestamp"] == "2026-11-22T18:00:00.579000+00:00"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"eid": "x"}, "snowplow.missing_event_type", id="no-e"),
        pytest.param({"e": "ue", "ue_px": "%%%"}, "snowplow.bad_base64", id="bad-base64"),
        pytest.param({"e": "ue", "ue_pr": "{nope"}, "snowplow.bad_json", id="bad-json"),
    ],
)
def test_snowplow_unmappable(params: dict[str, str], code: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        from_snowplow(params)
    assert info.value.code == code


def test_snowplow_js_unpadded_urlsafe_base64() -> None:
    payload = {
        "schema": "iglu:x/unstruct_event/jsonschema/1-0-0",
        "data": {
            "schema": "iglu:com.acme/link_click/jsonschema/1-0-0",
            "data": {"target": "https://a.example/?q=1>"},
        },
    }
    encoded = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    row = from_snowplow({"e": "ue", "ue_px": encoded, "eid": "1", "duid": "d"})
    assert row["event"] == "link_click"
    assert props(row)["target"] == "https://a.example/?q=1>"


# -- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("eyJhIjoxfQ", b'{"a":1}'),
        ("eyJhIjoxfQ==", b'{"a":1}'),
        ("Pz8_", b"???"),
        ("Pz8/", b"???"),
        (" eyJh\nIjoxfQ ", b'{"a":1}'),
    ],
)
def test_lenient_b64decode(text: str, expected: bytes) -> None:
    assert lenient_b64decode(text) == expected


def test_user_agent_parts() -> None:
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0 Safari/537.36"
    )
    edge = chrome + " Edg/124.0"
    assert user_agent_parts(chrome) == ("Chrome", "Windows", "desktop")
    assert user_agent_parts(edge)[0] == "Edge"
    assert user_agent_parts(None) == (None, None, None)


# -- the per-string caches and the per-request skew memo (collector hot path) -------------------

UA_IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1"


def test_user_agent_cache_gives_each_string_its_own_answer() -> None:
    first = user_agent_parts(UA_IPHONE)
    again = user_agent_parts("".join(UA_IPHONE))  # an equal string, another object
    assert first == again == ("Safari", "iOS", "mobile")
    # one character apart (iPad for iPhone): not the cached iPhone answer
    assert user_agent_parts(UA_IPHONE.replace("iPhone;", "iPad;")) == ("Safari", "iOS", "tablet")
    assert user_agent_parts(UA_IPHONE) == first


def test_page_url_cache_gives_each_url_its_own_utm_columns() -> None:
    def utm(url: str, **extra: Any) -> tuple[Any, ...]:
        msg: dict[str, Any] = {"type": "track", "event": "x", "messageId": "m", "userId": "u"}
        msg["context"] = {"page": {"url": url}, **extra}
        row = from_segment(msg, received_at=NOW)
        return row["page_path"], row["utm_source"], row["utm_medium"], row["utm_campaign"]

    google = "https://s.example/p/1?utm_source=google&utm_medium=cpc"
    bing = "https://s.example/p/1?utm_source=bing&utm_medium=cpc"
    assert utm(google) == utm(google) == ("/p/1", "google", "cpc", None)
    assert utm(bing) == ("/p/1", "bing", "cpc", None)
    # the campaign context wins over the URL's tags even when the URL is cached
    assert utm(google, campaign={"source": "newsletter"}) == ("/p/1", "newsletter", "cpc", None)
    assert utm(google) == ("/p/1", "google", "cpc", None)


def test_utm_properties_win_over_a_cached_url() -> None:
    url = "https://s.example/?utm_source=google&utm_campaign=spring"
    msg = {
        "type": "track",
        "event": "x",
        "messageId": "m",
        "userId": "u",
        "context": {"page": {"url": url}},
    }
    plain = from_segment(msg, received_at=NOW)
    tagged = from_segment({**msg, "properties": {"utm_source": "mail"}}, received_at=NOW)
    assert (plain["utm_source"], plain["utm_campaign"]) == ("google", "spring")
    assert (tagged["utm_source"], tagged["utm_campaign"]) == ("mail", "spring")
    assert "utm_source" not in props(tagged)


def test_clock_skew_is_not_confused_between_requests() -> None:
    # two requests with the same sentAt text but received one second apart, interleaved:
    # the skew remembered for one request must not leak into the other
    sent = "2026-11-22T18:00:00.000Z"
    msg = {"type": "track", "event": "x", "messageId": "m", "userId": "u"}
    first = datetime(2026, 11, 22, 18, 0, 5, tzinfo=UTC)
    second = datetime(2026, 11, 22, 18, 0, 6, tzinfo=UTC)
    envelope = {"sentAt": sent}
    stamps = [
        from_segment({**msg, "timestamp": "2026-11-22T17:59:59.500Z"}, envelope=e, received_at=t)[
            "timestamp"
        ]
        for e, t in ((envelope, first), (envelope, second), ({"sentAt": "".join(sent)}, first))
    ]
    assert stamps == [
        "2026-11-22T18:00:04.500000+00:00",
        "2026-11-22T18:00:05.500000+00:00",
        "2026-11-22T18:00:04.500000+00:00",
    ]
    # another sentAt in the same request shape: its own skew (received 5 s after a sentAt of
    # 17:59:50 puts a 17:59:49 event at 18:00:04)
    other = from_segment(
        {**msg, "timestamp": "2026-11-22T17:59:49.000Z"},
        envelope={"sentAt": "2026-11-22T17:59:50.000Z"},
        received_at=first,
    )
    assert other["timestamp"] == "2026-11-22T18:00:04+00:00"


def test_native_keeps_unknown_keys_in_properties() -> None:
    row = from_native(
        {
            "event_id": "e",
            "event": "x",
            "user_id": 5,
            "coupon": "A",
            "properties": {"a": 1},
            "items": [{"item_id": "p", "price": 2}],
        }
    )
    assert row["user_id"] == "5"
    assert props(row) == {"a": 1, "coupon": "A"}
    assert items(row) == [{"product_id": "p", "price": 2}]


# -- rows pass the pipeline -----------------------------------------------------------------------


def test_every_sample_row_is_accepted_by_the_pipeline(workspace: Workspace) -> None:
    rows: list[dict[str, str | None]] = []
    for name in ("segment-python-batch.json", "rudder-python-batch-gzip.json"):
        batch = body(name)
        rows += [from_segment(m, envelope=batch, received_at=NOW) for m in batch["batch"]]
    batch = body("posthog-python-batch-v0.json")
    rows += [from_posthog(e, sent_at=batch["sent_at"], now=NOW) for e in batch["batch"]]
    snowplow = body("snowplow-python-tp2-post.json")["data"]
    rows += [from_snowplow(p, received_at=NOW) for p in snowplow]
    schema = pa.schema([(c, pa.string()) for c in STAGING_COLUMNS])
    table = pa.Table.from_pylist(rows, schema=schema)
    report = workspace.append_staging(table, source="test", received_at=NOW)
    assert (report.rejected, report.inserted) == (0, len(rows))
    stored = dict(workspace.store.query("SELECT event, count(*) FROM events GROUP BY event"))
    assert stored["order_completed"] == 4  # Segment, Rudder, PostHog, Snowplow transaction
    assert stored["product_added"] == 2  # Segment Product Added, Snowplow add-to-cart
    (persons,) = workspace.store.query(
        "SELECT count(DISTINCT m.canonical_id) FROM events e JOIN person_map m USING (person_id) "
        "WHERE e.user_id = 'user_42' OR e.anonymous_id IN ('anon_abc', 'duid_abc')"
    )[0]
    assert persons == 1  # identify, alias and shared ids stitch to one person
