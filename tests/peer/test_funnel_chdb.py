"""funnelscope's funnel levels equal ClickHouse's ``windowFunnel`` (chdb, in process).

Generated logs stress the tie rules: few distinct seconds (many equal timestamps), windows that
land exactly on later events (``t = t0 + window``), several step-1 events per person, persons
with only later steps, and unrelated events. ``ordered`` is compared with the default mode on
every log. With repeated step names (``a, b, a``) ClickHouse's default mode lets one event fill
several steps and funnelscope does not: there it is compared with ``'strict_once'`` (which
tracks rows, so one event fills one step) on logs of very few distinct seconds. ``strict`` is
compared with ``'strict_order', 'strict_deduplication'`` on persons with one step-1 event, where
ClickHouse's scan-stops-at-first-violation rule and funnelscope's "best attempt" rule coincide
(docs/funnels.md, "Differences from ClickHouse").
"""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelscope.analysis.funnel import FunnelSpec
from funnelscope.analysis.funnel_plan import compute_outcomes
from funnelscope.store.layout import PersonLayout

chdb = pytest.importorskip("chdb")

STEPS = ("a", "b", "c", "d")
NAMES = ("a", "b", "c", "d", "x")  # x is in no step

Log = list[tuple[int, int, int]]  # (person, second, event code)

_events = st.tuples(st.integers(0, 12), st.sampled_from(range(len(NAMES))))
_person = st.lists(_events, min_size=1, max_size=9)
_logs = st.lists(_person, min_size=7, max_size=10)  # 150 examples: >= 1,050 logs


def _flatten(persons: list[list[tuple[int, int]]]) -> Log:
    return [(p, t, e) for p, events in enumerate(persons) for t, e in events]


def chdb_levels(
    log: Log, window: int, modes: tuple[str, ...] = (), steps: tuple[str, ...] = STEPS
) -> dict[int, int]:
    rows = ", ".join(f"({p}, {t}, '{NAMES[e]}')" for p, t, e in log)
    params = ", ".join([str(window), *(f"'{m}'" for m in modes)])
    conds = ", ".join(f"e = '{s}'" for s in steps)
    query = (
        f"SELECT p, windowFunnel({params})(t, {conds}) AS level "
        f"FROM values('p UInt32, t UInt32, e String', {rows}) GROUP BY p ORDER BY p"
    )
    out = chdb.query(query, "CSV").bytes().decode().split()
    return {int(line.split(",")[0]): int(line.split(",")[1]) for line in out}


def our_levels(
    log: Log,
    window: int,
    mode: str,
    *,
    shuffle_seed: int | None = None,
    steps: tuple[str, ...] = STEPS,
) -> dict[int, int]:
    rows = list(log)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    person = np.array([p for p, _, _ in rows], np.int64)
    ts = np.array([t * 1_000_000 for _, t, _ in rows], np.int64)
    codes = np.array([e for _, _, e in rows], np.int64)
    layout = PersonLayout.from_arrays(person, ts, codes, NAMES)
    spec = FunnelSpec.of(*steps, window=timedelta(seconds=window), mode=mode)
    out = compute_outcomes(spec, layout)
    return dict(
        zip(out.column("person_id").to_pylist(), out.column("level").to_pylist(), strict=True)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(persons=_logs, window=st.sampled_from([0, 1, 2, 3, 5, 8]), seed=st.integers(0, 99))
def test_ordered_equals_window_funnel(
    persons: list[list[tuple[int, int]]], window: int, seed: int
) -> None:
    log = _flatten(persons)
    expected = chdb_levels(log, window)
    assert our_levels(log, window, "ordered") == expected
    # input row order never matters (equal timestamps are ordered by step)
    assert our_levels(log, window, "ordered", shuffle_seed=seed) == expected


# repeated step names, and most events of a person at the same few seconds
REPEATED = (
    ("a", "b", "a"),
    ("a", "a", "b"),
    ("a", "b", "a", "b"),
    ("a", "b", "c", "a", "b"),
    ("b", "a", "a", "b"),
    ("a", "a", "a"),
)
_crowded = st.lists(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(range(len(NAMES)))), min_size=1, max_size=8
    ),
    min_size=7,
    max_size=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    persons=_crowded,
    window=st.sampled_from([0, 1, 2]),
    steps=st.sampled_from(REPEATED),
    seed=st.integers(0, 99),
)
def test_repeated_steps_equal_strict_once(
    persons: list[list[tuple[int, int]]], window: int, steps: tuple[str, ...], seed: int
) -> None:
    log = _flatten(persons)
    expected = chdb_levels(log, window, ("strict_once",), steps)
    assert our_levels(log, window, "ordered", steps=steps) == expected
    assert our_levels(log, window, "ordered", steps=steps, shuffle_seed=seed) == expected


def _one_start(events: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Keep the first step-1 event only (ClickHouse strict_order is well defined there)."""
    starts = [i for i, (_, e) in enumerate(events) if e == 0]
    return [ev for i, ev in enumerate(events) if ev[1] != 0 or i == (starts[0] if starts else -1)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(persons=_logs, window=st.sampled_from([0, 1, 3, 5, 8]))
def test_strict_equals_strict_order_with_one_start(
    persons: list[list[tuple[int, int]]], window: int
) -> None:
    log = _flatten([_one_start(p) or [(0, 4)] for p in persons])
    expected = chdb_levels(log, window, ("strict_order", "strict_deduplication"))
    assert our_levels(log, window, "strict") == expected


@pytest.mark.parametrize(
    ("log", "window", "level"),
    [
        pytest.param([(0, 0, 0), (0, 10, 1)], 10, 2, id="window_inclusive"),
        pytest.param([(0, 0, 0), (0, 11, 1)], 10, 1, id="window_plus_one_second_is_out"),
        pytest.param([(0, 5, 1), (0, 5, 0)], 0, 2, id="equal_ts_ordered_by_step"),
        pytest.param(
            [(0, 0, 0), (0, 6, 1), (0, 9, 0), (0, 12, 2)],
            10,
            2,
            id="window_from_first_step_not_previous",
        ),
        pytest.param([(0, 0, 0), (0, 5, 0), (0, 12, 1)], 10, 2, id="later_start_converts"),
        pytest.param([(0, 1, 1), (0, 2, 2), (0, 3, 3)], 10, 0, id="no_first_step"),
    ],
)
def test_pinned_cases_match_chdb(log: Log, window: int, level: int) -> None:
    assert chdb_levels(log, window) == {0: level}
    assert our_levels(log, window, "ordered") == {0: level}


@pytest.mark.parametrize(
    ("log", "steps", "window", "level"),
    [
        # a@2 -> b@3 -> a@3: the a at 3 is the third step, not a newer start
        pytest.param(
            [(0, 2, 0), (0, 3, 0), (0, 3, 1)],
            ("a", "b", "a"),
            1,
            3,
            id="same_instant_event_on_a_repeated_step",
        ),
        pytest.param([(0, 0, 0), (0, 5, 1)], ("a", "a", "b"), 10, 1, id="one_event_one_step"),
        pytest.param(
            [(0, 4, 0), (0, 4, 0), (0, 4, 1), (0, 4, 0)],
            ("a", "b", "a", "a"),
            0,
            4,
            id="all_at_one_instant",
        ),
    ],
)
def test_pinned_repeated_step_cases_match_strict_once(
    log: Log, steps: tuple[str, ...], window: int, level: int
) -> None:
    assert chdb_levels(log, window, ("strict_once",), steps) == {0: level}
    assert our_levels(log, window, "ordered", steps=steps) == {0: level}
