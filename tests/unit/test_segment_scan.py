"""The one-scan shortcut of a Parquet segment import (ingest/bulk.py, docs/import.md "Parquet
segments"): a file it must not accept takes the slow road and ends exactly as the pipeline
leaves it; a file it accepts stores what the pipeline stores."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import funnelscope
from funnelscope.ingest import bulk, clean_text
from funnelscope.ingest.bulk import MIN_SEGMENT_ROWS
from funnelscope.ingest.parquet_pages import read_dictionaries
from funnelscope.store.segments import segments_folder
from funnelscope.workspace import Workspace
from tests.unit.test_parquet_pages import write_encrypted

RECEIVED = datetime(2024, 7, 1, tzinfo=UTC)
START = datetime(2024, 5, 1, tzinfo=UTC)
N = MIN_SEGMENT_ROWS


def _table(n: int = N) -> pa.Table:
    """n clean events of n // 4 persons; every 4th row an order in EUR with revenue."""
    order = [i % 4 == 2 for i in range(n)]
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "timestamp": pa.array(
                [START + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")
            ),
            "event": [
                ["Product Viewed", "page_viewed", "Order Completed"][i % 3] for i in range(n)
            ],
            "user_id": [f"u{i % (n // 4)}" if i % 4 == 3 else None for i in range(n)],
            "anonymous_id": [f"a{i % (n // 4)}" for i in range(n)],
            "utm_source": ["google" if i % 5 == 0 else None for i in range(n)],
            "utm_medium": ["cpc" if i % 5 == 0 else None for i in range(n)],
            "utm_campaign": ["spring" if i % 6 == 0 else None for i in range(n)],
            "referrer": ["https://t.co/x" if i % 7 == 0 else None for i in range(n)],
            "page_url": ["https://shop.example/p/1" for _ in range(n)],
            "properties": ['{"k": 1}' if i % 3 == 0 else None for i in range(n)],
            "revenue": pa.array(
                [Decimal("12.5") if o else None for o in order], pa.decimal128(18, 4)
            ),
            "currency": ["EUR" if o else None for o in order],
        }
    )


def _set(column: str, row: int, value: Any) -> Callable[[pa.Table], pa.Table]:
    def change(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        values[row] = value
        index = table.schema.get_field_index(column)
        return table.set_column(index, column, pa.array(values, table.schema.field(index).type))

    return change


def _items_text(table: pa.Table) -> pa.Table:
    """An ``items`` column of JSON text (not the canonical list type): row 2 is not a list of
    line items (a price that is not a number)."""
    items = [None] * table.num_rows
    items[2] = '[{"product_id": "p1", "price": "cheap", "quantity": 1}]'
    items[6] = '[{"product_id": "p1", "price": 3.5, "quantity": 2}]'
    return table.append_column("items", pa.array(items, pa.string()))


def _pipeline_result(ws: Workspace) -> tuple[Any, ...]:
    return (
        ws.store.query("SELECT * EXCLUDE (source) FROM events ORDER BY seq"),
        ws.store.query(
            "SELECT row_number, reason_code, message, payload FROM quarantine ORDER BY row_number"
        ),
        ws.store.query("SELECT * FROM identities ORDER BY distinct_id"),
        ws.store.query("SELECT * FROM person_map ORDER BY person_id"),
    )


def _report(r: Any) -> tuple[Any, ...]:
    return (r.rows, r.accepted, r.rejected, r.inserted, r.duplicates, dict(r.reasons))


# Each row: a change the shortcut must refuse, and what the pipeline then reports
# (rejected, inserted, duplicates, reasons) for it.
REFUSED = [
    ("trailing space", _set("utm_campaign", 6, "spring "), (0, N, 0, {})),
    ("leading no-break space", _set("utm_source", 5, "\u00a0google"), (0, N, 0, {})),
    ("trailing ideographic space", _set("anonymous_id", 9, "a9\u3000"), (0, N, 0, {})),
    ("empty text", _set("referrer", 1, ""), (0, N, 0, {})),
    ("trailing no-break space", _set("utm_campaign", 6, "spring\u00a0"), (0, N, 0, {})),
    ("leading ideographic space", _set("user_id", 3, "\u3000u0"), (0, N, 0, {})),
    ("a value of one space", _set("referrer", 7, " "), (0, N, 0, {})),
    ("event_id with a trailing no-break space", _set("event_id", 4, "e4\u00a0"), (0, N, 0, {})),
    ("lower-case currency", _set("currency", 2, "eur"), (0, N, 0, {})),
    ("revenue without currency", _set("currency", 6, None), (0, N, 0, {})),
    ("repeated event_id", _set("event_id", 9, "e3"), (0, N - 1, 1, {})),
    ("missing event_id", _set("event_id", 5, None), (1, N - 1, 0, {"event.missing_id": 1})),
    ("event_id too long", _set("event_id", 5, "x" * 201), (1, N - 1, 0, {"event.bad_id": 1})),
    ("no identity", _set("anonymous_id", 4, None), (1, N - 1, 0, {"event.missing_identity": 1})),
    (
        "timestamp before 2000",
        _set("timestamp", 8, datetime(1999, 12, 31, tzinfo=UTC)),
        (1, N - 1, 0, {"event.timestamp_out_of_range": 1}),
    ),
    (
        "timestamp after received_at + 1 day",
        _set("timestamp", 8, RECEIVED + timedelta(days=2)),
        (1, N - 1, 0, {"event.timestamp_out_of_range": 1}),
    ),
    (
        "properties not JSON",
        _set("properties", 3, '{"k": '),
        (1, N - 1, 0, {"event.invalid_properties": 1}),
    ),
    (
        "properties a JSON list",
        _set("properties", 3, "[1, 2]"),
        (1, N - 1, 0, {"event.invalid_properties": 1}),
    ),
    (
        "unknown currency",
        _set("currency", 2, "XXX"),
        (1, N - 1, 0, {"event.unknown_currency": 1}),
    ),
    ("items as JSON text", _items_text, (1, N - 1, 0, {"event.bad_items": 1})),
]


def _assert_like_the_pipeline(
    tmp_path: Path, path: Path, expected: tuple[int, int, int, dict[str, int]], segments: int
) -> None:
    """Importing ``path`` reports, stores and quarantines exactly what the pipeline does."""
    with funnelscope.open(tmp_path / "s.duckdb") as ws, funnelscope.open(":memory:") as ref:
        got = ws.ingest(path, received_at=RECEIVED)
        want = ref.ingest(path, received_at=RECEIVED)
        rejected, inserted, duplicates, reasons = expected
        assert (
            _report(got)
            == _report(want)
            == (N, N - rejected, rejected, inserted, duplicates, reasons)
        )
        assert ws.store.query("SELECT count(*) FROM event_segments")[0][0] == segments
        assert _pipeline_result(ws) == _pipeline_result(ref)


@pytest.mark.parametrize(("case", "change", "expected"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_file_the_shortcut_refuses_ends_as_the_pipeline_leaves_it(
    tmp_path: Path,
    case: str,
    change: Callable[[pa.Table], pa.Table],
    expected: tuple[int, int, int, dict[str, int]],
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(change(_table()), path)
    with funnelscope.open(tmp_path / "s.duckdb") as ws, funnelscope.open(":memory:") as ref:
        got = ws.ingest(path, received_at=RECEIVED)
        want = ref.ingest(path, received_at=RECEIVED)  # in memory: always the pipeline
        rejected, inserted, duplicates, reasons = expected
        assert (
            _report(got)
            == _report(want)
            == (
                N,
                N - rejected,
                rejected,
                inserted,
                duplicates,
                reasons,
            )
        ), case
        assert ws.store.query("SELECT count(*) FROM event_segments")[0][0] == 0, case
        assert _pipeline_result(ws) == _pipeline_result(ref), case


def test_values_trim_leaves_alone_are_clean(tmp_path: Path) -> None:
    # DuckDB's trim() strips spaces (Unicode Zs) only: a tab, a newline or a trailing accented
    # letter is stored as it is by the pipeline too, so the file is still a segment
    table = _set("utm_campaign", 6, "\tspring\n")(
        _set("page_url", 2, "https://shop.example/é")(_table())
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    with funnelscope.open(tmp_path / "s.duckdb") as ws, funnelscope.open(":memory:") as ref:
        assert _report(ws.ingest(path, received_at=RECEIVED)) == _report(
            ref.ingest(path, received_at=RECEIVED)
        )
        assert ws.store.query("SELECT count(*) FROM event_segments")[0][0] == 1
        assert _pipeline_result(ws) == _pipeline_result(ref)
        assert ws.store.query("SELECT utm_campaign FROM events WHERE event_id = 'e6'") == [
            ("\tspring\n",)
        ]


def test_an_already_stored_id_sends_the_file_to_the_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(_table(), path)
    # e17 arrives live first (signed_in, canonically logged_in: the stored copy is visible)
    live = pa.table(
        {
            "event_id": ["e17"],
            "timestamp": ["2024-05-01T00:00:17Z"],
            "event": ["signed_in"],
            "anonymous_id": ["a17"],
        }
    )
    with funnelscope.open(tmp_path / "s.duckdb") as ws, funnelscope.open(":memory:") as ref:
        for w in (ws, ref):
            w.append_staging(live, source="live", received_at=RECEIVED)
        got = ws.ingest(path, received_at=RECEIVED)
        want = ref.ingest(path, received_at=RECEIVED)
        assert _report(got) == _report(want) == (N, N, 0, N - 1, 1, {})
        assert ws.store.query("SELECT count(*) FROM event_segments")[0][0] == 0
        assert ws.store.query("SELECT event FROM events WHERE event_id = 'e17'") == [("logged_in",)]
        assert _pipeline_result(ws) == _pipeline_result(ref)


def test_the_segment_file_is_a_copy_the_original_can_be_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(_table(), path)
    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        ws.ingest(path, received_at=RECEIVED)
        before = ws.store.query("SELECT * FROM events ORDER BY seq")
        folder = segments_folder(ws.store.path)
        assert folder is not None
        assert sorted(p.name for p in folder.iterdir()) == ["1.parquet"]  # no partial left
        assert os.stat(folder / "1.parquet").st_ino != os.stat(path).st_ino
        # rewriting the original in place (pyarrow truncates the same file) changes nothing
        pq.write_table(_table(20), path)
        assert ws.store.query("SELECT * FROM events ORDER BY seq") == before


def test_a_reimport_with_new_ids_stitches_them_as_the_pipeline_does(tmp_path: Path) -> None:
    # the same events again, but row 1 now carries a user id never seen: nothing is inserted,
    # and the new id is stitched (linked to a1's person) exactly as the pipeline stitches it
    first, again = tmp_path / "first.parquet", tmp_path / "again.parquet"
    pq.write_table(_table(), first)
    pq.write_table(_set("user_id", 1, "u_new")(_table()), again)
    with funnelscope.open(tmp_path / "s.duckdb") as ws, funnelscope.open(":memory:") as ref:
        for w in (ws, ref):
            w.ingest(first, received_at=RECEIVED)
        got = ws.ingest(again, received_at=RECEIVED)
        want = ref.ingest(again, received_at=RECEIVED)
        assert _report(got) == _report(want) == (N, N, 0, 0, N, {})
        assert ws.store.query("SELECT count(*) FROM event_segments")[0][0] == 1
        assert _pipeline_result(ws) == _pipeline_result(ref)
        assert ws.store.query(
            "SELECT count(DISTINCT m.canonical_id) FROM identities i JOIN person_map m "
            "USING (person_id) WHERE i.distinct_id IN ('a1', 'u_new')"
        ) == [(1,)]


def test_a_file_of_the_required_columns_only_is_a_segment(tmp_path: Path) -> None:
    # no channel input, no user id, no revenue: every row is direct, one person per anonymous id
    table = _table().select(["event_id", "timestamp", "event", "anonymous_id"])
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    with funnelscope.open(tmp_path / "s.duckdb") as ws, funnelscope.open(":memory:") as ref:
        assert _report(ws.ingest(path, received_at=RECEIVED)) == _report(
            ref.ingest(path, received_at=RECEIVED)
        )
        assert ws.store.query("SELECT count(*) FROM event_segments")[0][0] == 1
        assert _pipeline_result(ws) == _pipeline_result(ref)
        assert ws.store.query(
            "SELECT channel, count(DISTINCT person_id) FROM events GROUP BY 1"
        ) == [("direct", N // 4)]


def test_a_file_of_rejected_rows_only_is_quarantined_as_the_pipeline_does(tmp_path: Path) -> None:
    table = _table()
    stamps = pa.array([datetime(1999, 1, 1, tzinfo=UTC)] * N, pa.timestamp("us", tz="UTC"))
    path = tmp_path / "events.parquet"
    pq.write_table(table.set_column(1, "timestamp", stamps), path)
    with funnelscope.open(tmp_path / "s.duckdb") as ws, funnelscope.open(":memory:") as ref:
        got = ws.ingest(path, received_at=RECEIVED)
        want = ref.ingest(path, received_at=RECEIVED)
        assert (
            _report(got)
            == _report(want)
            == (
                N,
                0,
                N,
                0,
                0,
                {"event.timestamp_out_of_range": N},
            )
        )
        assert _pipeline_result(ws) == _pipeline_result(ref)


def _assert_segment_as_pipeline(tmp_path: Path, path: Path, *, segments: int) -> None:
    with funnelscope.open(tmp_path / "s.duckdb") as ws, funnelscope.open(":memory:") as ref:
        assert _report(ws.ingest(path, received_at=RECEIVED)) == _report(
            ref.ingest(path, received_at=RECEIVED)
        )
        assert ws.store.query("SELECT count(*) FROM event_segments")[0][0] == segments
        assert _pipeline_result(ws) == _pipeline_result(ref)


@pytest.mark.parametrize("dictionary", [True, False], ids=["dictionary pages", "plain pages"])
@pytest.mark.parametrize(
    ("change", "segments"),
    [
        (None, 1),
        (_set("utm_campaign", N - 5, "spring\u3000"), 0),  # in the last row group only
        (_set("page_url", N - 3, "https://shop.example/caf\u00e9"), 1),  # clean, non-ASCII end
        (_set("page_url", N - 3, "\u00a0https://shop.example/p/1"), 0),
    ],
    ids=["clean", "padded in the last group", "accented end", "no-break space in front"],
)
def test_the_text_check_reads_every_row_group(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dictionary: bool,
    change: Callable[[pa.Table], pa.Table] | None,
    segments: int,
) -> None:
    # row groups of 1,000 rows read 2,000 at a time: the value is met in the last read, and
    # with plain pages pyarrow builds the dictionaries itself
    monkeypatch.setattr(clean_text, "READ_ROWS", 2_000)
    table = _table() if change is None else change(_table())
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=1_000, use_dictionary=dictionary)
    _assert_segment_as_pipeline(tmp_path, path, segments=segments)


def _journeys(n: int = N) -> pa.Table:
    """Internal referrals (referrer on the shop's own host), external ones, campaigns and
    users who sign in half way: every input of the side table varies."""
    table = _table(n)
    referrers = [
        ["https://shop.example/cart", "https://www.google.com/", None, "https://t.co/x"][i % 4]
        for i in range(n)
    ]
    pages = [f"https://shop.example/p/{i % 37}" for i in range(n)]
    users = [f"u{(i // 8) % (n // 4)}" if i % 8 >= 4 else None for i in range(n)]
    for name, values in (("referrer", referrers), ("page_url", pages), ("user_id", users)):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    return table


def test_the_side_table_from_codes_equals_the_sql_road(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(_journeys(), path, row_group_size=3_000)
    with funnelscope.open(tmp_path / "codes.duckdb") as ws:
        ws.ingest(path, received_at=RECEIVED)
        codes = _pipeline_result(ws)
        channels = ws.store.query("SELECT channel, count(*) FROM events GROUP BY 1 ORDER BY 1")
    monkeypatch.setattr(bulk, "ARROW_SIDE_MAX_ROWS", 0)  # the side table in SQL from the file
    with funnelscope.open(tmp_path / "sql.duckdb") as ws, funnelscope.open(":memory:") as ref:
        ws.ingest(path, received_at=RECEIVED)
        ref.ingest(path, received_at=RECEIVED)
        assert ws.store.query("SELECT count(*) FROM event_segments")[0][0] == 1
        assert codes == _pipeline_result(ws) == _pipeline_result(ref)
    # 1 row in 4 internal (shop.example -> shop.example is no new touchpoint: direct), 1 in 4
    # from google (organic search), 1 in 4 from t.co (organic social), the rest direct, except
    # rows 0, 5, 10, ... tagged google/cpc (paid search)
    n = N
    paid = len(range(0, n, 5))
    google = sum(1 for i in range(n) if i % 4 == 1 and i % 5)
    social = sum(1 for i in range(n) if i % 4 == 3 and i % 5)
    assert channels == sorted(
        [
            ("direct", n - paid - google - social),
            ("organic_search", google),
            ("organic_social", social),
            ("paid_search", paid),
        ]
    )


def _padded_ids(table: pa.Table) -> pa.Table:
    """Ids that strictly increase through the file (e00000, e00001, ...)."""
    ids = pa.array([f"e{i:05d}" for i in range(table.num_rows)])
    return table.set_column(0, "event_id", ids)


@pytest.mark.parametrize(
    ("change", "expected", "segments"),
    [
        (_padded_ids, (0, N, 0, {}), 1),
        # increasing except one id repeated right after itself: the hash count decides
        (lambda t: _set("event_id", 9, "e00008")(_padded_ids(t)), (0, N - 1, 1, {}), 0),
        # the same id at both ends of two row groups (1,000 rows each)
        (lambda t: _set("event_id", 1_000, "e00999")(_padded_ids(t)), (0, N - 1, 1, {}), 0),
        # the ids decrease: distinct all the same, proven by the hash count
        (lambda t: _padded_ids(t).take(pa.array(range(N - 1, -1, -1))), (0, N, 0, {}), 1),
    ],
    ids=["increasing", "repeated in a row", "repeated across groups", "decreasing"],
)
def test_increasing_ids_are_distinct_and_others_are_counted(
    tmp_path: Path,
    change: Callable[[pa.Table], pa.Table],
    expected: tuple[int, int, int, dict[str, int]],
    segments: int,
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(change(_table()), path, row_group_size=1_000)
    _assert_like_the_pipeline(tmp_path, path, expected, segments)


def test_a_file_with_aliased_columns_is_a_segment_as_the_pipeline_reads_it(
    tmp_path: Path,
) -> None:
    # the text check, the id order and the side table read the file's own column names
    aliases = {"event_id": "id", "event": "name", "anonymous_id": "anon_id", "page_url": "url"}
    table = _padded_ids(_journeys())
    path = tmp_path / "events.parquet"
    pq.write_table(table.rename_columns([aliases.get(c, c) for c in table.column_names]), path)
    _assert_segment_as_pipeline(tmp_path, path, segments=1)


def _rows_proof_refuses_a_segment(table: pa.Table) -> pa.Table:
    """Row 5's id is 150 two-byte letters: 150 characters (valid) but 300 bytes, more than
    the proof from byte lengths vouches for; the SQL scan counts it valid."""
    return _set("event_id", 5, "\u00e9" * 150)(table)


def _revenue_without_currency_column(table: pa.Table) -> pa.Table:
    return table.drop_columns(["currency"])


@pytest.mark.parametrize(
    ("change", "expected", "segments"),
    [
        (_rows_proof_refuses_a_segment, (0, N, 0, {}), 1),
        (_revenue_without_currency_column, (0, N, 0, {}), 0),
        # a currency on a row without revenue: clean, a segment
        (lambda t: _set("currency", 1, "USD")(t), (0, N, 0, {}), 1),
        (_set("event", 4, None), (1, N - 1, 0, {"event.missing_name": 1}), 0),
        (
            _set("properties", 6, '{"k": "' + "x" * 40_000 + '"}'),
            (1, N - 1, 0, {"event.properties_too_large": 1}),
            0,
        ),
    ],
    ids=[
        "id long in bytes, not in characters",
        "revenue, no currency column",
        "currency only",
        "no event name",
        "properties too large",
    ],
)
def test_the_proof_from_the_text_read_agrees_with_the_scan(
    tmp_path: Path,
    change: Callable[[pa.Table], pa.Table],
    expected: tuple[int, int, int, dict[str, int]],
    segments: int,
) -> None:
    # where the proof of every row's validity (bulk._proven_numbers) declines, the aggregate
    # scan counts, and the import ends as the pipeline leaves it
    path = tmp_path / "events.parquet"
    pq.write_table(change(_table()), path)
    _assert_like_the_pipeline(tmp_path, path, expected, segments)


def test_id_triples_from_codes_take_each_triples_earliest_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the file is not in time order: the triple (u1, a1) is in row 3 at 00:30 and in the last
    # row at 00:05, (u2, a1) in row 0 at 00:10. The earliest link wins: a1 belongs to u1 (its
    # triple's first row in the file is not its earliest), and u1 is first seen at 00:05. An
    # alias (previous_id) links p9 to u2.
    table = _journeys().select(["event_id", "timestamp", "event", "user_id", "anonymous_id"])
    n = table.num_rows
    rows = list(range(n))
    stamps = [START + timedelta(hours=1, seconds=i) for i in rows]
    users = table.column("user_id").to_pylist()
    anons = table.column("anonymous_id").to_pylist()
    previous: list[str | None] = [None] * n
    for row, (at, user, anon, prev) in {
        0: (START + timedelta(minutes=10), "u2", "a1", None),
        3: (START + timedelta(minutes=30), "u1", "a1", None),
        n - 1: (START + timedelta(minutes=5), "u1", "a1", None),
        7: (START + timedelta(minutes=20), "u2", "a1", "p9"),
    }.items():
        stamps[row], users[row], anons[row], previous[row] = at, user, anon, prev
    table = (
        table.set_column(1, "timestamp", pa.array(stamps, pa.timestamp("us", tz="UTC")))
        .set_column(3, "user_id", pa.array(users))
        .set_column(4, "anonymous_id", pa.array(anons))
        .append_column("previous_id", pa.array(previous, pa.string()))
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=3_000)
    with funnelscope.open(tmp_path / "codes.duckdb") as ws, funnelscope.open(":memory:") as ref:
        ws.ingest(path, received_at=RECEIVED)
        ref.ingest(path, received_at=RECEIVED)
        assert ws.store.query("SELECT count(*) FROM event_segments")[0][0] == 1
        want = _pipeline_result(ref)
        assert _pipeline_result(ws) == want
        persons = dict(
            ws.store.query(
                "SELECT i.distinct_id, m.canonical_id FROM identities i JOIN person_map m "
                "USING (person_id) WHERE i.distinct_id IN ('a1', 'u1', 'u2', 'p9')"
            )
        )
        assert persons["a1"] == persons["u1"] != persons["u2"] == persons["p9"]
        assert ws.store.query("SELECT first_seen FROM identities WHERE distinct_id = 'u1'") == [
            (START + timedelta(minutes=5),)
        ]
    monkeypatch.setattr(bulk, "ARROW_SIDE_MAX_ROWS", 0)  # the triples in SQL from the file
    with funnelscope.open(tmp_path / "sql.duckdb") as ws:
        ws.ingest(path, received_at=RECEIVED)
        assert _pipeline_result(ws) == want


def test_channels_from_per_column_keys_equal_the_pipelines(tmp_path: Path) -> None:
    # hosts compared by code: a referrer without a host (an app's id, a bare path) and a page
    # without one are never "internal" (SQL compares NULL hosts as unknown), and upper-case
    # hosts and UTM values are lower-cased first
    n = N
    referrers = [
        ["android-app://com.x", "/cart", "https://SHOP.example/a", None, "https://t.co/x"][i % 5]
        for i in range(n)
    ]
    pages = [[None, "/p/1", "https://shop.example/p/2", "not a url"][i % 4] for i in range(n)]
    sources = [["Google", "google", None, "NEWSLETTER"][i % 4] for i in range(n)]
    mediums = [["CPC", None, "email", "Email"][i % 4] for i in range(n)]
    table = _table()
    for name, values in (
        ("referrer", referrers),
        ("page_url", pages),
        ("utm_source", sources),
        ("utm_medium", mediums),
    ):
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=3_000)
    _assert_segment_as_pipeline(tmp_path, path, segments=1)


# --- the text check from dictionary pages (clean_text.TextScan, ingest/parquet_pages.py) -----

#: The columns of ``_table`` the import keeps per row (bulk's side inputs and proof inputs) and
#: those checked from their dictionary pages alone.
_KEPT = ["event", "user_id", "anonymous_id", "utm_source", "utm_medium", "referrer", "page_url"]
_PAGED = ["utm_campaign", "page_title", "country"]


def _wide_table(n: int = N) -> pa.Table:
    """``_table`` with two more columns only checked: titles of every row (unique per row
    past ``n // 2``, so a small dictionary limit overflows) and countries."""
    table = _table(n)
    titles = [f"Product {i % 50}" if i < n // 2 else f"Title {i}" for i in range(n)]
    table = table.append_column("page_title", pa.array(titles))
    return table.append_column("country", pa.array([["DE", "FR", None][i % 3] for i in range(n)]))


def _scan(path: Path, *, pages: bool) -> clean_text.TextScanResult:
    columns = [*_KEPT, *_PAGED, "properties", "currency"]
    keep = [*_KEPT, "properties", "currency"]
    scan = clean_text.TextScan(path, columns, keep, ids="event_id", pages=pages)
    return scan.result(duckdb.connect())


def _assert_scans_agree(path: Path, clean: bool) -> None:
    """The page check and the old read give the same verdict and the same kept columns."""
    new, old = _scan(path, pages=True), _scan(path, pages=False)
    assert new.clean == old.clean == clean
    assert (new.ids_increasing, new.ids_nulls, new.ids_max_bytes) == (
        old.ids_increasing,
        old.ids_nulls,
        old.ids_max_bytes,
    )
    assert (new.kept is None) == (old.kept is None)
    if new.kept is not None and old.kept is not None:
        assert new.kept.equals(old.kept)


def _large_country(table: pa.Table) -> pa.Table:
    """``country`` stored as large_string: the check leaves it to the read, as before."""
    index = table.schema.get_field_index("country")
    return table.set_column(index, "country", table.column("country").cast(pa.large_string()))


_PADDED = [
    ("clean", None, True),
    ("checked column padded", _set("utm_campaign", N - 5, "spring "), False),
    ("checked column empty", _set("country", 4, ""), False),
    ("checked column U+3000 end", _set("page_title", N - 1, "Title\u3000"), False),
    ("checked column accented end", _set("page_title", 7, "Caf\u00e9"), True),
    ("checked column no-break space", _set("country", 1, "\u00a0FR"), False),
    ("kept column padded", _set("referrer", 7, " https://t.co/x"), False),
    ("large_string checked column", _large_country, True),
    (
        "large_string checked column padded",
        lambda t: _large_country(_set("country", 5, " FR")(t)),
        False,
    ),
]
_WRITERS = [
    ("pyarrow snappy v1", {"compression": "snappy"}),
    ("pyarrow zstd v2", {"compression": "zstd", "data_page_version": "2.0"}),
    ("pyarrow gzip v2", {"compression": "gzip", "data_page_version": "2.0"}),
    ("pyarrow brotli", {"compression": "brotli"}),
    ("pyarrow lz4", {"compression": "lz4"}),
    ("pyarrow none", {"compression": "none"}),
    ("dictionary overflows", {"dictionary_pagesize_limit": 2_000, "data_page_size": 1_000}),
    ("plain pages", {"use_dictionary": ["event", "user_id"]}),
    ("duckdb", None),
    ("polars", None),
]


def _write(table: pa.Table, path: Path, writer: str, options: dict[str, Any] | None) -> None:
    if writer == "duckdb":
        con = duckdb.connect()
        con.register("t", table)
        con.execute(f"COPY t TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 4096)")
    elif writer == "polars":
        pl.from_arrow(table).write_parquet(path, row_group_size=3_000)
    else:
        pq.write_table(table, path, row_group_size=3_000, **(options or {}))


@pytest.mark.parametrize(("writer", "options"), _WRITERS, ids=[w[0] for w in _WRITERS])
@pytest.mark.parametrize(("case", "change", "clean"), _PADDED, ids=[c[0] for c in _PADDED])
def test_the_page_check_gives_the_old_reads_verdict(
    tmp_path: Path,
    writer: str,
    options: dict[str, Any] | None,
    case: str,
    change: Callable[[pa.Table], pa.Table] | None,
    clean: bool,
) -> None:
    table = _wide_table() if change is None else change(_wide_table())
    path = tmp_path / "events.parquet"
    _write(table, path, writer, options)
    # pyarrow reads polars' text as large_string, which the check refuses (so does bulk's
    # schema check): the pages must not accept a column the old read would refuse
    _assert_scans_agree(path, clean and writer != "polars")


def test_a_checked_column_the_pages_cannot_tell_is_read_whole(tmp_path: Path) -> None:
    # page_title's second half overflows its dictionary into PLAIN pages in every row group
    # past the first few: the check reads it as before and finds the value padded there
    path = tmp_path / "events.parquet"
    table = _set("page_title", N - 2, " Title")(_wide_table())
    pq.write_table(table, path, row_group_size=2_000, dictionary_pagesize_limit=2_000)
    pages = read_dictionaries(path, ["page_title", "country"])
    assert not pages["page_title"].is_known and pages["country"].is_known
    assert not _scan(path, pages=True).clean
    _assert_segment_as_pipeline(tmp_path, path, segments=0)


@pytest.mark.parametrize("column", ["country", "user_id", "event_id"])
def test_invalid_utf8_in_any_text_column_is_not_clean(tmp_path: Path, column: str) -> None:
    # pyarrow's read does not check UTF-8, and DuckDB fails on it (a fatal error that closes
    # the store): a checked column (from its pages), a kept one and the ids are all checked
    table = _wide_table()
    values = table.column(column).to_pylist()
    raw = pa.array([None if v is None else v.encode() for v in values], pa.binary()).to_pylist()
    raw[9] = b"o\xffk"
    index = table.schema.get_field_index(column)
    bad = pa.Array.from_buffers(pa.string(), N, pa.array(raw, pa.binary()).buffers())
    path = tmp_path / "events.parquet"
    pq.write_table(table.set_column(index, column, bad), path)
    assert not _scan(path, pages=False).clean
    assert not _scan(path, pages=True).clean


@pytest.mark.parametrize("dictionary", [True, False], ids=["dictionary pages", "plain pages"])
def test_a_wide_file_checked_from_pages_imports_as_the_pipeline(
    tmp_path: Path, dictionary: bool
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(_wide_table(), path, row_group_size=3_000, use_dictionary=dictionary)
    _assert_segment_as_pipeline(tmp_path, path, segments=1)


@pytest.mark.parametrize("plaintext_footer", [True, False], ids=["plaintext footer", "encrypted"])
def test_an_encrypted_file_fails_the_check_as_before(
    tmp_path: Path, plaintext_footer: bool
) -> None:
    path = tmp_path / "e.parquet"
    write_encrypted(path, plaintext_footer=plaintext_footer)
    for pages in (False, True):
        with pytest.raises(OSError, match=r"decrypt|encrypted"):
            clean_text.TextScan(path, ["s", "t"], pages=pages).result(duckdb.connect())


def test_a_column_missing_from_the_file_fails_the_check_as_before(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(_table(), path)
    for pages in (False, True):
        with pytest.raises((KeyError, pa.ArrowInvalid)):
            clean_text.TextScan(path, ["event", "nope"], ["event"], pages=pages).result(
                duckdb.connect()
            )
