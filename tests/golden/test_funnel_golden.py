"""Golden funnels: one short journey per option, the spec, the result worked out by hand.

Every case runs on the embedded engine and on Spark (all cases in one Spark job through
``run_many``). All journeys live in one store; each event carries ``properties.case`` and each
spec filters on it, so a case only sees its own people. Minutes are after T0 (Monday
2024-05-06 09:00 UTC). V = product_viewed, A = product_added, O = order_completed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import funnelscope
from funnelscope.analysis.funnel import (
    Exclusion,
    FunnelSpec,
    PropertyFilter,
    Step,
    run_many,
    stage_funnel_spec,
)
from funnelscope.analysis.funnel_result import FunnelResult
from funnelscope.workspace import Workspace
from tests.conftest import NOW, T0, staging_table

V, A, O = "product_viewed", "product_added", "order_completed"  # noqa: E741
DAY = 24 * 60


@dataclass
class Case:
    id: str
    journeys: dict[str, list[tuple[Any, ...]]]
    spec: Callable[[PropertyFilter], FunnelSpec]
    counts: tuple[int, ...]
    furthest: dict[str, int]
    check: Callable[[FunnelResult], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def vao(case: PropertyFilter, **options: Any) -> FunnelSpec:
    return FunnelSpec.of(V, A, O, filters=(case,), **options)


def _check_ordered(r: FunnelResult) -> None:
    ttc = r.time_to_convert[0]  # to step 2: alice 5 min, bob 30 min, erin 6 days
    assert (ttc.count, ttc.median_seconds) == (3, 1800.0)
    assert r.total_time_to_convert is not None
    assert r.total_time_to_convert.count == 2
    assert r.total_time_to_convert.median_seconds == pytest.approx((600 + 518460) / 2)
    assert [(p.period_start, p.entered, p.converted) for p in r.trend] == [
        (T0.replace(hour=0), 4, 2)
    ]
    assert r.steps[1].conversion_from_previous == pytest.approx(3 / 4)
    low, high = r.steps[1].conversion_from_previous_interval or (0, 0)
    assert low < 0.75 < high
    assert r.steps[2].dropoff == 1


def _check_totals(r: FunnelResult) -> None:
    attempts = r.persons()
    assert sorted(attempts.groupby("name").size().items()) == [("abe", 2), ("bea", 1), ("cal", 1)]


def _check_optional(r: FunnelResult) -> None:
    # step 3 is compared with step 1, the last required step before it
    assert r.steps[2].conversion_from_previous == pytest.approx(2 / 3)


def _check_open(r: FunnelResult) -> None:
    assert [s.conversion_from_previous for s in r.steps[1:]] == [0.5, 0.5]


def _breakdowns(expected: dict[tuple[str, ...], tuple[int, ...]]) -> Callable[[FunnelResult], None]:
    def check(r: FunnelResult) -> None:
        got = {b.values: tuple(s.count for s in b.steps) for b in r.breakdowns}
        assert got == expected
        for k in range(len(r.steps)):  # breakdowns add up to the total
            assert sum(b.steps[k].count for b in r.breakdowns) == r.steps[k].count

    return check


def _nia_oto_pia() -> dict[str, list[tuple[Any, ...]]]:
    return {
        "nia": [
            (0, V, {"country": "FR", "device_type": "mobile"}),
            (5, A, {"country": "DE"}),
            (10, O, {"country": "DE"}),
        ],
        "oto": [(0, V, {"country": "DE", "device_type": "desktop"}), (5, A, {"country": "DE"})],
        "pia": [(0, V, {"country": "FR", "device_type": "mobile"})],
    }


CASES = [
    Case(
        "ordered",
        {
            "alice": [(0, V), (5, A), (10, O)],
            "bob": [(0, V), (1, "page_viewed"), (30, A)],
            "carol": [(0, A), (5, O)],  # only later steps
            "dan": [(0, O), (10, V)],
            "erin": [(0, V), (2 * DAY, V), (8 * DAY, A), (8 * DAY + 1, O)],  # the later start wins
        },
        vao,
        (4, 3, 2),
        {"alice": 3, "bob": 2, "carol": 0, "dan": 1, "erin": 3},
        _check_ordered,
    ),
    Case(
        "window_boundary",
        {
            "fay": [(0, V), (DAY, A)],  # exactly the window: inclusive
            "gus": [(0, V), (DAY + 1, A)],
            "hal": [(0, V), (600, A), (DAY + 1, O)],  # measured from step 1, not the previous step
        },
        lambda c: vao(c, window="1d"),
        (3, 2, 0),
        {"fay": 2, "gus": 1, "hal": 2},
    ),
    Case(
        "step_within",
        {
            "ivy": [(0, V), (30, A), (3000, O)],
            "jay": [(0, V), (90, A), (100, O)],
            "kim": [(0, V), (60, V), (100, A)],  # within an hour of the later view
        },
        lambda c: FunnelSpec.of(V, Step(A, within=timedelta(hours=1)), O, filters=(c,)),
        (3, 2, 1),
        {"ivy": 3, "jay": 1, "kim": 2},
    ),
    Case(
        "strict",
        {
            "lea": [(0, V), (5, A), (10, O)],
            "max": [(0, V), (1, "page_viewed"), (2, A), (3, O)],
            "ned": [(0, V), (1, A), (2, "page_viewed"), (3, O)],
            "oli": [(0, V), (1, "page_viewed"), (2, V), (3, A), (4, O)],  # the clean retry counts
        },
        lambda c: vao(c, mode="strict"),
        (4, 3, 2),
        {"lea": 3, "max": 1, "ned": 2, "oli": 3},
    ),
    Case(
        "any_order",
        {
            "pam": [(0, O), (5, A), (10, V)],
            "quin": [(0, A), (2000, V)],  # more than a day apart
            "ray": [(0, V)],
        },
        lambda c: vao(c, mode="any", window="1d"),
        (3, 1, 1),
        {"pam": 3, "quin": 1, "ray": 1},
    ),
    Case(
        "exclusion",
        {
            "sam": [
                (0, V),
                (5, A),
                (7, "product_removed", {"props": {"reason": "price"}}),
                (10, O),
            ],
            "tia": [(0, V), (5, A), (7, "product_removed", {"props": {"reason": "size"}}), (10, O)],
            "uma": [
                (0, V),
                (2, "product_removed", {"props": {"reason": "price"}}),
                (5, A),
                (10, O),
            ],
            "vic": [
                (0, V),
                (5, A),
                (7, "product_removed", {"props": {"reason": "price"}}),
                (8, A),
                (10, O),
            ],
        },
        lambda c: vao(
            c,
            exclusions=(
                Exclusion("product_removed", ("properties.reason=price",), from_step=2, to_step=3),
            ),
        ),
        (4, 4, 3),
        {"sam": 2, "tia": 3, "uma": 3, "vic": 3},
    ),
    Case(
        "sessions",
        {
            "wes": [
                (0, V, {"session_id": "s1"}),
                (5, A, {"session_id": "s1"}),
                (100, V, {"session_id": "s2"}),
                (105, A, {"session_id": "s2"}),
                (110, O, {"session_id": "s2"}),
            ],
            "xia": [(0, V, {"session_id": "s3"}), (5, A)],  # no session: not in any unit
        },
        lambda c: vao(c, count_by="sessions"),
        (3, 2, 1),
        {"wes": 3, "xia": 1},
    ),
    Case(
        "cart_key",
        {
            "yan": [
                (0, A, {"cart_id": "c1"}),
                (1, A, {"cart_id": "c2"}),
                (5, "checkout_started", {"cart_id": "c2"}),
                (6, O, {"cart_id": "c2"}),
                (10, "checkout_started", {"cart_id": "c1"}),
            ],
            "zoe": [(0, A, {"cart_id": "c3"})],
        },
        lambda c: FunnelSpec.of(A, "checkout_started", O, filters=(c,), count_by="cart_id"),
        (3, 2, 1),
        {"yan": 3, "zoe": 1},
    ),
    Case(
        "totals",
        {
            "abe": [(0, V), (5, A), (10, O), (20, V), (25, A)],
            "bea": [(0, V), (3, V), (8 * DAY, A)],  # the second view is inside the open attempt
            "cal": [(0, A)],
        },
        lambda c: vao(c, counting="totals"),
        (3, 2, 1),
        {"abe": 3, "bea": 1, "cal": 0},
        _check_totals,
    ),
    Case(
        "hold_constant",
        {
            "dee": [
                (0, V, {"product_id": "p1"}),
                (5, A, {"product_id": "p2"}),
                (10, O, {"product_id": "p2"}),
            ],
            "eli": [
                (0, V, {"product_id": "p1"}),
                (1, V, {"product_id": "p2"}),
                (5, A, {"product_id": "p2"}),
                (10, O, {"product_id": "p2"}),
            ],
        },
        lambda c: vao(c, hold_constant=("product_id",)),
        (2, 1, 1),
        {"dee": 1, "eli": 3},
    ),
    Case(
        "first_time",
        {
            "fin": [(0, A), (5, V), (10, A), (15, O)],  # the first add ever came before the view
            "gia": [(0, V), (5, A), (7, A), (10, O)],
        },
        lambda c: FunnelSpec.of(V, Step(A, first_time=True), O, filters=(c,)),
        (2, 1, 1),
        {"fin": 1, "gia": 3},
    ),
    Case(
        "optional",
        {
            "hugo": [(0, V), (10, O)],
            "ida": [(0, V), (5, A), (10, O)],
            "joe": [(0, V), (5, A)],
        },
        lambda c: FunnelSpec.of(V, Step(A, is_optional=True), O, filters=(c,)),
        (3, 2, 2),
        {"hugo": 3, "ida": 3, "joe": 2},
        _check_optional,
    ),
    Case(
        "open",
        {
            "kay": [(0, A), (5, O)],
            "lou": [(0, V), (5, O)],
            "mia": [(0, V), (5, A)],
        },
        lambda c: vao(c, is_open=True),
        (2, 2, 2),
        {"kay": 3, "lou": 3, "mia": 2},
        _check_open,
    ),
    Case(
        "breakdown_first_touch",
        _nia_oto_pia(),
        lambda c: vao(c, breakdowns=("country", "device_type")),
        (3, 2, 1),
        {"nia": 3, "oto": 2, "pia": 1},
        _breakdowns({("FR", "mobile"): (2, 1, 1), ("DE", "desktop"): (1, 1, 0)}),
    ),
    Case(
        "breakdown_last_touch",
        _nia_oto_pia(),
        lambda c: vao(c, breakdowns=("country",), attribution="last_touch"),
        (3, 2, 1),
        {"nia": 3, "oto": 2, "pia": 1},
        _breakdowns({("DE",): (2, 2, 1), ("FR",): (1, 0, 0)}),
    ),
    Case(
        "breakdown_step_1",
        _nia_oto_pia(),
        lambda c: vao(c, breakdowns=("country",), attribution="step", attribution_step=1),
        (3, 2, 1),
        {"nia": 3, "oto": 2, "pia": 1},
        _breakdowns({("FR",): (2, 1, 1), ("DE",): (1, 1, 0)}),
    ),
    Case(
        "date_range",
        {
            "quy": [(0, V), (1500, A), (1600, O)],  # entered before the range
            "rex": [(1500, V), (1510, A), (4000, O)],  # converts after end_at, inside the window
            "sol": [(3000, V)],  # enters after the range
        },
        lambda c: vao(c, start_at=T0 + timedelta(days=1), end_at=T0 + timedelta(days=2)),
        (1, 1, 1),
        {"quy": 0, "rex": 3, "sol": 0},
    ),
    Case(
        "global_filter",
        {
            "tom": [
                (0, V, {"device_type": "mobile"}),
                (5, A, {"device_type": "desktop"}),
                (10, O, {"device_type": "mobile"}),
            ],
            "uli": [(0, V, {"device_type": "mobile"}), (5, A, {"device_type": "mobile"})],
        },
        lambda c: FunnelSpec.of(
            V, A, O, filters=(c, PropertyFilter("device_type", "eq", "mobile"))
        ),
        (2, 1, 0),
        {"tom": 1, "uli": 2},
    ),
    Case(
        "stage_steps",
        {
            "vera": [(0, "page_viewed"), (5, "checkout_started"), (10, O)],
            "walt": [(0, "ad_impression"), (5, O)],
        },
        lambda c: FunnelSpec.of(Step.stage("interest"), Step.stage("decision"), O, filters=(c,)),
        (1, 1, 1),
        {"vera": 3, "walt": 0},
    ),
    Case(
        "stage_funnel",
        {
            "xena": [(0, "ad_impression"), (5, "page_viewed"), (10, A), (15, O), (2000, O)],
            "yuri": [(0, "page_viewed"), (5, O)],
            "zack": [(0, "ad_impression"), (5, "page_viewed"), (10, O)],
        },
        lambda c: stage_funnel_spec(filters=(c,)),
        (2, 2, 1, 1, 1),
        {"xena": 5, "yuri": 0, "zack": 2},
    ),
    Case(
        "identity",
        {
            "ana": [
                (0, V, {"anonymous_id": "identity:anon-9"}),
                (5, A, {"anonymous_id": "identity:anon-9", "user_id": "identity:ana"}),
                (10, O, {"user_id": "identity:ana"}),
            ],
        },
        vao,
        (1, 1, 1),
        {"ana": 3},
    ),
    Case(
        "step_filter",
        {
            "bo": [(0, V), (5, O, {"revenue": "20"}), (10, O, {"revenue": "80"})],
            "cy": [(0, V), (5, O, {"revenue": "20"})],
        },
        lambda c: FunnelSpec.of(V, Step(O, filters=("revenue>=50",)), filters=(c,)),
        (2, 1),
        {"bo": 2, "cy": 1},
    ),
]


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case in CASES:
        for person, steps in case.journeys.items():
            for i, (minutes, event, *more) in enumerate(steps):
                extra = dict(more[0]) if more else {}
                props = {"case": case.id, **extra.pop("props", {})}
                row = {
                    "event_id": f"{case.id}:{person}:{i}",
                    "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
                    "event": event,
                    "properties": json.dumps(props),
                }
                if "anonymous_id" not in extra and "user_id" not in extra:
                    row["user_id"] = f"{case.id}:{person}"
                row.update(extra)
                rows.append(row)
    return rows


def _spec(case: Case) -> FunnelSpec:
    return case.spec(PropertyFilter("properties.case", "eq", case.id))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Path]]:
    folder = tmp_path_factory.mktemp("funnel_golden")
    ws = funnelscope.open(folder / "store.duckdb")
    report = ws.append_staging(staging_table(_rows()), source="golden", received_at=NOW)
    assert report.rejected == 0, report.rejections
    ws.export(folder / "parquet")
    yield ws, folder / "parquet"
    ws.close()


def _names(ws: Workspace) -> dict[int, str]:
    rows = ws.store.query(
        "SELECT i.distinct_id, m.canonical_id FROM identities i JOIN person_map m "
        "USING (person_id) WHERE i.is_user"
    )
    return {int(c): str(d).split(":", 1)[1] for d, c in rows}


def _assert_case(case: Case, result: FunnelResult, names: dict[int, str]) -> None:
    assert result.counts == case.counts
    persons = result.persons()
    persons["name"] = persons["person_id"].map(names)
    furthest = persons.groupby("name")["furthest_step"].max().to_dict()
    assert furthest == case.furthest
    if case.check is not None:
        case.check(_with_names(result, names))


def _with_names(result: FunnelResult, names: dict[int, str]) -> FunnelResult:
    """The result, with persons() carrying a ``name`` column (for readable checks)."""

    class Named(FunnelResult):
        def persons(self, step: int | None = None, *, dropped: bool = False) -> Any:
            frame = super().persons(step, dropped=dropped)
            frame["name"] = frame["person_id"].map(names)
            return frame

    return Named(**{f: getattr(result, f) for f in result.__dataclass_fields__})


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_embedded(case: Case, shop: tuple[Workspace, Path]) -> None:
    ws, _ = shop
    _assert_case(case, ws.funnel(_spec(case)), _names(ws))


@pytest.fixture(scope="module")
def spark_results(shop: tuple[Workspace, Path], spark: Any) -> dict[str, FunnelResult]:
    from funnelscope.engines.spark import SparkEngine

    _, parquet = shop
    results = run_many([_spec(c) for c in CASES], SparkEngine(parquet, spark))
    return {c.id: r for c, r in zip(CASES, results, strict=True)}


@pytest.mark.spark
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_spark(
    case: Case, shop: tuple[Workspace, Path], spark_results: dict[str, FunnelResult]
) -> None:
    ws, _ = shop
    result = spark_results[case.id]
    assert result.engine == "spark"
    _assert_case(case, result, _names(ws))
    embedded = ws.funnel(_spec(case))
    assert result.to_dict() | {"engine": "x"} == embedded.to_dict() | {"engine": "x"}
    assert result.persons().equals(embedded.persons())


@pytest.mark.spark
@pytest.mark.slow
def test_spark_equals_embedded_on_a_simulated_store(
    tmp_path_factory: pytest.TempPathFactory, spark: Any
) -> None:
    """~1M simulated events: several funnels, one Spark job, identical to the embedded engine."""
    from datetime import UTC, datetime

    from funnelscope.engines.spark import SparkEngine
    from funnelscope.simulate import simulate

    folder = tmp_path_factory.mktemp("funnel_simulated")
    ws = funnelscope.open(folder / "shop.duckdb")
    simulate(customers=70_000, days=90, seed=11).write_store(
        ws.store, received_at=datetime(2030, 1, 1, tzinfo=UTC)
    )
    assert ws.info()["events"] >= 800_000
    ws.export(folder / "parquet")
    specs = [
        FunnelSpec.of(V, A, "checkout_started", O, breakdowns=("channel",)),
        FunnelSpec.of(V, A, O, mode="strict", window="1d"),
        FunnelSpec.of(V, A, O, counting="totals", trend_period="day"),
        FunnelSpec.of(V, A, O, count_by="sessions", hold_constant=("product_id",)),
        stage_funnel_spec(),
    ]
    on_spark = run_many(specs, SparkEngine(folder / "parquet", spark))
    for spec, got in zip(specs, on_spark, strict=True):
        expected = ws.funnel(spec)
        assert expected.steps[0].count > 0
        assert got.to_dict() | {"engine": ""} == expected.to_dict() | {"engine": ""}
        assert got.persons().equals(expected.persons())
    ws.close()
