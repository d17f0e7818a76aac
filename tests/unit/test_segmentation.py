"""Behavioural clusters: k by silhouette, stable labels, descriptions, migration matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelscope.errors import InvalidInputError, NotFittedError
from funnelscope.models.segmentation import BehaviourSegmentation, migration_matrix

FEATURES = (("net_revenue", True), ("orders", True), ("recency_days", False))


def three_groups(seed: int = 1) -> pd.DataFrame:
    """Whales (many orders, big spend, recent), regulars, and one-time lapsed buyers."""
    rng = np.random.default_rng(seed)
    n = 60
    groups = [
        (rng.normal(2000, 100, n), rng.integers(18, 22, n), rng.normal(5, 1, n)),
        (rng.normal(300, 20, n), rng.integers(4, 6, n), rng.normal(30, 3, n)),
        (rng.normal(40, 5, n), np.ones(n, dtype=int), rng.normal(200, 10, n)),
    ]
    return pd.DataFrame(
        {
            "person_id": np.arange(3 * n),
            "net_revenue": np.concatenate([g[0] for g in groups]),
            "orders": np.concatenate([g[1] for g in groups]),
            "recency_days": np.concatenate([g[2] for g in groups]),
        }
    )


def test_k_is_chosen_by_silhouette_and_clusters_are_described() -> None:
    result = BehaviourSegmentation(features=FEATURES, seed=3).fit(three_groups())
    assert result.k == 3
    assert max(result.silhouettes, key=lambda k: result.silhouettes[k]) == 3
    assert set(result.silhouettes) == set(range(2, 9))
    assert result.sizes == {0: 60, 1: 60, 2: 60}
    # canonical order: descending net revenue, so whales are cluster 0
    labels = result.assignments.set_index("person_id")["cluster"]
    assert (labels.iloc[:60] == 0).all() and (labels.iloc[120:] == 2).all()
    assert result.descriptions[0].startswith("high ")
    assert "low recency_days" in result.descriptions[0]
    assert "high recency_days" in result.descriptions[2]
    assert result.to_dict()["criterion"] == "max mean silhouette"


def test_labels_are_stable_across_runs_seeds_and_row_order() -> None:
    data = three_groups()
    first = BehaviourSegmentation(features=FEATURES, seed=0).fit(data).assignments
    again = BehaviourSegmentation(features=FEATURES, seed=0).fit(data).assignments
    other_seed = BehaviourSegmentation(features=FEATURES, seed=99).fit(data).assignments
    shuffled = (
        BehaviourSegmentation(features=FEATURES, seed=0)
        .fit(data.sample(frac=1.0, random_state=5))
        .assignments
    )
    base = first.set_index("person_id")["cluster"]
    for other in (again, other_seed, shuffled):
        pd.testing.assert_series_equal(
            other.set_index("person_id")["cluster"].sort_index(), base.sort_index()
        )


def test_migration_between_two_dates() -> None:
    data = three_groups()
    model = BehaviourSegmentation(features=FEATURES, seed=0)
    model.fit(data)
    before = model.assign(data)
    # later: 10 regulars became whales, 5 whales lapsed, and 3 new one-time buyers arrived
    later = data.copy()
    later.loc[60:69, ["net_revenue", "orders", "recency_days"]] = [2100, 20, 4]
    later.loc[0:4, "recency_days"] = 210
    later.loc[0:4, ["net_revenue", "orders"]] = [45, 1]
    new = pd.DataFrame(
        {
            "person_id": [900, 901, 902],
            "net_revenue": [35.0] * 3,
            "orders": [1] * 3,
            "recency_days": [190.0] * 3,
        }
    )
    after = model.assign(pd.concat([later, new]))
    matrix = migration_matrix(before, after)
    assert matrix.to_dict(orient="index") == {
        "0": {0: 55, 1: 0, 2: 5},
        "1": {0: 10, 1: 50, 2: 0},
        "2": {0: 0, 1: 0, 2: 60},
        "new": {0: 0, 1: 0, 2: 3},
    }


def test_non_buyers_are_left_out_and_bad_input_rejected() -> None:
    data = three_groups()
    data.loc[0:9, "orders"] = 0
    result = BehaviourSegmentation(features=FEATURES, seed=0).fit(data)
    assert sum(result.sizes.values()) == 170
    with pytest.raises(NotFittedError):
        BehaviourSegmentation().assign(data)
    with pytest.raises(InvalidInputError) as err:
        BehaviourSegmentation(features=(("shoe_size", False),)).fit(data)
    assert err.value.code == "segmentation.unknown_feature"
    with pytest.raises(InvalidInputError) as err:
        BehaviourSegmentation(k_min=5, k_max=3)
    assert err.value.code == "segmentation.bad_k"
