"""Parquet reference segments (ingest/bulk.py, store/segments.py): a clean canonical Parquet
file is kept as it is and read through the ``events`` view, with the same events, persons,
dedup and quarantine as the pipeline gives."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import funnelscope
from funnelscope.events.schema import ITEM_TYPE
from funnelscope.ingest.bulk import MIN_SEGMENT_ROWS
from funnelscope.store.segments import _names_list as names_list
from funnelscope.store.segments import compact_segments, segments_folder
from funnelscope.workspace import Workspace

RECEIVED = datetime(2024, 7, 1, tzinfo=UTC)
N = MIN_SEGMENT_ROWS
START = datetime(2024, 5, 1, tzinfo=UTC)


def _table(n: int = N, *, prefix: str = "e") -> pa.Table:
    """n events of n // 4 persons: anonymous a<k> on every row, user u<k> on every 4th."""
    events = ["Product Viewed", "page_viewed", "Order Completed", "add_to_cart"]
    order = [i % 4 == 2 for i in range(n)]
    return pa.table(
        {
            "event_id": [f"{prefix}{i}" for i in range(n)],
            "timestamp": pa.array(
                [START + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
            "event": [events[i % 4] for i in range(n)],
            "user_id": [f"u{i % (n // 4)}" if i % 4 == 3 else None for i in range(n)],
            "anonymous_id": [f"a{i % (n // 4)}" for i in range(n)],
            "utm_source": ["google" if i % 5 == 0 else None for i in range(n)],
            "utm_medium": ["cpc" if i % 5 == 0 else None for i in range(n)],
            "referrer": ["https://www.bing.com/search" if i % 7 == 0 else None for i in range(n)],
            "properties": ['{"k": 1}' if i % 3 == 0 else None for i in range(n)],
            "revenue": pa.array(
                [Decimal("12.5") if o else None for o in order], pa.decimal128(18, 4)
            ),
            "currency": ["EUR" if o else None for o in order],
            "items": pa.array(
                [
                    [
                        {
                            "product_id": "p1",
                            "sku": None,
                            "name": "Mug",
                            "category": "home",
                            "brand": None,
                            "variant": None,
                            "price": Decimal("12.5"),
                            "quantity": 1,
                        }
                    ]
                    if o
                    else None
                    for o in order
                ],
                pa.list_(ITEM_TYPE),
            ),
        }
    )


def _write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def _rows(ws: Workspace) -> list[tuple[Any, ...]]:
    return ws.store.query("SELECT * EXCLUDE (source) FROM events ORDER BY seq")


def _segments(ws: Workspace) -> int:
    return int(ws.store.query("SELECT count(*) FROM event_segments")[0][0])


def test_clean_parquet_is_kept_as_a_segment_with_the_pipelines_events(tmp_path: Path) -> None:
    path = _write(_table(), tmp_path / "events.parquet")
    with funnelscope.open(tmp_path / "seg.duckdb") as seg, funnelscope.open(":memory:") as ref:
        report = seg.ingest(path, received_at=RECEIVED)
        expected = ref.ingest(path, received_at=RECEIVED)  # in memory: always the pipeline
        assert (report.rows, report.accepted, report.inserted) == (N, N, N)
        assert _segments(seg) == 1 and _segments(ref) == 0
        assert seg.store.query("SELECT count(*) FROM event_log")[0][0] == 0
        assert expected.inserted == N
        assert _rows(seg) == _rows(ref)
        # the stored types are the native table's: readers cannot tell the two apart
        described = "SELECT column_name, column_type FROM (DESCRIBE events)"
        assert seg.store.query(described) == ref.store.query(described)
        assert seg.store.query("SELECT DISTINCT source FROM events") == [(f"import:{path}",)]
        # canonical names and derived channels come from the side table
        assert seg.store.query(
            "SELECT event, raw_event, channel, count(*) FROM events WHERE seq <= 4 "
            "GROUP BY ALL ORDER BY 1, 3"
        ) == [
            ("order_completed", "Order Completed", "direct", 1),
            ("page_viewed", "page_viewed", "direct", 1),
            ("product_added", "add_to_cart", "direct", 1),
            ("product_viewed", "Product Viewed", "paid_search", 1),
        ]
        assert seg.info()["persons"] == ref.info()["persons"] == N // 4


def test_reimport_adds_nothing_and_counts_duplicates(tmp_path: Path) -> None:
    path = _write(_table(), tmp_path / "events.parquet")
    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        ws.ingest(path, received_at=RECEIVED)
        again = ws.ingest(path, received_at=RECEIVED + timedelta(days=1))
        assert (again.rows, again.accepted, again.inserted, again.duplicates) == (N, N, 0, N)
        assert ws.info()["events"] == N
        assert _segments(ws) == 1
        # a CSV export of the same events is deduplicated against the segment too
        ws.export(tmp_path / "out")
        csv = tmp_path / "again.csv"
        ws.store.query(f"COPY (SELECT * FROM events) TO '{csv}' (HEADER)")
        assert ws.ingest(csv, received_at=RECEIVED).inserted == 0


def test_many_row_groups_stay_aligned_with_the_side_table(tmp_path: Path) -> None:
    # DuckDB reads row groups on several threads: each file row must still meet its own side
    # row (person, canonical event, channel, seq), exactly as the pipeline stores it
    path = tmp_path / "events.parquet"
    pq.write_table(_table(2 * N), path, row_group_size=1_111)
    assert pq.ParquetFile(path).metadata.num_row_groups == 19
    with funnelscope.open(tmp_path / "s.duckdb") as seg, funnelscope.open(":memory:") as ref:
        assert seg.ingest(path, received_at=RECEIVED).inserted == 2 * N
        ref.ingest(path, received_at=RECEIVED)
        assert _segments(seg) == 1
        assert _rows(seg) == _rows(ref)
        # by hand: e7 is row 7 (seq 8): a user row (7 % 4 == 3) of add_to_cart, with the bing
        # referrer (7 % 7 == 0), in the first row group; e7775 (seventh row group) is the same
        # kind of row with google / cpc (7775 % 5 == 0) and no referrer, of person k = 2775
        assert seg.store.query(
            "SELECT seq, event, user_id, channel FROM events WHERE event_id IN ('e7', 'e7775') "
            "ORDER BY seq"
        ) == [
            (8, "product_added", "u7", "organic_search"),
            (7776, "product_added", "u2775", "paid_search"),
        ]


def test_a_second_file_of_known_persons_stitches_nothing_new(tmp_path: Path) -> None:
    # the same persons (ids a<k>, u<k>) with new event ids: stored as a second segment, and
    # the person count does not move
    first = _write(_table(), tmp_path / "first.parquet")
    second = _write(_table(prefix="f"), tmp_path / "second.parquet")
    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        ws.ingest(first, received_at=RECEIVED)
        report = ws.ingest(second, received_at=RECEIVED)
        assert (report.inserted, report.duplicates) == (N, 0)
        assert _segments(ws) == 2
        assert ws.info()["persons"] == N // 4
        assert (
            ws.store.query(
                "SELECT count(DISTINCT person_id) FROM events WHERE anonymous_id = 'a3'"
            )[0][0]
            == 1
        )


@pytest.mark.parametrize(
    ("change", "column", "value"),
    [
        ("padded", "utm_source", " google"),  # stored trimmed by the pipeline
        ("empty", "referrer", ""),  # stored as NULL by the pipeline
        ("lower currency", "currency", "eur"),  # stored upper case
    ],
)
def test_unclean_values_take_the_pipeline(
    tmp_path: Path, change: str, column: str, value: str
) -> None:
    table = _table()
    values = table.column(column).to_pylist()
    values[2] = value
    table = table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, pa.string())
    )
    path = _write(table, tmp_path / "events.parquet")
    with funnelscope.open(tmp_path / "s.duckdb") as ws, funnelscope.open(":memory:") as ref:
        assert ws.ingest(path, received_at=RECEIVED).inserted == N
        ref.ingest(path, received_at=RECEIVED)
        assert _segments(ws) == 0, change
        assert _rows(ws) == _rows(ref)


def test_a_bad_row_is_quarantined_and_the_rest_imported(tmp_path: Path) -> None:
    table = _table()
    ids = table.column("event_id").to_pylist()
    ids[5] = None
    table = table.set_column(0, "event_id", pa.array(ids, pa.string()))
    path = _write(table, tmp_path / "events.parquet")
    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        report = ws.ingest(path, received_at=RECEIVED)
        assert (report.rows, report.accepted, report.rejected) == (N, N - 1, 1)
        assert ws.store.query("SELECT row_number, reason_code FROM quarantine") == [
            (5, "event.missing_id")
        ]
        assert ws.info()["events"] == N - 1


def test_partly_stored_file_inserts_only_the_new_rows(tmp_path: Path) -> None:
    table = _table()
    first = _write(table.slice(0, N // 2), tmp_path / "half.parquet")
    whole = _write(table, tmp_path / "whole.parquet")
    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        ws.ingest(first, received_at=RECEIVED)  # below MIN_SEGMENT_ROWS: the pipeline
        report = ws.ingest(whole, received_at=RECEIVED)
        assert (report.inserted, report.duplicates) == (N - N // 2, N // 2)
        assert ws.info()["events"] == N


def test_identity_links_across_a_segment_and_later_events(tmp_path: Path) -> None:
    path = _write(_table(), tmp_path / "events.parquet")
    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        ws.ingest(path, received_at=RECEIVED)
        # u3 is linked to a3 in the segment; a1 is anonymous only there. Later: a new visitor
        # x9 signs in as u3, and a1 signs up as u_new. Each group is then one person, the
        # segment's earlier events of a1 included.
        ws.append_staging(
            pa.table(
                {
                    "event_id": ["n1", "n2", "n3"],
                    "timestamp": ["2024-06-01T00:00:00Z"] * 3,
                    "event": ["page_viewed", "signed_in", "signed_up"],
                    "anonymous_id": ["x9", "x9", "a1"],
                    "user_id": [None, "u3", "u_new"],
                }
            ),
            source="live",
            received_at=RECEIVED,
        )
        persons = (
            ws.engine.sql(
                "SELECT count(DISTINCT person_id) FROM events WHERE anonymous_id IN ('a3', 'x9') "
                "UNION ALL SELECT count(DISTINCT person_id) FROM events "
                "WHERE anonymous_id = 'a1' OR user_id = 'u_new'"
            )
            .column(0)
            .to_pylist()
        )
        assert persons == [1, 1]
        assert (
            ws.store.query("SELECT count(*) FROM events WHERE anonymous_id = 'a1'")[0][0]
            == N // 2500 + 1
        )
        assert ws.info()["persons"] == N // 4
        # the live rows continue the segment's arrival order
        assert ws.store.query("SELECT min(seq) FROM event_log")[0][0] == N + 1


def test_a_moved_store_reads_its_segments(tmp_path: Path) -> None:
    path = _write(_table(), tmp_path / "events.parquet")
    old = tmp_path / "a" / "s.duckdb"
    with funnelscope.open(old) as ws:
        ws.ingest(path, received_at=RECEIVED)
        before = _rows(ws)
    new = tmp_path / "b" / "t.duckdb"
    new.parent.mkdir()
    shutil.move(old, new)
    old_folder, new_folder = segments_folder(old), segments_folder(new)
    assert old_folder is not None and new_folder is not None
    shutil.move(old_folder, new_folder)
    path.unlink()  # the store never reads the original file
    with funnelscope.open(new) as ws:
        assert _rows(ws) == before


def test_compact_moves_segments_into_the_native_table(tmp_path: Path) -> None:
    path = _write(_table(), tmp_path / "events.parquet")
    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        ws.ingest(path, received_at=RECEIVED)
        before = _rows(ws)
        with ws.store.write() as con:
            assert compact_segments(con, ws.store.path) == N
        assert _segments(ws) == 0
        assert ws.store.query("SELECT count(*) FROM event_log")[0][0] == N
        assert _rows(ws) == before


def test_side_table_codes_read_back_as_the_pipelines_names(tmp_path: Path) -> None:
    # odd raw names (quotes, backslashes, non-ASCII): canonical names through codes and the
    # names list of the events view, compared with the pipeline's text
    odd = ["it's done", "Ünïcode ✓", "back\\slash", "Order Completed"]
    table = _table()
    table = table.set_column(
        table.schema.get_field_index("event"), "event", pa.array([odd[i % 4] for i in range(N)])
    )
    path = _write(table, tmp_path / "odd.parquet")
    with funnelscope.open(tmp_path / "seg.duckdb") as seg, funnelscope.open(":memory:") as ref:
        seg.ingest(path, received_at=RECEIVED)
        ref.ingest(path, received_at=RECEIVED)
        assert _segments(seg) == 1
        assert _rows(seg) == _rows(ref)
        assert seg.store.query("SELECT DISTINCT event FROM events ORDER BY 1") == [
            ("back_slash",),
            ("it_s_done",),
            ("n_code",),
            ("order_completed",),
        ]
        # codes, not names, are stored; the names live in event_segments
        assert seg.store.query(
            "SELECT column_name, column_type FROM (DESCRIBE event_segment_1)"
        ) == [("person_id", "INTEGER"), ("event", "INTEGER"), ("channel", "INTEGER")]


def test_the_names_list_of_the_view_quotes_any_text() -> None:
    names = ["it's", None, "back\\slash", "ü ✓", ""]
    with funnelscope.open(":memory:") as ws:
        assert ws.store.query(f"SELECT {names_list(names)}") == [(names,)]


def test_a_side_table_written_before_codes_still_reads_the_same(tmp_path: Path) -> None:
    # stores written before migration 0008 keep side tables of (seq, person_id, event, channel)
    # as text, with no names in event_segments: the events view must read both forms
    path = _write(_table(), tmp_path / "events.parquet")
    store_path = tmp_path / "old.duckdb"
    with funnelscope.open(store_path) as ws:
        ws.ingest(path, received_at=RECEIVED)
        expected = _rows(ws)
        with ws.store.write() as con:
            # rewrite the side table into the old form, as an older funnelscope wrote it
            con.execute(
                "CREATE TABLE old_side AS SELECT e.seq, e.person_id, e.event, e.channel "
                "FROM (SELECT seq, person_id, event, channel FROM events ORDER BY seq) e"
            )
            con.execute("DROP VIEW events")
            con.execute("DROP TABLE event_segment_1")
            con.execute("ALTER TABLE old_side RENAME TO event_segment_1")
            con.execute("UPDATE event_segments SET event_names = NULL, channel_names = NULL")
    with funnelscope.open(store_path) as ws:  # opening rebuilds the views from event_segments
        assert ws.store.query("SELECT column_type FROM (DESCRIBE event_segment_1)") == [
            ("BIGINT",),
            ("INTEGER",),
            ("VARCHAR",),
            ("VARCHAR",),
        ]
        assert _rows(ws) == expected
