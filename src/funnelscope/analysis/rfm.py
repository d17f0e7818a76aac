"""RFM: recency, frequency and monetary quintile scores, and the 11 named segments.

Rules (docs/customers.md, "RFM"):

* only customers with at least one order are scored (n of them);
* each score is ``1 + floor(5 × (rank − 1) / n)`` where ``rank`` is the customer's ascending
  rank with **ties sharing the lowest rank** (SQL ``RANK``), ordered so that 5 is best:
  R by ``last_order_at`` (more recent is better), F by ``orders``, M by ``net_revenue``.
  Equal values always get equal scores, so a quintile can hold more or fewer than n/5
  customers (most shops have many one-order customers, all with F = 1);
* FM = ``(F + M + 1) // 2`` (the mean of F and M, halves rounded up);
* the segment is looked up in :data:`SEGMENT_GRID` by R (row) and FM (column).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy import stats

from funnelscope.analysis.customers import CustomersResult

__all__ = ["RFM_SEGMENTS", "SEGMENT_GRID", "RFMResult", "quintile_scores", "rfm", "segment_of"]

RFM_SEGMENTS: Final = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Can't lose them",
    "Hibernating",
    "Lost",
)

#: SEGMENT_GRID[R][FM] for R, FM in 1..5 (index 0 unused).
SEGMENT_GRID: Final[dict[int, dict[int, str]]] = {
    5: {1: "New", 2: "Potential loyalist", 3: "Potential loyalist", 4: "Champions", 5: "Champions"},
    4: {
        1: "Promising",
        2: "Potential loyalist",
        3: "Potential loyalist",
        4: "Loyal",
        5: "Champions",
    },
    3: {1: "About to sleep", 2: "Need attention", 3: "Need attention", 4: "Loyal", 5: "Loyal"},
    2: {1: "Hibernating", 2: "Hibernating", 3: "At risk", 4: "At risk", 5: "Can't lose them"},
    1: {1: "Lost", 2: "Lost", 3: "At risk", 4: "Can't lose them", 5: "Can't lose them"},
}

_GRID_ARRAY: Final = np.array(
    [[""] * 6] + [[""] + [SEGMENT_GRID[r][fm] for fm in range(1, 6)] for r in range(1, 6)],
    dtype=object,
)


def quintile_scores(values: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Scores 1..5 for ``values`` (higher value, higher score; ties share the lower score).

    Examples
    --------
    >>> quintile_scores([10, 20, 30, 40, 50]).tolist()
    [1, 2, 3, 4, 5]
    >>> quintile_scores([1, 1, 1, 2, 5]).tolist()
    [1, 1, 1, 4, 5]
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    rank = stats.rankdata(arr, method="min")
    scores: np.ndarray[Any, np.dtype[np.int64]] = (1 + np.floor(5 * (rank - 1) / arr.size)).astype(
        np.int64
    )
    return scores


def segment_of(r: int, f: int, m: int) -> str:
    """The named segment of one (R, F, M) score triple.

    Examples
    --------
    >>> segment_of(5, 5, 4)
    'Champions'
    >>> segment_of(1, 1, 2)
    'Lost'
    """
    return SEGMENT_GRID[r][(f + m + 1) // 2]


@dataclass(frozen=True)
class RFMResult:
    """Per-customer scores and segment, and the size of each segment."""

    now: datetime
    scores: pd.DataFrame = field(repr=False)  # person_id, recency_days, orders, net_revenue, r,f,m

    def sizes(self) -> dict[str, int]:
        counts = self.scores["segment"].value_counts()
        return {name: int(counts.get(name, 0)) for name in RFM_SEGMENTS}

    def to_pandas(self) -> pd.DataFrame:
        return self.scores.copy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "sizes": self.sizes(),
            "customers": [
                {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
                for row in self.scores.to_dict(orient="records")
            ],
        }


def rfm(customers: CustomersResult | pd.DataFrame, *, now: datetime | None = None) -> RFMResult:
    """RFM scores and segments from the customer table.

    Examples
    --------
    >>> import pandas as pd
    >>> from datetime import UTC, datetime
    >>> t = pd.DataFrame({"person_id": [1, 2], "orders": [1, 3], "net_revenue": [10.0, 90.0],
    ...                   "recency_days": [40.0, 2.0]})
    >>> rfm(t, now=datetime(2024, 1, 1, tzinfo=UTC)).scores["segment"].tolist()
    ['Lost', 'Need attention']
    """
    if isinstance(customers, CustomersResult):
        frame, when = customers.frame, customers.now
    elif now is None:
        raise ValueError("now is required with a plain DataFrame")
    else:
        frame, when = customers, now
    buyers = frame[frame["orders"] > 0]
    scores = pd.DataFrame(
        {
            "person_id": buyers["person_id"].to_numpy(),
            "recency_days": buyers["recency_days"].to_numpy(np.float64),
            "orders": buyers["orders"].to_numpy(np.int64),
            "net_revenue": buyers["net_revenue"].to_numpy(np.float64),
        }
    )
    scores["r"] = quintile_scores(-scores["recency_days"].to_numpy())
    scores["f"] = quintile_scores(scores["orders"].to_numpy())
    scores["m"] = quintile_scores(scores["net_revenue"].to_numpy())
    fm = (scores["f"] + scores["m"] + 1) // 2
    scores["segment"] = _GRID_ARRAY[scores["r"].to_numpy(), fm.to_numpy()]
    return RFMResult(now=when, scores=scores)
