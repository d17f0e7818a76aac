"""The numba sessions kernel: hand-computed cuts, tie order, and equality with the SQL definition.

``refresh_sessions`` builds the ``sessions`` table with the kernel
(:mod:`funnelscope.kernels.sessions`); the written definition is the SQL of ``journey_ctes``.
The property test draws shops full of edge cases (sessions crossing midnight, equal timestamps
broken by event ids whose byte order differs from their arrival order, gaps of exactly the
timeout, late out-of-order batches, anonymous browsing stitched later, order ids re-used by
other persons) and requires every cached table to equal the SQL, batch after batch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funnelscope
from funnelscope.analysis.sessions import journey_ctes, refresh_sessions
from funnelscope.kernels.sessions import cut_sessions, order_rows
from funnelscope.workspace import Workspace
from tests.conftest import NOW, staging_table

TABLES = ("sessions", "attributed_orders", "cart_sessions", "email_touches", "site_facts")
MIDNIGHT = datetime(2024, 5, 7, tzinfo=UTC)
EVENTS = (
    "page_viewed",
    "page_viewed",
    "product_viewed",
    "promotion_viewed",
    "product_added",
    "checkout_started",
    "order_completed",
    "signed_up",
    "email_clicked",
    "ad_impression",
)
TAGS = (
    None,
    None,
    None,
    ("google", "cpc", "brand"),
    ("google", "cpc", None),
    ("news", "email", "c1"),
)
WHO = (
    ("u0", None),
    ("u1", None),
    (None, "a0"),
    (None, "a1"),
    ("u0", "a0"),
    ("u1", "a1"),
    ("u2", "a0"),
)
# event id prefixes whose byte order ("B" < "Z" < "a" < "é") is not their arrival order
PREFIXES = ("a", "B", "é", "Z", "")

event_st = st.tuples(
    st.sampled_from(WHO),
    st.integers(-2, 6),  # 15-minute steps around midnight: ties and gaps of exactly 30 minutes
    st.sampled_from((0, 0, 0, 1)),  # plus a microsecond: a gap just over the timeout
    st.sampled_from(EVENTS),
    st.sampled_from(TAGS),
    st.sampled_from(("o1", "o2")),
    st.sampled_from(PREFIXES),
    st.sampled_from(("/a", "/b", None)),
)


def _rows(events: list[tuple[Any, ...]], first: int) -> list[dict[str, Any]]:
    rows = []
    for i, ((user, anon), step, micro, event, tag, order, prefix, page) in enumerate(events):
        at = MIDNIGHT + timedelta(minutes=15 * step, microseconds=micro)
        row: dict[str, Any] = {
            "event_id": f"{prefix}{first + i:03d}",
            "timestamp": at.isoformat(),
            "event": event,
            "user_id": user,
            "anonymous_id": anon,
            "page_path": page,
            "properties": '{"campaign_id": "c1", "load_time_ms": 120}',
        }
        if tag:
            row.update(utm_source=tag[0], utm_medium=tag[1], utm_campaign=tag[2])
        if event == "order_completed":
            row.update(order_id=order, revenue="12.5", currency="EUR")
        rows.append(row)
    return rows


def _tables(ws: Workspace, inline: bool) -> dict[str, list[tuple[Any, ...]]]:
    if inline:
        ctes = ",\n".join(f"{name} AS ({body})" for name, body in journey_ctes())
        return {
            t: sorted(
                (
                    tuple(r.values())
                    for r in ws.engine.sql(f"WITH {ctes}\nSELECT * FROM {t}").to_pylist()
                ),
                key=repr,
            )
            for t in TABLES
        }
    return {t: sorted(ws.store.query(f"SELECT * FROM {t}"), key=repr) for t in TABLES}


@settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(st.lists(event_st, min_size=1, max_size=25), min_size=1, max_size=3))
def test_kernel_build_equals_the_sql_definition(batches: list[list[tuple[Any, ...]]]) -> None:
    with funnelscope.open(":memory:") as ws:
        first = 0
        for batch in batches:
            # later batches are "late": their ids are higher but their times overlap
            report = ws.append_staging(
                staging_table(_rows(batch, first)), source="test", received_at=NOW
            )
            assert report.rejected == 0, report.rejections
            first += len(batch)
            refresh_sessions(ws.store)  # a full kernel build, then incremental ones
            assert _tables(ws, inline=False) == _tables(ws, inline=True)


def test_cut_sessions_by_hand() -> None:
    # timeout 1000 us; person 1: untagged page, tagged page (a new session), an add to cart,
    # a page exactly one timeout later (same session), a view one microsecond past it (new)
    out = cut_sessions(
        person=np.array([1, 1, 1, 1, 1, 2]),
        ts=np.array([0, 10, 20, 1020, 2021, 5]),
        kind=np.array([0, 0, 3, 0, 1, 4], np.int8),
        tag=np.array([-1, 7, -1, 7, -1, -1]),
        has_page=np.array([1, 1, 0, 1, 0, 0], bool),
        timeout_us=1000,
    )
    assert out.tolist() == [
        [0, 1, 4, 5],  # first row
        [0, 3, 4, 5],  # last row
        [0, 1, -1, -1],  # landing row
        [0, 3, -1, -1],  # exit row
        [1, 2, 3, 1],  # session number
        [1, 3, 1, 1],  # events
        [1, 2, 0, 0],  # page views
        [0, 1, 0, 1],  # interactions (add to cart, checkout)
        [0, 0, 1, 0],  # product views
        [0, 1, 0, 0],  # cart adds
        [-1, 2, -1, -1],  # first add-to-cart row
        [-1, -1, -1, 5],  # first checkout row
        [0, 10, 0, 0],  # timed page us: row 1 -> row 2; row 3's next event starts a session
        [0, 1, 0, 0],  # timed pages
    ]


def test_order_rows_breaks_ties_by_event_id_bytes() -> None:
    order = order_rows(
        np.array([2, 1, 1, 1]), np.array([5, 7, 7, 3]), pa.array(["a", "c", "B", "z"])
    )
    assert order.tolist() == [3, 2, 1, 0]  # person 1 by time, "B" < "c"; then person 2
