"""FunnelSpec validation, spec files, and the kernels against brute-force definitions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelscope.analysis.funnel import (
    DEFAULT_CONVERSION_WINDOW,
    Exclusion,
    FunnelSpec,
    PropertyFilter,
    Step,
    parse_duration,
)
from funnelscope.analysis.funnel_plan import compute_outcomes
from funnelscope.errors import InvalidSpecError
from funnelscope.store.layout import PersonLayout


@pytest.mark.parametrize(
    ("options", "code"),
    [
        pytest.param({"steps": ("a",)}, "funnel.too_few_steps", id="one_step"),
        pytest.param({"steps": tuple("x" * 33)}, "funnel.too_many_steps", id="33_steps"),
        pytest.param({"window": timedelta(days=400)}, "funnel.window_out_of_range", id="window"),
        pytest.param(
            {"window": timedelta(seconds=-1)}, "funnel.window_out_of_range", id="negative_window"
        ),
        pytest.param({"mode": "loose"}, "funnel.unknown_mode", id="mode"),
        pytest.param({"counting": "all"}, "funnel.unknown_counting", id="counting"),
        pytest.param({"attribution": "middle"}, "funnel.unknown_attribution", id="attribution"),
        pytest.param(
            {"attribution": "step", "attribution_step": 9},
            "funnel.attribution_step_out_of_range",
            id="attribution_step",
        ),
        pytest.param({"trend_period": "year"}, "funnel.unknown_trend_period", id="period"),
        pytest.param({"breakdowns": ("nope",)}, "funnel.unknown_property", id="breakdown"),
        pytest.param(
            {"breakdowns": ("country", "os", "browser", "channel")},
            "funnel.too_many_breakdowns",
            id="four_breakdowns",
        ),
        pytest.param({"count_by": "properties.bad key"}, "funnel.unknown_property", id="count_by"),
        pytest.param(
            {"exclusions": (Exclusion("x", from_step=3, to_step=2),)},
            "funnel.exclusion_out_of_range",
            id="exclusion_span",
        ),
        pytest.param(
            {"filters": (PropertyFilter("country", "like", "x"),)},
            "filter.unknown_op",
            id="filter_op",
        ),
        pytest.param(
            {"filters": (PropertyFilter("country", "eq"),)},
            "filter.missing_value",
            id="filter_value",
        ),
        pytest.param(
            {"mode": "any", "exclusions": (Exclusion("x"),)},
            "funnel.mode_conflict",
            id="any_with_exclusion",
        ),
        pytest.param(
            {"mode": "strict", "counting": "totals"}, "funnel.mode_conflict", id="strict_totals"
        ),
        pytest.param(
            {
                "start_at": datetime(2024, 2, 1, tzinfo=UTC),
                "end_at": datetime(2024, 1, 1, tzinfo=UTC),
            },
            "funnel.date_range_reversed",
            id="range",
        ),
        pytest.param({"start_at": datetime(2024, 1, 1)}, "funnel.naive_datetime", id="naive"),
        pytest.param(
            {"steps": ("a", Step("b", is_optional=True))},
            "funnel.optional_end_step",
            id="optional_last",
        ),
        pytest.param(
            {"steps": ("a", Step("b", within=timedelta(days=30)))},
            "funnel.step_window_out_of_range",
            id="step_window",
        ),
    ],
)
def test_bad_specs_name_the_problem(options: dict[str, Any], code: str) -> None:
    fields = {"steps": ("a", "b", "c"), **options}
    with pytest.raises(InvalidSpecError) as info:
        FunnelSpec(**fields)
    assert code in {p.code for p in info.value.problems}


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidSpecError) as info:
        FunnelSpec(steps=("a",), mode="x", window=timedelta(days=999))
    codes = {p.code for p in info.value.problems}
    assert {"funnel.too_few_steps", "funnel.unknown_mode", "funnel.window_out_of_range"} <= codes
    assert "0 seconds and 366 days" in str(info.value)


def test_spec_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "steps:\n  - Product Viewed\n  - {event: product_added, within: 1h, optional: false}\n"
        "  - {event: order_completed, filters: ['revenue>=50']}\n"
        "window: 2d\nmode: strict\nbreakdowns: [country]\nopen: false\n"
        "start_at: '2024-05-01T00:00:00Z'\n",
        encoding="utf-8",
    )
    spec = FunnelSpec.from_file(str(path))
    assert spec.steps[0].event == "product_viewed"
    assert spec.steps[1].within == timedelta(hours=1)
    assert spec.steps[2].filters == (PropertyFilter("revenue", "gte", "50"),)
    assert spec.window == timedelta(days=2) and spec.mode == "strict"
    assert spec.start_at == datetime(2024, 5, 1, tzinfo=UTC)
    again = FunnelSpec.from_dict({**spec.to_dict(), "steps": [s.event for s in spec.steps]})
    assert (again.window, again.mode, again.breakdowns) == (spec.window, "strict", ("country",))
    assert FunnelSpec.of("a", "b").window == DEFAULT_CONVERSION_WINDOW


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(InvalidSpecError) as info:
        FunnelSpec.from_dict({"steps": ["a", "b"], "windw": "7d"})
    assert info.value.code == "funnel.unknown_field"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800), ("36h", 129600), ("30m", 1800), ("45s", 45), ("2w", 1209600), (90, 90)],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


# -- kernels against brute force -----------------------------------------------------------------
NAMES = ("a", "b", "c", "x")


def _levels(events: list[tuple[int, int]], spec: FunnelSpec) -> int:
    layout = PersonLayout.from_arrays(
        np.zeros(len(events), np.int64),
        np.array([t * 1_000_000 for t, _ in events], np.int64),
        np.array([e for _, e in events], np.int64),
        NAMES,
    )
    return int(compute_outcomes(spec, layout).column("level")[0].as_py())


def _matches(spec_steps: list[str], event: int) -> set[int]:
    return {k for k, s in enumerate(spec_steps) if NAMES[event] == s}


def brute_ordered(
    events: list[tuple[int, int]],
    steps: list[str],
    window: int,
    limits: list[int | None],
    optional: list[bool],
) -> int:
    """Max step index reachable by distinct events with non-decreasing times."""

    def reach(chosen: tuple[int, ...], pos: int, step: int) -> int:
        if step not in _matches(steps, events[chosen[pos]][1]):
            return 0
        if pos == len(chosen) - 1:
            return step + 1
        best = 0
        nxt = step + 1
        while nxt < len(steps):
            lim = limits[nxt]
            gap = events[chosen[pos + 1]][0] - events[chosen[pos]][0]
            if lim is None or gap <= lim:
                best = max(best, reach(chosen, pos + 1, nxt))
            if not optional[nxt]:
                break
            nxt += 1
        return best

    best = 0
    for size in range(1, len(steps) + 1):
        for chosen in itertools.permutations(range(len(events)), size):
            times = [events[i][0] for i in chosen]
            if any(b < a for a, b in itertools.pairwise(times)) or times[-1] - times[0] > window:
                continue
            best = max(best, reach(chosen, 0, 0))
    return best


_log = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=_log,
    window=st.integers(0, 5),
    steps=st.sampled_from([["a", "b", "c"], ["a", "a", "b"], ["a", "b", "a"], ["b", "b", "b"]]),
    limit=st.sampled_from([None, 0, 1, 2]),
    optional=st.booleans(),
)
def test_ordered_is_the_best_chain(
    events: list[tuple[int, int]], window: int, steps: list[str], limit: int | None, optional: bool
) -> None:
    limits: list[int | None] = [None, limit, None]
    opt = [False, optional, False]
    spec = FunnelSpec.of(
        steps[0],
        Step(
            steps[1],
            within=None if limit is None else timedelta(seconds=min(limit, window)),
            is_optional=optional,
        ),
        steps[2],
        window=timedelta(seconds=window),
    )
    limits[1] = None if limit is None else min(limit, window)
    assert _levels(events, spec) == brute_ordered(events, steps, window, limits, opt)


def brute_strict(events: list[tuple[int, int]], steps: list[str], window: int) -> int:
    def key(ev: tuple[int, int]) -> tuple[int, int, int]:
        ks = sorted(_matches(steps, ev[1]))
        mask = sum(1 << k for k in ks)
        return (ev[0], ks[0] + 1 if ks else 0, mask)

    seq = sorted(events, key=key)
    best = 0
    for start in range(len(seq)):
        for size in range(1, len(steps) + 1):
            block = seq[start : start + size]
            if len(block) < size or block[-1][0] - block[0][0] > window:
                break
            if all(k in _matches(steps, e) for k, (_, e) in enumerate(block)):
                best = max(best, size)
    return best


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=_log,
    window=st.integers(0, 5),
    steps=st.sampled_from([["a", "b", "c"], ["a", "a", "b"], ["b", "b", "b"]]),
)
def test_strict_is_the_best_consecutive_chain(
    events: list[tuple[int, int]], window: int, steps: list[str]
) -> None:
    spec = FunnelSpec.of(*steps, window=timedelta(seconds=window), mode="strict")
    assert _levels(events, spec) == brute_strict(events, steps, window)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_log, window=st.integers(0, 5))
def test_any_order_counts_distinct_steps_in_a_window(
    events: list[tuple[int, int]], window: int
) -> None:
    spec = FunnelSpec.of("a", "b", "c", window=timedelta(seconds=window), mode="any")
    best = 0
    for t0, e0 in events:
        if NAMES[e0] == "x":
            continue
        inside = {NAMES[e] for t, e in events if t0 <= t <= t0 + window} - {"x"}
        best = max(best, len(inside))
    assert _levels(events, spec) == best


def test_one_event_fills_one_step() -> None:
    # ClickHouse gives 3 here (issue #34986); one view is one step for funnelscope
    spec = FunnelSpec.of("a", "a", "b")
    assert _levels([(0, 0), (5, 1)], spec) == 1
    assert _levels([(0, 0), (1, 0), (5, 1)], spec) == 3


def test_same_instant_event_matching_two_repeated_steps() -> None:
    # the a at 3 is step 3 of the chain started at 2, not (only) a newer start
    events = [(2, 0), (3, 0), (3, 1)]  # a@2, a@3, b@3
    spec = FunnelSpec.of("a", "b", "a", window=timedelta(seconds=1))
    assert brute_ordered(events, ["a", "b", "a"], 1, [None] * 3, [False] * 3) == 3
    assert _levels(events, spec) == 3


_crowded = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=7)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=_crowded,
    window=st.integers(0, 2),
    steps=st.sampled_from(
        [
            ["a", "b", "a", "b"],
            ["a", "a", "b", "a"],
            ["b", "a", "a", "b"],
            ["a", "b", "c", "a"],
            ["a", "a", "a", "a"],
        ]
    ),
    limit=st.sampled_from([None, 0, 1]),
    optional=st.booleans(),
    shuffle=st.randoms(),
)
def test_repeated_steps_at_crowded_instants(
    events: list[tuple[int, int]],
    window: int,
    steps: list[str],
    limit: int | None,
    optional: bool,
    shuffle: Any,
) -> None:
    # most events share an instant and match several steps: every way of giving them out counts
    limits: list[int | None] = [None, None, None if limit is None else min(limit, window), None]
    opt = [False, optional, False, False]
    spec = FunnelSpec.of(
        steps[0],
        Step(steps[1], is_optional=optional),
        Step(steps[2], within=None if limits[2] is None else timedelta(seconds=limits[2])),
        steps[3],
        window=timedelta(seconds=window),
    )
    expected = brute_ordered(events, steps, window, limits, opt)
    assert _levels(events, spec) == expected
    shuffle.shuffle(events)
    assert _levels(events, spec) == expected


@pytest.mark.parametrize(
    ("events", "steps", "level"),
    [
        # a bot's burst: 40 identical views at one instant fill the three view steps
        pytest.param([(0, 0)] * 40 + [(0, 1)], ["a", "a", "a", "b"], 4, id="burst"),
        pytest.param([(0, 0)] * 2 + [(0, 1)], ["a", "a", "a", "b"], 2, id="two_of_three"),
        pytest.param([(0, 1), (0, 0), (0, 1), (0, 0)], ["a", "b", "a", "b"], 4, id="all_at_once"),
    ],
)
def test_same_instant_bursts(events: list[tuple[int, int]], steps: list[str], level: int) -> None:
    assert _levels(events, FunnelSpec.of(*steps, window=timedelta(seconds=0))) == level


def test_one_step_events_at_one_instant_chain_in_a_repeated_funnel() -> None:
    # b and c share an instant and each match one step: they chain in step order, as in a
    # funnel without repeats, while the repeated a still fills one step per event
    steps = ["a", "b", "c", "a"]
    events = [(0, 0), (1, 2), (1, 1), (2, 0)]
    assert brute_ordered(events, steps, 5, [None] * 4, [False] * 4) == 4
    assert _levels(events, FunnelSpec.of(*steps, window=timedelta(seconds=5))) == 4
    assert _levels(events[:3], FunnelSpec.of(*steps, window=timedelta(seconds=5))) == 3


@pytest.mark.parametrize(("period", "unit"), [(0, "D"), (1, "W"), (2, "M")])
def test_trend_periods_follow_the_utc_calendar(period: int, unit: str) -> None:
    from funnelscope.kernels.outcomes import trend_counts

    # every day of 1900..2100 at 00:00 and 23:59:59.999999, and one unit without an entry
    days = np.arange(-25567, 47482, dtype=np.int64)
    us = np.concatenate([days * 86_400_000_000, days * 86_400_000_000 + 86_399_999_999])
    none = np.iinfo(np.int64).min
    times = np.concatenate([us, [none]])[:, None]
    first, entered, _ = trend_counts(
        times, np.ones(times.shape[0], np.int64), 1, True, period, none
    )
    dates = us.astype("datetime64[us]")
    if unit == "W":  # ISO weeks start on Monday; 1970-01-01 was a Thursday
        start = dates.astype("datetime64[D]").astype(np.int64)
        expected = start - (start + 3) % 7
    else:
        expected = dates.astype(f"datetime64[{unit}]").astype(np.int64)
    assert first == expected.min()
    assert entered.tolist() == np.bincount(expected - expected.min()).tolist()
