"""Prove a Parquet file's text columns *clean*: every value already as the pipeline stores it.

The pipeline stores a text value ``x`` as ``NULLIF(trim(x), '')``, so a value is stored unchanged
exactly when it is NULL, or non-empty and equal to its ``trim()``. A Parquet file kept as a
segment (ingest/bulk.py) must hold only such values. Checking ``x = trim(x)`` per value in SQL
is half of a segment import's CPU time; this module gets the same answer from far fewer bytes:

* text columns are read with pyarrow as dictionaries (``read_dictionary``): a column whose
  Parquet pages are dictionary-encoded (a shop's names, pages, channels, devices) is checked
  once per distinct value of each row group instead of once per row. Checking a dictionary
  also checks entries no row uses: at worst a clean file is refused, never the reverse;
* a value is checked by its first and last byte (numpy over the Arrow offsets and data
  buffers, :func:`suspects`): ``trim()`` removes the space
  (0x20) and the Unicode spaces (category Zs, all outside ASCII), so a non-empty value whose
  edge bytes are ASCII and not 0x20 equals its ``trim()``; an edge byte 0x20 proves it does
  not; the few values with a non-ASCII edge byte (a name ending in "é") are compared with
  DuckDB's own ``trim()`` (:func:`all_trimmed`);
* an empty value (zero bytes) is not clean: the pipeline stores it as NULL;
* a column the import does not keep per row is checked from its Parquet *dictionary pages*
  alone (:mod:`funnelscope.ingest.parquet_pages`, on a second thread): the same dictionaries
  pyarrow's read returns, without decoding an index per row. A column whose pages cannot tell
  (a data page not dictionary-encoded, an unknown codec...) is read as above; a dictionary
  value that is not UTF-8 makes the file not clean (pyarrow's read does not check it).

The answer is exact for the values of the file, and conservative for unused dictionary
entries; a file reported not clean takes the pipeline (or the per-row road), which gives the
same results, only slower.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from funnelscope.ingest.parquet_pages import DictionaryPages
from funnelscope.ingest.utf8 import is_utf8

__all__ = [
    "READ_ROWS",
    "TextScan",
    "TextScanResult",
    "all_trimmed",
    "edges_may_differ",
    "scan_text",
    "suspects",
]

#: Rows read at a time (whole row groups): bounds the memory of the check on a large file.
READ_ROWS: Final = 1 << 20


def edges_may_differ(offsets: np.ndarray, raw: np.ndarray) -> bool:
    """False when no value's first or last byte is a space, a control byte or outside ASCII.

    The bytes at every value's start and before its end are read without leaving out the
    empty values: an empty value's two bytes are edges of the values around it (clipped at the
    buffer's ends), so nothing is missed, and two array reads replace the exact test's ten
    operations (half the block scan's time). ``byte - 0x21`` in uint8 is >= 0x5f for exactly
    the bytes 0x00-0x20 and 0x80-0xff.
    """
    if not len(raw):
        return False
    head = raw.take(offsets[:-1], mode="clip") - np.uint8(0x21)
    tail = raw.take(offsets[1:] - 1, mode="clip") - np.uint8(0x21)
    return bool((np.maximum(head, tail) >= 0x5F).any())


def suspects(column: pa.Array | pa.ChunkedArray) -> list[pa.Array] | None:
    """The values of a text column that may differ from their SQL ``trim()``; None when one
    surely does.

    ``trim()`` removes the space and Unicode spaces (all non-ASCII): a value whose first and
    last bytes are ASCII other than the space is equal to it. The few others (a name ending in
    "é") are left to :func:`all_trimmed`.
    """
    out = []
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        data = chunk.buffers()[2]
        if not len(chunk) or data is None:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], np.int32)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        raw = np.frombuffer(data, np.uint8)
        if not edges_may_differ(offsets, raw):
            continue
        filled = offsets[1:] > offsets[:-1]
        head = raw[offsets[:-1][filled]]
        tail = raw[offsets[1:][filled] - 1]
        if (head == 0x20).any() or (tail == 0x20).any():
            return None
        odd = (head >= 0x80) | (tail >= 0x80)
        if odd.any():
            mask = np.zeros(len(chunk), bool)
            mask[np.flatnonzero(filled)[odd]] = True
            out.append(chunk.filter(pa.array(mask)))
    return out


def all_trimmed(con: duckdb.DuckDBPyConnection, values: list[pa.Array]) -> bool:
    """Whether every value equals its ``trim()``, asked of DuckDB itself (the suspects only)."""
    if not values:
        return True
    con.register("_suspects", pa.table({"v": pa.chunked_array(values, pa.string())}))
    (same,) = con.execute("SELECT bool_and(v = trim(v)) FROM _suspects").fetchall()[0]
    con.unregister("_suspects")
    return bool(same)


def _edges_ok(array: pa.Array, found_suspects: list[pa.Array]) -> bool:
    """No valid value of ``array`` (a plain string array) is empty, starts or ends with a
    space, or is not UTF-8; values with a non-ASCII edge byte are appended to
    ``found_suspects``."""
    if len(array) == 0:
        return True
    start = array.offset
    offsets = np.frombuffer(array.buffers()[1], np.int32)[start : start + len(array) + 1]
    empty = offsets[1:] == offsets[:-1]
    if array.null_count:
        empty &= array.is_valid().to_numpy(zero_copy_only=False)
    # pyarrow's Parquet reader does not check UTF-8, and DuckDB fails on a value that is not
    # (a fatal error that closes the store): a segment must never hold one
    if empty.any() or not is_utf8(array):
        return False
    found = suspects(array)
    if found is None:
        return False
    found_suspects.extend(found)
    return True


def _chunk_ok(chunk: pa.Array, found_suspects: list[pa.Array]) -> bool:
    if isinstance(chunk, pa.DictionaryArray):
        dictionary = chunk.dictionary
        # a NULL entry would have to be told from the rows that use it: not worth it
        return dictionary.null_count == 0 and _edges_ok(dictionary, found_suspects)
    return pa.types.is_string(chunk.type) and _edges_ok(chunk, found_suspects)


@dataclass(frozen=True, slots=True)
class TextScanResult:
    """What :func:`scan_text` found: ``clean`` (see there) and, when asked for and clean, the
    columns ``kept`` as read (dictionary-encoded, one chunk per row group, in file order)."""

    clean: bool
    kept: pa.Table | None = None
    #: the ``ids`` column of :class:`TextScan` strictly increases: its values are distinct
    ids_increasing: bool = False
    #: NULL values of the ``ids`` column, and its longest value in bytes
    ids_nulls: int = 0
    ids_max_bytes: int = 0


def scan_text(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    columns: Sequence[str],
    keep: Sequence[str] = (),
) -> TextScanResult:
    """Whether every value of the ``string`` columns ``columns`` of the Parquet file ``path``
    is NULL, or non-empty and equal to its DuckDB ``trim()``; the columns ``keep`` (a subset
    of ``columns``) are returned as read, for a caller that needs them per row.

    ``clean`` is False also when a value cannot be vouched for cheaply (module docstring).
    :class:`TextScan` does the same on a thread of its own.

    Examples
    --------
    >>> import duckdb, pyarrow as pa, pyarrow.parquet as pq, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "e.parquet"
    >>> pq.write_table(pa.table({"a": ["x", None, "é"], "b": ["y", "z", "w\u3000"]}), path)
    >>> con = duckdb.connect()
    >>> scan_text(con, path, ["a"]).clean, scan_text(con, path, ["a", "b"]).clean
    (True, False)
    """
    return TextScan(path, columns, keep).result(con)


class TextScan:
    """:func:`scan_text` with the reads and the byte checks on threads of their own (pyarrow
    and numpy release the GIL), so that a DuckDB scan of the same file can run meanwhile;
    :meth:`result` waits, then compares the few suspects with ``trim()`` on ``con``.

    ``ids``: a column of (nearly) unique values, read without a dictionary and checked like the
    others; :attr:`TextScanResult.ids_increasing` tells whether its values strictly increase
    (in byte order) through the file, which proves them distinct without a hash table.

    ``pages``: the columns not kept (nor ``ids``) are checked from their Parquet dictionary
    pages alone (:mod:`funnelscope.ingest.parquet_pages`), on a second thread while the first
    reads the kept columns; a column whose pages cannot tell is read as the kept ones are. The
    values checked are the same dictionaries pyarrow would return, so the verdict is the same.
    """

    def __init__(
        self,
        path: Path,
        columns: Sequence[str],
        keep: Sequence[str] = (),
        *,
        ids: str | None = None,
        pages: bool = True,
    ) -> None:
        self._suspects: list[pa.Array] = []
        self._clean = self._increasing = False
        self._ids_nulls = self._ids_max_bytes = 0
        self._kept: pa.Table | None = None
        self._errors: list[BaseException] = []
        self._unclean = threading.Event()  # a value was found not clean: the verdict is known
        self._failed = threading.Event()  # that, or an error: both threads stop
        kept = set(keep)
        paged = [c for c in dict.fromkeys(columns) if c not in kept and c != ids] if pages else []
        read = [c for c in columns if c not in paged]
        self._paged_clean = True
        self._paged_suspects: list[pa.Array] = []
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(path, read, list(keep), ids),
                name="text-scan",
                daemon=True,
            )
        ]
        if paged:
            self._threads.append(
                threading.Thread(
                    target=self._run_pages, args=(path, paged), name="text-pages", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    def _run(self, path: Path, columns: list[str], keep: list[str], ids: str | None) -> None:
        try:
            self._clean, self._kept = self._read(path, columns, keep, ids)
        except BaseException as exc:  # re-raised by result() on the importing thread
            self._errors.append(exc)
            self._failed.set()

    def _run_pages(self, path: Path, columns: list[str]) -> None:
        try:
            self._paged_clean = self._pages(path, columns)
        except BaseException as exc:  # re-raised by result() on the importing thread
            self._errors.append(exc)
            self._failed.set()

    def _pages(self, path: Path, columns: list[str]) -> bool:
        """Check ``columns`` from their dictionary pages; those the pages cannot tell are read
        whole, as :meth:`_read` reads the others."""
        unknown = []
        file = pq.ParquetFile(str(path))
        schema = file.schema_arrow
        with DictionaryPages(path, file.metadata) as pages:
            for column in columns:
                if self._failed.is_set():
                    return False
                if not _read_as_string(schema, column):  # the read below decides as before
                    unknown.append(column)
                    continue
                found = pages.column(column)
                if found.values is None and found.is_valid_utf8:
                    unknown.append(column)
                elif found.values is None or not all(
                    _edges_ok(v, self._paged_suspects) for v in found.values
                ):
                    return self._found_unclean()
        if not unknown:
            return True
        clean, _ = self._read(path, unknown, [], None, self._paged_suspects)
        return clean

    def _read(
        self,
        path: Path,
        columns: list[str],
        keep: list[str],
        ids: str | None,
        found_suspects: list[pa.Array] | None = None,
    ) -> tuple[bool, pa.Table | None]:
        found_suspects = self._suspects if found_suspects is None else found_suspects
        read = [*columns, ids] if ids is not None else columns
        if not read:
            return True, None
        file = pq.ParquetFile(str(path), read_dictionary=columns)
        kept: list[pa.Table] = []
        groups: list[int] = []
        rows = 0
        last = file.metadata.num_row_groups - 1
        order = _Order() if ids is not None else None
        for group in range(file.metadata.num_row_groups):
            groups.append(group)
            rows += file.metadata.row_group(group).num_rows
            if rows < READ_ROWS and group < last:
                continue
            if self._failed.is_set():
                return False, None
            table = file.read_row_groups(groups, columns=read, use_threads=True)
            groups, rows = [], 0
            for column in table.columns:
                if not all(_chunk_ok(chunk, found_suspects) for chunk in column.chunks):
                    return self._found_unclean(), None
            if order is not None and ids is not None:
                order.add(table.column(ids))
                self._ids_nulls += table.column(ids).null_count
                self._ids_max_bytes = max(self._ids_max_bytes, _max_bytes(table.column(ids)))
            if keep:
                kept.append(table.select(keep))
        if order is not None:
            self._increasing = order.increasing
        return True, pa.concat_tables(kept) if kept else None

    def _found_unclean(self) -> bool:
        self._unclean.set()
        self._failed.set()
        return False

    def result(self, con: duckdb.DuckDBPyConnection) -> TextScanResult:
        """Wait for the reads; the verdict (``con`` compares the suspects with ``trim()``).

        A read's error is raised here, unless a value was found not clean meanwhile (the file
        then takes the pipeline, which reports a damaged file its own way)."""
        for thread in self._threads:
            thread.join()
        if self._unclean.is_set():
            return TextScanResult(False)
        if self._errors:
            raise self._errors[0]
        found = self._suspects + self._paged_suspects
        if not (self._clean and self._paged_clean) or not all_trimmed(con, found):
            return TextScanResult(False)
        return TextScanResult(
            True, self._kept, self._increasing, self._ids_nulls, self._ids_max_bytes
        )


def _read_as_string(schema: pa.Schema, column: str) -> bool:
    """Whether pyarrow reads ``column`` as ``string`` values (perhaps dictionary-encoded), the
    only type :func:`_chunk_ok` accepts."""
    if schema.get_field_index(column) < 0:
        return False
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind))


def _max_bytes(column: pa.ChunkedArray) -> int:
    """The longest value of a string column, in bytes (0 when empty)."""
    longest = 0
    for chunk in column.chunks:
        if len(chunk):
            offsets = np.frombuffer(chunk.buffers()[1], np.int32)
            offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
            longest = max(longest, int(np.diff(offsets).max()))
    return longest


class _Order:
    """Whether the values added so far strictly increase in byte order (no NULL)."""

    def __init__(self) -> None:
        self.increasing = True
        self._last: str | None = None

    def add(self, column: pa.ChunkedArray) -> None:
        for chunk in column.chunks:
            if not self.increasing or not len(chunk):
                continue
            n = len(chunk)
            first, final = chunk[0].as_py(), chunk[n - 1].as_py()
            # Python compares str by code point, which is the byte order of UTF-8
            self.increasing = (
                chunk.null_count == 0
                and (self._last is None or self._last < first)
                and (n == 1 or bool(pc.all(pc.less(chunk.slice(0, n - 1), chunk.slice(1))).as_py()))
            )
            self._last = final
