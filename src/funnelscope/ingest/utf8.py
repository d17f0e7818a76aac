"""Rows of an Arrow table whose text is not UTF-8, told apart before DuckDB sees them.

Arrow's ``string`` type promises UTF-8, but nothing checks the promise when a Parquet file is
read (pyarrow's reader does not validate) or a frame is built from raw buffers. DuckDB does
check, and a value that breaks it is a *fatal* error: the connection, and with it the store, is
closed. So every table that reaches the pipeline from outside (Parquet batches, frames) is
checked first; a row with such a value is quarantined as ``row.invalid_utf8``, as a CSV record
with bytes that are not UTF-8 is, and the rest of the rows go on.

The check costs one numpy pass over a column's bytes when they are all ASCII (every byte under
0x80 is UTF-8 as it is), else pyarrow's full validation at C speed; only a column that fails it
is searched value by value for the rows to reject.
"""

from __future__ import annotations

import json
from typing import Any, Final

import numpy as np
import pyarrow as pa

from funnelscope.ingest.pipeline import Rejection

__all__ = ["INVALID_UTF8", "is_utf8", "split_invalid_utf8"]

#: The reason code of a row with text that is not UTF-8 (the same as CSV's).
INVALID_UTF8: Final = "row.invalid_utf8"
_MESSAGE: Final = "the row has text that is not UTF-8: write the file's text as UTF-8"


def _ascii(array: pa.Array) -> bool:
    """Whether a plain string array's bytes are all under 0x80 (then surely UTF-8)."""
    data = array.buffers()[2]
    if data is None or len(array) == 0:
        return True
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], width)[array.offset : array.offset + len(array) + 1]
    raw = np.frombuffer(data, np.uint8)[int(offsets[0]) : int(offsets[-1])]
    return not len(raw) or int(raw.max()) < 0x80


def is_utf8(array: pa.Array) -> bool:
    """Whether every text value of ``array`` (a string array, or one nesting strings) is UTF-8:
    one numpy pass over a string array's bytes when they are all ASCII, else pyarrow's full
    validation, at C speed."""
    if (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)) and _ascii(array):
        return True
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _bad_rows(array: pa.Array) -> np.ndarray:
    """Positions of the values of ``array`` that hold text which is not UTF-8."""
    bad = []
    for i in range(len(array)):
        if not is_utf8(array.slice(i, 1)):
            bad.append(i)
    return np.asarray(bad, np.int64)


def _has_text(kind: pa.DataType) -> bool:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return True
    if pa.types.is_dictionary(kind):
        return _has_text(kind.value_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _has_text(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_has_text(field.type) for field in kind)
    return False


def _payload(row: dict[str, Any]) -> bytes:
    """The row as JSON (as the pipeline's payloads are), its bytes kept as they were."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode("utf-8", "surrogateescape")
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    text = json.dumps(plain(row), ensure_ascii=False, default=str)
    return text.encode("utf-8", "surrogateescape")


def _value(column: pa.ChunkedArray, i: int) -> Any:
    """Row ``i`` of ``column`` as Python, text as bytes (it may not decode)."""
    value = column.slice(i, 1).combine_chunks()
    if isinstance(value, pa.DictionaryArray):
        value = value.cast(value.type.value_type)
    if pa.types.is_string(value.type):
        value = value.view(pa.binary())
    elif pa.types.is_large_string(value.type):
        value = value.view(pa.large_binary())
    try:
        return value.to_pylist()[0]
    except UnicodeDecodeError:  # text nested in a list or struct: named, not shown
        return f"<{value.type} with text that is not UTF-8>"


def split_invalid_utf8(
    table: pa.Table, rows: np.ndarray | None = None
) -> tuple[pa.Table, list[Rejection]]:
    """``table`` without its rows that hold text which is not UTF-8, and a rejection for each.

    ``rows``: each row's number for its rejection (default: its position).

    Examples
    --------
    >>> import pyarrow as pa
    >>> raw = pa.array([b"ok", b"caf\\xe9"], pa.binary())
    >>> text = pa.Array.from_buffers(pa.string(), 2, raw.buffers())
    >>> kept, rejected = split_invalid_utf8(pa.table({"page_title": text, "n": [1, 2]}))
    >>> kept.num_rows, [(r.row, r.code, r.payload) for r in rejected]
    (1, [(1, 'row.invalid_utf8', b'{"page_title": "caf\\xe9", "n": 2}')])
    """
    bad = np.empty(0, np.int64)
    for column in table.columns:
        if not _has_text(column.type):
            continue
        at = 0
        for chunk in column.chunks:
            if isinstance(chunk, pa.DictionaryArray):
                if not is_utf8(chunk.dictionary):
                    bad = np.union1d(bad, _bad_rows(chunk.cast(chunk.type.value_type)) + at)
            elif not is_utf8(chunk):
                bad = np.union1d(bad, _bad_rows(chunk) + at)
            at += len(chunk)
    if not len(bad):
        return table, []
    numbers = np.arange(table.num_rows) if rows is None else rows
    rejections = [
        Rejection(
            int(numbers[i]),
            INVALID_UTF8,
            _MESSAGE,
            _payload({name: _value(table.column(name), i) for name in table.column_names}),
        )
        for i in bad.tolist()
    ]
    keep = np.ones(table.num_rows, bool)
    keep[bad] = False
    return table.filter(pa.array(keep)), rejections
