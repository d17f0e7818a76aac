"""The side table's per-row work (ingest/segment_side.py) done in blocks of rows, with hash
tables instead of lookup tables, and with keys too wide for one integer numbered in parts:
every road gives what the pipeline gives for the same file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from funnelscope.ingest import segment_side
from tests.unit.test_segment_scan import START, _assert_segment_as_pipeline, _journeys


def _mixed() -> pa.Table:
    """Journeys (internal and external referrers, users signing in half way) with UTM values
    in several spellings, aliases (``previous_id``) and every other row out of time order."""
    table = _journeys()
    n = table.num_rows
    sources = [["Google", "google", None, "NEWSLETTER", "fb"][i % 5] for i in range(n)]
    mediums = [["CPC", None, "email", "paid_social"][i % 4] for i in range(n)]
    previous = [f"a{(i * 7) % (n // 4)}" if i % 11 == 0 else None for i in range(n)]
    stamps = [START + timedelta(seconds=(n - i) if i % 2 else i) for i in range(n)]
    for name, values in (("utm_source", sources), ("utm_medium", mediums)):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    return table.set_column(
        table.schema.get_field_index("timestamp"),
        "timestamp",
        pa.array(stamps, pa.timestamp("us", tz="UTC")),
    ).append_column("previous_id", pa.array(previous, pa.string()))


@pytest.mark.parametrize(
    "settings",
    [
        {"BLOCK_ROWS": 1_000},
        {"BLOCK_ROWS": 777, "LOOKUP_PER_ROW": -1},
        {"BLOCK_ROWS": 4_096, "KEY_LIMIT": 8},
    ],
    ids=["blocks of 1,000 rows", "hash tables, blocks across row groups", "keys in parts"],
)
def test_every_road_of_the_side_table_gives_the_pipelines_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, int]
) -> None:
    for name, value in settings.items():
        monkeypatch.setattr(segment_side, name, value)
    path = tmp_path / "events.parquet"
    pq.write_table(_mixed(), path, row_group_size=3_000)
    _assert_segment_as_pipeline(tmp_path, path, segments=1)


@pytest.mark.parametrize("lookup", [True, False], ids=["lookup table", "hash table"])
def test_dense_numbers_distinct_keys_across_blocks(
    monkeypatch: pytest.MonkeyPatch, lookup: bool
) -> None:
    monkeypatch.setattr(segment_side, "BLOCK_ROWS", 2)
    if not lookup:
        monkeypatch.setattr(segment_side, "LOOKUP_PER_ROW", -1_000)
    keys = np.array([5, 2, 5, 7, 2])
    distinct, inverse = segment_side._dense(lambda lo, hi: keys[lo:hi], len(keys), 8)
    # a lookup table numbers keys in ascending order, a hash table in order of first sight
    want = [2, 5, 7] if lookup else [5, 2, 7]
    assert distinct.tolist() == want
    assert inverse.dtype == np.int32
    assert [want[i] for i in inverse] == keys.tolist()


@pytest.mark.parametrize("limit", [segment_side.KEY_LIMIT, 1], ids=["one key", "three codes"])
def test_triples_take_each_triples_earliest_time(
    monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    monkeypatch.setattr(segment_side, "KEY_LIMIT", limit)
    t = [datetime(2024, 5, 1, hour, tzinfo=UTC) for hour in range(5)]
    table = pa.table(
        {
            "user_id": pa.array(["u1", "u1", None, "u2", "u1"]).dictionary_encode(),
            "anonymous_id": pa.array(["a1", "a1", "a2", "a1", "a1"]).dictionary_encode(),
            "previous_id": pa.array([None, None, None, None, "p9"]).dictionary_encode(),
        }
    )
    coded = [segment_side._codes(table, c) for c in ("user_id", "anonymous_id", "previous_id")]
    stamps = pa.chunked_array([pa.array([t[3], t[1], t[2], t[4], t[0]], pa.timestamp("us", "UTC"))])
    got: set[tuple[Any, ...]] = {
        tuple(row.values()) for row in segment_side._triples(coded, stamps).to_pylist()
    }
    assert got == {
        ("u1", "a1", None, t[1]),  # rows 0 and 1: the later row is the earlier
        (None, "a2", None, t[2]),
        ("u2", "a1", None, t[4]),
        ("u1", "a1", "p9", t[0]),
    }
