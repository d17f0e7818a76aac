"""SMART goals (analysis/goals.py): definitions, validation, progress, storage and checks."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from funnelscope.analysis.goals import (
    GoalSpec,
    check_goals,
    delete_goal,
    get_goal,
    goal_progress,
    list_goals,
    parse_target,
    save_goal,
    status_for,
    subscribe_goal_webhook,
    validate_goal,
)
from funnelscope.errors import InvalidSpecError
from funnelscope.webhooks import outbox
from funnelscope.workspace import Workspace
from tests.conftest import staging_table

AT = datetime(2025, 1, 11, tzinfo=UTC)  # days 2025-01-01 .. 2025-01-10 are complete


def goal(**overrides: Any) -> GoalSpec:
    fields: dict[str, Any] = {
        "kpi": "orders",
        "target": "+15%",
        "start": "2025-01-01",
        "deadline": "2025-01-30",
    }
    fields.update(overrides)
    return GoalSpec.create(fields.pop("name", "g"), **fields)


def load_orders(
    ws: Workspace,
    first: date,
    last: date,
    prices: tuple[float, ...] = (10.0, 10.0),
    product: str = "X",
) -> None:
    """One order per price, every day from ``first`` to ``last``, at 10:00, 11:00, ... UTC."""
    rows = []
    day = first
    while day <= last:
        for i, price in enumerate(prices):
            at = datetime(day.year, day.month, day.day, 10 + i, tzinfo=UTC)
            oid = f"o-{product}-{day.isoformat()}-{i}"
            rows.append(
                {
                    "event_id": oid,
                    "timestamp": at.isoformat(),
                    "event": "Order Completed",
                    "user_id": f"u{i}",
                    "order_id": oid,
                    "revenue": str(price),
                    "currency": "USD",
                    "utm_campaign": "email_spring" if i == 0 else None,
                    "items": json.dumps(
                        [
                            {
                                "product_id": product,
                                "category": "shoes",
                                "price": price,
                                "quantity": 1,
                            }
                        ]
                    ),
                }
            )
        day += timedelta(days=1)
    received = datetime(2025, 6, 1, tzinfo=UTC)  # after every order: none is "in the future"
    report = ws.append_staging(staging_table(rows), source="test", received_at=received)
    assert report.rejected == 0, report.rejections


# -- reading targets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("+15%", ("change", 15.0, "%"), id="change-up"),
        pytest.param("-10%", ("change", -10.0, "%"), id="change-down"),
        pytest.param("2.5%", ("absolute", 2.5, "%"), id="absolute-percent"),
        pytest.param("50000 usd", ("absolute", 50000.0, "USD"), id="amount-code-after"),
        pytest.param("EUR 12,5", ("absolute", 12.5, "EUR"), id="amount-code-before-comma"),
        pytest.param("1200", ("absolute", 1200.0, None), id="plain-number"),
        pytest.param(0.03, ("absolute", 0.03, None), id="float"),
    ],
)
def test_parse_target(text: str | float, expected: tuple[str, float, str | None]) -> None:
    assert parse_target(text) == expected


def test_an_unreadable_target_is_rejected() -> None:
    with pytest.raises(InvalidSpecError, match="cannot read target 'lots'") as info:
        parse_target("lots")
    assert info.value.code == "goal.bad_target"


# -- bad definitions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        pytest.param(
            {"kpi": "revenu"},
            "goal.unknown_kpi",
            ["'revenu'", "did you mean revenue"],
            id="unknown-kpi",
        ),
        pytest.param(
            {"deadline": "2024-12-31"},
            "goal.deadline_before_start",
            ["2024-12-31", "before the start 2025-01-01"],
            id="deadline-before-start",
        ),
        pytest.param(
            {"deadline": None},
            "goal.not_time_bound",
            ["no deadline", "time-bound"],
            id="no-deadline",
        ),
        pytest.param(
            {"kpi": "conversion_rate", "target": 1.5},
            "goal.target_unit",
            ["ratio in 0..1", "1.5 is outside", "write 1.5%"],
            id="rate-above-one",
        ),
        pytest.param(
            {"kpi": "conversion_rate", "target": "150%"},
            "goal.target_unit",
            ["ratio in 0..1", "150% is outside"],
            id="rate-percent-above-100",
        ),
        pytest.param(
            {"kpi": "revenue", "target": -100},
            "goal.target_unit",
            ["currency in >= 0", "-100 is outside"],
            id="negative-revenue",
        ),
        pytest.param(
            {"kpi": "orders", "target": "500 USD"},
            "goal.target_unit",
            ["orders is in count, not a currency"],
            id="currency-on-count",
        ),
        pytest.param(
            {"kpi": "revenue", "target": "500 EUR"},
            "goal.target_unit",
            ["store currency USD, not EUR"],
            id="foreign-currency",
        ),
        pytest.param(
            {"kpi": "revenue", "target": "15%"},
            "goal.target_unit",
            ["not a percentage", "write +15%"],
            id="percent-on-revenue",
        ),
        pytest.param(
            {"scope": {"colour": "red"}},
            "goal.unknown_scope",
            ["'colour'", "allowed: channel", "category", "segment"],
            id="unknown-scope",
        ),
        pytest.param(
            {"kpi": "revenue", "scope": {"product": "X"}},
            "goal.unmeasurable",
            ["revenue cannot be scoped by product", "product_revenue"],
            id="kpi-not-by-product",
        ),
        pytest.param(
            {"scope": {"segment": "vip"}}, "goal.unmeasurable", ["segment"], id="segment-scope"
        ),
        pytest.param(
            {"kpi": "bounce_rate", "target": "+10%"},
            "goal.target_direction",
            ["better lower", "+10%"],
            id="change-the-wrong-way",
        ),
        pytest.param(
            {"baseline_start": "2024-12-01", "baseline_end": "2025-01-05"},
            "goal.bad_baseline",
            ["before the goal starts"],
            id="baseline-overlaps",
        ),
        pytest.param(
            {"kpi": "aov", "aggregation": "sum", "target": 30},
            "goal.bad_aggregation",
            ["not additive"],
            id="sum-of-a-ratio",
        ),
        pytest.param(
            {"deadline": "2030-01-01"},
            "goal.too_long",
            ["at most 1096 days", "1827"],
            id="longer-than-three-years",
        ),
    ],
)
def test_bad_goal_definitions_are_rejected(
    overrides: dict[str, Any], code: str, words: list[str]
) -> None:
    with pytest.raises(InvalidSpecError) as info:
        goal(**overrides).validate(store_currency="USD")
    problems = [p for p in info.value.problems if p.code == code]
    assert problems, info.value.problems
    for word in words:
        assert word in problems[0].message


def test_every_problem_is_reported_at_once() -> None:
    spec = goal(kpi="nope", deadline="2024-01-01", scope={"colour": "red"})
    with pytest.raises(InvalidSpecError) as info:
        spec.validate()
    assert {p.code for p in info.value.problems} == {
        "goal.unknown_kpi",
        "goal.deadline_before_start",
        "goal.unknown_scope",
    }


def test_unreadable_dates_and_unknown_fields_are_rejected() -> None:
    with pytest.raises(InvalidSpecError) as info:
        goal(start="01/02/2025")
    assert info.value.code == "goal.bad_date"
    with pytest.raises(InvalidSpecError, match="unknown field 'dead_line'"):
        GoalSpec.from_dict(
            {
                "name": "g",
                "kpi": "orders",
                "target": 1,
                "start": "2025-01-01",
                "dead_line": "2025-02-01",
            }
        )


def test_the_definition_round_trips_through_json() -> None:
    spec = goal(
        kpi="product_revenue",
        scope={"product": "X", "channel": "email"},
        initiative="email_spring",
        owner="ana",
        baseline_start="2024-10-01",
        baseline_end="2024-12-31",
    )
    again = GoalSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert spec.baseline_period() == (date(2024, 10, 1), date(2024, 12, 31))
    assert goal().baseline_period() == (date(2024, 12, 2), date(2024, 12, 31))  # 30 days before


@pytest.mark.parametrize(
    ("kpi", "aggregation"),
    [
        pytest.param("orders", "sum", id="additive"),
        pytest.param("aov", "ratio", id="ratio"),
        pytest.param("visitors", "mean", id="unique-count"),
        pytest.param("page_load_p95", "mean", id="quantile"),
    ],
)
def test_aggregation_follows_the_catalogue(kpi: str, aggregation: str) -> None:
    assert goal(kpi=kpi, target=1).resolved_aggregation() == aggregation


@pytest.mark.parametrize(
    ("probability", "complete", "met", "status"),
    [
        pytest.param(0.7, False, False, "on_track", id="p-0.7-on-track"),
        pytest.param(0.69, False, False, "at_risk", id="p-0.69-at-risk"),
        pytest.param(0.3, False, False, "at_risk", id="p-0.3-at-risk"),
        pytest.param(0.29, False, False, "off_track", id="p-0.29-off-track"),
        pytest.param(None, False, False, "insufficient_data", id="no-forecast"),
        pytest.param(0.1, True, True, "achieved", id="after-deadline-met"),
        pytest.param(0.9, True, False, "missed", id="after-deadline-not-met"),
    ],
)
def test_status_rule(probability: float | None, complete: bool, met: bool, status: str) -> None:
    assert status_for(probability, is_complete=complete, is_met=met) == status


# -- progress on a store --------------------------------------------------------------------------


def test_progress_of_an_additive_goal_by_hand(workspace: Workspace) -> None:
    # Two orders every day. Baseline Dec 2-31: 60 orders, so +15% -> 69 by Jan 30.
    load_orders(workspace, date(2024, 11, 1), date(2025, 1, 30))
    p = goal_progress(workspace, goal(), now=AT)
    assert (p.baseline_value, p.target_value, p.current_value) == (60.0, 69.0, 20.0)
    assert (p.days_elapsed, p.days_total, p.days_left) == (10, 30, 20)
    assert p.expected_to_date == pytest.approx(69 * 10 / 30)  # pacing: 0 -> 69 linearly
    assert p.percent_of_target == pytest.approx(100 * 20 / 69)
    # A constant history forecasts 20 more days of 2 orders: 60 for sure, short of 69.
    assert p.forecast is not None and p.forecast.mean == 60.0
    assert (p.probability, p.status) == (0.0, "off_track")
    assert p.daily.loc["2025-01-10", "actual_to_date"] == 20.0
    assert p.daily.loc["2025-01-30", "pacing"] == pytest.approx(69.0)
    assert p.daily.loc["2025-01-30", "forecast_mean"] == 60.0
    assert p.data_through == date(2025, 1, 10)  # later days exist but are after `now`
    checks = {c.property: c for c in p.checks}
    assert checks["achievable"].passed is False and "0%" in checks["achievable"].message
    assert checks["time_bound"].message == "deadline 2025-01-30: 30 days, 20 left"
    assert checks["relevant"].passed is None
    easy = goal_progress(workspace, goal(target=55), now=AT)
    assert (easy.target_value, easy.probability, easy.status) == (55.0, 1.0, "on_track")


def test_after_the_deadline_a_goal_is_achieved_or_missed(workspace: Workspace) -> None:
    load_orders(workspace, date(2024, 11, 1), date(2025, 1, 30))
    later = datetime(2025, 2, 3, tzinfo=UTC)
    missed = goal_progress(workspace, goal(), now=later)
    achieved = goal_progress(workspace, goal(target=60), now=later)
    assert (missed.current_value, missed.status) == (60.0, "missed")
    assert (achieved.status, achieved.probability) == ("achieved", 1.0)
    assert "ended on 2025-01-30" in achieved.checks[-1].message


def test_progress_of_a_ratio_goal_by_hand(workspace: Workspace) -> None:
    # Orders of 10 and 30 every day: AOV 20. Target 25; pacing runs 20 -> 25 over 30 days.
    load_orders(workspace, date(2024, 11, 1), date(2025, 1, 30), prices=(10.0, 30.0))
    p = goal_progress(workspace, goal(kpi="aov", target=25), now=AT)
    assert (p.aggregation, p.current_value, p.baseline_value) == ("ratio", 20.0, 20.0)
    assert p.expected_to_date == pytest.approx(20 + 5 * 10 / 30)
    assert (p.probability, p.status, p.currency) == (0.0, "off_track", "USD")
    assert p.to_dict()["checks"][0]["message"].startswith(
        "aov (ratio over 2025-01-01..2025-01-30) for the whole store: at least 25.00 USD"
    )


def test_scopes_narrow_the_kpi(workspace: Workspace) -> None:
    load_orders(workspace, date(2024, 12, 1), date(2025, 1, 30), prices=(10.0,), product="X")
    load_orders(workspace, date(2024, 12, 1), date(2025, 1, 30), prices=(5.0,), product="Y")
    by_product = goal_progress(
        workspace, goal(kpi="product_revenue", target=1000, scope={"product": "X"}), now=AT
    )
    by_campaign = goal_progress(
        workspace, goal(kpi="revenue", target=1000, scope={"campaign": "email_spring"}), now=AT
    )
    by_category = goal_progress(
        workspace, goal(kpi="product_revenue", target=1000, scope={"category": "shoes"}), now=AT
    )
    assert by_product.current_value == 100.0  # 10 days x 10
    assert by_campaign.current_value == 150.0  # both products' first order of the day
    assert by_category.current_value == 150.0
    relevant = goal_progress(workspace, goal(initiative="email_spring"), now=AT).checks[3]
    assert (relevant.passed, relevant.message) == (
        True,
        "initiative 'email_spring' found in events",
    )


def test_a_goal_the_data_cannot_measure_is_rejected(workspace: Workspace) -> None:
    load_orders(workspace, date(2024, 12, 1), date(2025, 1, 10))
    for spec, words in (
        (goal(kpi="email_open_rate", target=0.3), "no email_open_rate data for the whole store"),
        (
            goal(kpi="product_revenue", target=100, scope={"product": "NOPE"}),
            "no product_revenue data for product=NOPE",
        ),
    ):
        with pytest.raises(InvalidSpecError, match=words) as info:
            validate_goal(workspace, spec, now=AT)
        assert info.value.code == "goal.unmeasurable"
    validate_goal(workspace, goal(), now=AT)  # orders are measurable


def test_a_goal_without_data_has_no_forecast(workspace: Workspace) -> None:
    p = goal_progress(workspace, goal(target=10), now=AT)
    assert (p.status, p.probability, p.forecast) == ("insufficient_data", None, None)
    assert p.checks[1].passed is False


def test_now_must_be_timezone_aware(workspace: Workspace) -> None:
    with pytest.raises(InvalidSpecError, match="timezone-aware"):
        goal_progress(workspace, goal(), now=datetime(2025, 1, 11))


# -- storage and checks --------------------------------------------------------------------------


def test_goals_are_stored_replaced_and_removed(workspace: Workspace) -> None:
    store = workspace.store
    save_goal(store, goal(name="a"), now=AT)
    save_goal(store, goal(name="b", target=50), now=AT)
    with pytest.raises(InvalidSpecError, match="a goal named 'a' exists") as info:
        save_goal(store, goal(name="a"), now=AT)
    assert info.value.code == "goal.exists"
    save_goal(store, goal(name="a", owner="ana"), now=AT + timedelta(days=1), replace=True)
    listed = list_goals(store)
    assert [g["goal"].name for g in listed] == ["a", "b"]
    assert listed[0]["created_at"] == AT and listed[0]["goal"].owner == "ana"
    assert get_goal(store, "b") == goal(name="b", target=50)
    with pytest.raises(InvalidSpecError, match="no goal named 'c'"):
        get_goal(store, "c")
    delete_goal(store, "a")
    assert [g["goal"].name for g in list_goals(store)] == ["b"]


def test_a_status_change_is_recorded_and_queues_one_webhook(workspace: Workspace) -> None:
    load_orders(workspace, date(2024, 11, 1), date(2025, 1, 30))
    workspace.add_goal(goal(name="orders-up"), now=AT)
    workspace.add_goal(goal(name="orders-55", target=55), now=AT)
    subscribe_goal_webhook(workspace.store, "http://127.0.0.1:9/hook", "s3cret", now=AT)

    first = {c.goal: c for c in check_goals(workspace, now=AT)}
    assert (first["orders-up"].status, first["orders-up"].previous_status) == ("off_track", None)
    assert first["orders-55"].status == "on_track" and first["orders-55"].webhooks == 1
    again = check_goals(workspace, now=AT + timedelta(hours=1))
    assert [c.changed for c in again] == [False, False]
    final = {c.goal: c for c in check_goals(workspace, now=datetime(2025, 2, 1, tzinfo=UTC))}
    assert (final["orders-55"].previous_status, final["orders-55"].status) == (
        "on_track",
        "achieved",
    )
    assert final["orders-up"].status == "missed"

    queued = outbox(workspace.store)
    assert len(queued) == 4 and {d["event_type"] for d in queued} == {"goal.status_changed"}
    history = workspace.store.query(
        "SELECT goal, status, previous_status FROM goal_status_history ORDER BY goal, evaluated_at"
    )
    assert history == [
        ("orders-55", "on_track", None),
        ("orders-55", "achieved", "on_track"),
        ("orders-up", "off_track", None),
        ("orders-up", "missed", "off_track"),
    ]
    listed = {g["goal"].name: g for g in list_goals(workspace.store)}
    assert listed["orders-55"]["status"] == "achieved"


def test_a_baseline_still_running_is_taken_pro_rata(workspace: Workspace) -> None:
    # On Dec 12 only Dec 2-11 of the Dec 2-31 baseline is known: 20 orders -> 60 for 30 days.
    load_orders(workspace, date(2024, 11, 1), date(2024, 12, 11))
    p = goal_progress(workspace, goal(), now=datetime(2024, 12, 12, tzinfo=UTC))
    assert (p.baseline_value, p.target_value, p.current_value) == (60.0, 69.0, None)
    assert p.forecast is not None and p.forecast.mean == 60.0  # 30 future days of 2
    assert (p.status, p.days_elapsed) == ("off_track", 0)
