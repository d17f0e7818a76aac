"""CSV files -> staging rows: the fast road (pyarrow, columnar) and the slow one (``csv``).

The fast road is pyarrow's streaming reader (parsing ahead on a thread, or on two over ranges
of the file: ingest/csv_ranges.py) with every column read as bytes, then checked for UTF-8 in
bulk (:func:`as_text`). A file pyarrow cannot parse in bulk (a row of the wrong width) is re-read
record by record with the ``csv`` module from the first record not yet stored, so that the bad
rows get exact record numbers. Row numbers are 0-based data records (header excluded, blank
lines not counted). ingest/files.py opens the file and owns the :class:`Sink`.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from funnelscope.ingest.columns import column_plan, unreadable
from funnelscope.ingest.csv_ranges import RANGE_BYTES, parallel_blocks, read_ahead
from funnelscope.ingest.csv_segment import block_suspects
from funnelscope.ingest.pipeline import IngestReport, Rejection

__all__ = ["Progress", "Sink", "as_text", "csv_events", "csv_names"]

#: Read CSV in blocks of this many bytes (a batch is about this big). Small blocks stay in the
#: CPU caches: 2 MiB parses a wide file about twice as fast as 16 MiB.
_BLOCK_BYTES: Final = 2 << 20
#: CSV blocks parsed ahead while a full chunk is stored (128 MiB).
_READ_AHEAD_BLOCKS: Final = 64
#: An uncompressed CSV file of two ranges or more is cut into ranges of about this many bytes
#: at record boundaries and parsed by this many threads (ingest/csv_ranges.py).
_RANGE_BYTES: Final = RANGE_BYTES
_PARSE_THREADS: Final = 2

#: ``progress(done, total)``: bytes read of a CSV/JSONL file, rows of a Parquet file or frame.
Progress = Callable[[int, int], None]


class Sink(Protocol):
    """Where a reader sends its staged rows: ingest/files.py's batcher, which stores them in
    chunks (a Protocol so that the readers need not import files.py)."""

    #: offer each clean chunk to ingest.csv_segment (CSV text chunks)
    segments: bool
    report: IngestReport

    def add(
        self,
        table: pa.Table | None,
        rejections: Sequence[Rejection] = (),
        found: dict[str, list[pa.Array] | None] | None = None,
    ) -> None: ...

    def discard(self) -> None: ...

    def flush(self) -> None: ...


# -- UTF-8 -----------------------------------------------------------------------------------


def as_text(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
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


# -- CSV -------------------------------------------------------------------------------------


def csv_names(path: Path, delimiter: str) -> list[str]:
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
        raise unreadable(path, f"not a readable CSV file: {exc}") from None
    raise unreadable(path, "the file has no header line")


def _csv_fast(
    path: Path,
    names: list[str],
    plan: dict[str, str],
    delimiter: str,
    sink: Sink,
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

    def as_block(batch: pa.RecordBatch) -> _Block:
        texts = [as_text(batch.column(name)) for name in plan.values()]
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
            as_block,
            range_bytes=_RANGE_BYTES,
            ahead_bytes=_READ_AHEAD_BLOCKS * _BLOCK_BYTES,
            threads=_PARSE_THREADS,
        )
        if _PARSE_THREADS > 1
        else None
    )
    if found is None:
        found = read_ahead(map(as_block, pacsv.open_csv(str(path), *options)), _READ_AHEAD_BLOCKS)
    with contextlib.closing(found) as blocks:
        for batch, texts, found_suspects in blocks:
            _stage_block(batch, texts, plan, wanted, row, sink, found_suspects)
            row += batch.num_rows
            if progress is not None:
                done = min(total, done + _BLOCK_BYTES)
                progress(done, total)


#: A parsed CSV block: the record batch, ``as_text`` of each planned column, and the text
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
    sink: Sink,
    found: dict[str, list[pa.Array] | None] | None = None,
) -> None:
    """One block of CSV records as text staging rows (numbered from ``row``) into ``sink``;
    ``texts``: ``as_text`` of each planned column. Records with bytes that are not UTF-8 are
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


def _csv_slow(
    path: Path,
    names: list[str],
    plan: dict[str, str],
    delimiter: str,
    sink: Sink,
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


def csv_events(
    path: Path, sink: Sink, progress: Progress | None, delimiter: str, names: list[str]
) -> None:
    """Every record of the CSV file at ``path`` (header ``names``) into ``sink``, then flush."""
    plan = column_plan(names, str(path))
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
