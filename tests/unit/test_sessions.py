"""Sessions: timeout, campaign changes, ties, midnight, stitching, bounce, materialisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from funnelscope.analysis.sessions import SessionSpec, refresh_sessions, session_table
from funnelscope.errors import InvalidSpecError
from funnelscope.workspace import Workspace
from tests.conftest import T0, load_journeys

START, END = T0 - timedelta(days=30), T0 + timedelta(days=30)
GOOGLE = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "brand"}
NEWS = {"utm_source": "news", "utm_medium": "email", "utm_campaign": "nl1"}


def sessions(ws: Workspace, spec: SessionSpec | None = None) -> list[dict[str, Any]]:
    return session_table(ws.engine, start=START, end=END, spec=spec or SessionSpec()).to_pylist()


def test_timeout_campaign_change_and_off_site_events(workspace: Workspace) -> None:
    load_journeys(
        workspace,
        {
            "ann": [
                (0, "page_viewed", {"page_path": "/", **GOOGLE}),
                (5, "page_viewed", {"page_path": "/p/1"}),
                (10, "page_viewed", {"page_path": "/", **NEWS}),  # campaign changed
                (12, "page_viewed", {"page_path": "/x", **NEWS}),  # same campaign: same session
                (42, "page_viewed", {"page_path": "/y"}),  # exactly 30 minutes: same session
                (73, "page_viewed", {"page_path": "/z"}),  # 31 minutes: new session
                (74, "ad_impression", {}),  # off site: no session, no duration
            ]
        },
    )
    rows = sessions(workspace)
    assert [
        (
            r["session_number"],
            r["landing_page"],
            r["exit_page"],
            r["page_count"],
            r["duration_us"] // 60_000_000,
            r["channel"],
        )
        for r in rows
    ] == [
        (1, "/", "/p/1", 2, 5, "paid_search"),
        (2, "/", "/y", 3, 32, "email"),
        (3, "/z", "/z", 1, 0, "direct"),
    ]
    assert [r["is_new_visitor"] for r in rows] == [True, False, False]
    assert [r["is_bounce"] for r in rows] == [False, False, True]
    # time on page: / -> /p/1 (5 min); / -> /x (2), /x -> /y (30)
    assert [(r["timed_page_us"] // 60_000_000, r["timed_pages"]) for r in rows] == [
        (5, 1),
        (32, 2),
        (0, 0),
    ]


def test_tagged_event_in_an_untagged_session_starts_a_new_one(workspace: Workspace) -> None:
    load_journeys(
        workspace,
        {
            "ben": [
                (0, "page_viewed", {"page_path": "/"}),
                (1, "page_viewed", {"page_path": "/a", **GOOGLE}),
                (2, "page_viewed", {"page_path": "/b"}),
            ]
        },
    )
    assert [(r["landing_page"], r["utm_campaign"]) for r in sessions(workspace)] == [
        ("/", None),
        ("/a", "brand"),
    ]


def test_equal_timestamps_are_ordered_by_event_id(workspace: Workspace) -> None:
    load_journeys(
        workspace,
        {
            "cat": [
                (0, "page_viewed", {"page_path": "/second", "event_id": "b"}),
                (0, "page_viewed", {"page_path": "/first", "event_id": "a"}),
            ]
        },
    )
    (row,) = sessions(workspace)
    assert (row["landing_page"], row["exit_page"], row["first_event_id"]) == (
        "/first",
        "/second",
        "a",
    )


def test_session_spanning_midnight_starts_on_its_first_day(workspace: Workspace) -> None:
    load_journeys(
        workspace,
        {
            "dan": [
                (890, "page_viewed", {"page_path": "/"}),  # 23:50
                (915, "page_viewed", {"page_path": "/late"}),  # 00:15 the next day
            ]
        },
    )
    day1 = datetime(2024, 5, 6, tzinfo=UTC)
    on_day1 = session_table(workspace.engine, start=day1, end=day1 + timedelta(days=1))
    on_day2 = session_table(
        workspace.engine, start=day1 + timedelta(days=1), end=day1 + timedelta(days=2)
    )
    assert (on_day1.num_rows, on_day2.num_rows) == (1, 0)
    assert on_day1.to_pylist()[0]["duration_us"] == 25 * 60_000_000


def test_anonymous_history_stitched_later_is_the_users_first_session(
    workspace: Workspace,
) -> None:
    load_journeys(
        workspace, {"anon": [(0, "page_viewed", {"anonymous_id": "a-1", "page_path": "/"})]}
    )
    before = sessions(workspace)
    load_journeys(
        workspace,
        {
            "eve": [
                (120, "logged_in", {"anonymous_id": "a-1", "user_id": "eve"}),
                (121, "page_viewed", {"user_id": "eve", "page_path": "/account"}),
            ]
        },
    )
    after = sessions(workspace)  # the table is rebuilt: the stitching changed
    assert len(before) == 1
    assert len({r["person_id"] for r in after}) == 1
    assert [(r["session_number"], r["is_new_visitor"], r["landing_page"]) for r in after] == [
        (1, True, "/"),
        (2, False, "/account"),
    ]


def test_bounce_rules(workspace: Workspace) -> None:
    load_journeys(
        workspace,
        {
            "one-page": [(0, "page_viewed", {"page_path": "/"})],
            "one-page-cart": [(0, "page_viewed", {"page_path": "/"}), (1, "product_added", {})],
            "two-pages": [
                (0, "page_viewed", {"page_path": "/"}),
                (0.1, "page_viewed", {"page_path": "/b"}),
            ],
        },
    )
    single = sorted(
        (r["event_count"], r["page_count"], r["is_bounce"]) for r in sessions(workspace)
    )
    # one page: bounce; one page and an add-to-cart: an interaction; two pages
    assert single == [(1, 1, True), (2, 1, False), (2, 2, False)]
    short = sessions(
        workspace, SessionSpec(bounce="engagement", engagement_window=timedelta(seconds=10))
    )
    # durations: 0 s, 60 s, 6 s
    assert sorted((r["duration_us"], r["is_bounce"]) for r in short) == [
        (0, True),
        (6_000_000, True),
        (60_000_000, False),
    ]


def test_other_timeout_runs_inline_with_the_same_definition(workspace: Workspace) -> None:
    load_journeys(
        workspace,
        {"fay": [(0, "page_viewed", {}), (20, "page_viewed", {}), (45, "page_viewed", {})]},
    )
    assert len(sessions(workspace)) == 1
    assert len(sessions(workspace, SessionSpec(timeout=timedelta(minutes=10)))) == 3
    assert len(sessions(workspace)) == 1  # the materialised table is untouched


def test_refresh_only_when_something_changed(workspace: Workspace) -> None:
    load_journeys(workspace, {"gil": [(0, "page_viewed", {})]})
    assert refresh_sessions(workspace.store) is True
    assert refresh_sessions(workspace.store) is False
    load_journeys(workspace, {"hal": [(0, "page_viewed", {})]})
    assert refresh_sessions(workspace.store) is True


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        pytest.param(SessionSpec(timeout=timedelta(0)), "session.bad_timeout", id="zero-timeout"),
        pytest.param(
            SessionSpec(timeout=timedelta(days=2)), "session.bad_timeout", id="long-timeout"
        ),
        pytest.param(
            SessionSpec(bounce="x"),
            "session.bad_bounce",  # type: ignore[arg-type]
            id="bad-bounce",
        ),
        pytest.param(
            SessionSpec(engagement_window=timedelta(0)),
            "session.bad_engagement_window",
            id="bad-engagement",
        ),
    ],
)
def test_invalid_session_specs(spec: SessionSpec, code: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        spec.validate()
    assert info.value.code == code
