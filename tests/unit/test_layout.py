"""The person layout: clustering, incremental refresh from events.seq, identity merges."""

from __future__ import annotations

import numpy as np

from funnelscope.analysis.funnel import FunnelSpec, run_layout
from funnelscope.store.layout import LiveLayout, PersonLayout
from funnelscope.workspace import Workspace
from tests.conftest import load_journeys

SPEC = FunnelSpec.of("product_viewed", "product_added", "order_completed")


def test_from_arrays_groups_by_person_in_time_order() -> None:
    lay = PersonLayout.from_arrays(
        np.array([2, 0, 2, 0]), np.array([30, 20, 10, 5]), np.array([0, 1, 1, 0]), ["v", "a"]
    )
    assert lay.offsets.tolist() == [0, 2, 2, 4]
    assert lay.ts.tolist() == [5, 20, 10, 30]
    assert [lay.event_names[c] for c in lay.codes] == ["v", "a", "a", "v"]


def test_large_sparse_ids_are_factorized() -> None:
    lay = PersonLayout.from_arrays(np.array([10**12, 7]), np.array([1, 2]), np.array([0, 0]), ["v"])
    assert lay.person_ids.tolist() == [7, 10**12]
    assert lay.person_index(10**12) == 1 and lay.person_index(8) is None


def test_refresh_reads_new_rows_and_keeps_time_order(workspace: Workspace) -> None:
    live = LiveLayout(workspace.store)
    load_journeys(workspace, {"ann": [(10, "Product Viewed")], "ben": [(0, "Product Viewed")]})
    first = live.get()
    assert first.n_rows == 2
    assert live.get() is first  # nothing committed: no work
    # a late event for ann, earlier than what the layout holds, and a new person
    load_journeys(
        workspace,
        {
            "ann": [
                (20, "Product Added", {"event_id": "ann-late-1"}),
                (5, "Order Completed", {"event_id": "ann-late-2"}),
            ],
            "cat": [(1, "Product Viewed")],
        },
    )
    second = live.get()
    assert second is not first and second.n_rows == 5
    for p in range(second.n_persons):
        seg = second.ts[second.offsets[p] : second.offsets[p + 1]]
        assert (np.diff(seg) >= 0).all()
    fresh = LiveLayout(workspace.store).get()
    assert np.array_equal(second.ts, fresh.ts) and np.array_equal(second.offsets, fresh.offsets)
    assert second.column("event").to_pylist() == [second.event_names[c] for c in second.codes]


def test_identity_merge_reclusters_in_memory(workspace: Workspace) -> None:
    live = LiveLayout(workspace.store)
    load_journeys(workspace, {"dan": [(0, "Product Viewed", {"anonymous_id": "anon-1"})]})
    before = live.get()
    assert run_layout(SPEC, before).counts == (1, 0, 0)
    # dan identifies: the anonymous person is merged into dan's
    load_journeys(
        workspace,
        {
            "dan": [
                (
                    5,
                    "Product Added",
                    {"anonymous_id": "anon-1", "user_id": "dan", "event_id": "d-2"},
                ),
                (9, "Order Completed", {"user_id": "dan", "event_id": "d-3"}),
            ]
        },
    )
    after = live.get()
    result = run_layout(SPEC, after)
    assert result.counts == (1, 1, 1)
    assert result.units == 1


def test_parallel_counting_sort_is_the_stable_order() -> None:
    from funnelscope.kernels.cluster import cluster_columns, cluster_rows

    # enough rows for one block per thread; few timestamps so ties and disorder abound
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 5_000, 300_000).astype(np.int32)
    ts = rng.integers(0, 40, 300_000).astype(np.int64)
    codes = rng.integers(0, 10, 300_000).astype(np.int8)
    expected = np.lexsort((ts, keys))  # by key, then time, ties in input order
    order, offsets, grouped_ts = cluster_rows(keys, ts, 5_000)
    assert (order == expected).all()
    assert (grouped_ts == ts[expected]).all()
    assert (offsets == np.searchsorted(keys[expected], np.arange(5_001))).all()
    none, offsets2, ts2, codes2 = cluster_columns(keys, ts, codes, 5_000, with_order=False)
    assert none is None and (offsets2 == offsets).all() and (ts2 == grouped_ts).all()
    assert codes2 is not None and codes2.dtype == np.int16
    assert (codes2 == codes[expected]).all()
