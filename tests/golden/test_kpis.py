"""Every KPI of the catalogue on one small shop, computed by hand (docs/kpis.md).

The shop, week W = [2024-05-06, 2024-05-13), the previous week P = [2024-04-29, 2024-05-06):

* ann (mobile, DE): S1 05-06 09:00-09:08 from google/cpc/brand (paid_search): 2 pages, a product
  view, scroll 40, add to cart, checkout, order o1 = 100 USD (p1 x 2 at 50); opens and clicks
  email c1; S2 05-08 09:00 a single direct page (the only bounce); o1 refunded on 05-09.
* ben (desktop, FR): browses anonymously first (anon-b, S1 05-06 10:00-10:04 from the newsletter:
  2 pages, add to cart, checkout), clicks c1 as ben; logs in the next day (loaded in a second
  batch, so the anonymous person is merged later) and orders o2 = 80 EUR (p2 x 2 at 40) on
  05-07 10:02, 23 h 58 min after the checkout and 23 h 59 min after the add to cart.
* cat (mobile, US): one session from Google search 05-06 23:50 - 05-07 00:12 crossing midnight,
  product view, scroll 80, add to cart, order o3 = 30 EUR on 05-07 00:12.
* dan (tablet, DE): ordered o0 = 40 USD on 05-01 (P, direct); S2 05-08 10:00 from
  facebook/paid_social/spring, order o4 = 60 EUR (p1 x 1), sent twice (one order), returned.
* fay (mobile, US): one session from facebook.com 05-07 18:20: a page, add to cart, checkout,
  no order (abandoned).
* eve: two ad impressions, a like, a comment, a share, opens c1: no site visit.

Facts: ad spend 05-06 paid_search/brand 1000 impressions, 50 clicks, 100 USD, reach 800; 05-07
paid_social/spring 500 impressions, 10 clicks, 20 EUR, reach 400. EUR = 1.10 USD from 05-01 and
1.20 USD from 05-08. Email c1 sent 05-06 08:00, delivered 4. NPS answers in W: 10, 9, 9, 7, 3;
in P: 0. Page load times in W: 1000, 2000, 3000, 4000 ms.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from funnelscope.analysis.kpi_catalogue import CATALOGUE
from funnelscope.analysis.kpis import KpiSpec, compute_kpis
from funnelscope.analysis.sessions import SessionSpec
from funnelscope.errors import InvalidSpecError
from funnelscope.workspace import Workspace
from tests.conftest import load_journeys

W_START = datetime(2024, 5, 6, tzinfo=UTC)
W_END = datetime(2024, 5, 13, tzinfo=UTC)
MAY_1 = -5 * 24 * 60  # minutes from T0 (2024-05-06 09:00) to 2024-05-01 09:00


def _items(*lines: tuple[str, float, int]) -> str:
    return json.dumps([{"product_id": p, "price": price, "quantity": q} for p, price, q in lines])


def _props(**values: Any) -> str:
    return json.dumps(values)


ANN = {"device_type": "mobile", "country": "DE"}
BEN = {"device_type": "desktop", "country": "FR"}
CAT = {"device_type": "mobile", "country": "US"}
DAN = {"device_type": "tablet", "country": "DE"}
FAY = {"device_type": "mobile", "country": "US"}
ANON_B = {"anonymous_id": "anon-b", **BEN}

FIRST_BATCH = {
    "ann": [
        (
            0,
            "page_viewed",
            {
                **ANN,
                "page_path": "/",
                "utm_source": "google",
                "utm_medium": "cpc",
                "utm_campaign": "brand",
                "properties": _props(load_time_ms=1000),
            },
        ),
        (2, "product_viewed", {**ANN, "page_path": "/p/1", "product_id": "p1"}),
        (3, "page_viewed", {**ANN, "page_path": "/p/1", "properties": _props(load_time_ms=2000)}),
        (4, "content_engaged", {**ANN, "page_path": "/p/1", "properties": _props(scroll_depth=40)}),
        (5, "product_added", {**ANN, "page_path": "/p/1", "product_id": "p1"}),
        (6, "checkout_started", {**ANN, "page_path": "/checkout"}),
        (
            8,
            "order_completed",
            {
                **ANN,
                "page_path": "/thanks",
                "order_id": "o1",
                "revenue": "100",
                "currency": "USD",
                "items": _items(("p1", 50, 2)),
            },
        ),
        (29, "email_opened", {"properties": _props(campaign_id="c1")}),
        (30, "email_clicked", {"properties": _props(campaign_id="c1")}),
        (2880, "page_viewed", {"device_type": "desktop", "country": "DE", "page_path": "/"}),
        (4320, "order_refunded", {"order_id": "o1", "revenue": "100", "currency": "USD"}),
    ],
    "ben-anon": [
        (
            60,
            "page_viewed",
            {
                **ANON_B,
                "page_path": "/",
                "utm_source": "news",
                "utm_medium": "email",
                "utm_campaign": "nl1",
                "properties": _props(load_time_ms=3000),
            },
        ),
        (61, "page_viewed", {**ANON_B, "page_path": "/p/2"}),
        (63, "product_added", {**ANON_B, "page_path": "/p/2", "product_id": "p2"}),
        (64, "checkout_started", {**ANON_B, "page_path": "/checkout"}),
    ],
    "cat": [
        (
            890,
            "page_viewed",
            {
                **CAT,
                "page_path": "/",
                "referrer": "https://www.google.com/",
                "page_url": "https://shop.example/",
                "properties": _props(load_time_ms=4000),
            },
        ),
        (895, "product_viewed", {**CAT, "page_path": "/p/3", "product_id": "p3"}),
        (
            897,
            "content_engaged",
            {**CAT, "page_path": "/p/3", "properties": _props(scroll_depth=80)},
        ),
        (900, "product_added", {**CAT, "page_path": "/p/3", "product_id": "p3"}),
        (910, "page_viewed", {**CAT, "page_path": "/cart"}),
        (
            912,
            "order_completed",
            {
                **CAT,
                "order_id": "o3",
                "revenue": "30",
                "currency": "EUR",
                "items": _items(("p3", 30, 1)),
            },
        ),
    ],
    "dan": [
        (MAY_1, "page_viewed", {**DAN, "page_path": "/"}),
        (
            MAY_1 + 5,
            "order_completed",
            {**DAN, "order_id": "o0", "revenue": "40", "currency": "USD"},
        ),
        (
            2940,
            "page_viewed",
            {
                **DAN,
                "page_path": "/",
                "utm_source": "facebook",
                "utm_medium": "paid_social",
                "utm_campaign": "spring",
            },
        ),
        (
            2945,
            "order_completed",
            {
                **DAN,
                "order_id": "o4",
                "revenue": "60",
                "currency": "EUR",
                "items": _items(("p1", 60, 1)),
            },
        ),
        (2946, "order_completed", {**DAN, "order_id": "o4", "revenue": "60", "currency": "EUR"}),
        (5000, "product_returned", {"order_id": "o4", "product_id": "p1"}),
    ],
    "fay": [
        (2000, "page_viewed", {**FAY, "page_path": "/", "referrer": "https://www.facebook.com/"}),
        (2001, "product_added", {**FAY, "page_path": "/", "product_id": "p1"}),
        (2002, "checkout_started", {**FAY, "page_path": "/checkout"}),
    ],
    "eve": [
        (
            0,
            "ad_impression",
            {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "brand"},
        ),
        (10, "ad_impression", {"utm_source": "google", "utm_medium": "cpc"}),
        (20, "social_engaged", {"properties": _props(action="like")}),
        (21, "social_engaged", {"properties": _props(action="comment")}),
        (22, "social_engaged", {"properties": _props(action="share")}),
        (31, "email_opened", {"properties": _props(campaign_id="c1")}),
    ],
}
SECOND_BATCH = {
    "ben": [
        (59, "email_clicked", {"properties": _props(campaign_id="c1")}),
        (1500, "logged_in", {**ANON_B, "user_id": "ben"}),
        (1501, "page_viewed", {**BEN, "page_path": "/cart"}),
        (
            1502,
            "order_completed",
            {
                **BEN,
                "order_id": "o2",
                "revenue": "80",
                "currency": "EUR",
                "items": _items(("p2", 40, 2)),
            },
        ),
    ],
}


def load_shop(ws: Workspace) -> None:
    load_journeys(ws, FIRST_BATCH)
    load_journeys(ws, SECOND_BATCH)
    with ws.store.write() as cur:
        cur.execute(
            "INSERT INTO currency_rates VALUES (DATE '2024-05-01', 'EUR', 1.10), "
            "(DATE '2024-05-08', 'EUR', 1.20)"
        )
        cur.execute(
            "INSERT INTO ad_spend VALUES "
            "(DATE '2024-05-06', 'paid_search', 'google', 'brand', 1000, 50, 100, 'USD', 800), "
            "(DATE '2024-05-07', 'paid_social', 'facebook', 'spring', 500, 10, 20, 'EUR', 400)"
        )
        cur.execute(
            "INSERT INTO email_campaigns VALUES ('c1', 'May newsletter', "
            "TIMESTAMPTZ '2024-05-06 08:00:00+00', 5, 4)"
        )
        cur.execute(
            "INSERT INTO survey_responses (response_id, answered_at, user_id, score) VALUES "
            "('r0', TIMESTAMPTZ '2024-05-02 12:00:00+00', 'dan', 0), "
            + ", ".join(
                f"('r{i}', TIMESTAMPTZ '2024-05-09 12:00:00+00', NULL, {s})"
                for i, s in enumerate((10, 9, 9, 7, 3), start=1)
            )
        )


@pytest.fixture
def shop(workspace: Workspace) -> Workspace:
    load_shop(workspace)
    return workspace


DAYS = 86_400
#: kpi -> (value, numerator, denominator) over W without breakdown, computed by hand.
EXPECTED: dict[str, tuple[float | None, float | None, float | None]] = {
    "impressions": (1500, 1500, None),
    "reach": (1, 1, None),  # eve, from person-level ad_impression events
    "sessions": (7, 7, None),  # ann 2, ben 2 (one anonymous), cat 1, dan 1, fay 1
    "visitors": (5, 5, None),  # ben's anonymous browsing is ben's: 5 persons, not 6
    "new_visitors": (4, 4, None),  # dan's first session was in P
    "social_likes": (1, 1, None),
    "social_comments": (1, 1, None),
    "social_shares": (1, 1, None),
    "social_follows": (0, 0, None),
    "cpm": (122 / 1500 * 1000, 122, 1500),  # 100 USD + 20 EUR x 1.10
    "ctr": (60 / 1500, 60, 1500),
    "cpc": (122 / 60, 122, 60),
    "product_views": (2, 2, None),
    "product_views_per_session": (2 / 7, 2, 7),
    # timed pages: ann 120+60, ben 60+120 and 60, cat 300+120, dan 300, fay 60
    "time_on_page": (1200 / 9, 1200, 9),
    "scroll_depth": (60, 120, 2),
    "email_open_rate": (3 / 4, 3, 4),  # eve, ann, ben (a click counts as an open)
    "email_click_rate": (2 / 4, 2, 4),
    "email_click_to_open_rate": (2 / 3, 2, 3),
    "bounce_rate": (1 / 7, 1, 7),  # ann's second session
    # durations 480 + 0 + 240 + 120 + 1320 + 120 + 360
    "avg_session_duration": (2640 / 7, 2640, 7),
    "pages_per_session": (10 / 7, 10, 7),
    "page_load_p50": (2.5, 2.5, None),
    "page_load_p75": (3.25, 3.25, None),
    "page_load_p95": (3.85, 3.85, None),
    "conversion_rate": (4 / 5, 4, 5),
    "session_conversion_rate": (4 / 7, 4, 7),
    "add_to_cart_rate": (4 / 7, 4, 7),
    "cart_abandonment_rate": (1 / 4, 1, 4),  # fay; ben ordered 23 h 59 min after his cart
    "checkout_abandonment_rate": (1 / 3, 1, 3),
    "orders": (4, 4, None),  # o4 sent twice is one order
    # 100 USD + 80 EUR x 1.10 + 30 EUR x 1.10 (05-07: the 05-01 rate) + 60 EUR x 1.20
    "revenue": (293, 293, None),
    "aov": (293 / 4, 293, 4),
    "units_per_order": (6 / 4, 6, 4),
    "units_sold": (6, 6, None),
    "product_revenue": (293, 293, None),
    "sales_conversion_rate": (4 / 4, 4, 4),
    "roas": (293 / 122, 293, 122),
    "cac": (122 / 3, 122, 3),  # ann, ben, cat are new customers; dan is not
    "refund_rate": (1 / 4, 1, 4),
    "return_rate": (1 / 4, 1, 4),
    "repeat_purchase_rate": (1 / 4, 1, 4),  # dan
    "customer_retention_rate": (1.0, 1, 1),  # dan ordered in P and in W
    "churn_rate": (0.0, 0, 1),
    "purchase_frequency": (1.0, 4, 4),
    # dan: 05-01 09:05 -> 05-08 10:05 = 7 days 1 hour; the others 0
    "avg_customer_lifespan": ((7 + 1 / 24) / 4, 7 + 1 / 24, 4),
    "historical_clv": (333 / 4, 333, 4),  # 100 + 88 + 33 + (40 + 72)
    "nps": (40.0, 2, 5),  # 3 promoters - 1 detractor of 5
    "clv_cac": ((333 / 4) / (122 / 3), 333 / 4, 122 / 3),
}


def _approx(value: float | None) -> Any:
    return None if value is None else pytest.approx(value, rel=1e-9, abs=1e-9)


def test_every_kpi_has_a_golden_case() -> None:
    assert set(EXPECTED) == {k.name for k in CATALOGUE}


def test_every_kpi_over_the_week(shop: Workspace) -> None:
    result = compute_kpis(shop.engine, KpiSpec.create(list(EXPECTED), W_START, W_END))
    got = {r.kpi: (r.value, r.numerator, r.denominator) for r in result.rows}
    assert len(result.rows) == len(EXPECTED)
    for name, (value, numerator, denominator) in EXPECTED.items():
        assert got[name] == (_approx(value), _approx(numerator), _approx(denominator)), name
    assert all(r.note is None for r in result.rows)


def test_previous_period_and_change(shop: Workspace) -> None:
    names = ["sessions", "orders", "revenue", "nps", "bounce_rate", "customer_retention_rate"]
    result = compute_kpis(
        shop.engine, KpiSpec.create(names, W_START, W_END, compare="previous_period")
    )
    rows = {r.kpi: r for r in result.rows}
    # P holds dan's first session and order o0 (40 USD) and one NPS answer of 0
    assert (rows["sessions"].previous_value, rows["sessions"].change) == (1, 6.0)
    assert (rows["orders"].previous_value, rows["orders"].change) == (1, 3.0)
    assert rows["revenue"].previous_value == 40
    assert rows["revenue"].change == pytest.approx(293 / 40 - 1)
    assert rows["nps"].previous_value == -100
    assert rows["nps"].change == pytest.approx(40 / -100 - 1)
    assert rows["bounce_rate"].previous_value == 0  # dan's P session ordered: no bounce
    assert rows["bounce_rate"].change is None  # no change from 0
    assert rows["customer_retention_rate"].previous_value is None  # nobody ordered before P


def test_breakdown_by_channel(shop: Workspace) -> None:
    names = ["sessions", "orders", "revenue", "roas", "cac", "conversion_rate", "clv_cac"]
    result = compute_kpis(shop.engine, KpiSpec.create(names, W_START, W_END, breakdown=["channel"]))
    got = {(r.kpi, dict(r.breakdown)["channel"]): r.value for r in result.rows}
    assert got[("sessions", "paid_search")] == 1
    assert got[("sessions", "direct")] == 2  # ann S2, ben's logged-in session
    assert got[("sessions", "email")] == 1  # ben's anonymous session
    # orders by the channel of their session (last touch)
    assert got[("orders", "direct")] == 1  # o2
    assert got[("revenue", "paid_social")] == pytest.approx(72)
    assert got[("roas", "paid_search")] == pytest.approx(1.0)
    assert got[("roas", "paid_social")] == pytest.approx(72 / 22)
    assert got[("roas", "direct")] is None  # no spend: zero denominator
    assert got[("cac", "paid_search")] == pytest.approx(100)
    assert got[("cac", "paid_social")] is None  # dan is a returning customer: 0 new
    assert got[("conversion_rate", "organic_social")] == 0  # fay
    # acquisition channel: ann's first order came through paid search
    assert got[("clv_cac", "paid_search")] == pytest.approx(100 / 100)


def test_breakdowns_by_device_country_product_visitor_type_and_page(shop: Workspace) -> None:
    def values(name: str, dim: str) -> dict[Any, float | None]:
        result = compute_kpis(shop.engine, KpiSpec.create([name], W_START, W_END, breakdown=[dim]))
        return {dict(r.breakdown)[dim]: r.value for r in result.rows}

    assert values("sessions", "device") == {"desktop": 3, "mobile": 3, "tablet": 1}
    assert values("visitors", "country") == {"DE": 2, "FR": 1, "US": 2}
    assert values("product_revenue", "product") == {
        "p1": pytest.approx(172),
        "p2": pytest.approx(88),
        "p3": pytest.approx(33),
    }
    assert values("units_sold", "product") == {"p1": 3, "p2": 2, "p3": 1}
    assert values("sessions", "new_vs_returning") == {"new": 4, "returning": 3}
    assert values("orders", "new_vs_returning") == {"new": 3, "returning": 1}
    # landing pages: "/" for 6 sessions (ann S2 bounced), "/cart" for ben's logged-in session
    assert values("bounce_rate", "page") == {"/": pytest.approx(1 / 6), "/cart": 0}
    assert values("page_load_p50", "page") == {"/": pytest.approx(3.0), "/p/1": 2.0}


def test_day_granularity_counts_a_session_on_the_day_it_starts(shop: Workspace) -> None:
    result = compute_kpis(
        shop.engine, KpiSpec.create(["sessions", "orders"], W_START, W_END, granularity="day")
    )
    by_day = {(r.kpi, r.period.date().isoformat()): r.value for r in result.rows}
    # cat's session starts 05-06 23:50 and ends 05-07 00:12: a 05-06 session...
    assert [by_day[("sessions", f"2024-05-{d:02d}")] for d in range(6, 13)] == [3, 2, 2, 0, 0, 0, 0]
    # ...while her order, placed after midnight, is a 05-07 order
    assert [by_day[("orders", f"2024-05-{d:02d}")] for d in range(6, 13)] == [1, 2, 1, 0, 0, 0, 0]


def test_week_granularity_compares_bucket_with_bucket(shop: Workspace) -> None:
    result = compute_kpis(
        shop.engine,
        KpiSpec.create(
            ["orders", "customer_retention_rate"],
            W_START,
            W_END,
            granularity="week",
            compare="previous_period",
        ),
    )
    rows = {r.kpi: r for r in result.rows}
    assert rows["orders"].period == W_START and rows["orders"].previous_value == 1
    assert rows["customer_retention_rate"].value == 1.0


def test_engagement_bounce_rule(shop: Workspace) -> None:
    spec = KpiSpec.create(
        ["bounce_rate"],
        W_START,
        W_END,
        session=SessionSpec(bounce="engagement", engagement_window=timedelta(minutes=5)),
    )
    # shorter than 5 minutes: ann S2 (0 s), ben S1 (240 s), ben S2 (120 s), fay (120 s)
    assert compute_kpis(shop.engine, spec).rows[0].value == pytest.approx(4 / 7)


def test_filters_keep_only_the_named_values(shop: Workspace) -> None:
    spec = KpiSpec.create(["sessions", "orders"], W_START, W_END, filters={"country": ["DE", "FR"]})
    assert {r.kpi: r.value for r in compute_kpis(shop.engine, spec).rows} == {
        "sessions": 5,
        "orders": 3,
    }  # ann 2 + ben 2 + dan 1 sessions; o1, o2, o4


def test_missing_rate_gives_null_and_a_note(shop: Workspace) -> None:
    load_journeys(
        shop,
        {
            "gil": [
                (100, "page_viewed", {"page_path": "/"}),
                (101, "order_completed", {"order_id": "o9", "revenue": "50", "currency": "GBP"}),
            ]
        },
    )
    result = compute_kpis(
        shop.engine, KpiSpec.create(["orders", "revenue", "aov", "historical_clv"], W_START, W_END)
    )
    rows = {r.kpi: r for r in result.rows}
    assert rows["orders"].value == 5  # counting is unaffected
    for name in ("revenue", "aov", "historical_clv"):
        assert rows[name].value is None
        assert "no USD rate" in (rows[name].note or "")


def test_zero_denominators_on_an_empty_store(workspace: Workspace) -> None:
    result = compute_kpis(workspace.engine, KpiSpec.create(list(EXPECTED), W_START, W_END))
    for row in result.rows:
        kpi = next(k for k in CATALOGUE if k.name == row.kpi)
        if kpi.denominator is None and not kpi.name.startswith("page_load"):
            assert row.value == 0, row.kpi  # a count of nothing
        else:
            assert row.value is None, row.kpi  # a ratio over nothing, a quantile of nothing


def test_workspace_kpis_returns_the_tidy_frame(shop: Workspace) -> None:
    frame = shop.kpis(
        ["sessions", "aov"], W_START, W_END, breakdown="device", compare="previous_period"
    )
    assert list(frame.columns) == [
        "kpi",
        "stage",
        "unit",
        "period",
        "device",
        "value",
        "numerator",
        "denominator",
        "previous_value",
        "change",
        "note",
    ]
    mobile = frame[(frame.kpi == "sessions") & (frame.device == "mobile")].iloc[0]
    assert mobile.value == 3


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        pytest.param({"names": ["nope"]}, "kpi.unknown", id="unknown-kpi"),
        pytest.param({"breakdown": ["colour"]}, "kpi.unknown_breakdown", id="unknown-breakdown"),
        pytest.param(
            {"names": ["nps"], "breakdown": ["channel"]},
            "kpi.unsupported_breakdown",
            id="unsupported-breakdown",
        ),
        pytest.param({"granularity": "hour"}, "kpi.bad_granularity", id="bad-granularity"),
        pytest.param({"compare": "last_year"}, "kpi.bad_compare", id="bad-compare"),
        pytest.param({"end": W_START}, "kpi.empty_window", id="empty-window"),
        pytest.param({"start": datetime(2024, 5, 1)}, "kpi.naive_time", id="naive-start"),
        pytest.param({"filters": {"device": []}}, "kpi.empty_filter", id="empty-filter"),
    ],
)
def test_invalid_specs(kwargs: dict[str, Any], code: str) -> None:
    args: dict[str, Any] = {"names": ["sessions"], "start": W_START, "end": W_END, **kwargs}
    names, start, end = args.pop("names"), args.pop("start"), args.pop("end")
    with pytest.raises(InvalidSpecError) as info:
        KpiSpec.create(names, start, end, **args)
    assert code in {p.code for p in info.value.problems}


def test_unsupported_breakdown_names_the_allowed_ones() -> None:
    message = "nps cannot be broken down by channel; allowed: none"
    with pytest.raises(InvalidSpecError, match=message):
        KpiSpec.create(["nps"], W_START, W_END, breakdown=["channel"])
