"""funnelscope's funnel levels equal ClickHouse's ``windowFunnel`` (chdb, in process).

Generated logs stress the tie rules: few distinct seconds (many equal timestamps), windows that
land exactly on later events (``t = t0 + window``), several step-1 events per person, persons
with only later steps, and unrelated events. ``ordered`` is compared with the default mode on
every log; ``strict`` with ``'strict_order', 'strict_deduplication'`` on persons with one step-1
event, where ClickHouse's scan-stops-at-first-violation rule and funnelscope's "best attempt"
rule coincide (docs/funnels.md, "Differences from ClickHouse").
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


def chdb_levels(log: Log, window: int, modes: tuple[str, ...] = ()) -> dict[int, int]:
    rows = ", ".join(f"({p}, {t}, '{NAMES[e]}')" for p, t, e in log)
    params = ", ".join([str(window), *(f"'{m}'" for m in modes)])
    conds = ", ".join(f"e = '{s}'" for s in STEPS)
    query = (
        f"SELECT p, windowFunnel({params})(t, {conds}) AS level "
        f"FROM values('p UInt32, t UInt32, e String', {rows}) GROUP BY p ORDER BY p"
    )
    out = chdb.query(query, "CSV").bytes().decode().split()
    return {int(line.split(",")[0]): int(line.split(",")[1]) for line in out}


def our_levels(log: Log, window: int, mode: str, *,
               shuffle_seed: int | None = None) -> dict[int, int]:
    rows = list(log)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    person = np.array([p for p, _, _ in rows], np.int64)
    ts = np.array([t * 1_000_000 for _, t, _ in rows], np.int64)
    codes = np.array([e for _, _, e in rows], np.int64)
    layout = PersonLayout.from_arrays(person, ts, codes, NAMES)
    spec = FunnelSpec.of(*STEPS, window=timedelta(seconds=window), mode=mode)
    out = compute_outcomes(spec, layout)
    return dict(zip(out.column("person_id").to_pylist(), out.column("level").to_pylist(),
                    strict=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(persons=_logs, window=st.sampled_from([0, 1, 2, 3, 5, 8]), seed=st.integers(0, 99))
def test_ordered_equals_window_funnel(persons: list[list[tuple[int, int]]], window: int,
                                      seed: int) -> None:
    log = _flatten(persons)
    expected = chdb_levels(log, window)
    assert our_levels(log, window, "ordered") == expected
    # input row order never matters (equal timestamps are ordered by step)
    assert our_levels(log, window, "ordered", shuffle_seed=seed) == expected


def _one_start(events: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Keep the first step-1 event only (ClickHouse strict_order is well defined there)."""
    starts = [i for i, (_, e) in enumerate(events) if e == 0]
    return [ev for i, ev in enumerate(events) if ev[1] != 0 or i == (starts[0] if starts else -1)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(persons=_logs, window=st.sampled_from([0, 1, 3, 5, 8]))
def test_strict_equals_strict_order_with_one_start(persons: list[list[tuple[int, int]]],
                                                   window: int) -> None:
    log = _flatten([_one_start(p) or [(0, 4)] for p in persons])
    expected = chdb_levels(log, window, ("strict_order", "strict_deduplication"))
    assert our_levels(log, window, "strict") == expected


@pytest.mark.parametrize(
    ("log", "window", "level"),
    [
        pytest.param([(0, 0, 0), (0, 10, 1)], 10, 2, id="window_inclusive"),
        pytest.param([(0, 0, 0), (0, 11, 1)], 10, 1, id="window_plus_one_second_is_out"),
        pytest.param([(0, 5, 1), (0, 5, 0)], 0, 2, id="equal_ts_ordered_by_step"),
        pytest.param([(0, 0, 0), (0, 6, 1), (0, 9, 0), (0, 12, 2)], 10, 2,
                     id="window_from_first_step_not_previous"),
        pytest.param([(0, 0, 0), (0, 5, 0), (0, 12, 1)], 10, 2, id="later_start_converts"),
        pytest.param([(0, 1, 1), (0, 2, 2), (0, 3, 3)], 10, 0, id="no_first_step"),
    ],
)
def test_pinned_cases_match_chdb(log: Log, window: int, level: int) -> None:
    assert chdb_levels(log, window) == {0: level}
    assert our_levels(log, window, "ordered") == {0: level}
