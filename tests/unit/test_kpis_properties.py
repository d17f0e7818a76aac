"""Properties of every KPI on random shops: breakdowns add up, row order does not matter."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funnelscope
from funnelscope.analysis.kpi_catalogue import CATALOGUE
from funnelscope.analysis.kpis import KpiSpec, compute_kpis
from funnelscope.workspace import Workspace
from tests.conftest import NOW, T0, staging_table

START, END = datetime(2024, 5, 6, tzinfo=UTC), datetime(2024, 5, 13, tzinfo=UTC)
EVENTS = (
    "page_viewed",
    "product_viewed",
    "product_added",
    "checkout_started",
    "order_completed",
    "content_engaged",
    "ad_impression",
    "social_engaged",
    "email_opened",
    "email_clicked",
    "order_refunded",
)
TAGS = (
    None,
    ("google", "cpc", "brand"),
    ("news", "email", "c1"),
    ("facebook", "paid_social", "spring"),
)

event_st = st.tuples(
    st.integers(0, 5),  # person
    st.integers(-600, 7 * 1440),  # minutes after T0: some before the window
    st.sampled_from(EVENTS),
    st.sampled_from(TAGS),
    st.sampled_from(("mobile", "desktop")),
    st.sampled_from(("DE", "US", None)),
    st.sampled_from(("o1", "o2", "o3", "o4")),
    st.sampled_from(("USD", "EUR")),
    st.integers(0, 4),  # product, quantity, scroll...
)


def _rows(events: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    rows = []
    for i, (person, minute, event, tag, device, country, order, currency, k) in enumerate(events):
        row: dict[str, Any] = {
            "event_id": f"e{i}",
            "timestamp": (T0.timestamp() + minute * 60),
            "event": event,
            "user_id": f"u{person}" if person < 4 else None,
            "anonymous_id": f"a{person % 3}",
            "device_type": device,
            "country": country,
            "page_path": f"/p/{k}",
        }
        row["timestamp"] = datetime.fromtimestamp(row["timestamp"], UTC).isoformat()
        if tag:
            row.update(utm_source=tag[0], utm_medium=tag[1], utm_campaign=tag[2])
        if event in ("order_completed", "order_refunded"):
            row.update(order_id=order, revenue=str(10 + 5 * k), currency=currency)
            row["items"] = json.dumps([{"product_id": f"p{k}", "price": 5, "quantity": k}])
        if event in ("product_viewed", "product_added"):
            row["product_id"] = f"p{k}"
        props = {
            "scroll_depth": 20 * k,
            "action": ("like", "share")[k % 2],
            "campaign_id": "c1",
            "load_time_ms": 100 * k,
        }
        row["properties"] = json.dumps(props)
        rows.append(row)
    return rows


def _shop(rows: list[dict[str, Any]]) -> Workspace:
    ws = funnelscope.open(":memory:")
    report = ws.append_staging(staging_table(rows), source="test", received_at=NOW)
    assert report.rejected == 0, report.rejections
    with ws.store.write() as cur:
        cur.execute("INSERT INTO currency_rates VALUES (DATE '2024-01-01', 'EUR', 1.25)")
        cur.execute(
            "INSERT INTO ad_spend VALUES "
            "(DATE '2024-05-06', 'paid_search', 'google', 'brand', 1000, 50, 100, 'USD', 800),"
            "(DATE '2024-05-08', 'paid_social', 'facebook', 'spring', 500, 10, 20, 'EUR', 400),"
            "(DATE '2024-05-09', 'paid_search', 'google', NULL, 300, 3, 7, 'USD', 200)"
        )
        cur.execute(
            "INSERT INTO email_campaigns VALUES ('c1', 'n', "
            "TIMESTAMPTZ '2024-05-07 08:00:00+00', 10, 9)"
        )
        cur.execute(
            "INSERT INTO survey_responses (response_id, answered_at, score) VALUES "
            "('r1', TIMESTAMPTZ '2024-05-08 00:00:00+00', 9)"
        )
    return ws


ADDITIVE = [k for k in CATALOGUE if k.additive]
SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(event_st, min_size=1, max_size=40))
def test_additive_kpis_add_up_over_every_breakdown(events: list[tuple[Any, ...]]) -> None:
    with _shop(_rows(events)) as ws:
        totals = {
            r.kpi: r.value
            for r in compute_kpis(
                ws.engine, KpiSpec.create([k.name for k in ADDITIVE], START, END)
            ).rows
        }
        for dim in (
            "channel",
            "campaign",
            "device",
            "country",
            "new_vs_returning",
            "product",
            "page",
        ):
            names = [k.name for k in ADDITIVE if dim in k.breakdowns]
            rows = compute_kpis(ws.engine, KpiSpec.create(names, START, END, breakdown=[dim])).rows
            for name in names:
                parts = sum(r.value or 0 for r in rows if r.kpi == name)
                assert abs(parts - (totals[name] or 0)) < 1e-6, (name, dim)


@SETTINGS
@given(st.lists(event_st, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_no_kpi_changes_when_rows_are_shuffled(
    events: list[tuple[Any, ...]], rnd: random.Random
) -> None:
    rows = _rows(events)
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    names = [k.name for k in CATALOGUE]
    results = []
    for batch in (rows, shuffled):
        with _shop(batch) as ws:
            spec = KpiSpec.create(names, START, END, compare="previous_period")
            results.append([r.to_dict() for r in compute_kpis(ws.engine, spec).rows])
    assert results[0] == results[1]
