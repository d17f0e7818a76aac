"""The session cache refreshed batch by batch equals a full rebuild and the inline SQL.

Random shops arrive in several batches: late events that land inside (or between) earlier
sessions, anonymous browsing stitched to a user in a later batch, order ids re-sent by another
person. After each batch ``refresh_sessions`` updates only the persons touched; at the end every
cached table must equal a one-off build over the same store and the inline definition.
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funnelscope
from funnelscope.analysis.sessions import journey_ctes, refresh_sessions
from funnelscope.workspace import Workspace
from tests.conftest import NOW, T0, load_journeys, staging_table

TABLES = ("sessions", "attributed_orders", "cart_sessions", "email_touches", "site_facts")
EVENTS = (
    "page_viewed",
    "page_viewed",
    "product_viewed",
    "product_added",
    "checkout_started",
    "order_completed",
    "email_opened",
    "email_clicked",
    "ad_impression",
    "social_engaged",
)
TAGS = (None, None, ("google", "cpc", "brand"), ("news", "email", "c1"))
# who: a user, an anonymous id, or both (a login that stitches the anonymous id to the user)
WHO = (
    ("u0", None),
    ("u1", None),
    (None, "a0"),
    (None, "a1"),
    ("u0", "a0"),
    ("u1", "a1"),
    ("u2", "a0"),
    (None, "a2"),
)

event_st = st.tuples(
    st.sampled_from(WHO),
    st.integers(-600, 3000),  # minutes after T0: later batches reach back in time
    st.sampled_from(EVENTS),
    st.sampled_from(TAGS),
    st.sampled_from(("o1", "o2", "o3")),
    st.integers(0, 3),
)


def _rows(events: list[tuple[Any, ...]], first_id: int) -> list[dict[str, Any]]:
    rows = []
    for i, ((user, anon), minute, event, tag, order, k) in enumerate(events):
        row: dict[str, Any] = {
            "event_id": f"e{first_id + i:05d}",
            "timestamp": (T0 + timedelta(minutes=minute)).isoformat(),
            "event": event,
            "user_id": user,
            "anonymous_id": anon,
            "page_path": f"/p/{k}",
            "properties": json.dumps(
                {"campaign_id": f"c{k % 2}", "action": "like", "load_time_ms": 100 * k}
            ),
        }
        if tag:
            row.update(utm_source=tag[0], utm_medium=tag[1], utm_campaign=tag[2])
        if event == "order_completed":
            row.update(order_id=order, revenue=str(10 + k), currency="USD")
        rows.append(row)
    return rows


def _append(ws: Workspace, rows: list[dict[str, Any]]) -> None:
    if rows:
        report = ws.append_staging(staging_table(rows), source="test", received_at=NOW)
        assert report.rejected == 0, report.rejections


def _sorted(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(rows, key=repr)


def _cached(ws: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    return {t: _sorted(ws.store.query(f"SELECT * FROM {t}")) for t in TABLES}


def _inline(ws: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    ctes = ",\n".join(f"{name} AS ({body})" for name, body in journey_ctes())
    return {
        t: _sorted(
            [
                tuple(r.values())
                for r in ws.engine.sql(f"WITH {ctes}\nSELECT * FROM {t}").to_pylist()
            ]
        )
        for t in TABLES
    }


def _check(batches: list[list[dict[str, Any]]]) -> None:
    with funnelscope.open(":memory:") as step, funnelscope.open(":memory:") as once:
        for batch in batches:
            _append(step, batch)
            refresh_sessions(step.store)  # incremental after the first batch
            _append(once, batch)
        assert refresh_sessions(once.store) is True  # one full build
        incremental = _cached(step)
        assert incremental == _cached(once)
        assert incremental == _inline(step)


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(event_st, min_size=1, max_size=40), st.lists(st.integers(0, 40), max_size=4))
def test_incremental_refresh_equals_a_full_rebuild(
    events: list[tuple[Any, ...]], cuts: list[int]
) -> None:
    bounds = [0, *sorted(min(c, len(events)) for c in cuts), len(events)]
    _check([_rows(events[a:b], a) for a, b in itertools.pairwise(bounds)])


def test_anonymous_person_merged_in_a_later_batch() -> None:
    anon = ((None, "a0"), 0, "page_viewed", None, "o1", 0)
    _check(
        [
            _rows([anon, ((None, "a0"), 5, "order_completed", None, "o1", 1)], 0),
            _rows([(("u0", "a0"), 120, "page_viewed", TAGS[2], "o1", 2)], 10),
        ]
    )


def test_order_id_sent_earlier_by_another_person_moves_the_order() -> None:
    # u1's o2 at minute 10 is the order until u0's o2 arrives, timed at minute 5
    _check(
        [
            _rows([(("u1", None), 10, "order_completed", None, "o2", 0)], 0),
            _rows([(("u0", None), 5, "order_completed", None, "o2", 1)], 10),
        ]
    )


def test_late_event_reopens_a_session_and_merges_two(workspace: Workspace) -> None:
    load_journeys(
        workspace,
        {"ann": [(0, "page_viewed", {"event_id": "a1"}), (50, "page_viewed", {"event_id": "a2"})]},
    )
    assert refresh_sessions(workspace.store) is True
    assert workspace.store.query("SELECT count(*) FROM sessions")[0][0] == 2
    # arrives later, timed between the two: 25 minutes from each, so one session of three
    load_journeys(workspace, {"ann": [(25, "product_viewed", {"event_id": "a3"})]})
    assert refresh_sessions(workspace.store) is True
    assert workspace.store.query(
        "SELECT session_number, event_count, duration_us FROM sessions"
    ) == [(1, 3, 50 * 60_000_000)]
    assert refresh_sessions(workspace.store) is False


def test_refresh_touches_only_the_persons_with_new_events(workspace: Workspace) -> None:
    load_journeys(workspace, {"bea": [(0, "page_viewed", {})], "cal": [(0, "page_viewed", {})]})
    refresh_sessions(workspace.store)
    # a marker on bea's cached row survives a refresh that only concerns cal
    with workspace.store.write() as cur:
        cur.execute(
            "UPDATE sessions SET landing_page = 'kept' WHERE person_id = "
            "(SELECT person_id FROM identities WHERE distinct_id = 'bea')"
        )
    load_journeys(workspace, {"cal": [(90, "page_viewed", {"event_id": "cal-late"})]})
    assert refresh_sessions(workspace.store) is True
    assert workspace.store.query(
        "SELECT i.distinct_id, count(*), max(s.landing_page) FROM sessions s "
        "JOIN identities i ON i.person_id = s.person_id GROUP BY 1 ORDER BY 1"
    ) == [("bea", 1, "kept"), ("cal", 2, None)]
