"""The side table of a Parquet segment, built with numpy from the file's dictionary codes.

A reference segment (store/segments.py) stores per row of its file, in file order, what the
import computes: ``seq``, ``person_id``, the canonical ``event`` and the ``channel``. Each of
the three depends on a few text columns that a shop repeats (names, ids, UTM values,
referrers, landing pages), and :func:`funnelscope.ingest.clean_text.scan_text` has already read
them as dictionaries. So each is computed once per *distinct* input, by the pipeline's own
definitions, and spread back to the rows by their codes:

* ``event``: :func:`~funnelscope.events.vocabulary.canonical_event` of each distinct name (the
  pipeline's ``_event_names``; the file is clean, so a raw name is its trimmed name);
* ``channel``: the pipeline's channel keys (``pipeline._channel_keys``, in SQL) per distinct
  value of each input column, the "internal" key by comparing host codes, and
  :func:`~funnelscope.events.channels.derive_channel` per distinct combination of keys;
* ``person_id``: ``identities.person_id`` of each distinct ``coalesce(user_id, anonymous_id)``
  (:data:`funnelscope.store.identity.PERSON_KEY`), looked up after stitching.

Stitching itself reads the distinct ``(user_id, anonymous_id, previous_id)`` triples at their
earliest times: they come from the same codes, first, so that stitching can start early.

No join, no sort: the rows stay in file order, which the ``events`` view's positional join
needs. The SQL road (ingest/bulk.py) does the same with joins and an ``ORDER BY``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.errors import StoreError
from funnelscope.events.channels import derive_channel, host_sql
from funnelscope.events.vocabulary import canonical_event
from funnelscope.ingest.pipeline import _channel_keys, _typed_columns

__all__ = ["SIDE_INPUTS", "SideInputs", "build_side_table"]

#: The text columns the side table derives from (those of them the file has).
SIDE_INPUTS: Final = (
    "event",
    "user_id",
    "anonymous_id",
    "previous_id",
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
        ]
        if indices.null_count == n or not len(chunk.dictionary):
            pass  # every row NULL: codes stay 0
        elif indices.null_count:
            bits = np.frombuffer(indices.buffers()[0], np.uint8)
            valid = np.unpackbits(bits, count=indices.offset + n, bitorder="little")
            valid = valid[indices.offset :]
            # a NULL row's index is unspecified: read entry 0 for it, then zero its code (no
            # boolean indexing: it costs several times a multiplication)
            np.multiply(translate[base + local * valid], valid, out=codes[at : at + n])
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
    else:  # a hash table (pyarrow): a tenth of the CPU of np.unique's sort at 1M rows
        encoded = pc.dictionary_encode(pa.array(key, pa.int64()))
        inverse = encoded.indices.to_numpy().astype(np.int64)
    first = np.empty(int(inverse.max()) + 1 if rows else 0, np.int64)
    first[inverse[::-1]] = np.arange(rows - 1, -1, -1)
    return first, inverse


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
    """Each row's channel: the pipeline's channel keys (``pipeline._channel_keys``) per
    distinct value of each input column, combined per row with numpy, and
    :func:`derive_channel` once per distinct combination of keys.

    Three keys read one column each (``utm_source``, ``utm_medium``, the referrer's host); the
    fourth (the referrer's host equals the page's) compares the two hosts, found per distinct
    referrer and per distinct page, by code: SQL's ``=`` on text is byte equality."""
    inputs = ["utm_source", "utm_medium", "referrer", "page_url"]
    coded = {name: _codes(table, name) for name in inputs}
    longest = max(len(values) for values, _ in coded.values())
    padded = pa.table(
        {
            name: pa.concat_arrays([values, pa.nulls(longest - len(values), pa.string())])
            for name, (values, _) in coded.items()
        }
    ).append_column("_i", pa.array(np.arange(longest, dtype=np.int64)))
    # the store currency only types the currency column, which the channel keys do not read
    cols, _, _ = _typed_columns(pa.schema([(c, pa.string()) for c in inputs]), "USD")
    keys = _channel_keys(cols)
    con.register("_side_inputs", padded)
    try:
        found = con.sql(
            f"SELECT {keys['_ch_src']} AS src, {keys['_ch_med']} AS med, "
            f"{keys['_ch_ref']} AS ref, {host_sql(cols['referrer'])} AS ref_host, "
            f"{host_sql(cols['page_url'])} AS page_host FROM _side_inputs s ORDER BY _i"
        ).to_arrow_table()
    finally:
        con.unregister("_side_inputs")
    # every key as a dense code per value of its column (row i of `found` is value i of each)
    src_codes, med_codes, ref_codes = (
        _value_codes(found.column(k), len(coded[c][0]))
        for k, c in (("src", "utm_source"), ("med", "utm_medium"), ("ref", "referrer"))
    )
    hosts = pc.dictionary_encode(
        pa.concat_arrays(
            [
                found.column("ref_host").combine_chunks()[: len(coded["referrer"][0])],
                found.column("page_host").combine_chunks()[: len(coded["page_url"][0])],
            ]
        )
    ).indices
    host = pc.fill_null(hosts, -1).to_numpy().astype(np.int64)
    ref_host, page_host = host[: len(coded["referrer"][0])], host[len(coded["referrer"][0]) :]
    referrer, page = coded["referrer"][1], coded["page_url"][1]
    # a NULL host (or a NULL referrer: code 0, whose host is NULL) is never internal
    internal = (ref_host[referrer] >= 0) & (ref_host[referrer] == page_host[page])
    parts = [
        (src_codes[coded["utm_source"][1]], int(src_codes.max()) + 1),
        (med_codes[coded["utm_medium"][1]], int(med_codes.max()) + 1),
        (ref_codes[referrer], int(ref_codes.max()) + 1),
        (internal.astype(np.int64), 2),
    ]
    first, inverse = _combined(parts, table.num_rows)
    src_values = found.column("src").to_pylist()
    med_values = found.column("med").to_pylist()
    ref_values = found.column("ref").to_pylist()
    source, medium = coded["utm_source"][1][first], coded["utm_medium"][1][first]
    names: list[str | None] = [
        derive_channel(src_values[a], med_values[b], ref_values[c], bool(d))
        for a, b, c, d in zip(
            source.tolist(),
            medium.tolist(),
            referrer[first].tolist(),
            internal[first].tolist(),
            strict=True,
        )
    ]
    return _spread(names, inverse)


def _value_codes(keys: pa.ChunkedArray, count: int) -> np.ndarray:
    """A dense code per value (the first ``count`` of ``keys``): equal keys, equal codes."""
    encoded = pc.dictionary_encode(keys.combine_chunks()[:count])
    codes: np.ndarray = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64) + 1
    return codes


_Coded = tuple[pa.Array, np.ndarray]  # (values, per-row code) of :func:`_codes`


def _person_keys(users_coded: _Coded, anons_coded: _Coded) -> tuple[pa.Array, np.ndarray]:
    """(each distinct ``coalesce(user_id, anonymous_id)`` of the rows, each row's index)."""
    users, user = users_coded
    anons, anon = anons_coded
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


def _triples(coded: list[_Coded], timestamps: pa.ChunkedArray) -> pa.Table:
    """Each distinct ``(user_id, anonymous_id, previous_id)`` of the rows (``coded``: those
    columns' :func:`_codes`) with its earliest ``timestamp`` (as TIMESTAMPTZ in
    microseconds): what stitching reads, from the codes (one 64-bit key per row, a hash table
    of integers) instead of a scan of the file."""
    first, inverse = _combined([(codes, len(values)) for values, codes in coded], len(timestamps))
    micros = timestamps.cast(pa.timestamp("us", tz="UTC"))
    ts = np.asarray(micros.combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False))
    earliest = ts[first]
    np.minimum.at(earliest, inverse, ts)  # the file's order need not be the time order
    return pa.table(
        {
            name: values.take(pa.array(codes[first]))
            for name, (values, codes) in zip(
                ("user_id", "anonymous_id", "previous_id"), coded, strict=True
            )
        }
        | {"timestamp": pa.array(earliest, pa.timestamp("us", tz="UTC"))}
    )


class SideInputs:
    """What the side table needs that stitching does not change (the distinct id triples
    stitching reads, event names, channels, the rows' ids), computed on a thread of its own
    while the importing thread stitches; the triples first, as stitching waits for them.

    ``timestamps``: the file's ``timestamp`` column (a tz-aware timestamp), read on the
    thread by a callable, for the triples' earliest times. The channel keys are evaluated on
    a private in-memory DuckDB connection: they read only the distinct inputs, no table of
    the store.
    """

    def __init__(self, table: pa.Table, timestamps: Callable[[], pa.ChunkedArray]) -> None:
        self.rows = table.num_rows
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()  # set by discard(): only the triples are wanted
        self._triples: pa.Table | None = None
        self._thread = threading.Thread(
            target=self._run, args=(table, timestamps), name="segment-side", daemon=True
        )
        self._thread.start()

    def _run(self, table: pa.Table, timestamps: Callable[[], pa.ChunkedArray]) -> None:
        try:
            users, anons = _codes(table, "user_id"), _codes(table, "anonymous_id")
            self._triples = _triples([users, anons, _codes(table, "previous_id")], timestamps())
            self._ready.set()
            if self._stop.is_set():
                return
            self.event = _events(table)
            with duckdb.connect() as con:
                self.channel = _channels(con, table)
            self.ids, self.inverse = _person_keys(users, anons)
        except BaseException as exc:  # re-raised by wait() on the importing thread
            self._error = exc
        finally:
            self._ready.set()

    def triples(self) -> pa.Table:
        """Wait for the distinct id triples (columns ``user_id``, ``anonymous_id``,
        ``previous_id``, ``timestamp``)."""
        self._ready.wait()
        if self._triples is None:
            self.wait()
            raise StoreError("segment side table: the id triples were not computed")
        return self._triples

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def discard(self, *, keep_triples: bool = False) -> None:
        """Stop after the triples (the file is not a new segment) and wait for the thread;
        ``keep_triples``: :meth:`triples` still answers (a re-import stitches from them)."""
        self._stop.set()
        self._thread.join()
        if not keep_triples:
            self._triples = None


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
