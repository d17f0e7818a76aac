"""Files and data frames -> the ingest pipeline: CSV, JSON Lines, Parquet and in-memory frames.

Every event row ends in :func:`funnelscope.ingest.pipeline.append_events` (chunks of
:data:`CHUNK_ROWS`), so file imports validate, quarantine, deduplicate and stitch exactly as the
collector does; a clean canonical Parquet file (:mod:`funnelscope.ingest.bulk`) or clean chunk
of CSV (:mod:`funnelscope.ingest.csv_segment`) is kept as a segment instead, with the same
results. Facts (ad spend, email campaigns, ...) go to
:func:`funnelscope.ingest.facts.append_facts`. docs/import.md describes the semantics.

Reading is columnar on the canonical path: Parquet record batches, pyarrow's streaming CSV
reader (parsing ahead on a thread, or on two over ranges of the file: ingest/csv_ranges.py) with
every column read as bytes (then checked for UTF-8 in bulk), and JSON Lines split on
newlines with numpy and parsed by DuckDB's JSON functions. Python touches single rows only to
describe a rejected row, for Segment/PostHog-shaped JSON Lines (mapped by
:mod:`funnelscope.ingest.records`), and for a CSV file pyarrow cannot parse in bulk (a row of the
wrong width that also holds bad bytes), which is re-read with the ``csv`` module.

Row numbers (``_row``, the quarantine's ``row_number``) are 0-based: the data record of a CSV
file (header excluded, blank lines not counted), the line of a JSON Lines file (blank lines
counted), the row of a Parquet file or frame.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from funnelscope.errors import InvalidEventError, InvalidInputError, Problem
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.csv_ranges import RANGE_BYTES, parallel_blocks, read_ahead
from funnelscope.ingest.csv_segment import ChunkScan, block_suspects, import_csv_segment
from funnelscope.ingest.pipeline import IngestReport, Rejection, append_events
from funnelscope.ingest.utf8 import split_invalid_utf8
from funnelscope.store.segments import segments_folder
from funnelscope.store.store import Store

__all__ = [
    "CHUNK_ROWS",
    "COLUMN_ALIASES",
    "FORMATS",
    "KINDS",
    "REQUIRED_COLUMNS",
    "Progress",
    "detect_format",
    "ingest_file",
    "ingest_frame",
]

#: Rows per pipeline transaction: large enough to amortise the per-batch SQL, small enough
#: that a 10M-row file does not sit in memory at once.
CHUNK_ROWS: Final = 1_000_000
FORMATS: Final = ("csv", "jsonl", "parquet")
KINDS: Final = (
    "events",
    "ad_spend",
    "email_campaigns",
    "survey_responses",
    "products",
    "currency_rates",
)
REQUIRED_COLUMNS: Final = ("event_id", "timestamp", "event")
#: Other accepted names of canonical columns, after names are snake_cased (``userId`` ->
#: ``user_id``). A canonical name present in the file always wins over its aliases.
COLUMN_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "event_id": ("id", "message_id", "uuid", "eid", "event_uuid", "insert_id"),
    "timestamp": ("ts", "time", "event_time", "event_timestamp", "occurred_at", "datetime"),
    "event": ("event_name", "name", "event_type"),
    "user_id": ("customer_id", "userid"),
    "anonymous_id": ("anon_id", "anonymousid", "visitor_id"),
    "previous_id": ("previousid",),
    "session_id": ("session",),
    "page_url": ("url",),
    "page_path": ("path",),
    "page_title": ("title",),
    "referrer": ("referer", "page_referrer"),
    "currency": ("currency_code",),
    "device_type": ("device",),
    "os": ("operating_system",),
    "country": ("country_code",),
}
#: Read CSV in blocks of this many bytes (a batch is about this big). Small blocks stay in the
#: CPU caches: 2 MiB parses a wide file about twice as fast as 16 MiB.
_BLOCK_BYTES: Final = 2 << 20
#: CSV blocks parsed ahead while a full chunk is stored (128 MiB).
_READ_AHEAD_BLOCKS: Final = 64
#: An uncompressed CSV file of two ranges or more is cut into ranges of about this many bytes
#: at record boundaries and parsed by this many threads (ingest/csv_ranges.py).
_RANGE_BYTES: Final = RANGE_BYTES
_PARSE_THREADS: Final = 2
_JSONL_BLOCK_BYTES: Final = 64 << 20
_SNIFF_LINES: Final = 1000
_EXTENSIONS: Final = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSIONS: Final = (".gz", ".bz2", ".zst", ".lz4")
_FACT_COLUMNS: Final[dict[str, frozenset[str]]] = {
    "ad_spend": frozenset({"date", "channel", "spend"}),
    "currency_rates": frozenset({"date", "currency", "rate"}),
    "email_campaigns": frozenset({"campaign_id", "sent_at"}),
    "survey_responses": frozenset({"response_id", "score"}),
    "products": frozenset({"product_id", "price"}),
}

#: ``progress(done, total)``: bytes read of a CSV/JSONL file, rows of a Parquet file or frame.
Progress = Callable[[int, int], None]


def _unreadable(path: object, message: str) -> InvalidEventError:
    return InvalidEventError([Problem("file.unreadable", str(path), message)])


# -- column names ----------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s.\-/]+")


def _snake(name: str) -> str:
    """``userId`` / ``User ID`` / ``user-id`` -> ``user_id`` (a BOM and ``$`` are dropped)."""
    text = _CAMEL.sub("_", name.strip().lstrip("\ufeff$"))
    return _SEPARATORS.sub("_", text).lower()


def _column_plan(names: Sequence[str], where: str) -> dict[str, str]:
    """Map file columns to staging columns: ``{staging name: file name}``.

    Raises ``file.missing_columns`` (no event_id/timestamp/event, or no identity column) and
    ``file.ambiguous_columns`` (two columns that would fill the same canonical column).
    """
    by_snake: dict[str, str] = {}
    problems: list[Problem] = []
    for name in names:
        key = _snake(name)
        if key in by_snake:
            problems.append(
                Problem(
                    "file.ambiguous_columns",
                    where,
                    f"columns {by_snake[key]!r} and {name!r} mean the same column; keep one",
                )
            )
        by_snake.setdefault(key, name)
    plan: dict[str, str] = {}
    for target in STAGING_COLUMNS:
        if target in by_snake:
            plan[target] = by_snake[target]
            continue
        hits = [a for a in COLUMN_ALIASES.get(target, ()) if a in by_snake]
        if len(hits) > 1:
            problems.append(
                Problem(
                    "file.ambiguous_columns",
                    where,
                    f"columns {', '.join(by_snake[h] for h in hits)} could each be {target}; "
                    f"rename the one to use to {target!r}",
                )
            )
        elif hits:
            plan[target] = by_snake[hits[0]]
    if "distinct_id" in by_snake:
        # PostHog's distinct_id is whichever id the other columns leave open; with neither it
        # is taken as anonymous, so a later identify can still link it to a user.
        if "anonymous_id" not in plan:
            plan["anonymous_id"] = by_snake["distinct_id"]
        elif "user_id" not in plan:
            plan["user_id"] = by_snake["distinct_id"]
    missing = [c for c in REQUIRED_COLUMNS if c not in plan]
    if "user_id" not in plan and "anonymous_id" not in plan:
        missing.append("user_id or anonymous_id")
    if missing:
        found = ", ".join(names) if names else "none"
        problems.append(
            Problem(
                "file.missing_columns",
                where,
                f"missing required column(s) {', '.join(missing)} (columns found: {found}); "
                "see docs/import.md for accepted names",
            )
        )
    if problems:
        raise InvalidEventError(problems)
    return plan


def _detect_kind(names: Sequence[str]) -> str:
    keys = {_snake(n) for n in names}
    for kind, needed in _FACT_COLUMNS.items():
        if needed <= keys and not {"event_id", "event"} <= keys:
            return kind
    return "events"


# -- formats ---------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """``csv``, ``jsonl`` or ``parquet``: by extension, else by the first bytes.

    Examples
    --------
    >>> detect_format("orders.csv.gz"), detect_format("events.ndjson")
    ('csv', 'jsonl')
    """
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    try:
        with pa.input_stream(str(p), compression="detect") as stream:
            head = stream.read(4096)
    except (OSError, pa.ArrowException):
        return "csv"
    if head.startswith(b"PAR1"):
        return "parquet"
    return "jsonl" if head.lstrip().startswith(b"{") else "csv"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise _unreadable(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise _unreadable(path, "the file is empty")


# -- UTF-8 -----------------------------------------------------------------------------------


def _as_text(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A binary column as UTF-8 text, and the positions of values that are not UTF-8.

    Bytes under 0x80 are ASCII, valid UTF-8 as they are: a column whose data buffer has no
    other byte is only relabelled (a numpy pass over the bytes costs a tenth of the cast's
    check). Otherwise the cast validates the whole column at C speed; only when it fails are
    the few values with non-ASCII bytes decoded one by one to find the culprits.
    """
    data = column.buffers()[2]
    if data is None or data.size == 0 or np.frombuffer(data, np.uint8).max() < 0x80:
        return column.view(pa.string()), np.empty(0, np.int64)
    try:
        return column.cast(pa.string()), np.empty(0, np.int64)
    except pa.ArrowInvalid:
        pass
    offsets = np.frombuffer(column.buffers()[1], np.int32)[
        column.offset : column.offset + len(column) + 1
    ]
    data = np.frombuffer(column.buffers()[2], np.uint8)
    high = np.flatnonzero(data[offsets[0] : offsets[-1]] >= 0x80) + offsets[0]
    suspects = np.unique(np.searchsorted(offsets, high, side="right") - 1)
    values = column.to_pylist()
    bad = []
    for i in suspects.tolist():
        try:
            values[i].decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    positions = np.asarray(bad, np.int64)
    mask = np.zeros(len(column), bool)
    mask[positions] = True
    cleaned = pc.if_else(pa.array(mask), pa.scalar(None, pa.binary()), column)
    return cleaned.cast(pa.string()), positions


def _csv_payload(values: Sequence[bytes | None]) -> bytes:
    """A CSV row's fields joined back into one line (quoted where needed), bytes kept as read."""
    out = []
    for v in values:
        v = v or b""
        if any(c in v for c in (b",", b'"', b"\n", b"\r")):
            v = b'"' + v.replace(b'"', b'""') + b'"'
        out.append(v)
    return b",".join(out)


# -- the batcher -----------------------------------------------------------------------------


class _Batcher:
    """Collects staged rows and parser rejections; sends them to the pipeline in chunks."""

    def __init__(
        self,
        store: Store,
        source: str,
        received_at: datetime,
        chunk_rows: int,
        *,
        segments: bool = False,
    ) -> None:
        self.store, self.source, self.received_at = store, source, received_at
        self.chunk_rows = chunk_rows
        #: offer each clean chunk to ingest.csv_segment before the pipeline (CSV text chunks)
        self.segments = segments
        self.report = IngestReport(source=source)
        self._tables: list[pa.Table] = []
        self._rejections: list[Rejection] = []
        self._rows = 0
        self._scan: ChunkScan | None = None

    def add(
        self,
        table: pa.Table | None,
        rejections: Sequence[Rejection] = (),
        found: dict[str, list[pa.Array] | None] | None = None,
    ) -> None:
        """``found``: the block's text suspects, if the reader computed them
        (``csv_segment.block_suspects``)."""
        if table is not None and table.num_rows:
            self._tables.append(table)
            self._rows += table.num_rows
            if self.segments and not self._rejections and not rejections:
                # scanned while the reader parses the next blocks (ingest/csv_segment.py)
                if self._scan is None:
                    self._scan = ChunkScan()
                self._scan.add(table, found)
        self._rejections.extend(rejections)
        if self._rows + len(self._rejections) >= self.chunk_rows:
            self.flush()

    def discard(self) -> None:
        self._tables, self._rejections, self._rows = [], [], 0
        self._scan = None

    def flush(self) -> None:
        if not self._tables and not self._rejections:
            return
        if self._tables:
            staging = pa.concat_tables(self._tables, promote_options="permissive")
        else:
            staging = pa.table(
                {"event_id": pa.array([], pa.string()), "_row": pa.array([], pa.int64())}
            )
        if self.segments and not self._rejections:
            kept = import_csv_segment(
                self.store,
                staging,
                source=self.source,
                received_at=self.received_at,
                scan=self._scan,
            )
            if kept is not None:
                self.report.merge(kept)
                self.discard()
                return
        self.report.merge(
            append_events(
                self.store,
                staging,
                source=self.source,
                received_at=self.received_at,
                pre_rejected=self._rejections,
            )
        )
        self.discard()


def _checked_text(staged: pa.Table) -> tuple[pa.Table, list[Rejection]]:
    """A staged Parquet or frame block without its rows whose text is not UTF-8 (nothing
    checks Arrow's promise on the way in, and DuckDB's check of it is a fatal error), and their
    rejections (ingest/utf8.py)."""
    return split_invalid_utf8(staged, staged.column("_row").to_numpy())


def _staged(table: pa.Table | pa.RecordBatch, plan: dict[str, str], first_row: int) -> pa.Table:
    """Select and rename the planned columns, and number the rows from ``first_row``."""
    columns = [table.column(plan[name]) for name in plan]
    rows = pa.array(np.arange(first_row, first_row + table.num_rows, dtype=np.int64))
    return pa.Table.from_arrays([*columns, rows], names=[*plan, "_row"])


# -- CSV -------------------------------------------------------------------------------------


def _csv_names(path: Path, delimiter: str) -> list[str]:
    """The header: the first non-blank record (read with the ``csv`` module, so a bad byte or a
    bad row further down cannot make the header unreadable). A UTF-8 BOM is not part of the
    first name (pyarrow drops it too)."""
    try:
        with pa.input_stream(str(path), compression="detect") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
            for fields in csv.reader(text, delimiter=delimiter):
                if fields:
                    return [f.strip() for f in fields]
    except (csv.Error, OSError, pa.ArrowException) as exc:
        raise _unreadable(path, f"not a readable CSV file: {exc}") from None
    raise _unreadable(path, "the file has no header line")


def _csv_fast(
    path: Path,
    names: list[str],
    plan: dict[str, str],
    delimiter: str,
    sink: _Batcher,
    progress: Progress | None,
    total: int,
) -> None:
    """pyarrow's serial streaming reader (read ahead on a thread), all columns as bytes; raises
    ArrowInvalid on a row of the wrong width (the slow path then numbers and quarantines it)."""
    options = (
        pacsv.ReadOptions(use_threads=False, block_size=_BLOCK_BYTES),
        pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        pacsv.ConvertOptions(
            column_types={n: pa.binary() for n in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    wanted = {v: k for k, v in plan.items()}
    row = 0
    done = 0

    def as_text(batch: pa.RecordBatch) -> _Block:
        texts = [_as_text(batch.column(name)) for name in plan.values()]
        # the cleanliness scan of a segment chunk runs here too: the reading threads wait
        # for the importing thread most of the time (two thirds of a 10M-event import)
        found = (
            block_suspects({wanted[n]: t for n, (t, _) in zip(plan.values(), texts, strict=True)})
            if sink.segments
            else None
        )
        return batch, texts, found

    # the UTF-8 check runs on the reading threads too: this one scans the staged blocks. An
    # uncompressed file is cut at record boundaries and parsed on two threads (csv_ranges.py)
    found = (
        parallel_blocks(
            path,
            *options,
            as_text,
            range_bytes=_RANGE_BYTES,
            ahead_bytes=_READ_AHEAD_BLOCKS * _BLOCK_BYTES,
            threads=_PARSE_THREADS,
        )
        if _PARSE_THREADS > 1
        else None
    )
    if found is None:
        found = _read_ahead(map(as_text, pacsv.open_csv(str(path), *options)), _READ_AHEAD_BLOCKS)
    with contextlib.closing(found) as blocks:
        for batch, texts, found_suspects in blocks:
            _stage_block(batch, texts, plan, wanted, row, sink, found_suspects)
            row += batch.num_rows
            if progress is not None:
                done = min(total, done + _BLOCK_BYTES)
                progress(done, total)


#: A parsed CSV block: the record batch, ``_as_text`` of each planned column, and the text
#: suspects of the staged columns (``csv_segment.block_suspects``; None: not computed).
_Block = tuple[
    pa.RecordBatch,
    list[tuple[pa.Array, np.ndarray]],
    dict[str, list[pa.Array] | None] | None,
]


def _stage_block(
    batch: pa.RecordBatch,
    texts: list[tuple[pa.Array, np.ndarray]],
    plan: dict[str, str],
    wanted: dict[str, str],
    row: int,
    sink: _Batcher,
    found: dict[str, list[pa.Array] | None] | None = None,
) -> None:
    """One block of CSV records as text staging rows (numbered from ``row``) into ``sink``;
    ``texts``: ``_as_text`` of each planned column. Records with bytes that are not UTF-8 are
    rejected."""
    columns, bad = [], np.empty(0, np.int64)
    for text, positions in texts:
        columns.append(text)
        if len(positions):
            bad = np.union1d(bad, positions)
    staged = pa.Table.from_arrays(
        [*columns, pa.array(np.arange(row, row + batch.num_rows, dtype=np.int64))],
        names=[wanted[n] for n in plan.values()] + ["_row"],
    )
    rejections = []
    if len(bad):
        keep = np.ones(batch.num_rows, bool)
        keep[bad] = False
        staged = staged.filter(pa.array(keep))
        for i in bad.tolist():
            values = [batch.column(c)[i].as_py() for c in range(batch.num_columns)]
            rejections.append(
                Rejection(
                    row + i,
                    "row.invalid_utf8",
                    "the row has bytes that are not UTF-8: save the file as UTF-8",
                    _csv_payload(values),
                )
            )
    sink.add(staged, rejections, found)


#: kept under its old name for the callers in this module
_read_ahead = read_ahead


def _csv_slow(
    path: Path,
    names: list[str],
    plan: dict[str, str],
    delimiter: str,
    sink: _Batcher,
    skip_records: int,
) -> None:
    """Record by record with the ``csv`` module: exact record numbers for rows of the wrong
    width, undecodable bytes kept as they were (``surrogateescape``)."""
    index = {n: i for i, n in enumerate(names)}
    positions = [index[plan[t]] for t in plan]
    width = len(names)
    with pa.input_stream(str(path), compression="detect") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        next(reader, None)  # header
        record = -1
        good: list[list[str]] = []
        numbers: list[int] = []
        rejections: list[Rejection] = []
        for fields in reader:
            if not fields:
                continue  # blank line: not a record
            record += 1
            if record < skip_records:
                continue
            if len(fields) != width:
                rejections.append(
                    Rejection(
                        record,
                        "row.bad_shape",
                        f"the row has {len(fields)} fields, the header has {width}",
                        _joined(fields, delimiter),
                    )
                )
            else:
                good.append(fields)
                numbers.append(record)
            if len(good) >= 100_000:
                sink.add(*_slow_chunk(list(plan), positions, good, numbers, rejections, delimiter))
                good, numbers, rejections = [], [], []
        sink.add(*_slow_chunk(list(plan), positions, good, numbers, rejections, delimiter))


def _slow_chunk(
    targets: list[str],
    positions: list[int],
    good: list[list[str]],
    numbers: list[int],
    rejections: list[Rejection],
    delimiter: str,
) -> tuple[pa.Table, list[Rejection]]:
    """Columns of the well-shaped records; those holding undecodable bytes are rejected."""
    try:
        arrays = [pa.array([r[p] for r in good], pa.string()) for p in positions]
    except UnicodeEncodeError:  # a surrogate-escaped byte: find the rows that have one
        bad = {i for i, r in enumerate(good) if any(_has_surrogate(r[p]) for p in positions)}
        rejections = sorted(
            [
                *rejections,
                *(
                    Rejection(
                        numbers[i],
                        "row.invalid_utf8",
                        "the row has bytes that are not UTF-8: save the file as UTF-8",
                        _joined(good[i], delimiter),
                    )
                    for i in bad
                ),
            ],
            key=lambda r: r.row,
        )
        good = [r for i, r in enumerate(good) if i not in bad]
        numbers = [n for i, n in enumerate(numbers) if i not in bad]
        arrays = [pa.array([r[p] for r in good], pa.string()) for p in positions]
    table = pa.Table.from_arrays([*arrays, pa.array(numbers, pa.int64())], names=[*targets, "_row"])
    return table, rejections


def _joined(fields: list[str], delimiter: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(fields)
    return out.getvalue().encode("utf-8", "surrogateescape")


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _csv_events(
    path: Path, sink: _Batcher, progress: Progress | None, delimiter: str, names: list[str]
) -> None:
    plan = _column_plan(names, str(path))
    total = path.stat().st_size
    try:
        _csv_fast(path, names, plan, delimiter, sink, progress, total)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        # a row pyarrow cannot take in bulk: keep what was committed, redo the rest row by row
        sink.discard()
        _csv_slow(path, names, plan, delimiter, sink, skip_records=sink.report.rows)
    sink.flush()
    if progress is not None:
        progress(total, total)


# -- JSON Lines ------------------------------------------------------------------------------


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
        by_snake.setdefault(_snake(key), []).append(key)
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
    text, bad = _as_text(lines)
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


def _jsonl_events(
    path: Path, sink: _Batcher, progress: Progress | None, received_at: datetime
) -> None:
    total = path.stat().st_size
    con = duckdb.connect()
    shape = select = ""
    try:
        for lines, first, read in _jsonl_blocks(path):
            rejections = _register_lines(con, lines, first)
            if not shape:
                shape, keys = _jsonl_shape(con)
                if not keys:
                    raise _unreadable(path, "no line is a JSON object: not a JSON Lines file")
                if shape == "canonical":
                    _column_plan(keys, str(path))
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


# -- Parquet and frames ----------------------------------------------------------------------


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, f"not a readable Parquet file: {exc}") from None


def _parquet_events(path: Path, sink: _Batcher, progress: Progress | None) -> None:
    from funnelscope.ingest.bulk import import_parquet_segment

    file = _parquet_file(path)
    names = file.schema_arrow.names
    plan = _column_plan(names, str(path))
    total = file.metadata.num_rows
    # a clean canonical file is kept as a segment instead of being rewritten (ingest/bulk.py)
    bulk = import_parquet_segment(
        sink.store, path, plan, source=sink.source, received_at=sink.received_at
    )
    if bulk is not None:
        sink.report.merge(bulk)
        if progress is not None:
            progress(total, total)
        return
    row = 0
    try:
        for batch in file.iter_batches(
            batch_size=sink.chunk_rows, columns=list(plan.values()), use_threads=True
        ):
            sink.add(*_checked_text(_staged(batch, plan, row)))
            row += batch.num_rows
            if progress is not None:
                progress(row, total)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, f"the Parquet data cannot be read: {exc}") from None
    sink.flush()


def _frame_to_arrow(frame: Any) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    module = type(frame).__module__.split(".")[0]
    try:
        if module == "polars":
            return frame.to_arrow()
        if module == "pandas":
            return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidEventError(
            [Problem("frame.unreadable", "frame", f"the frame cannot be converted to Arrow: {exc}")]
        ) from None
    raise InvalidEventError(
        [
            Problem(
                "frame.unsupported",
                "frame",
                f"expected a pandas, polars or pyarrow table, got {type(frame).__name__}",
            )
        ]
    )


# -- facts -----------------------------------------------------------------------------------


def _read_table(path: Path, fmt: str) -> pa.Table:
    """A whole (fact) file as an Arrow table; CSV and JSONL values as text."""
    try:
        if fmt == "parquet":
            return pq.read_table(str(path))
        if fmt == "jsonl":
            import pyarrow.json as pajson

            return pajson.read_json(str(path))
        names = _csv_names(path, "\t" if path.suffix.lower() == ".tsv" else ",")
        return pacsv.read_csv(
            str(path),
            parse_options=pacsv.ParseOptions(
                delimiter="\t" if path.suffix.lower() == ".tsv" else ",", newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, f"not a readable {fmt} file: {exc}") from None


def _append_facts(
    store: Store, kind: str, table: pa.Table, source: str, received_at: datetime
) -> IngestReport:
    from funnelscope.ingest.facts import append_facts

    result = append_facts(store, kind, table, source=source, received_at=received_at)
    if isinstance(result, IngestReport):
        return result
    report = IngestReport(source=source, rows=table.num_rows)
    for key in ("rows", "accepted", "rejected", "inserted", "duplicates"):
        if hasattr(result, key):
            setattr(report, key, int(getattr(result, key)))
    return report


# -- public ----------------------------------------------------------------------------------


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(
            [
                Problem(
                    "import.unknown_kind",
                    "kind",
                    f"kind must be one of {', '.join(KINDS)} (got {kind!r})",
                )
            ]
        )


def _record_import(
    store: Store, report: IngestReport, kind: str, received_at: datetime, elapsed: float
) -> None:
    with store.write() as con:
        con.execute(
            "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                uuid.uuid4().hex,
                received_at,
                received_at + timedelta(seconds=elapsed),
                report.source,
                kind,
                report.rows,
                report.accepted,
                report.rejected,
                report.inserted,
            ],
        )


def ingest_file(
    store: Store,
    path: str | Path,
    *,
    kind: str | None = None,
    format: str | None = None,
    received_at: datetime,
    progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> IngestReport:
    """Import one CSV, JSON Lines or Parquet file of events (or of facts) into ``store``.

    Parameters
    ----------
    store
        The store to write to.
    path
        The file; ``.gz`` / ``.bz2`` / ``.zst`` compression is read transparently.
    kind
        ``events`` or a fact kind (``ad_spend``, ``email_campaigns``, ``survey_responses``,
        ``products``, ``currency_rates``). Default: guessed from the columns.
    format
        ``csv``, ``jsonl`` or ``parquet``. Default: from the extension, else the first bytes.
    received_at
        The import time, stored as every event's ``received_at`` and the quarantine time.
    progress
        Called as ``progress(done, total)`` after each block (bytes, or rows for Parquet).
    chunk_rows
        Rows per pipeline transaction.

    Returns
    -------
    IngestReport
        ``rows == accepted + rejected``; the rejected rows are in the ``quarantine`` table with
        their reason codes. One ``imports`` row records the file.

    Raises
    ------
    InvalidEventError
        ``file.unreadable``, ``file.missing_columns`` or ``file.ambiguous_columns``: the file
        cannot be read at all. Nothing is written then.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> import funnelscope, pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "e.csv"
    >>> _ = f.write_text("event_id,timestamp,event,user_id\\n"
    ...                  "1,2024-05-01T10:00:00Z,Order Completed,u1\\n")
    >>> with funnelscope.open(":memory:") as ws:
    ...     r = ingest_file(ws.store, f, received_at=datetime(2024, 6, 1, tzinfo=UTC))
    >>> r.rows, r.accepted, r.inserted
    (1, 1, 1)
    """
    path = Path(path)
    _check_kind(kind)
    if format is not None and format not in FORMATS:
        raise InvalidInputError(
            [
                Problem(
                    "import.unknown_format",
                    "format",
                    f"format must be one of {', '.join(FORMATS)} (got {format!r})",
                )
            ]
        )
    _check_file(path)
    fmt = format or detect_format(path)
    source = f"import:{path}"
    started = time.perf_counter()
    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    names: list[str] | None = None
    if kind is None and fmt == "csv":
        names = _csv_names(path, delimiter)
        kind = _detect_kind(names)
    elif kind is None and fmt == "parquet":
        kind = _detect_kind(_parquet_file(path).schema_arrow.names)
    kind = kind or "events"
    if kind != "events":
        table = _read_table(path, fmt)
        report = _append_facts(store, kind, table, source, received_at)
    else:
        # a CSV chunk may become a segment (ingest/csv_segment.py) when the store is a file
        segments = fmt == "csv" and segments_folder(store.path) is not None
        sink = _Batcher(store, source, received_at, chunk_rows, segments=segments)
        if fmt == "csv":
            _csv_events(path, sink, progress, delimiter, names or _csv_names(path, delimiter))
        elif fmt == "jsonl":
            _jsonl_events(path, sink, progress, received_at)
        else:
            _parquet_events(path, sink, progress)
        report = sink.report
    _record_import(store, report, kind, received_at, time.perf_counter() - started)
    return report


def ingest_frame(
    store: Store,
    frame: Any,
    *,
    source: str,
    received_at: datetime,
    kind: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> IngestReport:
    """Import a pandas, polars or pyarrow table of events (or of facts, with ``kind``).

    Columns are matched as for files (canonical names, then the aliases of
    :data:`COLUMN_ALIASES`); typed columns (timestamps, numbers, dict properties) are fine.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> import funnelscope, pandas as pd
    >>> df = pd.DataFrame({"id": ["e1"], "ts": ["2024-05-01T10:00:00Z"], "name": ["purchase"],
    ...                    "user_id": ["u1"]})
    >>> with funnelscope.open(":memory:") as ws:
    ...     ingest_frame(ws.store, df, source="notebook",
    ...                  received_at=datetime(2024, 6, 1, tzinfo=UTC)).inserted
    1
    """
    _check_kind(kind)
    started = time.perf_counter()
    table = _frame_to_arrow(frame)
    kind = kind or _detect_kind(table.column_names)
    if kind != "events":
        report = _append_facts(store, kind, table, source, received_at)
    else:
        plan = _column_plan(table.column_names, "frame")
        sink = _Batcher(store, source, received_at, chunk_rows)
        for start in range(0, table.num_rows, chunk_rows):
            sink.add(*_checked_text(_staged(table.slice(start, chunk_rows), plan, start)))
        sink.flush()
        report = sink.report
    _record_import(store, report, kind, received_at, time.perf_counter() - started)
    return report
