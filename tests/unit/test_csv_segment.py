"""CSV segments (ingest/csv_segment.py): a clean chunk of CSV rows is stored as a typed Parquet
segment with the same events, persons, channels and counts as the pipeline gives; a chunk that
breaks the rule is imported by the pipeline exactly as before."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import funnelscope
from funnelscope.ingest.bulk import MIN_SEGMENT_ROWS
from funnelscope.ingest.csv_segment import ChunkScan, import_csv_segment
from funnelscope.ingest.files import ingest_file
from funnelscope.ingest.pipeline import _ITEM_JSON_SHAPE
from funnelscope.workspace import Workspace

RECEIVED = datetime(2024, 7, 1, tzinfo=UTC)
START = datetime(2024, 5, 1, tzinfo=UTC)
N = MIN_SEGMENT_ROWS
HEADER = (
    "event_id,timestamp,event,user_id,anonymous_id,session_id,properties,page_url,referrer,"
    "utm_source,utm_medium,revenue,currency,items"
)
EVENTS = ("Product Viewed", "page_viewed", "Order Completed", "add_to_cart")
PRICE = Decimal("37.5000")


def _field(value: str) -> str:
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _row(i: int, prefix: str = "e") -> dict[str, str]:
    """Event i of n // 4 persons: anonymous a<k> on every row, user u<k> on every 4th; orders
    with items and revenue (some without currency, some in lower case); a few epoch times."""
    k = i % (N // 4)
    order = i % 4 == 2
    at = START + timedelta(seconds=i)
    item = {"product_id": f"p{i % 7}", "name": "Mug, large", "price": 12.5, "quantity": 1 + i % 3}
    return {
        "event_id": f"{prefix}{i}",
        "timestamp": str(int(at.timestamp())) if i % 50 == 1 else at.isoformat(),
        "event": EVENTS[i % 4],
        "user_id": f"u{k}" if i % 4 == 3 else "",
        "anonymous_id": f"a{k}",
        "session_id": f"s{k}-{i // 400}",
        "properties": json.dumps({"note": "two\nlines", "n": i}) if i % 3 == 0 else "",
        "page_url": f"https://shop.example/p/{i % 11}" if i % 2 else "",
        "referrer": (
            "https://www.bing.com/search?q=mug"
            if i % 7 == 0
            else "https://shop.example/cart"  # internal: the page's own host
            if i % 13 == 5
            else ""
        ),
        "utm_source": "google" if i % 5 == 0 else "",
        "utm_medium": "cpc" if i % 5 == 0 else "",
        "revenue": "37.50" if order else "",
        "currency": ("eur" if i % 8 == 2 else "") if order else "",
        "items": json.dumps([item]) if order else "",
    }


def _write(
    path: Path, rows: list[dict[str, str]], *, header: str = HEADER, end: str = "\n"
) -> Path:
    names = header.split(",")
    lines = [header] + [",".join(_field(r.get(n, "")) for n in names) for r in rows]
    path.write_bytes((end.join(lines) + end).encode("utf-8"))
    return path


def _rows(n: int = N, prefix: str = "e") -> list[dict[str, str]]:
    return [_row(i, prefix) for i in range(n)]


def _segments(ws: Workspace) -> int:
    return int(ws.store.query("SELECT count(*) FROM event_segments")[0][0])


def _answers(ws: Workspace) -> dict[str, Any]:
    """Everything a reader can see: events (arrival order as a rank), persons, quarantine."""
    q = ws.store.query
    return {
        "events": q(
            'SELECT * EXCLUDE (seq), row_number() OVER (ORDER BY "timestamp", seq) '
            'FROM events ORDER BY event_id, "timestamp"'
        ),
        "types": q("SELECT column_name, column_type FROM (DESCRIBE events)"),
        "identities": q("SELECT * FROM identities ORDER BY ALL"),
        "person_map": q("SELECT * FROM person_map ORDER BY ALL"),
        "quarantine": q(
            "SELECT source, row_number, reason_code, message, payload FROM quarantine ORDER BY ALL"
        ),
        "persons": ws.info()["persons"],
        "stage_report": ws.stage_report().to_dict(),
    }


def _both(tmp_path: Path, path: Path, **kwargs: Any) -> tuple[Any, Any, Workspace, Workspace]:
    """Import ``path`` into a file store (segments allowed) and an in-memory store (which keeps
    no segments: always the pipeline)."""
    seg = funnelscope.open(tmp_path / "seg.duckdb")
    ref = funnelscope.open(":memory:")
    report = ingest_file(seg.store, path, received_at=RECEIVED, **kwargs)
    expected = ingest_file(ref.store, path, received_at=RECEIVED, **kwargs)
    return report, expected, seg, ref


def test_a_clean_csv_becomes_a_segment_with_the_pipelines_answers(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.csv", _rows())
    report, expected, seg, ref = _both(tmp_path, path)
    with seg, ref:
        assert (report.rows, report.accepted, report.inserted, report.rejected) == (N, N, N, 0)
        assert report.to_dict() == expected.to_dict()
        assert _segments(seg) == 1 and _segments(ref) == 0
        assert seg.store.query("SELECT count(*) FROM event_log")[0][0] == 0
        assert _answers(seg) == _answers(ref)
        # what the segment stores, row by row: typed values, the pipeline's normalisations
        assert seg.store.query(
            "SELECT event_id, event, raw_event, channel, revenue, currency, user_id, "
            "items[1].quantity, json_extract_string(properties, '$.note') "
            "FROM events WHERE event_id IN ('e0', 'e2', 'e3', 'e6', 'e10') ORDER BY seq"
        ) == [
            ("e0", "product_viewed", "Product Viewed", "paid_search", None, None, None, None,
             "two\nlines"),
            ("e2", "order_completed", "Order Completed", "direct", PRICE, "EUR", None, 3, None),
            ("e3", "product_added", "add_to_cart", "direct", None, None, "u3", None,
             "two\nlines"),
            ("e6", "order_completed", "Order Completed", "direct", PRICE, "USD", None, 1,
             "two\nlines"),
            ("e10", "order_completed", "Order Completed", "paid_search", PRICE, "EUR", None, 2,
             None),
        ]  # fmt: skip
        # an epoch-seconds row gets the same instant as its ISO neighbours would
        assert seg.store.query("SELECT \"timestamp\" FROM events WHERE event_id = 'e51'") == [
            (START + timedelta(seconds=51),)
        ]


def test_importing_again_adds_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.csv", _rows())
    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        ws.ingest(path, received_at=RECEIVED)
        persons = ws.store.query("SELECT * FROM person_map ORDER BY ALL")
        again = ws.ingest(path, received_at=RECEIVED + timedelta(hours=1))
        assert (again.rows, again.accepted, again.inserted, again.duplicates) == (N, N, 0, N)
        assert ws.info()["events"] == N and _segments(ws) == 1
        assert ws.store.query("SELECT * FROM person_map ORDER BY ALL") == persons


def test_chunks_of_a_long_file_are_segments_and_the_short_tail_takes_the_pipeline(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path / "events.csv", _rows(3 * N + 500))
    report, expected, seg, ref = _both(tmp_path, path, chunk_rows=N)
    with seg, ref:
        assert report.to_dict() == expected.to_dict()
        assert report.inserted == 3 * N + 500
        assert _segments(seg) >= 2  # chunk sizes follow the reader's blocks (about 2 MiB)
        assert _answers(seg) == _answers(ref)
        # seq ranges of the segments follow each other without overlap, in file order
        ranges = seg.store.query("SELECT first_seq, last_seq FROM event_segments ORDER BY 1")
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))


def test_a_bad_row_after_stored_chunks_keeps_them_and_numbers_the_rest(tmp_path: Path) -> None:
    # the chunks committed before the parser meets the bad row stay segments; the rest of the
    # file is read again record by record from the first uncommitted one, numbered exactly
    path = _write(tmp_path / "events.csv", _rows(4 * N))
    lines = path.read_text().splitlines()
    lines.insert(3 * N + 101, "x1,2024-05-01T00:00:00Z,page_viewed,u1")  # record 3N + 100
    path.write_text("\n".join(lines) + "\n")
    report, expected, seg, ref = _both(tmp_path, path, chunk_rows=N)
    with seg, ref:
        assert dict(report.reasons) == {"row.bad_shape": 1}
        assert report.rejections[0].row == 3 * N + 100
        assert (report.rows, report.inserted) == (4 * N + 1, 4 * N)
        assert _segments(seg) >= 1  # the chunks before the bad row
        assert report.to_dict() == expected.to_dict()
        assert _answers(seg) == _answers(ref)


def _bad(rows: list[dict[str, str]], i: int, **values: str) -> list[dict[str, str]]:
    rows[i] = {**rows[i], **values}
    return rows


PIPELINE_CASES = [
    pytest.param(lambda r: _bad(r, 5, user_id=" u5"), {}, id="untrimmed-value"),
    pytest.param(lambda r: _bad(r, 6, referrer="\u00a0https://x.example/"), {}, id="unicode-pad"),
    pytest.param(lambda r: _bad(r, 7, event_id="e3"), {}, id="repeated-event-id"),
    pytest.param(
        lambda r: _bad(r, 9, items='[{"price": "x", "quantity": 1}]'),
        {"event.bad_items": 1},
        id="items-price-not-a-number",
    ),
    pytest.param(lambda r: _bad(r, 9, items="[{"), {"event.bad_items": 1}, id="items-not-json"),
    pytest.param(
        lambda r: _bad(r, 9, items='{"price": 1}'), {"event.bad_items": 1}, id="items-not-a-list"
    ),
    pytest.param(lambda r: _bad(r, 9, items='[{"price": 1}]'), {}, id="items-without-quantity"),
    pytest.param(
        lambda r: _bad(r, 11, timestamp="yesterday"), {"event.bad_timestamp": 1}, id="bad-time"
    ),
    pytest.param(
        lambda r: _bad(r, 12, properties="[1]"), {"event.invalid_properties": 1}, id="bad-props"
    ),
    pytest.param(lambda r: _bad(r, 13, event=""), {"event.missing_name": 1}, id="no-name"),
    pytest.param(
        lambda r: _bad(r, 14, revenue="1", currency="ABC"),
        {"event.unknown_currency": 1},
        id="unknown-currency",
    ),
    pytest.param(
        lambda r: _bad(r, 15, revenue="ten", currency="ABC"),
        {"event.bad_revenue": 1},
        id="bad-revenue-before-currency",
    ),
    pytest.param(lambda r: r[: N - 1], {}, id="too-few-rows"),
]


@pytest.mark.parametrize(("change", "reasons"), PIPELINE_CASES)
def test_a_csv_that_breaks_the_rule_is_imported_exactly_as_before(
    tmp_path: Path, change: Any, reasons: dict[str, int]
) -> None:
    path = _write(tmp_path / "events.csv", change(_rows()))
    report, expected, seg, ref = _both(tmp_path, path)
    with seg, ref:
        assert _segments(seg) == 0
        assert dict(report.reasons) == reasons
        assert report.to_dict() == expected.to_dict()
        assert _answers(seg) == _answers(ref)


def test_a_row_of_the_wrong_width_keeps_its_row_number(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.csv", _rows())
    lines = path.read_text().splitlines()
    lines.insert(101, "x1,2024-05-01T00:00:00Z,page_viewed,u1")  # record 100: 4 fields
    path.write_text("\n".join(lines) + "\n")
    report, expected, seg, ref = _both(tmp_path, path)
    with seg, ref:
        assert dict(report.reasons) == {"row.bad_shape": 1}
        assert report.rejections[0].row == 100
        assert report.to_dict() == expected.to_dict()
        assert _answers(seg) == _answers(ref)


def test_a_file_with_an_id_already_stored_inserts_only_the_new_rows(tmp_path: Path) -> None:
    rows = _rows()
    first = _write(tmp_path / "first.csv", rows[100:103])
    path = _write(tmp_path / "events.csv", rows)
    with funnelscope.open(tmp_path / "seg.duckdb") as seg, funnelscope.open(":memory:") as ref:
        for ws in (seg, ref):
            ingest_file(ws.store, first, received_at=RECEIVED)
        report = ingest_file(seg.store, path, received_at=RECEIVED)
        expected = ingest_file(ref.store, path, received_at=RECEIVED)
        assert (report.inserted, report.duplicates) == (N - 3, 3)
        assert report.to_dict() == expected.to_dict()
        assert _segments(seg) == 0
        assert _answers(seg) == _answers(ref)


# -- the DuckDB behaviours the shortcut relies on -----------------------------------------------

ITEMS = (
    f"TRY_CAST(json_transform(?, '{_ITEM_JSON_SHAPE}') AS STRUCT(product_id VARCHAR, sku VARCHAR, "
)
ITEMS += "name VARCHAR, category VARCHAR, brand VARCHAR, variant VARCHAR, price DECIMAL(18, 4), "
ITEMS += "quantity INTEGER)[])"


@pytest.mark.parametrize(
    "text", ['{"price": 1, "quantity": 1}', '"[]"', "1", "true", "null"], ids=str
)
def test_json_transform_of_a_non_list_is_null(text: str) -> None:
    # no json_type guard is needed: a NULL list fails the items condition
    assert duckdb.connect().execute(f"SELECT {ITEMS}", [text]).fetchall() == [(None,)]


def test_json_transform_raises_on_text_that_is_not_json() -> None:
    with pytest.raises(duckdb.InvalidInputException):
        duckdb.connect().execute(f"SELECT {ITEMS}", ['[{"price": 1}'])


@pytest.mark.parametrize(
    ("text", "price"),
    [
        ('[{"Price": 2, "quantity": 1}]', None),  # keys match case-sensitively
        ('[{"price": 2, "price": null, "quantity": 1}]', 2),  # the first of duplicates
        ('[{"price": null, "price": 2, "quantity": 1}]', None),
        (' \t[{"price": 2, "quantity": 1}] ', 2),  # JSON whitespace: the same as trimmed
    ],
)
def test_json_transform_reads_the_key_json_extract_reads(text: str, price: int | None) -> None:
    con = duckdb.connect()
    row = con.execute(f"SELECT ({ITEMS})[1].price, json_extract(?, '$[0].price')", [text, text])
    got, extracted = row.fetchall()[0]
    assert got == price
    assert (extracted is not None and extracted != "null") == (price is not None)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["a", "", "b c", ""], []),
        (["", "", "x"], []),
        (["\tx", "y\n", "two\nlines"], []),  # trim() keeps tabs and line breaks
        (["a", " b"], None),
        (["a", "b ", ""], None),
        (["", " "], None),
        (["ok", "caf\u00e9", "\u00a0x", "x"], ["caf\u00e9", "\u00a0x"]),  # left to trim()
    ],
)
def test_the_block_scan_finds_every_value_trim_could_change(
    values: list[str], expected: list[str] | None
) -> None:
    from funnelscope.ingest.clean_text import suspects

    def found(array: pa.Array) -> list[str] | None:
        got = suspects(array)
        return None if got is None else [v for a in got for v in a.to_pylist()]

    assert found(pa.array(values, pa.string())) == expected
    # a slice of a block: the edges of the values outside it must not count
    padded = pa.array([" x ", *values, " y "], pa.string()).slice(1, len(values))
    assert found(padded) == expected


def test_trim_removes_only_the_space_and_non_ascii_spaces() -> None:
    # the cleanliness check looks at first and last bytes: ASCII other than the space is kept
    (trimmed,) = (
        duckdb.connect()
        .execute(
            "SELECT list(i ORDER BY i) FROM range(1, 12544) t(i) "
            "WHERE trim(chr(i::INTEGER) || 'a') <> chr(i::INTEGER) || 'a'"
        )
        .fetchall()[0]
    )
    assert trimmed[0] == 0x20 and all(i >= 0x80 for i in trimmed[1:])


# -- the function itself ---------------------------------------------------------------------


def _staging(n: int = N) -> pa.Table:
    rows = _rows(n)
    table = pa.table({name: [r[name] for r in rows] for name in HEADER.split(",")})
    return table.append_column("_row", pa.array(range(n), pa.int64()))


def test_a_chunk_scanned_block_by_block_gives_the_same_segment(tmp_path: Path) -> None:
    staging = _staging()
    # names and channels derived per group of 2,500 rows, groups ending inside blocks
    scan = ChunkScan(group_rows=2_500)
    for start in range(0, N, 3_000):  # blocks as the reader hands them over
        scan.add(staging.slice(start, 3_000))
    with funnelscope.open(tmp_path / "a.duckdb") as a, funnelscope.open(tmp_path / "b.duckdb") as b:
        got = import_csv_segment(a.store, staging, source="s", received_at=RECEIVED, scan=scan)
        whole = import_csv_segment(b.store, staging, source="s", received_at=RECEIVED)
        assert got is not None and whole is not None
        assert got.to_dict() == whole.to_dict()
        assert _answers(a) == _answers(b)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda t: t.filter(pa.array([i != 10 for i in range(N)])), id="gap-in-rows"),
        pytest.param(
            lambda t: t.set_column(1, "timestamp", pa.array([START] * N)), id="typed-column"
        ),
        pytest.param(lambda t: t.append_column("extra", pa.array(["x"] * N)), id="extra-column"),
        pytest.param(  # seq follows the staging order: rows must come in file order
            lambda t: t.set_column(
                t.schema.get_field_index("_row"), "_row", pa.array([1, 0, *range(2, N)])
            ),
            id="rows-out-of-order",
        ),
    ],
)
def test_chunks_it_cannot_store_are_left_to_the_pipeline(tmp_path: Path, change: Any) -> None:
    with funnelscope.open(tmp_path / "a.duckdb") as ws:
        staged = change(_staging())
        assert import_csv_segment(ws.store, staged, source="s", received_at=RECEIVED) is None
        assert ws.info()["events"] == 0 and _segments(ws) == 0
        assert not any((tmp_path / "a.duckdb.segments").glob("*"))


def test_an_in_memory_store_keeps_no_segments() -> None:
    with funnelscope.open(":memory:") as ws:
        assert import_csv_segment(ws.store, _staging(), source="s", received_at=RECEIVED) is None


# -- a file cut into ranges parsed on two threads (ingest/csv_ranges.py) ----------------------

RANGE = 64 << 10


def _multiline(n: int = 2 * N) -> list[dict[str, str]]:
    """Rows whose session ids hold line breaks (both kinds): quoted records across the cuts."""
    rows = _rows(n)
    for i, row in enumerate(rows):
        if i % 3 == 1:
            row["session_id"] = row["session_id"] + ("\r\n" if i % 2 else "\n") + "tab"
    return rows


def _cut(
    tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch, **kwargs: Any
) -> tuple[Any, Any, Workspace, Workspace]:
    """Import ``path`` cut into 64 KiB ranges (two threads) into a file store, and read serially
    by the pipeline into an in-memory store (the import before ranges existed)."""
    from funnelscope.ingest import csv_read  # the CSV roads' ranges and threads

    monkeypatch.setattr(csv_read, "_RANGE_BYTES", RANGE)
    seg = funnelscope.open(tmp_path / "seg.duckdb")
    ref = funnelscope.open(":memory:")
    report = ingest_file(seg.store, path, received_at=RECEIVED, **kwargs)
    monkeypatch.setattr(csv_read, "_PARSE_THREADS", 1)
    expected = ingest_file(ref.store, path, received_at=RECEIVED, **kwargs)
    return report, expected, seg, ref


def _records_before_cuts(path: Path) -> list[int]:
    """The record number (0-based, header excluded) at which each 64 KiB range starts (a file
    without line breaks inside quotes: every cut is between records)."""
    from funnelscope.ingest.csv_ranges import next_line

    data = path.read_bytes()
    at, found = 0, []
    while (at := next_line(np.frombuffer(data, np.uint8), at + RANGE)) < len(data):
        parse = pacsv.ParseOptions(newlines_in_values=True)
        found.append(pacsv.read_csv(pa.BufferReader(data[:at]), parse_options=parse).num_rows)
    return found


@pytest.mark.parametrize("form", ["lf", "crlf", "bom", "quoted-breaks"])
def test_a_file_cut_into_ranges_gives_the_pipelines_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    # quoted-breaks: a cut inside a quoted value is found out and the rest read serially
    rows = _multiline() if form == "quoted-breaks" else _rows(2 * N)
    path = _write(tmp_path / "events.csv", rows, end="\r\n" if form == "crlf" else "\n")
    if form == "bom":
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert path.stat().st_size > 30 * RANGE
    report, expected, seg, ref = _cut(tmp_path, path, monkeypatch, chunk_rows=N)
    with seg, ref:
        assert (report.rows, report.inserted, report.rejected) == (2 * N, 2 * N, 0)
        assert report.to_dict() == expected.to_dict()
        assert _segments(seg) >= 1
        assert _answers(seg) == _answers(ref)
        if form == "quoted-breaks":
            assert seg.store.query(
                "SELECT session_id FROM events WHERE event_id IN ('e4', 'e7') ORDER BY seq"
            ) == [("s4-0\ntab",), ("s7-0\r\ntab",)]


def test_bad_values_on_either_side_of_a_cut_keep_their_row_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(2 * N)
    first = _records_before_cuts(_write(tmp_path / "probe.csv", rows))[10]
    for i in (first - 1, first):  # the last record of a range and the first of the next
        rows[i] = {**rows[i], "timestamp": "not a time"}
    path = _write(tmp_path / "events.csv", rows)
    assert first in _records_before_cuts(path)  # the cut has not moved
    report, expected, seg, ref = _cut(tmp_path, path, monkeypatch, chunk_rows=N)
    with seg, ref:
        assert dict(report.reasons) == {"event.bad_timestamp": 2}
        assert [r.row for r in report.rejections] == [first - 1, first]
        assert report.to_dict() == expected.to_dict()
        assert _answers(seg) == _answers(ref)


def test_a_row_of_the_wrong_width_in_a_later_range_keeps_its_row_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "events.csv", _rows(2 * N))
    text = path.read_bytes()
    at = text.index(b"\ne15000,") + 1  # record 15000, well past the first chunk's ranges
    path.write_bytes(text[:at] + b"x1,2024-05-01T00:00:00Z,page_viewed,u1\n" + text[at:])
    report, expected, seg, ref = _cut(tmp_path, path, monkeypatch, chunk_rows=N)
    with seg, ref:
        assert dict(report.reasons) == {"row.bad_shape": 1}
        assert report.rejections[0].row == 15_000
        assert (report.rows, report.inserted) == (2 * N + 1, 2 * N)
        assert _segments(seg) == 1  # the first chunk, committed before the bad row was met
        assert report.to_dict() == expected.to_dict()
        assert _answers(seg) == _answers(ref)


@pytest.mark.parametrize("drop", ["page_url", "referrer", "utm_medium"])
def test_channels_without_one_of_their_columns_are_the_pipelines(tmp_path: Path, drop: str) -> None:
    # each part of the channel key is derived per distinct value of its own column; a missing
    # column is one NULL value (no page: no referrer is internal)
    header = ",".join(n for n in HEADER.split(",") if n != drop)
    path = _write(tmp_path / "events.csv", _rows(), header=header)
    report, expected, seg, ref = _both(tmp_path, path)
    with seg, ref:
        assert _segments(seg) == 1
        assert report.to_dict() == expected.to_dict()
        assert _answers(seg) == _answers(ref)


# -- a long file: chunks against the chunks before them ---------------------------------------


def _padded(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Ids that increase along the file (zero-padded), as many exports have."""
    return [{**r, "event_id": f"e{i:07d}"} for i, r in enumerate(rows)]


@pytest.mark.parametrize("repeat", [False, True])
def test_ids_that_increase_are_a_segment_and_a_repeat_among_them_is_not(
    tmp_path: Path, repeat: bool
) -> None:
    # increasing ids are proved distinct without a count; an id repeated at once is caught
    rows = _padded(_rows())
    if repeat:
        rows = _bad(rows, 501, event_id="e0000500")
    path = _write(tmp_path / "events.csv", rows)
    report, expected, seg, ref = _both(tmp_path, path)
    with seg, ref:
        assert (_segments(seg), report.duplicates) == ((0, 1) if repeat else (1, 0))
        assert report.to_dict() == expected.to_dict()
        assert _answers(seg) == _answers(ref)


@pytest.mark.parametrize("ids", ["increasing", "unordered"])
def test_a_later_chunk_repeating_ids_of_an_earlier_chunk_takes_the_pipeline(
    tmp_path: Path, ids: str
) -> None:
    # the last 20 records repeat the ids (and times) of records 0-19, in the first chunk, which
    # is a segment by the time the last chunk is checked: they are duplicates
    rows = _rows(3 * N)
    if ids == "increasing":
        rows = _padded(rows)
    rows += [{**rows[i], "event": "page_viewed"} for i in range(20)]
    path = _write(tmp_path / "events.csv", rows)
    report, expected, seg, ref = _both(tmp_path, path, chunk_rows=N)
    with seg, ref:
        assert (report.rows, report.inserted, report.duplicates) == (3 * N + 20, 3 * N, 20)
        assert report.to_dict() == expected.to_dict()
        assert _segments(seg) >= 1
        # the first chunk's rows are the ones kept
        assert seg.store.query("SELECT count(*) FROM events WHERE event = 'page_viewed'") == [
            (sum(1 for r in rows[: 3 * N] if r["event"] == "page_viewed"),)
        ]
        assert _answers(seg) == _answers(ref)


def test_reimporting_a_long_file_adds_nothing_and_its_longer_version_only_the_new_rows(
    tmp_path: Path,
) -> None:
    rows = _padded(_rows(4 * N))
    short = _write(tmp_path / "short.csv", rows[: 2 * N])
    whole = _write(tmp_path / "whole.csv", rows)
    with funnelscope.open(tmp_path / "seg.duckdb") as seg, funnelscope.open(":memory:") as ref:
        reports = []
        for path in (short, short, whole, whole):
            got = ingest_file(seg.store, path, received_at=RECEIVED, chunk_rows=N)
            expected = ingest_file(ref.store, path, received_at=RECEIVED, chunk_rows=N)
            assert got.to_dict() == expected.to_dict()
            reports.append((got.rows, got.inserted, got.duplicates))
        assert reports == [
            (2 * N, 2 * N, 0),
            (2 * N, 0, 2 * N),  # every chunk stored: counted, nothing written
            (4 * N, 2 * N, 2 * N),
            (4 * N, 0, 4 * N),
        ]
        # chunks end at reader blocks: the longer file's chunk that straddles the end of
        # the shorter one is partly stored and takes the pipeline
        assert _segments(seg) >= 1
        assert _answers(seg) == _answers(ref)


def test_bad_rows_in_several_chunks_keep_their_row_numbers(tmp_path: Path) -> None:
    # the chunks with a bad row take the pipeline, the clean one between them is a segment;
    # quarantine row numbers count from the file's first record whatever the chunk
    rows = _rows(5 * N)
    bad = [17, 5 * N - 5]
    for i in bad:
        rows[i] = {**rows[i], "timestamp": "not a time"}
    path = _write(tmp_path / "events.csv", rows)
    report, expected, seg, ref = _both(tmp_path, path, chunk_rows=N)
    with seg, ref:
        assert dict(report.reasons) == {"event.bad_timestamp": 2}
        assert [r.row for r in report.rejections] == bad
        assert seg.store.query("SELECT row_number FROM quarantine ORDER BY 1") == [
            (i,) for i in bad
        ]
        assert (report.rows, report.inserted) == (5 * N, 5 * N - 2)
        assert _segments(seg) >= 1 and seg.store.query("SELECT count(*) FROM event_log")[0][0]
        assert report.to_dict() == expected.to_dict()
        assert _answers(seg) == _answers(ref)
