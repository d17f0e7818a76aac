"""RFM quintile scores and named segments: golden cases computed by hand."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from funnelscope.analysis.customers import customer_table
from funnelscope.analysis.rfm import RFM_SEGMENTS, SEGMENT_GRID, quintile_scores, rfm, segment_of
from funnelscope.workspace import Workspace
from tests.conftest import NOW, load_journeys

# person: recency_days, orders, net_revenue -> R, F, M, segment (worked out in the comments)
# n = 10, score = 1 + floor(5 (rank - 1) / 10): ranks 1-2 -> 1, 3-4 -> 2, ..., 9-10 -> 5.
# F ties: four customers with 1 order share rank 1 (F = 1); two with 2 share rank 5 (F = 3).
GOLDEN = [
    (1, 1.0, 10, 1000.0, 5, 5, 5, "Champions"),
    (2, 2.0, 8, 800.0, 5, 5, 5, "Champions"),
    (3, 3.0, 1, 20.0, 4, 1, 2, "Potential loyalist"),  # FM = (1 + 2 + 1) // 2 = 2
    (4, 5.0, 1, 10.0, 4, 1, 1, "Promising"),
    (5, 10.0, 3, 300.0, 3, 4, 4, "Loyal"),
    (6, 20.0, 2, 150.0, 3, 3, 3, "Need attention"),
    (7, 40.0, 1, 30.0, 2, 1, 2, "Hibernating"),
    (8, 60.0, 5, 600.0, 2, 4, 4, "At risk"),
    (9, 90.0, 1, 15.0, 1, 1, 1, "Lost"),
    (10, 120.0, 2, 50.0, 1, 3, 3, "At risk"),
]


def test_rfm_golden() -> None:
    table = pd.DataFrame(
        [(p, rec, n, m) for p, rec, n, m, *_ in GOLDEN],
        columns=["person_id", "recency_days", "orders", "net_revenue"],
    )
    scores = rfm(table, now=NOW).scores.set_index("person_id")
    for person, _, _, _, r, f, m, segment in GOLDEN:
        row = scores.loc[person]
        assert (row["r"], row["f"], row["m"], row["segment"]) == (r, f, m, segment), person


def test_result_sizes_and_json() -> None:
    table = pd.DataFrame(
        [(p, rec, n, m) for p, rec, n, m, *_ in GOLDEN],
        columns=["person_id", "recency_days", "orders", "net_revenue"],
    )
    result = rfm(table, now=NOW)
    sizes = result.sizes()
    assert sizes["Champions"] == 2 and sizes["At risk"] == 2 and sizes["Can't lose them"] == 0
    assert sum(sizes.values()) == 10
    assert result.to_dict()["customers"][0]["segment"] == "Champions"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([5, 4, 3, 2, 1], [5, 4, 3, 2, 1], id="distinct"),
        pytest.param([7, 7, 7, 7], [1, 1, 1, 1], id="all-tied"),
        pytest.param([1, 1, 1, 2, 5], [1, 1, 1, 4, 5], id="ties-share-the-lower-score"),
        pytest.param([3.0], [1], id="single"),
        pytest.param(list(range(7)), [1, 1, 2, 3, 3, 4, 5], id="n-not-a-multiple-of-5"),
        pytest.param([], [], id="empty"),
    ],
)
def test_quintile_scores(values: list[float], expected: list[int]) -> None:
    assert quintile_scores(values).tolist() == expected


def test_the_grid_uses_exactly_the_eleven_segments() -> None:
    cells = {SEGMENT_GRID[r][fm] for r in range(1, 6) for fm in range(1, 6)}
    assert cells == set(RFM_SEGMENTS) and len(RFM_SEGMENTS) == 11
    assert segment_of(1, 5, 5) == "Can't lose them"
    assert segment_of(3, 1, 1) == "About to sleep"
    assert segment_of(3, 1, 2) == "Need attention"  # FM = (1 + 2 + 1) // 2 = 2
    assert segment_of(5, 1, 1) == "New"


def test_rfm_from_the_store_scores_buyers_only(workspace: Workspace) -> None:
    minutes = (NOW - timedelta(days=1) - NOW.replace(month=5, day=6, hour=9)).total_seconds() / 60
    load_journeys(
        workspace,
        {
            "big": [
                (0, "order_completed", {"order_id": "1", "revenue": "500"}),
                (minutes, "order_completed", {"order_id": "2", "revenue": "500"}),
            ],
            "small": [(0, "order_completed", {"order_id": "3", "revenue": "5"})],
            "browser": [(0, "page_viewed")],
        },
    )
    result = rfm(customer_table(workspace.engine, now=NOW))
    scores = result.scores
    assert len(scores) == 2
    by_revenue = scores.sort_values("net_revenue")
    # n = 2: scores are 1, and 1 + floor(5 * 1 / 2) = 3 for the better one on every axis
    assert by_revenue[["r", "f", "m"]].to_numpy().tolist() == [[1, 1, 1], [3, 3, 3]]
    assert by_revenue["segment"].tolist() == ["Lost", "Need attention"]
