"""JSON Lines files -> staging rows: canonical lines in SQL, Segment/PostHog exports mapped.

The file is cut into lines with numpy, blocks of 64 MiB at a time; DuckDB's JSON functions parse
each line once and read the staging columns by their names or aliases (ingest/columns.py). An
export of Segment or PostHog messages (told apart by the keys of the first lines) goes through
the collector's mappers (:mod:`funnelscope.ingest.records`) instead. Row numbers are 0-based
lines, blank lines counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.errors import InvalidInputError
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.columns import COLUMN_ALIASES, column_plan, snake, unreadable
from funnelscope.ingest.csv_read import Progress, Sink, as_text
from funnelscope.ingest.pipeline import Rejection

__all__ = ["jsonl_events"]

_JSONL_BLOCK_BYTES: Final = 64 << 20
_SNIFF_LINES: Final = 1000


def _jsonl_blocks(path: Path) -> Iterator[tuple[pa.Array, int, int]]:
    """(lines as a binary array, each with its newline; number of the first line; bytes read).

    Lines are cut with numpy over the raw block; the array points into the block, no copy.
    """
    first = read = 0
    carry = b""
    with pa.input_stream(str(path), compression="detect") as stream:
        while True:
            block = stream.read(_JSONL_BLOCK_BYTES)
            read += len(block)
            data = carry + block if carry else block
            if not data:
                return
            cut = data.rfind(b"\n") + 1 if block else len(data)
            if cut == 0:  # one line longer than a block: read on
                carry = data
                continue
            carry = data[cut:]
            buf = np.frombuffer(data, np.uint8, count=cut)
            ends = np.flatnonzero(buf == 10) + 1
            if not len(ends) or ends[-1] != cut:
                ends = np.append(ends, cut)
            offsets = np.concatenate([[0], ends]).astype(np.int32)
            lines = pa.Array.from_buffers(
                pa.binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
            )
            yield lines, first, read
            first += len(ends)
            if not block:
                return


def _jsonl_select(keys: Sequence[str]) -> str:
    """SQL from ``lines(_row, line, _ok)`` to staging columns (NULL where not ``_ok``).

    Each staging column reads its own key and the aliases among ``keys`` (the keys seen at the
    top of the file, matched after snake_casing), per line in that order; ``distinct_id`` fills
    whichever of user_id / anonymous_id the line leaves open. One ``json_transform`` parses
    each line once.
    """
    by_snake: dict[str, list[str]] = {}
    for key in keys:
        by_snake.setdefault(snake(key), []).append(key)
    fields: list[str] = []  # JSON keys to read; DuckDB struct names are case-insensitive

    def read(key: str) -> str:
        if key.lower() not in (f.lower() for f in fields):
            fields.append(key)
        return next(f"v.{_quote(f)}" for f in fields if f.lower() == key.lower())

    def pick(target: str) -> str:
        spelled = [target, *by_snake.get(target, ())]
        for alias in COLUMN_ALIASES.get(target, ()):
            spelled += by_snake.get(alias, [])
        parts = list(dict.fromkeys(read(k) for k in spelled))
        return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"

    cols = {t: pick(t) for t in STAGING_COLUMNS}
    if "distinct_id" in by_snake:
        user, anon, distinct = cols["user_id"], cols["anonymous_id"], pick("distinct_id")
        cols["user_id"] = (
            f"CASE WHEN {user} IS NULL AND {anon} IS NOT NULL THEN {distinct} ELSE {user} END"
        )
        cols["anonymous_id"] = f"coalesce({anon}, {distinct})"
    shape = "{" + ", ".join(f'"{f}": "VARCHAR"' for f in fields) + "}"
    select = ", ".join(f"{expr} AS {_quote(name)}" for name, expr in cols.items())
    return (
        f"SELECT {select}, _row, _ok FROM (SELECT _row, _ok, CASE WHEN _ok THEN "
        f"json_transform(line, '{shape.replace(chr(39), chr(39) * 2)}') END AS v FROM lines)"
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _register_lines(con: duckdb.DuckDBPyConnection, lines: pa.Array, first: int) -> list[Rejection]:
    """Register the view ``lines(_row, line, _ok)``: UTF-8 lines, blank ones left out, ``_ok``
    when the line is a JSON object. Returns the lines that are not UTF-8."""
    text, bad = as_text(lines)
    rows = np.arange(first, first + len(lines), dtype=np.int64)
    # blank: nothing but the line break (numpy on the offsets; SQL trim is slow on every line)
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[: len(lines) + 1]
    data = np.frombuffer(lines.buffers()[2], np.uint8)
    size = np.diff(offsets)
    head = data[np.minimum(offsets[:-1], max(len(data) - 1, 0))] if len(data) else size
    blank = (size == 0) | ((size == 1) & (head == 10)) | ((size == 2) & (head == 13))
    con.register("raw_lines", pa.table({"_row": rows, "line": text, "_blank": blank}))
    con.execute(
        "CREATE OR REPLACE TEMP VIEW lines AS SELECT _row, line, "
        "json_valid(line) AND ltrim(line, ' \t') LIKE '{%' AS _ok FROM raw_lines "
        "WHERE NOT _blank AND line IS NOT NULL"
    )
    return [
        Rejection(
            int(rows[i]),
            "row.invalid_utf8",
            "the line has bytes that are not UTF-8: save the file as UTF-8",
            bytes(lines[i].as_py()).rstrip(b"\r\n"),
        )
        for i in bad.tolist()
    ]


def _invalid_lines(con: duckdb.DuckDBPyConnection) -> list[Rejection]:
    out = []
    for row, line, valid in con.execute(
        "SELECT _row, line, json_valid(line) FROM lines WHERE NOT _ok ORDER BY _row"
    ).fetchall():
        message = (
            "the line is not valid JSON"
            if not valid
            else "the line is JSON but not an object {...}"
        )
        out.append(
            Rejection(
                int(row), "row.invalid_json", message, str(line).rstrip("\r\n").encode("utf-8")
            )
        )
    return out


def _jsonl_shape(con: duckdb.DuckDBPyConnection) -> tuple[str, list[str]]:
    """``canonical``, ``segment`` or ``posthog`` from the first lines, and the keys seen."""
    keys = [
        str(r[0])
        for r in con.execute(
            f"SELECT DISTINCT unnest(json_keys(line)) FROM (SELECT line FROM lines WHERE _ok "
            f"LIMIT {_SNIFF_LINES})"
        ).fetchall()
    ]
    found = set(keys)
    if "event_id" not in found:
        if "messageId" in found or ("type" in found and found & {"userId", "anonymousId"}):
            return "segment", keys
        if "distinct_id" in found and "event" in found and found & {"uuid", "properties"}:
            return "posthog", keys
    return "canonical", keys


def _sdk_rows(
    con: duckdb.DuckDBPyConnection, shape: str, received_at: datetime
) -> tuple[pa.Table | None, list[Rejection]]:
    """Segment/PostHog lines through the collector's mappers, one message at a time."""
    import json

    from funnelscope.ingest.records import from_posthog, from_segment

    rows: list[dict[str, str | None]] = []
    numbers: list[int] = []
    rejections: list[Rejection] = []
    lines = con.execute("SELECT _row, line FROM lines WHERE _ok ORDER BY _row").fetchall()
    for number, line in lines:
        message = json.loads(line)
        try:
            if shape == "segment":
                # an export's timestamp is final: no clock-skew correction against import time
                row = from_segment(message)
            else:
                if isinstance(message.get("properties"), str):
                    message["properties"] = json.loads(message["properties"])
                row = from_posthog(message, now=received_at)
                if message.get("timestamp") is None:
                    row["timestamp"] = None  # a file row without a time is not "now"
        except (InvalidInputError, ValueError) as exc:
            code = exc.code if isinstance(exc, InvalidInputError) else "row.invalid_json"
            rejections.append(Rejection(int(number), code, str(exc), line.encode("utf-8")))
            continue
        rows.append(row)
        numbers.append(int(number))
    if not rows:
        return None, rejections
    table = pa.Table.from_pylist(
        rows, schema=pa.schema([(c, pa.string()) for c in STAGING_COLUMNS])
    )
    return table.append_column("_row", pa.array(numbers, pa.int64())), rejections


def jsonl_events(path: Path, sink: Sink, progress: Progress | None, received_at: datetime) -> None:
    """Every line of the JSON Lines file at ``path`` into ``sink``, then flush."""
    total = path.stat().st_size
    con = duckdb.connect()
    shape = select = ""
    try:
        for lines, first, read in _jsonl_blocks(path):
            rejections = _register_lines(con, lines, first)
            if not shape:
                shape, keys = _jsonl_shape(con)
                if not keys:
                    raise unreadable(path, "no line is a JSON object: not a JSON Lines file")
                if shape == "canonical":
                    column_plan(keys, str(path))
                    select = _jsonl_select(keys)
            if shape == "canonical":
                staged = con.sql(select).to_arrow_table()
                ok = staged.column("_ok")
                if not pc.all(ok).as_py():
                    rejections += _invalid_lines(con)
                    staged = staged.filter(ok)
                staged = staged.drop_columns(["_ok"])
            else:
                staged, more = _sdk_rows(con, shape, received_at)
                rejections += more + _invalid_lines(con)
            con.unregister("raw_lines")
            sink.add(staged, rejections)
            if progress is not None:
                progress(read, total)
    finally:
        con.close()
    sink.flush()
