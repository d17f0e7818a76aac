"""The real SDK clients from PyPI, pointed at a real uvicorn server over a real DuckDB file.

Each test sends a small shop journey (identify, page view with UTM tags, product added, order
with two products, alias) and checks every stored event: id, time, identity, page and campaign
context, ecommerce columns. Each SDK's batch is then sent a second time (as an SDK retry would)
and must still be stored once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import funnelscope
from funnelscope.api import ApiSettings, create_app
from funnelscope.api.server import BackgroundServer
from funnelscope.keys import create_key
from funnelscope.workspace import Workspace

pytestmark = pytest.mark.e2e

UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
URL = "https://shop.example.com/checkout/thanks?utm_source=newsletter&utm_medium=email"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
PRODUCT = {
    "product_id": "p_1",
    "sku": "SKU-1",
    "name": "Blue Mug",
    "price": 19.0,
    "quantity": 1,
    "category": "Kitchen",
    "brand": "Acme",
}
ORDER = {
    "order_id": "ord_5001",
    "revenue": 45.0,
    "total": 47.5,
    "shipping": 3.0,
    "currency": "EUR",
    "products": [
        PRODUCT,
        {
            "product_id": "p_2",
            "sku": "SKU-2",
            "name": "Tea Box",
            "price": 13.0,
            "quantity": 2,
            "category": "Food",
        },
    ],
}
STORED_ITEMS = [
    {
        "product_id": "p_1",
        "sku": "SKU-1",
        "name": "Blue Mug",
        "category": "Kitchen",
        "brand": "Acme",
        "variant": None,
        "price": Decimal("19.0000"),
        "quantity": 1,
    },
    {
        "product_id": "p_2",
        "sku": "SKU-2",
        "name": "Tea Box",
        "category": "Food",
        "brand": None,
        "variant": None,
        "price": Decimal("13.0000"),
        "quantity": 2,
    },
]
SEGMENT_CONTEXT = {
    "ip": "203.0.113.7",
    "userAgent": UA,
    "locale": "de-DE",
    "page": {
        "url": URL,
        "path": "/checkout/thanks",
        "referrer": "https://www.google.com/",
        "title": "Thank you",
    },
    "campaign": {"source": "newsletter", "medium": "email", "name": "spring_sale"},
}


@dataclass
class Collector:
    ws: Workspace
    url: str
    port: int
    write_key: str

    def rows(self) -> dict[str, dict[str, Any]]:
        cur = self.ws.store.reader()
        try:
            cur.execute("SELECT * FROM events ORDER BY seq")
            names = [d[0] for d in cur.description]
            return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
        finally:
            cur.close()

    def count(self) -> int:
        return int(self.ws.store.query("SELECT count(*) FROM events")[0][0])

    def persons(self, ids: list[str]) -> int:
        marks = ", ".join("?" for _ in ids)
        return int(
            self.ws.store.query(
                "SELECT count(DISTINCT m.canonical_id) FROM identities i JOIN person_map m "
                f"USING (person_id) WHERE i.distinct_id IN ({marks})",
                ids,
            )[0][0]
        )


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    ws = funnelscope.open(tmp_path / "store.duckdb")
    key = create_key(ws.store, "write", "shop", now=datetime.now(UTC)).token
    server = BackgroundServer(create_app(ws, ApiSettings())).start()
    try:
        yield Collector(ws, server.url, server.port, key)
    finally:
        server.stop()
        ws.close()


def near(stored: datetime, sent: datetime) -> bool:
    """Clock-skew correction moves a time by the request's latency at most."""
    return abs(stored - sent) < timedelta(seconds=2)


def check_order(row: dict[str, Any], source: str) -> None:
    assert row["event"] == "order_completed" and row["raw_event"] == "Order Completed"
    assert (row["revenue"], row["currency"], row["order_id"]) == (
        Decimal("45.0000"),
        "EUR",
        "ord_5001",
    )
    assert row["items"] == STORED_ITEMS
    assert json.loads(row["properties"])["total"] == 47.5
    assert row["source"] == source


# -- Segment and RudderStack --------------------------------------------------------------------


def _segment_journey(client: Any, prefix: str) -> None:
    client.identify(
        "user_42",
        {"email": "jane@example.com"},
        context=SEGMENT_CONTEXT,
        timestamp=T0,
        anonymous_id="anon_abc",
        message_id=f"{prefix}-1",
    )
    client.page(
        "user_42",
        "Checkout",
        "Thank you",
        {"url": URL},
        context=SEGMENT_CONTEXT,
        timestamp=T0 + timedelta(seconds=1),
        anonymous_id="anon_abc",
        message_id=f"{prefix}-2",
    )
    client.track(
        "user_42",
        "Product Added",
        {**PRODUCT, "cart_id": "cart_9"},
        context=SEGMENT_CONTEXT,
        timestamp=T0 + timedelta(seconds=2),
        message_id=f"{prefix}-3",
    )
    client.track(
        "user_42",
        "Order Completed",
        ORDER,
        context=SEGMENT_CONTEXT,
        timestamp=T0 + timedelta(seconds=3),
        message_id=f"{prefix}-4",
    )
    client.alias(
        "anon_old", "user_42", timestamp=T0 + timedelta(seconds=4), message_id=f"{prefix}-5"
    )
    client.flush()
    client.join()


def _check_segment_rows(c: Collector, prefix: str, source: str) -> None:
    rows = c.rows()
    assert sorted(rows) == [f"{prefix}-{i}" for i in range(1, 6)]
    identify, page, added, order, alias = (rows[f"{prefix}-{i}"] for i in range(1, 6))
    assert identify["event"] == "identify"
    assert (identify["user_id"], identify["anonymous_id"]) == ("user_42", "anon_abc")
    assert json.loads(identify["properties"])["traits"] == {"email": "jane@example.com"}
    for i, row in enumerate((identify, page, added, order, alias)):
        assert near(row["timestamp"], T0 + timedelta(seconds=i)), row
    assert page["event"] == "page_viewed"
    assert (page["page_url"], page["page_path"], page["page_title"]) == (
        URL,
        "/checkout/thanks",
        "Thank you",
    )
    assert page["referrer"] == "https://www.google.com/"
    assert (page["utm_source"], page["utm_medium"], page["utm_campaign"]) == (
        "newsletter",
        "email",
        "spring_sale",
    )
    assert page["channel"] == "email"
    assert (page["device_type"], page["os"], page["browser"], page["country"]) == (
        "mobile",
        "iOS",
        "Safari",
        "DE",
    )
    assert (added["event"], added["product_id"], added["cart_id"]) == (
        "product_added",
        "p_1",
        "cart_9",
    )
    assert added["items"] == STORED_ITEMS[:1]
    check_order(order, source)
    assert alias["event"] == "alias"
    assert c.persons(["anon_abc", "anon_old", "user_42"]) == 1


def test_segment_analytics_python(collector: Collector) -> None:
    from segment.analytics.client import Client

    errors: list[Any] = []

    def client() -> Client:
        return Client(
            collector.write_key,
            host=collector.url,
            upload_interval=0.05,
            on_error=lambda e, batch: errors.append(e),
            max_retries=1,
        )

    _segment_journey(client(), "seg")
    assert errors == []
    _check_segment_rows(collector, "seg", "segment:shop")
    _segment_journey(client(), "seg")  # the same batch again: deduplicated
    assert collector.count() == 5 and errors == []


def test_rudder_sdk_python(collector: Collector) -> None:
    from rudderstack.analytics.client import Client

    logging.getLogger("rudder").setLevel(logging.CRITICAL)
    errors: list[Any] = []

    def client() -> Client:
        return Client(
            collector.write_key,
            host=collector.url,
            upload_interval=0.05,
            on_error=lambda e, batch: errors.append(e),
            max_retries=1,
        )  # gzip default

    _segment_journey(client(), "rud")
    assert errors == []
    _check_segment_rows(collector, "rud", "segment:shop")
    _segment_journey(client(), "rud")
    assert collector.count() == 5 and errors == []


# -- PostHog --------------------------------------------------------------------------------------


@pytest.mark.parametrize("gzip", [False, True], ids=["json", "gzip"])
def test_posthog_python(collector: Collector, gzip: bool) -> None:
    from posthog import Posthog

    errors: list[Any] = []

    def send() -> None:
        ph = Posthog(
            collector.write_key,
            host=collector.url,
            gzip=gzip,
            flush_interval=0.05,
            on_error=lambda e, batch: errors.append(e),
            max_retries=1,
        )
        ph.capture(
            "$pageview",
            distinct_id="user_42",
            timestamp=T0,
            uuid="00000000-0000-4000-8000-000000000001",
            properties={
                "$current_url": URL,
                "$referrer": "https://www.google.com/",
                "utm_source": "newsletter",
                "utm_medium": "email",
                "utm_campaign": "spring_sale",
                "$device_id": "dev_1",
                "$session_id": "sess_1",
            },
        )
        ph.capture(
            "Product Added",
            distinct_id="user_42",
            timestamp=T0 + timedelta(seconds=1),
            uuid="00000000-0000-4000-8000-000000000002",
            properties=dict(PRODUCT),
        )
        ph.capture(
            "Order Completed",
            distinct_id="user_42",
            timestamp=T0 + timedelta(seconds=2),
            uuid="00000000-0000-4000-8000-000000000003",
            properties={**ORDER, "$set": {"email": "jane@example.com"}},
        )
        ph.alias(
            "anon_old",
            "user_42",
            timestamp=T0 + timedelta(seconds=3),
            uuid="00000000-0000-4000-8000-000000000004",
        )
        ph.flush()
        ph.shutdown()

    send()
    assert errors == []
    rows = collector.rows()
    assert len(rows) == 4
    view, added, order, alias = (
        rows[f"00000000-0000-4000-8000-00000000000{i}"] for i in range(1, 5)
    )
    for i, row in enumerate((view, added, order, alias)):
        assert near(row["timestamp"], T0 + timedelta(seconds=i)), row
    assert view["event"] == "page_viewed" and view["raw_event"] == "$pageview"
    assert (view["user_id"], view["anonymous_id"], view["session_id"]) == (
        "user_42",
        "dev_1",
        "sess_1",
    )
    assert (view["page_url"], view["page_path"], view["referrer"]) == (
        URL,
        "/checkout/thanks",
        "https://www.google.com/",
    )
    assert (view["utm_source"], view["utm_medium"], view["utm_campaign"]) == (
        "newsletter",
        "email",
        "spring_sale",
    )
    assert json.loads(view["properties"])["context"]["library"]["name"] == "posthog-python"
    assert added["event"] == "product_added" and added["items"] == STORED_ITEMS[:1]
    check_order(order, "posthog:shop")
    assert json.loads(order["properties"])["traits"] == {"email": "jane@example.com"}
    assert (alias["event"], alias["user_id"]) == ("alias", "user_42")
    assert collector.persons(["anon_old", "dev_1", "user_42"]) == 1
    send()
    assert collector.count() == 4 and errors == []


# -- Snowplow -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "get"])
def test_snowplow_tracker(collector: Collector, method: str) -> None:
    from snowplow_tracker import (
        Emitter,
        PageView,
        SelfDescribing,
        SelfDescribingJson,
        StructuredEvent,
        Subject,
        Tracker,
    )

    sent: list[dict[str, Any]] = []
    failed: list[Any] = []
    lock = threading.Lock()

    def on_success(events: list[dict[str, Any]]) -> None:
        with lock:
            sent.extend(events)

    emitter = Emitter(
        "127.0.0.1",
        protocol="http",
        port=collector.port,
        method=method,
        batch_size=10,
        on_success=on_success,
        on_failure=lambda n, events: failed.append(events),
    )
    subject = (
        Subject()
        .set_user_id("user_42")
        .set_domain_user_id("duid_abc")
        .set_useragent(UA)
        .set_lang("de-DE")
        .set_ip_address("203.0.113.7")
    )
    tracker = Tracker("shop-ns", emitter, subject=subject, app_id="shop")
    t0_ms = T0.timestamp() * 1000
    tracker.track(PageView(URL, "Thank you", "https://www.google.com/", true_timestamp=t0_ms))
    tracker.track(
        StructuredEvent(
            "ecommerce", "add-to-cart", "SKU-1", "Blue Mug", 19.0, true_timestamp=t0_ms + 1000
        )
    )
    ecom = "iglu:com.snowplowanalytics.snowplow.ecommerce"
    products = [
        SelfDescribingJson(
            f"{ecom}/product/jsonschema/1-0-0",
            {
                "id": p["product_id"],
                "name": p["name"],
                "category": p["category"],
                "price": p["price"],
                "quantity": p["quantity"],
                "currency": "EUR",
                **({"brand": p["brand"]} if "brand" in p else {}),
            },
        )
        for p in ORDER["products"]
    ]
    transaction = SelfDescribingJson(
        f"{ecom}/transaction/jsonschema/1-0-0",
        {
            "transaction_id": "ord_5001",
            "revenue": 45.0,
            "currency": "EUR",
            "payment_method": "card",
            "total_quantity": 3,
        },
    )
    tracker.track(
        SelfDescribing(
            SelfDescribingJson(
                f"{ecom}/snowplow_ecommerce_action/jsonschema/1-0-2", {"type": "transaction"}
            ),
            context=[transaction, *products],
            true_timestamp=t0_ms + 2000,
        )
    )
    tracker.flush()
    assert failed == []
    assert len(sent) == 3
    rows = collector.rows()
    assert sorted(rows) == sorted(e["eid"] for e in sent)
    view, added, order = (rows[e["eid"]] for e in sent)
    for i, row in enumerate((view, added, order)):
        # ttm (true timestamp) wins: exactly the time given to the tracker
        assert row["timestamp"] == T0 + timedelta(seconds=i)
        assert (row["user_id"], row["anonymous_id"]) == ("user_42", "duid_abc")
        assert row["source"] == "snowplow:shop"
    assert view["event"] == "page_viewed"
    assert (view["page_url"], view["page_title"], view["referrer"]) == (
        URL,
        "Thank you",
        "https://www.google.com/",
    )
    assert (view["utm_source"], view["utm_medium"]) == ("newsletter", "email")
    assert (view["device_type"], view["os"], view["country"]) == ("mobile", "iOS", "DE")
    assert added["event"] == "product_added"
    assert json.loads(added["properties"])["se_label"] == "SKU-1"
    assert order["event"] == "order_completed"
    assert (order["revenue"], order["currency"], order["order_id"]) == (
        Decimal("45.0000"),
        "EUR",
        "ord_5001",
    )
    assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [("p_1", 1), ("p_2", 2)]
    # the tracker resends on failure: a resent event is stored once
    emitter.input(sent[0])
    emitter.flush()
    assert collector.count() == 3


def test_snowplow_unknown_app_id_is_refused(collector: Collector) -> None:
    from snowplow_tracker import Emitter, PageView, Tracker

    failed: list[int] = []
    emitter = Emitter(
        "127.0.0.1",
        protocol="http",
        port=collector.port,
        method="post",
        on_failure=lambda n, events: failed.append(n),
    )
    Tracker("ns", emitter, app_id="not-a-source").track(PageView("https://a.example/"))
    emitter.flush()
    assert failed == [0] and collector.count() == 0
