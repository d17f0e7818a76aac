"""The dictionary pages of a Parquet file's string columns, read without decoding a data page.

A column chunk written with a dictionary holds every distinct value of its row group in one
*dictionary page*, and its data pages hold only indices into it. When every data page of the
chunk is dictionary-encoded (``PLAIN_DICTIONARY`` or ``RLE_DICTIONARY``), the dictionary page's
values are all the values the chunk can hold (and perhaps a few no row uses): a check of every
value (ingest/clean_text.py) can read them alone, a few kilobytes where pyarrow would decode an
index for every row.

What is read, per column chunk (Parquet format, parquet.thrift):

* the page headers, one after the other from the chunk's first page to its end
  (``total_compressed_size``), in the Thrift compact protocol. Only ``PageHeader``'s type and
  sizes and the ``num_values`` and ``encoding`` of ``DataPageHeader``, ``DataPageHeaderV2``
  and ``DictionaryPageHeader`` are kept; every other field (statistics, CRC, fields a later
  format adds) is skipped by its wire type;
* the dictionary page's bytes as stored (UNCOMPRESSED, SNAPPY, GZIP, ZSTD, BROTLI or LZ4_RAW):
  PLAIN ``BYTE_ARRAY`` values (a 4-byte little-endian length, then the bytes). They are
  decoded by pyarrow's own Parquet reader, in C++, from a small Parquet file written here in
  memory, in which each dictionary page is the one PLAIN data page of a row group of a
  required string column (:func:`decode_pages`): no value is touched in Python, and no numba
  (whose first call in a process costs 0.3-0.5 s), then checked as UTF-8 (pyarrow's read of a
  Parquet file does not check it; DuckDB's does, and fails).

The answer for a column is one array per row group, or *cannot tell*, never an exception:
a chunk with no dictionary page, a data page that is not dictionary-encoded (a writer falls
back to PLAIN pages when the dictionary grows past its limit), a page type or encoding not
listed above, the deprecated Hadoop-framed LZ4 or LZO, page headers that do not add up to the
chunk's size and value count (an encrypted or damaged file), a nested or non-``BYTE_ARRAY``
column. A caller then reads the column as it would have without this module.
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "ColumnDictionaries",
    "DictionaryPage",
    "DictionaryPages",
    "decode_pages",
    "read_dictionaries",
]

#: pyarrow's name of a column chunk's codec -> its parquet.thrift ``CompressionCodec``, for the
#: codecs read here. pyarrow names LZ4_RAW "LZ4", and the Hadoop-framed LZ4 "UNKNOWN".
CODECS: Final = {"UNCOMPRESSED": 0, "SNAPPY": 1, "GZIP": 2, "BROTLI": 4, "ZSTD": 6, "LZ4": 7}

# parquet.thrift enums
_DATA_PAGE: Final = 0
_DICTIONARY_PAGE: Final = 2
_DATA_PAGE_V2: Final = 3
_PLAIN: Final = 0
_PLAIN_DICTIONARY: Final = 2
_RLE: Final = 3
_RLE_DICTIONARY: Final = 8
_DICTIONARY_ENCODINGS: Final = frozenset({_PLAIN_DICTIONARY, _RLE_DICTIONARY})

#: Bytes read for a page header at first; a longer one (large statistics) is read again whole.
HEADER_WINDOW: Final = 512
#: Thrift structs nested deeper than this are taken for damage.
_MAX_DEPTH: Final = 16

# The fields of PageHeader kept (id -> "int", or a nested struct's own map); others are skipped.
_Spec = dict[int, "str | _Spec"]
_PAGE_HEADER: Final[_Spec] = {
    1: "int",  # type
    2: "int",  # uncompressed_page_size
    3: "int",  # compressed_page_size
    5: {1: "int", 2: "int"},  # data_page_header: num_values, encoding
    7: {1: "int", 2: "int"},  # dictionary_page_header: num_values, encoding
    8: {1: "int", 4: "int"},  # data_page_header_v2: num_values, encoding
}


@dataclass(frozen=True, slots=True)
class ColumnDictionaries:
    """The dictionary values of one string column, one array per row group in file order.

    ``values`` is None when the pages cannot tell (``reason`` says why); ``is_valid_utf8`` is
    False when some dictionary value is not UTF-8 (``values`` then None as well).
    """

    column: str
    values: tuple[pa.StringArray, ...] | None
    is_valid_utf8: bool = True
    reason: str = ""

    @property
    def is_known(self) -> bool:
        """Whether ``values`` holds every value the column's rows can take."""
        return self.values is not None


class _CannotTell(Exception):
    """The pages are not what this module reads: the column is read some other way."""


class _NotUtf8(Exception):
    """A dictionary value is not UTF-8."""


class _Truncated(_CannotTell):
    """A Thrift struct runs past the bytes at hand (read more, or the file is damaged)."""


class DictionaryPages:
    """An open Parquet file whose string columns' dictionary pages are read on request.

    Parameters
    ----------
    path
        The Parquet file.
    metadata
        Its footer, when the caller has it already (else read here).

    Examples
    --------
    >>> import pyarrow as pa, pyarrow.parquet as pq, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "e.parquet"
    >>> pq.write_table(pa.table({"a": ["x", "y", "x", None]}), path)
    >>> with DictionaryPages(path) as pages:
    ...     pages.column("a").values[0].to_pylist()
    ['x', 'y']
    """

    def __init__(self, path: Path, metadata: pq.FileMetaData | None = None) -> None:
        self._fd = -1
        self._error = ""
        try:
            self._fd = os.open(path, os.O_RDONLY)
            self._metadata = metadata if metadata is not None else pq.read_metadata(path)
            size = os.fstat(self._fd).st_size
            if os.pread(self._fd, 4, size - 4) != b"PAR1":  # "PARE": an encrypted footer
                self._error = "not a plain Parquet file"
            elif _has_encryption(path):
                self._error = "encrypted columns"
        except Exception as exc:  # a file pyarrow cannot open: cannot tell
            self._error = f"unreadable footer: {exc}"

    def __enter__(self) -> DictionaryPages:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def column(self, name: str) -> ColumnDictionaries:
        """The dictionary values of the top-level string column ``name`` in every row group,
        or why they cannot tell the column's values."""
        if self._error:
            return ColumnDictionaries(name, None, reason=self._error)
        try:
            leaf = self._leaf(name)
            pages = [
                self._chunk(self._metadata.row_group(group).column(leaf))
                for group in range(self._metadata.num_row_groups)
            ]
            values = decode_pages(pages)
        except _CannotTell as exc:
            return ColumnDictionaries(name, None, reason=str(exc))
        except _NotUtf8 as exc:
            return ColumnDictionaries(name, None, is_valid_utf8=False, reason=str(exc))
        except Exception as exc:  # anything unforeseen: read it as before
            return ColumnDictionaries(name, None, reason=f"{type(exc).__name__}: {exc}")
        return ColumnDictionaries(name, tuple(values))

    def _leaf(self, name: str) -> int:
        schema = self._metadata.schema
        found = [i for i in range(len(schema)) if schema.column(i).path == name]
        if len(found) != 1:
            raise _CannotTell(f"{len(found)} leaf columns named {name!r}")
        column = schema.column(found[0])
        if column.physical_type != "BYTE_ARRAY" or column.max_repetition_level != 0:
            raise _CannotTell(f"{name!r} is not a flat BYTE_ARRAY column")
        if column.max_definition_level > 1:
            raise _CannotTell(f"{name!r} is nested")
        return found[0]

    def _chunk(self, chunk: pq.ColumnChunkMetaData) -> DictionaryPage:
        """The dictionary page of one column chunk whose data pages all use it."""
        if chunk.compression not in CODECS:
            raise _CannotTell(f"codec {chunk.compression}")
        # the chunk's first page (byte 0 is the file's magic, so 0 means "none": pyarrow writes
        # data_page_offset 0 for a row group of no rows)
        firsts = [chunk.data_page_offset]
        if chunk.has_dictionary_page:
            firsts.append(chunk.dictionary_page_offset)
        firsts = [offset for offset in firsts if offset is not None and offset > 0]
        if not firsts:
            raise _CannotTell("no page offset")
        start = min(firsts)
        end = start + chunk.total_compressed_size
        pos = start
        dictionary: DictionaryPage | None = None
        values = 0
        while pos < end:
            header, pos = self._header(pos, end)
            kind = header.get(1)
            size = header.get(3)
            if not isinstance(size, int) or size < 0 or pos + size > end:
                raise _CannotTell("page size out of the chunk")
            if kind == _DICTIONARY_PAGE and dictionary is None and values == 0:
                dictionary = self._dictionary(header, pos, size, chunk.compression)
            elif kind in (_DATA_PAGE, _DATA_PAGE_V2) and dictionary is not None:
                page = header.get(5 if kind == _DATA_PAGE else 8)
                if not isinstance(page, dict) or page.get(2 if kind == _DATA_PAGE else 4) not in (
                    _DICTIONARY_ENCODINGS
                ):
                    raise _CannotTell("a data page not dictionary-encoded")
                count = page.get(1)
                if not isinstance(count, int) or count < 0:
                    raise _CannotTell("bad num_values")
                values += count
            else:
                raise _CannotTell(f"page type {kind} where it is not expected")
            pos += size
        if pos != end or values != chunk.num_values:
            raise _CannotTell("pages do not add up to the column chunk")
        if dictionary is None:
            if chunk.num_values:
                raise _CannotTell("no dictionary page")
            dictionary = DictionaryPage(0, 0, b"", "UNCOMPRESSED")
        return dictionary

    def _header(self, pos: int, end: int) -> tuple[dict[int, object], int]:
        window = HEADER_WINDOW
        while True:
            want = min(window, end - pos)
            raw = os.pread(self._fd, want, pos)
            try:
                header, used = _struct(raw, 0, _PAGE_HEADER, 0)
            except _Truncated:
                if want == end - pos or len(raw) < want:  # the chunk's or the file's end
                    raise
                window *= 8
                continue
            return header, pos + used

    def _dictionary(
        self, header: dict[int, object], pos: int, size: int, codec: str
    ) -> DictionaryPage:
        page = header.get(7)
        full = header.get(2)
        if not isinstance(page, dict) or page.get(2) not in (_PLAIN, _PLAIN_DICTIONARY):
            raise _CannotTell("dictionary page not PLAIN")
        count = page.get(1)
        if not isinstance(count, int) or count < 0 or not isinstance(full, int) or full < 0:
            raise _CannotTell("bad dictionary page header")
        if codec == "UNCOMPRESSED" and full != size:
            raise _CannotTell("dictionary page size differs from its header")
        body = os.pread(self._fd, size, pos)
        if len(body) != size:
            raise _Truncated("file shorter than its pages")
        return DictionaryPage(count, full, body, codec)


def _has_encryption(path: Path) -> bool:
    """Whether a file with a plaintext footer has encrypted columns. Asked of DuckDB: pyarrow
    aborts the process (a C++ exception it does not catch) when asked for the metadata of an
    encrypted column chunk without its key, where its reads raise ``OSError``."""
    try:
        with _FOOTERS_LOCK:
            global _footers
            if _footers is None:  # a DuckDB instance costs 15-25 ms; a cursor of it 1-2 ms
                _footers = duckdb.connect(config={"threads": 1})
            cursor = _footers.cursor()
        with cursor:
            # the path is a glob to DuckDB: only its own row answers ("[" in a name...)
            row = cursor.execute(
                "SELECT encryption_algorithm FROM parquet_file_metadata($path)"
                " WHERE file_name = $path",
                {"path": str(path)},
            ).fetchone()
    except duckdb.Error:  # DuckDB cannot read the footer's encryption fields either
        return True
    return row is None or row[0] is not None


_FOOTERS_LOCK: Final = threading.Lock()
#: The in-memory DuckDB that reads footers for :func:`_has_encryption` (made on first use).
_footers: duckdb.DuckDBPyConnection | None = None


def read_dictionaries(path: Path, columns: Sequence[str]) -> dict[str, ColumnDictionaries]:
    """:meth:`DictionaryPages.column` of each of ``columns``.

    Examples
    --------
    >>> import pyarrow as pa, pyarrow.parquet as pq, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "e.parquet"
    >>> pq.write_table(pa.table({"a": ["x", "x"], "b": [" y", None]}), path,
    ...                use_dictionary=["a"])
    >>> found = read_dictionaries(path, ["a", "b"])
    >>> found["a"].values[0].to_pylist(), found["b"].is_known
    (['x'], False)
    """
    with DictionaryPages(path) as pages:
        return {name: pages.column(name) for name in columns}


@dataclass(frozen=True, slots=True)
class DictionaryPage:
    """A dictionary page as stored: ``count`` PLAIN BYTE_ARRAY values, ``size`` bytes once
    decompressed, compressed with ``codec`` (pyarrow's name of a column chunk's codec)."""

    count: int
    size: int
    body: bytes
    codec: str


def decode_pages(pages: Sequence[DictionaryPage]) -> list[pa.StringArray]:
    """The values of each page, as validated string arrays (``_NotUtf8`` when one is not
    UTF-8, ``_CannotTell`` when a page's values do not fill it exactly).

    The pages are decoded by pyarrow's own Parquet reader, in C++: each becomes the one PLAIN
    data page of a row group of a small Parquet file of one required string column, written
    here (its body as stored, compressed or not), so no value is touched in Python.
    """
    out = [pa.nulls(0, pa.string())] * len(pages)
    used = [i for i, page in enumerate(pages) if page.count]
    if not used:
        return out
    try:
        file = pq.ParquetFile(pa.BufferReader(_parquet_of([pages[i] for i in used])))
        column = file.read(use_threads=False).column(0)
    except (pa.ArrowException, OSError) as exc:  # a length past the page's end, bad codec data
        raise _CannotTell(f"dictionary page unreadable: {exc}") from None
    if [len(chunk) for chunk in column.chunks] == [pages[i].count for i in used]:
        arrays = column.chunks
    else:
        at = np.cumsum([0] + [pages[i].count for i in used]).tolist()
        arrays = [column.slice(a, b - a).combine_chunks() for a, b in itertools.pairwise(at)]
    for i, array in zip(used, arrays, strict=True):
        offsets = np.frombuffer(array.buffers()[1], np.int32)
        first, last = offsets[array.offset], offsets[array.offset + len(array)]
        if int(last - first) + 4 * len(array) != pages[i].size:
            raise _CannotTell("dictionary page values do not fill the page")
        try:
            array.validate(full=True)
        except pa.ArrowInvalid as exc:
            raise _NotUtf8(str(exc)) from None
        out[i] = array
    return out


# --- Thrift compact protocol (only what a page header needs) --------------------------------


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(raw):
            raise _Truncated("page header runs past the bytes read")
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _CannotTell("varint too long")


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _struct(raw: bytes, pos: int, spec: _Spec, depth: int) -> tuple[dict[int, object], int]:
    """The fields of ``spec`` of the struct at ``pos`` (integers and nested structs; others
    skipped), and the position after its STOP byte."""
    if depth > _MAX_DEPTH:
        raise _CannotTell("structs nested too deep")
    found: dict[int, object] = {}
    last = 0
    while True:
        if pos >= len(raw):
            raise _Truncated("page header runs past the bytes read")
        byte = raw[pos]
        pos += 1
        kind = byte & 0x0F
        if kind == 0:
            return found, pos
        if byte >> 4:
            field = last + (byte >> 4)
        else:
            field, pos = _varint(raw, pos)
            field = _zigzag(field)
        last = field
        want = spec.get(field)
        if want is None:
            pos = _skip(raw, pos, kind, depth)
        elif want == "int" and kind in (4, 5, 6):  # i16, i32, i64: zigzag varints
            value, pos = _varint(raw, pos)
            found[field] = _zigzag(value)
        elif isinstance(want, dict) and kind == 12:
            found[field], pos = _struct(raw, pos, want, depth + 1)
        else:
            raise _CannotTell(f"field {field} has wire type {kind}")


def _skip(raw: bytes, pos: int, kind: int, depth: int) -> int:
    """The position after a value of wire type ``kind`` at ``pos``."""
    if kind in (1, 2):  # a boolean field: its value is the type itself
        return pos
    if kind == 3:
        end = pos + 1
    elif kind in (4, 5, 6):
        return _varint(raw, pos)[1]
    elif kind == 7:
        end = pos + 8
    elif kind == 8:
        length, pos = _varint(raw, pos)
        end = pos + length
    elif kind in (9, 10):  # list, set
        if pos >= len(raw):
            raise _Truncated("page header runs past the bytes read")
        head = raw[pos]
        pos += 1
        size, element = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _varint(raw, pos)
        for _ in range(size):
            pos = _skip_element(raw, pos, element, depth)
        return pos
    elif kind == 11:  # map
        size, pos = _varint(raw, pos)
        if size:
            if pos >= len(raw):
                raise _Truncated("page header runs past the bytes read")
            types = raw[pos]
            pos += 1
            for _ in range(size):
                pos = _skip_element(raw, pos, types >> 4, depth)
                pos = _skip_element(raw, pos, types & 0x0F, depth)
        return pos
    elif kind == 12:
        return _struct(raw, pos, {}, depth + 1)[1]
    else:
        raise _CannotTell(f"unknown wire type {kind}")
    if end > len(raw):
        raise _Truncated("page header runs past the bytes read")
    return end


def _skip_element(raw: bytes, pos: int, kind: int, depth: int) -> int:
    # in a list or map a boolean takes one byte of its own
    if pos >= len(raw):
        raise _Truncated("page header runs past the bytes read")
    return pos + 1 if kind in (1, 2) else _skip(raw, pos, kind, depth)


# --- and the few structs of a Parquet file holding dictionary pages as data pages ----------

_I32: Final = 5
_I64: Final = 6
_BINARY: Final = 8
_LIST: Final = 9
_STRUCT: Final = 12


def _parquet_of(pages: Sequence[DictionaryPage]) -> bytes:
    """A Parquet file of one REQUIRED string column ``v``, a row group per page, whose only
    data page is the page's body as a PLAIN data page (a required column has no levels)."""
    parts = [b"PAR1"]
    offset = 4
    groups = []
    for page in pages:
        levels = ((1, page.count), (2, _PLAIN), (3, _RLE), (4, _RLE))
        header = _write_struct(
            (1, _I32, _int(0)),  # DATA_PAGE
            (2, _I32, _int(page.size)),
            (3, _I32, _int(len(page.body))),
            # num_values, PLAIN, and the levels' encodings (required fields; RLE, but empty)
            (5, _STRUCT, _write_struct(*((k, _I32, _int(v)) for k, v in levels))),
        )
        parts += (header, page.body)
        meta = _write_struct(
            (1, _I32, _int(6)),  # BYTE_ARRAY
            (2, _LIST, _write_list(_I32, [_int(0)])),  # PLAIN
            (3, _LIST, _write_list(_BINARY, [_binary(b"v")])),
            (4, _I32, _int(CODECS[page.codec])),
            (5, _I64, _int(page.count)),
            (6, _I64, _int(len(header) + page.size)),
            (7, _I64, _int(len(header) + len(page.body))),
            (9, _I64, _int(offset)),  # data_page_offset
        )
        chunk = _write_struct((2, _I64, _int(offset)), (3, _STRUCT, meta))
        groups.append(
            _write_struct(
                (1, _LIST, _write_list(_STRUCT, [chunk])),
                (2, _I64, _int(len(header) + page.size)),
                (3, _I64, _int(page.count)),
            )
        )
        offset += len(header) + len(page.body)
    schema = [
        _write_struct((4, _BINARY, _binary(b"schema")), (5, _I32, _int(1))),
        # BYTE_ARRAY, REQUIRED, "v", converted type UTF8
        _write_struct(
            (1, _I32, _int(6)), (3, _I32, _int(0)), (4, _BINARY, _binary(b"v")), (6, _I32, _int(0))
        ),
    ]
    footer = _write_struct(
        (1, _I32, _int(1)),
        (2, _LIST, _write_list(_STRUCT, schema)),
        (3, _I64, _int(sum(page.count for page in pages))),
        (4, _LIST, _write_list(_STRUCT, groups)),
    )
    return b"".join((*parts, footer, struct.pack("<I", len(footer)), b"PAR1"))


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(value: int) -> bytes:
    return _write_varint((value << 1) ^ (value >> 63))  # zigzag


def _binary(value: bytes) -> bytes:
    return _write_varint(len(value)) + value


def _write_list(kind: int, items: list[bytes]) -> bytes:
    size = len(items)
    head = bytes([size << 4 | kind]) if size < 15 else bytes([0xF0 | kind]) + _write_varint(size)
    return head + b"".join(items)


def _write_struct(*fields: tuple[int, int, bytes]) -> bytes:
    """A struct of ``(field id, wire type, encoded value)`` in increasing field order (ids
    1-15 apart: a short field header each)."""
    out = bytearray()
    last = 0
    for field, kind, value in fields:
        out.append((field - last) << 4 | kind)
        out += value
        last = field
    out.append(0)
    return bytes(out)
