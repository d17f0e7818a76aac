"""A CSV file cut into byte ranges, parsed on two threads, its blocks handed on in file order.

pyarrow's streaming CSV reader parses one block after another on one thread; a file cut into
ranges can be parsed by two readers at once. A cut must fall between two records, and a quoted
field may hold line breaks, so a newline is a record boundary only when it is outside quotes.
Proving that beforehand takes a scan of every quote from the start of the file (half the cost
of the parse itself on a file of JSON properties, where every other byte run is a doubled
quote), so the cut is checked afterwards instead, by the parser itself: each range ends just
after a newline, and the range's reader parses it exactly as a reader of the whole file would
(same bytes, same starting state) up to that newline. If the newline is outside quotes it ends
the range's last record, and the next range starts at a record as a serial read would; if it
is inside a quoted field, that field is still open at the range's end: pyarrow then ends it at
the end of the range with the newline as its last byte, or fails for want of fields. So a range
whose last value ends in a newline, or whose reader fails, is not trusted: its rows and those of
the ranges after it are dropped and the rest of the file is read serially from the range's
start (a value that really ends in a newline only costs that serial read). A range's blocks are
handed on only once its end is checked, in file order, so row numbers and errors are those of
a serial read. A compressed file or one under two ranges is read serially.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

__all__ = ["RANGE_BYTES", "next_line", "parallel_blocks", "read_ahead"]

#: Bytes per range: small enough that both threads stay busy to the end of a file and that a
#: range held back until its end is checked is little memory, large enough that the readers'
#: start-up costs nothing.
RANGE_BYTES: Final = 16 << 20
_LINE_SEARCH_BYTES: Final = 64 << 10
_COMPRESSED: Final = (".gz", ".bz2", ".zst", ".lz4", ".zstd", ".br", ".snappy")

_T = TypeVar("_T")


def next_line(data: np.ndarray, position: int) -> int:
    """The start of the first line at or after byte ``position`` (just past a ``\\n``); the
    size of ``data`` when no line starts there.

    Examples
    --------
    >>> import numpy as np
    >>> text = np.frombuffer(b"id\\n1\\n22\\n", np.uint8)
    >>> next_line(text, 3), next_line(text, 4), next_line(text, 9)
    (3, 5, 8)
    """
    at = max(position - 1, 0)
    while at < len(data):
        found = np.flatnonzero(data[at : at + _LINE_SEARCH_BYTES] == ord("\n"))
        if len(found):
            return at + int(found[0]) + 1
        at += _LINE_SEARCH_BYTES
    return len(data)


def read_ahead(items: Iterator[_T], depth: int = 8) -> Generator[_T, None, None]:
    """``items`` produced on a thread of its own, up to ``depth`` ahead.

    pyarrow parses the next CSV blocks without the GIL while the consumer stages the previous
    ones and stores full chunks, so a long file's reading overlaps with its storing. An error
    of the producer is raised here, after the items before it.

    Examples
    --------
    >>> list(read_ahead(iter(range(5)), depth=2))
    [0, 1, 2, 3, 4]
    """
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((False, exc))
            return
        put((False, None))

    thread = threading.Thread(target=produce, name="csv-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            is_item, value = ready.get()
            if not is_item:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()


def _splittable(path: Path, range_bytes: int) -> bool:
    return (
        path.is_file()
        and not any(s.lower() in _COMPRESSED for s in path.suffixes)
        and path.stat().st_size >= 2 * range_bytes
    )


class _Untrusted(Exception):
    """A range's end may be inside a quoted field (its last value ends in a newline)."""


def _open_at_the_end(batch: pa.RecordBatch | None) -> bool:
    """Whether the last value of the range's last record ends in a newline (see the module)."""
    if batch is None or not batch.num_rows or not batch.num_columns:
        return False
    value = batch.column(batch.num_columns - 1)[batch.num_rows - 1].as_py()
    return isinstance(value, bytes | str) and value[-1:] in (b"\n", "\n")


class _Ranges:
    """The ranges handed out in order, and each one's queue of parsed blocks."""

    def __init__(self, data: np.ndarray, range_bytes: int, in_flight: int) -> None:
        self.data, self.range_bytes = data, range_bytes
        self.queues: dict[int, queue.SimpleQueue[tuple[bool, Any]]] = {}
        self.starts: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        self.total: int | None = None
        self.taken = 0
        self.next_start = 0
        self.changed = threading.Condition()
        self.slots = threading.Semaphore(in_flight)
        self.stop = threading.Event()

    def take(self) -> tuple[int, int, int] | None:
        """(index, first byte, end) of the next range, or None when every range is taken."""
        while not self.slots.acquire(timeout=0.05):
            if self.stop.is_set():
                return None
        with self.changed:
            start, index = self.next_start, self.taken
            if start >= len(self.data) or self.stop.is_set():
                self.total = index
                self.changed.notify_all()
                self.slots.release()
                return None
            end = next_line(self.data, start + self.range_bytes)
            self.next_start, self.taken = end, index + 1
            self.queues[index] = queue.SimpleQueue()
            self.starts[index], self.ends[index] = start, end
            self.changed.notify_all()
            return index, start, end

    def queue_of(self, index: int) -> queue.SimpleQueue[tuple[bool, Any]] | None:
        with self.changed:
            while index not in self.queues and (self.total is None or index < self.total):
                self.changed.wait()
            return self.queues.get(index)


def parallel_blocks(
    path: Path,
    read_options: pacsv.ReadOptions,
    parse_options: pacsv.ParseOptions,
    convert_options: pacsv.ConvertOptions,
    transform: Callable[[pa.RecordBatch], _T],
    *,
    range_bytes: int = RANGE_BYTES,
    ahead_bytes: int = 128 << 20,
    threads: int = 2,
) -> Generator[_T, None, None] | None:
    """``transform`` of every block of the CSV file ``path`` in file order, the ranges parsed on
    ``threads`` threads (at most ``ahead_bytes`` of ranges parsed or being parsed ahead of the
    one being handed on); None when the file is compressed or smaller than two ranges.

    ``transform`` runs on the parsing threads (pyarrow drops the GIL in its kernels). The
    options are those of a serial read with a header; the ranges after the first are read
    with the first one's column names instead of a header.

    Examples
    --------
    >>> import pathlib, tempfile, pyarrow.csv as pacsv
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "e.csv"
    >>> _ = f.write_text("id,note\\n" + "".join(f'{i},"line\\n{i}"\\n' for i in range(999)))
    >>> blocks = parallel_blocks(f, pacsv.ReadOptions(block_size=1 << 10), pacsv.ParseOptions(
    ...     newlines_in_values=True), pacsv.ConvertOptions(), lambda b: b.num_rows,
    ...     range_bytes=4 << 10)
    >>> sum(blocks)
    999
    """
    if not _splittable(path, range_bytes):
        return None
    in_flight = max(threads, (ahead_bytes + range_bytes - 1) // range_bytes)
    depth = max(2, ahead_bytes // max(read_options.block_size, 1))  # of a serial read
    return _blocks(
        path, (read_options, parse_options, convert_options), transform, range_bytes, in_flight,
        threads, depth,
    )  # fmt: skip


def _blocks(
    path: Path,
    options: tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions],
    transform: Callable[[pa.RecordBatch], _T],
    range_bytes: int,
    in_flight: int,
    threads: int,
    depth: int,
) -> Generator[_T, None, None]:
    read_options, parse_options, convert_options = options
    buffer = pa.memory_map(str(path)).read_buffer()
    ranges = _Ranges(np.frombuffer(buffer, np.uint8), range_bytes, in_flight)
    names: list[str] = []
    ready = threading.Event()  # the first range's reader has read the header

    def reader(start: int, end: int | None = None) -> pacsv.CSVStreamingReader:
        source = pa.BufferReader(buffer.slice(start, None if end is None else end - start))
        if start == 0:
            first = pacsv.open_csv(source, read_options, parse_options, convert_options)
            names[:] = first.schema.names
            ready.set()
            return first
        ready.wait()
        options = pacsv.ReadOptions(
            use_threads=read_options.use_threads,
            block_size=read_options.block_size,
            column_names=names,
            encoding=read_options.encoding,
        )
        return pacsv.open_csv(source, options, parse_options, convert_options)

    def parse() -> None:
        while (taken := ranges.take()) is not None:
            index, start, end = taken
            out = ranges.queues[index]
            last: pa.RecordBatch | None = None  # the last block with rows
            try:
                for batch in reader(start, end):
                    if ranges.stop.is_set():
                        return
                    last = batch if batch.num_rows else last
                    out.put((True, transform(batch)))
            except BaseException as exc:  # the consumer raises it or reads serially from here
                out.put((False, exc))
                ready.set()  # a header that cannot be read: the later ranges fail too
                continue
            end_open = end < len(ranges.data) and _open_at_the_end(last)
            out.put((False, _Untrusted() if end_open else None))

    workers = [
        threading.Thread(target=parse, name=f"csv-range-{i}", daemon=True) for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    try:
        index = 0
        while (blocks := ranges.queue_of(index)) is not None:
            held = []  # handed on once the range's end is checked
            while True:
                is_item, value = blocks.get()
                if not is_item:
                    break
                held.append(value)
            # the last range ends where the file does: its end needs no check
            if value is None or ranges.ends[index] >= len(ranges.data):
                yield from held
                if value is not None:
                    raise value
            else:
                # an end that may be inside quotes, or an error a wrong cut may have caused:
                # from this range on, the file is read serially (errors are raised there)
                ranges.stop.set()
                rest = reader(ranges.starts[index])
                yield from read_ahead(map(transform, rest), depth)
                return
            del ranges.queues[index]
            ranges.slots.release()
            index += 1
    finally:
        ranges.stop.set()
        ready.set()
        for worker in workers:
            worker.join()
