"""File and frame import: formats, column aliases, bad files, malformed rows, SDK export shapes."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from funnelscope.errors import InvalidEventError
from funnelscope.ingest.files import detect_format, ingest_file, ingest_frame
from funnelscope.workspace import Workspace
from tests.conftest import NOW

HEADER = "event_id,timestamp,event,user_id,anonymous_id,revenue,currency"
CSV_ROWS = [
    "e1,2024-05-06T09:00:00Z,Product Viewed,,a1,,",
    "e2,2024-05-06T09:05:00Z,Product Added,,a1,,",
    "e3,2024-05-06T09:10:00Z,Order Completed,u1,a1,30.50,EUR",
]
EXPECTED = [
    ("e1", datetime(2024, 5, 6, 9, 0, tzinfo=UTC), "product_viewed", None, "a1", None, None),
    ("e2", datetime(2024, 5, 6, 9, 5, tzinfo=UTC), "product_added", None, "a1", None, None),
    (
        "e3",
        datetime(2024, 5, 6, 9, 10, tzinfo=UTC),
        "order_completed",
        "u1",
        "a1",
        Decimal("30.5000"),
        "EUR",
    ),
]
EVENT_COLUMNS = 'event_id, "timestamp", event, user_id, anonymous_id, revenue, currency'


def _events(ws: Workspace) -> list[tuple[Any, ...]]:
    return ws.store.query(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY event_id")


def _quarantine(ws: Workspace) -> list[tuple[Any, ...]]:
    return ws.store.query(
        "SELECT row_number, reason_code, payload FROM quarantine ORDER BY row_number"
    )


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _canonical_dicts() -> list[dict[str, Any]]:
    out = []
    for line in CSV_ROWS:
        values = line.split(",")
        out.append({k: v for k, v in zip(HEADER.split(","), values, strict=True) if v})
    return out


# -- formats ---------------------------------------------------------------------------------


def test_csv_jsonl_and_parquet_give_the_same_events(tmp_path: Path) -> None:
    csv_file = _write(tmp_path / "e.csv", HEADER + "\n" + "\n".join(CSV_ROWS) + "\n")
    jsonl_file = _write(tmp_path / "e.jsonl", _jsonl(_canonical_dicts()))
    columns = {
        name: [line.split(",")[i] or None for line in CSV_ROWS]
        for i, name in enumerate(HEADER.split(","))
    }
    table = pa.table(
        {
            **columns,
            "timestamp": pa.array(
                [datetime.fromisoformat(t) for t in columns["timestamp"]],
                pa.timestamp("us", tz="UTC"),
            ),
            "revenue": pa.array([None if v is None else float(v) for v in columns["revenue"]]),
        }
    )
    pq.write_table(table, tmp_path / "e.parquet")
    import funnelscope

    for path in (csv_file, jsonl_file, tmp_path / "e.parquet"):
        with funnelscope.open(tmp_path / f"{path.suffix[1:]}.duckdb") as ws:
            report = ws.ingest(path, received_at=NOW)
            assert (report.rows, report.accepted, report.inserted) == (3, 3, 3), path
            assert _events(ws) == EXPECTED, path
            assert ws.store.query("SELECT DISTINCT source FROM events") == [(f"import:{path}",)]


def test_jsonl_nested_properties_and_items_are_kept(workspace: Workspace, tmp_path: Path) -> None:
    row = {
        "event_id": "e1",
        "timestamp": "2024-05-06T09:00:00Z",
        "event": "purchase",
        "user_id": "u1",
        "revenue": 42,
        "currency": "usd",
        "properties": {"coupon": "SPRING", "gift": True},
        "items": [{"product_id": "p1", "price": 21, "quantity": 2}],
    }
    path = _write(tmp_path / "e.ndjson", _jsonl([row]))
    report = ingest_file(workspace.store, path, received_at=NOW)
    assert report.inserted == 1
    props, items, revenue, currency = workspace.store.query(
        "SELECT properties, items, revenue, currency FROM events"
    )[0]
    assert json.loads(props) == {"coupon": "SPRING", "gift": True}
    assert [(i["product_id"], i["price"], i["quantity"]) for i in items] == [
        ("p1", Decimal("21.0000"), 2)
    ]
    assert (revenue, currency) == (Decimal("42.0000"), "USD")


def test_gzip_compressed_csv_is_read(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "e.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "\n" + "\n".join(CSV_ROWS) + "\n").encode()))
    assert detect_format(path) == "csv"
    assert ingest_file(workspace.store, path, received_at=NOW).inserted == 3
    assert _events(workspace) == EXPECTED


@pytest.mark.parametrize("end", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_a_csv_with_a_byte_order_mark_is_read(
    workspace: Workspace, tmp_path: Path, end: str
) -> None:
    # the BOM is not part of the first column's name (it used to be: event_id went missing)
    path = tmp_path / "e.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (end.join([HEADER, *CSV_ROWS]) + end).encode())
    assert ingest_file(workspace.store, path, received_at=NOW).inserted == 3
    assert _events(workspace) == EXPECTED


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param("x.tsv", b"a\tb\n", "csv", id="tsv-extension"),
        pytest.param("x.ndjson", b"{}\n", "jsonl", id="ndjson-extension"),
        pytest.param("x.pq", b"PAR1", "parquet", id="pq-extension"),
        pytest.param("export", b'{"event": "x"}\n', "jsonl", id="no-extension-json"),
        pytest.param("export", b"PAR1\x00\x00", "parquet", id="no-extension-parquet-magic"),
        pytest.param("export", b"a,b\n1,2\n", "csv", id="no-extension-text"),
    ],
)
def test_format_detection(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    assert detect_format(_write(tmp_path / name, content)) == expected


def test_frames_from_pandas_polars_and_arrow(tmp_path: Path) -> None:
    import funnelscope

    data = {
        "id": ["e1", "e2"],
        "ts": [datetime(2024, 5, 6, 9, 0, tzinfo=UTC), datetime(2024, 5, 6, 9, 5, tzinfo=UTC)],
        "name": ["view_item", "purchase"],
        "userId": ["u1", "u1"],
        "revenue": [None, 9.5],
    }
    frames = {"pandas": pd.DataFrame(data), "polars": pl.DataFrame(data), "arrow": pa.table(data)}
    for label, frame in frames.items():
        with funnelscope.open(tmp_path / f"{label}.duckdb") as ws:
            report = ws.ingest(frame, received_at=NOW)
            assert (report.rows, report.inserted) == (2, 2), label
            assert ws.store.query(
                'SELECT event_id, "timestamp", event, user_id, revenue FROM events ORDER BY 1'
            ) == [
                ("e1", datetime(2024, 5, 6, 9, 0, tzinfo=UTC), "product_viewed", "u1", None),
                (
                    "e2",
                    datetime(2024, 5, 6, 9, 5, tzinfo=UTC),
                    "order_completed",
                    "u1",
                    Decimal("9.5000"),
                ),
            ], label


def test_unsupported_frame_is_refused(workspace: Workspace) -> None:
    with pytest.raises(InvalidEventError) as err:
        ingest_frame(workspace.store, {"a": [1]}, source="x", received_at=NOW)
    assert err.value.code == "frame.unsupported"


def test_each_file_is_recorded_in_imports(workspace: Workspace, tmp_path: Path) -> None:
    path = _write(tmp_path / "e.csv", HEADER + "\n" + "\n".join(CSV_ROWS) + "\nbad\n")
    workspace.ingest([path, path], received_at=NOW)
    assert workspace.store.query(
        "SELECT source, kind, rows, accepted, rejected, inserted, started_at FROM imports "
        "ORDER BY inserted DESC"
    ) == [
        (f"import:{path}", "events", 4, 3, 1, 3, NOW),
        (f"import:{path}", "events", 4, 3, 1, 0, NOW),
    ]


def test_ad_spend_csv_is_recognised_and_loaded(workspace: Workspace, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "spend.csv",
        "date,channel,source,campaign,impressions,clicks,spend,currency\n"
        "2024-05-06,paid_search,google,spring,1000,40,52.10,USD\n"
        "2024-05-06,paid_social,facebook,spring,5000,30,20,USD\n",
    )
    report = workspace.ingest(path, received_at=NOW)
    assert (report.rows, report.accepted, report.inserted) == (2, 2, 2)
    assert workspace.store.query(
        "SELECT channel, clicks, spend FROM ad_spend ORDER BY channel"
    ) == [("paid_search", 40, Decimal("52.1000")), ("paid_social", 30, Decimal("20.0000"))]
    assert workspace.store.query("SELECT kind FROM imports") == [("ad_spend",)]
    again = workspace.ingest(path, kind="ad_spend", received_at=NOW)
    assert (again.inserted, workspace.store.query("SELECT count(*) FROM ad_spend")) == (0, [(2,)])


# -- column aliases --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("id,ts,name,userId", ("u", None), id="id-ts-name-camel-user"),
        pytest.param(
            "message_id,time,event_name,anonymousId", (None, "u"), id="segment-like-names"
        ),
        pytest.param("Event ID,Event Time,Event Type,Customer ID", ("u", None), id="spaced-titles"),
        pytest.param("uuid,timestamp,event,distinct_id", (None, "u"), id="distinct-id-alone-anon"),
    ],
)
def test_column_aliases(
    workspace: Workspace, tmp_path: Path, header: str, expected: tuple[str | None, ...]
) -> None:
    path = _write(tmp_path / "e.csv", f"{header}\ne1,2024-05-06T09:00:00Z,purchase,u\n")
    assert ingest_file(workspace.store, path, received_at=NOW).inserted == 1
    assert workspace.store.query(
        'SELECT event_id, "timestamp", event, user_id, anonymous_id FROM events'
    ) == [("e1", datetime(2024, 5, 6, 9, tzinfo=UTC), "order_completed", *expected)]


@pytest.mark.parametrize(
    ("extra", "user_id", "anonymous_id"),
    [
        pytest.param("user_id", "x", "d", id="with-user-id-distinct-is-anonymous"),
        pytest.param("anonymous_id", "d", "x", id="with-anonymous-id-distinct-is-user"),
    ],
)
def test_distinct_id_fills_the_open_identity(
    workspace: Workspace, tmp_path: Path, extra: str, user_id: str, anonymous_id: str
) -> None:
    path = _write(
        tmp_path / "e.csv",
        f"event_id,timestamp,event,distinct_id,{extra}\ne1,2024-05-06T09:00:00Z,x,d,x\n",
    )
    ingest_file(workspace.store, path, received_at=NOW)
    assert workspace.store.query("SELECT user_id, anonymous_id FROM events") == [
        (user_id, anonymous_id)
    ]


def test_jsonl_aliases_are_read_per_line(workspace: Workspace, tmp_path: Path) -> None:
    lines = [
        {"uuid": "e1", "ts": "2024-05-06T09:00:00Z", "name": "view_item", "userId": "u1"},
        {"uuid": "e2", "ts": 1714986300, "name": "purchase", "userId": "u1", "value": 3},
    ]
    path = _write(tmp_path / "e.jsonl", _jsonl(lines))
    assert ingest_file(workspace.store, path, received_at=NOW).inserted == 2
    assert workspace.store.query(
        'SELECT event_id, "timestamp", event, user_id FROM events ORDER BY 1'
    ) == [
        ("e1", datetime(2024, 5, 6, 9, 0, tzinfo=UTC), "product_viewed", "u1"),
        ("e2", datetime(2024, 5, 6, 9, 5, tzinfo=UTC), "order_completed", "u1"),
    ]


# -- files that cannot be read ---------------------------------------------------------------

BAD_FILES = [
    pytest.param("e.csv", b"", "file.unreadable", "empty", id="empty-csv"),
    pytest.param("e.jsonl", b"", "file.unreadable", "empty", id="empty-jsonl"),
    pytest.param("e.parquet", b"", "file.unreadable", "empty", id="empty-parquet"),
    pytest.param(
        "e.parquet",
        b"event_id,timestamp\n1,2\n",
        "file.unreadable",
        "Parquet",
        id="csv-named-parquet",
    ),
    pytest.param(
        "e.jsonl",
        b"this is not json\nneither is this\n",
        "file.unreadable",
        "JSON object",
        id="jsonl-without-json",
    ),
    pytest.param("e.jsonl", b"\n\n\n", "file.unreadable", "JSON object", id="jsonl-only-blank"),
    pytest.param(
        "e.csv",
        b"user_id,event\nu1,x\n",
        "file.missing_columns",
        "event_id, timestamp",
        id="csv-missing-id-and-time",
    ),
    pytest.param(
        "e.csv",
        b"event_id,timestamp,event\n1,2024-05-06,x\n",
        "file.missing_columns",
        "user_id or anonymous_id",
        id="csv-missing-identity",
    ),
    pytest.param(
        "e.jsonl",
        b'{"event_id": "1", "user_id": "u"}\n',
        "file.missing_columns",
        "timestamp, event",
        id="jsonl-missing-columns",
    ),
    pytest.param(
        "e.csv",
        b"event_id,ts,time,event,user_id\n",
        "file.ambiguous_columns",
        "could each be timestamp",
        id="csv-two-time-columns",
    ),
    pytest.param(
        "e.csv",
        b"event_id,EventId,timestamp,event,user_id\n",
        "file.ambiguous_columns",
        "mean the same column",
        id="csv-same-name-twice",
    ),
]


@pytest.mark.parametrize(("name", "content", "code", "says"), BAD_FILES)
def test_unreadable_file_raises_one_clear_error(
    workspace: Workspace, tmp_path: Path, name: str, content: bytes, code: str, says: str
) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(InvalidEventError) as err:
        ingest_file(workspace.store, path, received_at=NOW)
    assert err.value.code == code
    assert str(path) in str(err.value) and says in str(err.value)
    assert workspace.store.query(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM quarantine), "
        "(SELECT count(*) FROM imports)"
    ) == [(0, 0, 0)]


def test_missing_file_is_unreadable(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InvalidEventError) as err:
        ingest_file(workspace.store, tmp_path / "nope.csv", received_at=NOW)
    assert (err.value.code, "no such file" in str(err.value)) == ("file.unreadable", True)


# -- malformed rows --------------------------------------------------------------------------

GOOD_CSV = "e{i},2024-05-06T09:0{i}:00Z,Product Viewed,u{i}"
GOOD_JSON = (
    '{{"event_id": "e{i}", "timestamp": "2024-05-06T09:0{i}:00Z", '
    '"event": "Product Viewed", "user_id": "u{i}"}}'
)
MALFORMED = [
    pytest.param(
        "csv", b"e9,2024-05-06T09:00:00Z,Product Viewed", "row.bad_shape", id="csv-too-few-fields"
    ),
    pytest.param(
        "csv",
        b"e9,2024-05-06T09:00:00Z,Product Viewed,u9,extra",
        "row.bad_shape",
        id="csv-too-many-fields",
    ),
    pytest.param(
        "csv",
        b"e9,2024-05-06T09:00:00Z,Caf\xe9 Viewed,u9",
        "row.invalid_utf8",
        id="csv-latin1-byte",
    ),
    pytest.param(
        "csv",
        b"e9,2024-05-06T09:00:00Z,\xff\xfe,u9,x",
        "row.bad_shape",
        id="csv-bad-shape-and-bad-bytes",
    ),
    pytest.param(
        "csv", b",2024-05-06T09:00:00Z,Product Viewed,u9", "event.missing_id", id="csv-missing-id"
    ),
    pytest.param(
        "csv", b"e9,last tuesday,Product Viewed,u9", "event.bad_timestamp", id="csv-bad-timestamp"
    ),
    pytest.param(
        "jsonl", b'{"event_id": "e9", "timestamp": ', "row.invalid_json", id="jsonl-truncated-json"
    ),
    pytest.param("jsonl", b"[1, 2, 3]", "row.invalid_json", id="jsonl-array-not-object"),
    pytest.param(
        "jsonl",
        b'{"event_id": "e9", "timestamp": "2024-05-06T09:00:00Z", '
        b'"event": "Caf\xe9", "user_id": "u9"}',
        "row.invalid_utf8",
        id="jsonl-latin1-byte",
    ),
    pytest.param(
        "jsonl",
        b'{"event_id": "e9", "timestamp": "2024-05-06T09:00:00Z", '
        b'"event": "x", "user_id": "u9", "revenue": "ten"}',
        "event.bad_revenue",
        id="jsonl-revenue-wrong-type",
    ),
    pytest.param(
        "jsonl",
        b'{"event_id": "e9", "timestamp": "2024-05-06T09:00:00Z", '
        b'"event": "x", "user_id": "u9", "revenue": 5, "currency": "ABC"}',
        "event.unknown_currency",
        id="jsonl-unknown-currency",
    ),
]


@pytest.mark.parametrize(("fmt", "bad", "code"), MALFORMED)
def test_malformed_row_is_quarantined_at_its_row(
    workspace: Workspace, tmp_path: Path, fmt: str, bad: bytes, code: str
) -> None:
    good = GOOD_CSV if fmt == "csv" else GOOD_JSON
    lines = [good.format(i=i).encode() for i in range(4)]
    lines.insert(2, bad)  # row 2 of the data (0-based)
    head = [b"event_id,timestamp,event,user_id"] if fmt == "csv" else []
    path = _write(tmp_path / f"e.{fmt}", b"\n".join([*head, *lines]) + b"\n")

    report = ingest_file(workspace.store, path, received_at=NOW)

    assert (report.rows, report.accepted, report.rejected) == (5, 4, 1)
    assert dict(report.reasons) == {code: 1}
    ((row, reason, payload),) = _quarantine(workspace)
    assert (row, reason) == (2, code)
    if code.startswith("row."):
        assert bytes(payload) == bad  # the raw bytes, as they were in the file
    assert workspace.store.query("SELECT count(*) FROM events") == [(4,)]


def _text_with_bad_bytes(values: list[bytes | None]) -> pa.Array:
    """A string column holding the bytes as they are (Arrow does not check UTF-8 here)."""
    raw = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(values), raw.buffers(), raw.null_count)


@pytest.mark.parametrize("rows", [5, 12_000], ids=["small file", "segment-sized file"])
def test_parquet_text_that_is_not_utf8_is_quarantined_and_the_store_stays_usable(
    workspace: Workspace, tmp_path: Path, rows: int
) -> None:
    # pyarrow reads such bytes into a string column without a check; DuckDB's check of them is
    # a fatal error that closes the store: the row must be quarantined before DuckDB sees it
    titles: list[bytes | None] = [b"Caf\xe9 menu" if i == 2 else b"Home" for i in range(rows)]
    table = pa.table(
        {
            "event_id": [f"e{i}" for i in range(rows)],
            "timestamp": pa.array([NOW] * rows, pa.timestamp("us", tz="UTC")),
            "event": ["Product Viewed"] * rows,
            "anonymous_id": [f"a{i % 7}" for i in range(rows)],
            "page_title": _text_with_bad_bytes(titles),
        }
    )
    path = tmp_path / "e.parquet"
    pq.write_table(table, path)

    report = ingest_file(workspace.store, path, received_at=NOW)

    assert (report.rows, report.accepted, report.rejected) == (rows, rows - 1, 1)
    assert dict(report.reasons) == {"row.invalid_utf8": 1}
    ((row, reason, payload),) = _quarantine(workspace)
    assert (row, reason) == (2, "row.invalid_utf8")
    assert b'"page_title": "Caf\xe9 menu"' in bytes(payload)  # the bytes as they were
    assert workspace.store.query("SELECT count(*), count(DISTINCT page_title) FROM events") == [
        (rows - 1, 1)
    ]


def test_a_frame_with_text_that_is_not_utf8_is_quarantined(workspace: Workspace) -> None:
    frame = pa.table(
        {
            "event_id": ["e0", "e1", "e2"],
            "timestamp": pa.array([NOW] * 3, pa.timestamp("us", tz="UTC")),
            "event": _text_with_bad_bytes([b"Product Viewed", b"\xff\xfe", b"Order Completed"]),
            "user_id": ["u0", "u1", "u2"],
        }
    )
    report = ingest_frame(workspace.store, frame, source="frame", received_at=NOW)
    assert (report.rows, report.accepted, report.rejected) == (3, 2, 1)
    assert [(r.row, r.code) for r in report.rejections] == [(1, "row.invalid_utf8")]
    assert workspace.store.query("SELECT event FROM events ORDER BY event_id") == [
        ("product_viewed",),
        ("order_completed",),
    ]


def test_blank_lines_are_not_rows_but_keep_jsonl_line_numbers(
    workspace: Workspace, tmp_path: Path
) -> None:
    text = GOOD_JSON.format(i=0) + "\n\n" + GOOD_JSON.format(i=1) + "\r\n\r\n{oops\n"
    report = ingest_file(workspace.store, _write(tmp_path / "e.jsonl", text), received_at=NOW)
    assert (report.rows, report.accepted, report.rejected) == (3, 2, 1)
    assert [(r, c) for r, c, _ in _quarantine(workspace)] == [(4, "row.invalid_json")]


def test_row_numbers_hold_across_chunks_and_the_slow_csv_path(
    workspace: Workspace, tmp_path: Path
) -> None:
    lines = [GOOD_CSV.format(i=i % 10).replace(f"e{i % 10},", f"e{i},") for i in range(12)]
    lines[3] = "only,three,fields"
    lines[9] = "e9,2024-05-06T09:00:00Z,\xff,u9,too-many".encode("latin-1").decode("latin-1")
    raw = (
        b"event_id,timestamp,event,user_id\n"
        + b"\n".join(line.encode("latin-1") for line in lines)
        + b"\n"
    )
    path = _write(tmp_path / "e.csv", raw)
    report = ingest_file(workspace.store, path, received_at=NOW, chunk_rows=4)
    assert (report.rows, report.accepted, report.rejected, report.inserted) == (12, 10, 2, 10)
    assert [(r, c) for r, c, _ in _quarantine(workspace)] == [
        (3, "row.bad_shape"),
        (9, "row.bad_shape"),
    ]
    assert workspace.store.query("SELECT count(*), count(DISTINCT event_id) FROM events") == [
        (10, 10)
    ]


def test_quoted_fields_with_commas_and_newlines(workspace: Workspace, tmp_path: Path) -> None:
    text = (
        "event_id,timestamp,event,user_id,page_title,properties\n"
        'e1,2024-05-06T09:00:00Z,Product Viewed,u1,"Summer\nSale","{""note"": ""a, b""}"\n'
        "e2,2024-05-06T09:01:00Z,Product Viewed,u1,,\n"
        "e3,2024-05-06T09:02:00Z,Product Viewed\n"
    )
    report = ingest_file(workspace.store, _write(tmp_path / "e.csv", text), received_at=NOW)
    assert (report.rows, report.inserted, report.rejected) == (3, 2, 1)
    # records, not lines: the bad row is the third record although it is on the fourth line
    assert [(r, c) for r, c, _ in _quarantine(workspace)] == [(2, "row.bad_shape")]
    title, props = workspace.store.query(
        "SELECT page_title, properties FROM events WHERE event_id = 'e1'"
    )[0]
    assert (title, json.loads(props)) == ("Summer\nSale", {"note": "a, b"})


# -- SDK export shapes -----------------------------------------------------------------------


def test_segment_export_jsonl(workspace: Workspace, tmp_path: Path) -> None:
    lines = [
        {
            "type": "page",
            "messageId": "m1",
            "anonymousId": "anon-1",
            "name": "Home",
            "timestamp": "2024-05-06T09:00:00.000Z",
            "sentAt": "2024-05-06T09:00:01.000Z",
            "receivedAt": "2024-05-06T09:00:02.000Z",
            "context": {
                "page": {
                    "path": "/",
                    "url": "https://shop.example/?utm_source=news&utm_medium=email",
                }
            },
        },
        {
            "type": "identify",
            "messageId": "m2",
            "anonymousId": "anon-1",
            "userId": "user-1",
            "timestamp": "2024-05-06T09:03:00.000Z",
            "traits": {"email": "a@example.com"},
        },
        {
            "type": "track",
            "messageId": "m3",
            "userId": "user-1",
            "event": "Order Completed",
            "timestamp": "2024-05-06T09:05:00.000Z",
            "properties": {
                "order_id": "o1",
                "revenue": 25,
                "currency": "EUR",
                "products": [{"product_id": "p1", "price": 25, "quantity": 1}],
            },
        },
        {
            "type": "bogus",
            "messageId": "m4",
            "userId": "user-1",
            "timestamp": "2024-05-06T09:06:00.000Z",
        },
    ]
    path = _write(tmp_path / "segment.jsonl", _jsonl(lines))
    report = ingest_file(workspace.store, path, received_at=NOW)
    assert (report.rows, report.accepted, report.rejected) == (4, 3, 1)
    assert [(r, c) for r, c, _ in _quarantine(workspace)] == [(3, "event.unknown_type")]
    assert workspace.store.query(
        'SELECT event_id, "timestamp", event, page_path, channel, order_id, revenue '
        "FROM events ORDER BY 1"
    ) == [
        ("m1", datetime(2024, 5, 6, 9, 0, tzinfo=UTC), "page_viewed", "/", "email", None, None),
        ("m2", datetime(2024, 5, 6, 9, 3, tzinfo=UTC), "identify", None, "direct", None, None),
        (
            "m3",
            datetime(2024, 5, 6, 9, 5, tzinfo=UTC),
            "order_completed",
            None,
            "direct",
            "o1",
            Decimal("25.0000"),
        ),
    ]
    # the anonymous page view and the order are one stitched person
    assert workspace.engine.sql("SELECT count(DISTINCT person_id) AS n FROM events").column(
        "n"
    ).to_pylist() == [1]


def test_posthog_export_jsonl(workspace: Workspace, tmp_path: Path) -> None:
    lines = [
        {
            "uuid": "0190-1",
            "event": "$pageview",
            "distinct_id": "dev-1",
            "timestamp": "2024-05-06T09:00:00Z",
            "properties": {
                "$device_id": "dev-1",
                "$current_url": "https://shop.example/p/1",
                "$pathname": "/p/1",
            },
        },
        {
            "uuid": "0190-2",
            "event": "$identify",
            "distinct_id": "user-1",
            "timestamp": "2024-05-06T09:02:00Z",
            "properties": json.dumps({"$anon_distinct_id": "dev-1"}),
        },
        {
            "uuid": "0190-3",
            "event": "purchase",
            "distinct_id": "user-1",
            "timestamp": "2024-05-06T09:04:00Z",
            "properties": {"revenue": 12, "currency": "GBP"},
        },
        {"uuid": "0190-4", "event": "$pageview", "distinct_id": "user-1", "properties": {}},
    ]
    path = _write(tmp_path / "posthog.jsonl", _jsonl(lines))
    report = ingest_file(workspace.store, path, received_at=NOW)
    # an exported event without a timestamp is a bad row, not an event at import time
    assert (report.rows, report.accepted, dict(report.reasons)) == (
        4,
        3,
        {"event.bad_timestamp": 1},
    )
    assert workspace.store.query(
        'SELECT event_id, "timestamp", event, page_path, revenue, currency FROM events ORDER BY 1'
    ) == [
        ("0190-1", datetime(2024, 5, 6, 9, 0, tzinfo=UTC), "page_viewed", "/p/1", None, None),
        ("0190-2", datetime(2024, 5, 6, 9, 2, tzinfo=UTC), "identify", None, None, None),
        (
            "0190-3",
            datetime(2024, 5, 6, 9, 4, tzinfo=UTC),
            "order_completed",
            None,
            Decimal("12.0000"),
            "GBP",
        ),
    ]
    assert workspace.engine.sql("SELECT count(DISTINCT person_id) AS n FROM events").column(
        "n"
    ).to_pylist() == [1]


def test_read_ahead_yields_in_order_then_raises_the_producers_error() -> None:
    from funnelscope.ingest.csv_ranges import read_ahead as _read_ahead

    def produce() -> Any:
        yield from range(5)
        raise ValueError("bad block")

    got: list[int] = []
    with pytest.raises(ValueError, match="bad block"):
        for item in _read_ahead(produce(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    # a consumer that stops early stops the producer too (the generator's close joins it)
    ahead = _read_ahead(iter(range(1_000_000)), depth=2)
    assert next(ahead) == 0
    ahead.close()
