"""The side table of a Parquet segment, built with numpy from the file's dictionary codes.

A reference segment (store/segments.py) stores per row of its file, in file order, what the
import computes: ``seq``, ``person_id``, the canonical ``event`` and the ``channel``. Each of
the three depends on a few text columns that a shop repeats (names, ids, UTM values,
referrers, landing pages), and :func:`funnelscope.ingest.clean_text.scan_text` has already read
them as dictionaries. So each is computed once per *distinct* input, by the pipeline's own
definitions, and spread back to the rows by their codes:

* ``event``: :func:`~funnelscope.events.vocabulary.canonical_event` of each distinct name (the
  pipeline's ``_event_names``; the file is clean, so a raw name is its trimmed name);
* ``channel``: the pipeline's channel keys (``pipeline._channel_keys``, in SQL) and
  :func:`~funnelscope.events.channels.derive_channel` per distinct
  ``(utm_source, utm_medium, referrer, page_url)``, ``page_url`` only where there is a
  referrer (the channel reads the page only then);
* ``person_id``: ``identities.person_id`` of each distinct ``coalesce(user_id, anonymous_id)``
  (:data:`funnelscope.store.identity.PERSON_KEY`), looked up after stitching.

No join, no sort: the rows stay in file order, which the ``events`` view's positional join
needs. The SQL road (ingest/bulk.py) does the same with joins and an ``ORDER BY``.
"""

from __future__ import annotations

import threading
from typing import Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.errors import StoreError
from funnelscope.events.channels import derive_channel
from funnelscope.events.vocabulary import canonical_event
from funnelscope.ingest.pipeline import _channel_keys, _typed_columns

__all__ = ["SIDE_INPUTS", "SideInputs", "build_side_table"]

#: The text columns the side table derives from (those of them the file has).
SIDE_INPUTS: Final = (
    "event",
    "user_id",
    "anonymous_id",
    "utm_source",
    "utm_medium",
    "referrer",
    "page_url",
)


def _codes(table: pa.Table, name: str) -> tuple[pa.Array, np.ndarray]:
    """(values, per-row code): code 0 is NULL (value None), code i + 1 is ``values[i + 1]``.

    A column the file lacks is NULL in every row. Each row group has a dictionary of its own:
    the values of all of them are encoded once, and each chunk's indices are translated with
    numpy (``unify_dictionaries`` and ``fill_null`` per chunk cost several times more)."""
    rows = table.num_rows
    if name not in table.column_names:
        return pa.nulls(1, pa.string()), np.zeros(rows, np.int64)
    column = table.column(name)
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    chunks = [c for c in column.chunks if len(c)]
    dictionaries = [c.dictionary for c in chunks]
    if any(d.null_count for d in dictionaries):  # not what a Parquet reader gives: decode
        encoded = pc.dictionary_encode(column.cast(pa.string()).combine_chunks())
        codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64) + 1
        return pa.concat_arrays([pa.nulls(1, pa.string()), encoded.dictionary]), codes
    merged = pc.dictionary_encode(
        pa.concat_arrays([d.cast(pa.string()) for d in dictionaries])
        if dictionaries
        else pa.array([], pa.string())
    )
    # code of entry j of the concatenated dictionaries: its distinct value's index + 1
    translate = merged.indices.to_numpy().astype(np.int64) + 1
    codes = np.zeros(rows, np.int64)
    at = base = 0
    for chunk in column.chunks:
        n = len(chunk)
        if not n:
            continue
        indices = chunk.indices
        local = np.frombuffer(indices.buffers()[1], indices.type.to_pandas_dtype())[
            indices.offset : indices.offset + n
        ].astype(np.int64)
        if indices.null_count:
            bits = np.frombuffer(indices.buffers()[0], np.uint8)
            valid = np.unpackbits(bits, bitorder="little")[indices.offset : indices.offset + n]
            valid = valid.astype(bool)  # codes of NULL rows stay 0
            codes[at : at + n][valid] = translate[base + local[valid]]
        else:
            codes[at : at + n] = translate[base + local]
        at += n
        base += len(chunk.dictionary)
    return pa.concat_arrays([pa.nulls(1, pa.string()), merged.dictionary]), codes


def _distinct(key: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct key, each row's index into those) for keys in [0, size)."""
    rows = len(key)
    if size <= 4 * rows + 1024:  # a table lookup: no sort
        seen = np.zeros(size, bool)
        seen[key] = True
        inverse = (np.cumsum(seen) - 1)[key]
        first = np.empty(int(seen.sum()), np.int64)
        first[inverse[::-1]] = np.arange(rows - 1, -1, -1)
        return first, inverse
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def _combined(codes: list[tuple[np.ndarray, int]], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_distinct` over the combination of several columns' codes (code, width)."""
    key = np.zeros(rows, np.int64)
    size = 1
    for code, width in codes:
        if size * width >= 1 << 62:  # keep the key in 64 bits: renumber what we have densely
            first, key = _distinct(key, size)
            size = len(first)
        key = key * width + code
        size *= width
    return _distinct(key, size)


def _spread(values: list[str | None], inverse: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(inverse.astype(np.int32)), pa.array(values, pa.string())
    )


def _events(table: pa.Table) -> pa.DictionaryArray:
    values, codes = _codes(table, "event")
    names = [None if v is None else canonical_event(v) for v in values.to_pylist()]
    return _spread(names, codes)


def _channels(con: duckdb.DuckDBPyConnection, table: pa.Table) -> pa.DictionaryArray:
    inputs = ["utm_source", "utm_medium", "referrer", "page_url"]
    coded = {name: _codes(table, name) for name in inputs}
    page_values, page = coded["page_url"]
    coded["page_url"] = (page_values, np.where(coded["referrer"][1] > 0, page, 0))
    first, inverse = _combined(
        [(codes, len(values)) for values, codes in coded.values()], table.num_rows
    )
    distinct = pa.table(
        {name: values.take(pa.array(codes[first])) for name, (values, codes) in coded.items()}
    ).append_column("_i", pa.array(np.arange(len(first), dtype=np.int64)))
    # the store currency only types the currency column, which the channel keys do not read
    cols, _, _ = _typed_columns(pa.schema([(c, pa.string()) for c in inputs]), "USD")
    keys = ", ".join(f"{expr} AS {name}" for name, expr in _channel_keys(cols).items())
    con.register("_side_inputs", distinct)
    try:
        found = con.execute(f"SELECT {keys} FROM _side_inputs s ORDER BY _i").fetchall()
    finally:
        con.unregister("_side_inputs")
    # many inputs share their keys (landing pages differ, hosts do not): derive each key once
    channel: dict[tuple[str, str, str, bool], str] = {}
    for a, b, c, d in set(found):
        channel[(a, b, c, d)] = derive_channel(a, b, c, bool(d))
    return _spread([channel[row] for row in found], inverse)


def _person_keys(table: pa.Table) -> tuple[pa.Array, np.ndarray]:
    """(each distinct ``coalesce(user_id, anonymous_id)`` of the rows, each row's index)."""
    users, user = _codes(table, "user_id")
    anons, anon = _codes(table, "anonymous_id")
    # the person's id: the user id where there is one, else the anonymous id
    key = np.where(user > 0, user, len(users) + anon)
    first, inverse = _distinct(key, len(users) + len(anons))
    ids = pc.if_else(
        pa.array(user[first] > 0),
        users.take(pa.array(user[first])),
        anons.take(pa.array(anon[first])),
    )
    return ids, inverse


def _persons(con: duckdb.DuckDBPyConnection, ids: pa.Array, inverse: np.ndarray) -> pa.Array:
    """Each row's person: ``identities`` of its id (stitched before)."""
    con.register("_side_ids", pa.table({"distinct_id": ids, "_i": np.arange(len(ids))}))
    try:
        found = con.execute(
            "SELECT s._i, i.person_id FROM _side_ids s JOIN identities i USING (distinct_id)"
        ).fetchnumpy()
    finally:
        con.unregister("_side_ids")
    person = np.full(len(ids), -1, np.int64)
    person[np.asarray(found["_i"])] = np.asarray(found["person_id"])
    if (person < 0).any():  # every id was stitched before: a row without a person is a bug
        raise StoreError("segment side table: an id of the file has no person")
    return pa.array(person[inverse].astype(np.int32))


class SideInputs:
    """What the side table needs that stitching does not change (event names, channels, the
    rows' ids), computed on a thread of its own while the importing thread stitches.

    The channel keys are evaluated on a private in-memory DuckDB connection: they read only
    the distinct inputs, no table of the store.
    """

    def __init__(self, table: pa.Table) -> None:
        self.rows = table.num_rows
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(table,), name="segment-side", daemon=True
        )
        self._thread.start()

    def _run(self, table: pa.Table) -> None:
        try:
            self.event = _events(table)
            with duckdb.connect() as con:
                self.channel = _channels(con, table)
            self.ids, self.inverse = _person_keys(table)
        except BaseException as exc:  # re-raised by wait() on the importing thread
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def build_side_table(
    con: duckdb.DuckDBPyConnection, inputs: SideInputs, name: str, *, first_seq: int
) -> None:
    """Create the side table ``name`` (a trusted identifier) for the rows whose
    :class:`SideInputs` are ``inputs``, once their ids are stitched."""
    inputs.wait()
    rows = inputs.rows
    # DuckDB refuses register() while a result of the connection is unfinished (the caller's
    # last fetchone()): finish it with a statement of our own
    con.execute("SELECT 1").fetchall()
    side = pa.table(
        {
            "seq": pa.array(np.arange(first_seq, first_seq + rows, dtype=np.int64)),
            "person_id": _persons(con, inputs.ids, inputs.inverse),
            "event": inputs.event,
            "channel": inputs.channel,
        }
    )
    con.register("_side_src", side)
    try:
        # an insert from a plain scan keeps the rows in order (DuckDB preserves insertion order)
        con.execute(
            f"CREATE TABLE {name} AS SELECT seq, person_id, CAST(event AS VARCHAR) AS event, "
            "CAST(channel AS VARCHAR) AS channel FROM _side_src"
        )
    finally:
        con.unregister("_side_src")
