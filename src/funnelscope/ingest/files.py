"""Files and data frames -> the ingest pipeline: CSV, JSON Lines, Parquet and in-memory frames.

Every event row ends in :func:`funnelscope.ingest.pipeline.append_events` (chunks of
:data:`CHUNK_ROWS`), so file imports validate, quarantine, deduplicate and stitch exactly as the
collector does; a clean canonical Parquet file (:mod:`funnelscope.ingest.bulk`) or clean chunk
of CSV (:mod:`funnelscope.ingest.csv_segment`) is kept as a segment instead, with the same
results. Facts (ad spend, email campaigns, ...) go to
:func:`funnelscope.ingest.facts.append_facts`. docs/import.md describes the semantics.

This module detects the format, sends the staged rows to the pipeline in chunks (the batcher)
and reads Parquet files and frames; the other readers have their own modules, all columnar on
the canonical path: CSV with pyarrow's streaming reader, every column as bytes then checked for
UTF-8 in bulk (:mod:`funnelscope.ingest.csv_read`), JSON Lines split on newlines with numpy and
parsed by DuckDB's JSON functions (:mod:`funnelscope.ingest.jsonl_read`). Which column fills
which staging column is :mod:`funnelscope.ingest.columns`. Python touches single rows only to
describe a rejected row, for Segment/PostHog-shaped JSON Lines (mapped by
:mod:`funnelscope.ingest.records`), and for a CSV file pyarrow cannot parse in bulk (a row of the
wrong width that also holds bad bytes), which is re-read with the ``csv`` module.

Row numbers (``_row``, the quarantine's ``row_number``) are 0-based: the data record of a CSV
file (header excluded, blank lines not counted), the line of a JSON Lines file (blank lines
counted), the row of a Parquet file or frame.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from funnelscope.errors import InvalidEventError, InvalidInputError, Problem
from funnelscope.ingest.columns import (
    COLUMN_ALIASES,
    REQUIRED_COLUMNS,
    column_plan,
    detect_kind,
    unreadable,
)
from funnelscope.ingest.csv_read import Progress, csv_events, csv_names
from funnelscope.ingest.csv_segment import ChunkScan, import_csv_segment
from funnelscope.ingest.jsonl_read import jsonl_events
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
        raise unreadable(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise unreadable(path, "the file is empty")


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


# -- Parquet and frames ----------------------------------------------------------------------


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(path, f"not a readable Parquet file: {exc}") from None


def _parquet_events(path: Path, sink: _Batcher, progress: Progress | None) -> None:
    from funnelscope.ingest.bulk import import_parquet_segment

    file = _parquet_file(path)
    names = file.schema_arrow.names
    plan = column_plan(names, str(path))
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
        raise unreadable(path, f"the Parquet data cannot be read: {exc}") from None
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
        names = csv_names(path, "\t" if path.suffix.lower() == ".tsv" else ",")
        return pacsv.read_csv(
            str(path),
            parse_options=pacsv.ParseOptions(
                delimiter="\t" if path.suffix.lower() == ".tsv" else ",", newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, f"not a readable {fmt} file: {exc}") from None


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
        names = csv_names(path, delimiter)
        kind = detect_kind(names)
    elif kind is None and fmt == "parquet":
        kind = detect_kind(_parquet_file(path).schema_arrow.names)
    kind = kind or "events"
    if kind != "events":
        table = _read_table(path, fmt)
        report = _append_facts(store, kind, table, source, received_at)
    else:
        # a CSV chunk may become a segment (ingest/csv_segment.py) when the store is a file
        segments = fmt == "csv" and segments_folder(store.path) is not None
        sink = _Batcher(store, source, received_at, chunk_rows, segments=segments)
        if fmt == "csv":
            csv_events(path, sink, progress, delimiter, names or csv_names(path, delimiter))
        elif fmt == "jsonl":
            jsonl_events(path, sink, progress, received_at)
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
    kind = kind or detect_kind(table.column_names)
    if kind != "events":
        report = _append_facts(store, kind, table, source, received_at)
    else:
        plan = column_plan(table.column_names, "frame")
        sink = _Batcher(store, source, received_at, chunk_rows)
        for start in range(0, table.num_rows, chunk_rows):
            sink.add(*_checked_text(_staged(table.slice(start, chunk_rows), plan, start)))
        sink.flush()
        report = sink.report
    _record_import(store, report, kind, received_at, time.perf_counter() - started)
    return report
