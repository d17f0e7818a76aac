"""The side table of a Parquet segment, built with numpy from the file's dictionary codes.

A reference segment (store/segments.py) stores per row of its file, in file order, what the
import computes: ``person_id``, the canonical ``event`` and the ``channel`` (as codes). Each of
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
from typing import Final, Generic, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.errors import StoreError
from funnelscope.events.channels import derive_channel, host_sql
from funnelscope.events.vocabulary import canonical_event
from funnelscope.ingest.pipeline import _channel_keys, _typed_columns
from funnelscope.store import segments as seg

__all__ = ["SIDE_INPUTS", "SideInputs", "build_side_table"]

_T = TypeVar("_T")

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


#: Rows per block of the per-row numpy work. Whole-file temporaries (40-80 MB a column at 10M
#: rows) cost more in page faults of fresh memory than in arithmetic, and grow the cost per row
#: with the file; a block's stay in the CPU caches and are reused by the allocator.
BLOCK_ROWS: Final = 1 << 20
#: Keys up to this many distinct values per row (``size <= LOOKUP_PER_ROW * rows + 1024``) are
#: numbered with a lookup table, larger ones with a hash table.
LOOKUP_PER_ROW: Final = 4
#: Combined keys stay under this (one int64 per row); wider combinations are numbered in parts.
KEY_LIMIT: Final = 1 << 62


def _blocks(rows: int) -> range:
    return range(0, rows, BLOCK_ROWS)


def _codes(table: pa.Table, name: str) -> tuple[pa.Array, np.ndarray]:
    """(values, per-row code, int32): code 0 is NULL (value None), code i + 1 is
    ``values[i + 1]``.

    A column the file lacks is NULL in every row. Each row group has a dictionary of its own:
    the values of all of them are encoded once, and each chunk's indices are translated with
    numpy (``unify_dictionaries`` and ``fill_null`` per chunk cost several times more)."""
    rows = table.num_rows
    if name not in table.column_names:
        return pa.nulls(1, pa.string()), np.zeros(rows, np.int32)
    column = table.column(name)
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    chunks = [c for c in column.chunks if len(c)]
    dictionaries = [c.dictionary for c in chunks]
    if any(d.null_count for d in dictionaries):  # not what a Parquet reader gives: decode
        encoded = pc.dictionary_encode(column.cast(pa.string()).combine_chunks())
        codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int32) + 1
        return pa.concat_arrays([pa.nulls(1, pa.string()), encoded.dictionary]), codes
    merged = pc.dictionary_encode(
        pa.concat_arrays([d.cast(pa.string()) for d in dictionaries])
        if dictionaries
        else pa.array([], pa.string())
    )
    # code of entry j of the concatenated dictionaries: its distinct value's index + 1
    translate = merged.indices.to_numpy().astype(np.int32) + 1
    codes = np.zeros(rows, np.int32)
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
            np.take(translate, base + local, out=codes[at : at + n])
        at += n
        base += len(chunk.dictionary)
    return pa.concat_arrays([pa.nulls(1, pa.string()), merged.dictionary]), codes


def _dense(
    keys_of: Callable[[int, int], np.ndarray], rows: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct keys, each row's index into them as int32) of the integer keys in
    ``[0, size)`` that ``keys_of(lo, hi)`` gives for the rows ``lo:hi``, block by block."""
    if size <= LOOKUP_PER_ROW * rows + 1024:  # a table lookup: no sort, no hash
        seen = np.zeros(size, bool)
        inverse = np.empty(rows, np.int32)
        for lo in _blocks(rows):
            key = keys_of(lo, min(lo + BLOCK_ROWS, rows))
            seen[key] = True
            inverse[lo : lo + len(key)] = key
        rank = np.cumsum(seen, dtype=np.int32)
        rank -= 1
        for lo in _blocks(rows):
            block = inverse[lo : lo + BLOCK_ROWS]
            np.take(rank, block, out=block)
        return np.flatnonzero(seen), inverse
    keys = np.empty(rows, np.int64)  # a hash table (pyarrow): a tenth of np.unique's sort
    for lo in _blocks(rows):
        keys[lo : min(lo + BLOCK_ROWS, rows)] = keys_of(lo, min(lo + BLOCK_ROWS, rows))
    encoded = pc.dictionary_encode(pa.array(keys))
    distinct = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), np.int64)
    return distinct, encoded.indices.to_numpy().astype(np.int32, copy=False)


def _spread(values: list[str | None], inverse: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(inverse.astype(np.int32, copy=False)), pa.array(values, pa.string())
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
    host = pc.fill_null(hosts, -1).to_numpy().astype(np.int32)
    ref_host, page_host = host[: len(coded["referrer"][0])], host[len(coded["referrer"][0]) :]
    source, medium = coded["utm_source"][1], coded["utm_medium"][1]
    referrer, page = coded["referrer"][1], coded["page_url"][1]
    widths = [int(c.max()) + 1 for c in (src_codes, med_codes, ref_codes)]
    rows = table.num_rows

    def source_medium(lo: int, hi: int) -> np.ndarray:
        key: np.ndarray = src_codes[source[lo:hi]]
        key *= widths[1]
        key += med_codes[medium[lo:hi]]
        return key

    pairs: np.ndarray | None = None
    pair: np.ndarray | None = None
    if widths[0] * widths[1] * widths[2] * 2 >= KEY_LIMIT:
        # too many combinations for one 64-bit integer: number the (source, medium) pairs first
        pairs, pair = _dense(source_medium, rows, widths[0] * widths[1])

    def row_keys(lo: int, hi: int) -> np.ndarray:
        """One integer per row of its four keys' codes (mixed radix: source and medium,
        referrer, internal), for the rows ``lo:hi``."""
        ref = referrer[lo:hi]
        host = ref_host[ref]
        # a NULL host (or a NULL referrer: code 0, whose host is NULL) is never internal
        internal = (host >= 0) & (host == page_host[page[lo:hi]])
        key = source_medium(lo, hi) if pair is None else pair[lo:hi].astype(np.int64)
        key *= widths[2]
        key += ref_codes[ref]
        key *= 2
        key += internal
        return key

    span = widths[0] * widths[1] if pairs is None else len(pairs)
    distinct, inverse = _dense(row_keys, rows, span * widths[2] * 2)
    # each distinct combination's keys, back from its integer; a key's text from any value
    # with that key's code
    internal_of, rest = distinct % 2, distinct // 2
    ref_of, rest = rest % widths[2], rest // widths[2]
    rest = rest if pairs is None else pairs[rest]
    med_of, src_of = rest % widths[1], rest // widths[1]
    texts = []
    for name, codes in (("src", src_codes), ("med", med_codes), ("ref", ref_codes)):
        value = np.zeros(int(codes.max()) + 1, np.int64)
        value[codes] = np.arange(len(codes))
        texts.append((found.column(name).to_pylist(), value))
    (src_values, src_value), (med_values, med_value), (ref_values, ref_value) = texts
    names: list[str | None] = [
        derive_channel(src_values[a], med_values[b], ref_values[c], bool(d))
        for a, b, c, d in zip(
            src_value[src_of].tolist(),
            med_value[med_of].tolist(),
            ref_value[ref_of].tolist(),
            internal_of.tolist(),
            strict=True,
        )
    ]
    return _spread(names, inverse)


def _value_codes(keys: pa.ChunkedArray, count: int) -> np.ndarray:
    """A dense code per value (the first ``count`` of ``keys``): equal keys, equal codes."""
    encoded = pc.dictionary_encode(keys.combine_chunks()[:count])
    codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64) + 1
    return np.asarray(codes, np.int64)


_Coded = tuple[pa.Array, np.ndarray]  # (values, per-row code) of :func:`_codes`


def _person_keys(users_coded: _Coded, anons_coded: _Coded) -> tuple[pa.Array, np.ndarray]:
    """(each distinct ``coalesce(user_id, anonymous_id)`` of the rows, each row's index)."""
    users, user = users_coded
    anons, anon = anons_coded
    count = len(users)

    def keys(lo: int, hi: int) -> np.ndarray:
        # the person's id: the user id where there is one, else the anonymous id
        block = user[lo:hi]
        return np.where(block > 0, block, anon[lo:hi] + count)

    distinct, inverse = _dense(keys, len(user), count + len(anons))
    is_user = distinct < count
    ids = pc.if_else(
        pa.array(is_user),
        users.take(pa.array(np.where(is_user, distinct, 0))),
        anons.take(pa.array(np.where(is_user, 0, distinct - count))),
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
    person = np.full(len(ids), -1, np.int32)
    person[np.asarray(found["_i"])] = np.asarray(found["person_id"])
    if (person < 0).any():  # every id was stitched before: a row without a person is a bug
        raise StoreError("segment side table: an id of the file has no person")
    return pa.array(person[inverse])


def _triples(coded: list[_Coded], timestamps: pa.ChunkedArray) -> pa.Table:
    """Each distinct ``(user_id, anonymous_id, previous_id)`` of the rows (``coded``: those
    columns' :func:`_codes`) with its earliest ``timestamp`` (as TIMESTAMPTZ in
    microseconds): what stitching reads, from the codes (one 64-bit key per row, pyarrow's
    hash aggregation of integers) instead of a scan of the file. The file's order need not be
    the time order."""
    (user, users), (anon, anons), (previous, previouses) = (
        (codes, len(values)) for values, codes in coded
    )
    rows = len(timestamps)
    micros = timestamps.cast(pa.timestamp("us", tz="UTC"))
    if users * anons * previouses < KEY_LIMIT:
        key = np.empty(rows, np.int64)
        for lo in _blocks(rows):
            block = key[lo : lo + BLOCK_ROWS]
            hi = lo + len(block)
            np.multiply(user[lo:hi], anons, out=block, dtype=np.int64)
            block += anon[lo:hi]
            block *= previouses
            block += previous[lo:hi]
        grouped = (
            pa.table({"k": key, "t": micros})
            .group_by("k", use_threads=False)
            .aggregate([("t", "min")])
        )
        key = grouped.column("k").to_numpy()
        codes = [key // (anons * previouses), key // previouses % anons, key % previouses]
    else:  # too many combinations for one integer: group by the three codes
        grouped = (
            pa.table({"u": user, "a": anon, "p": previous, "t": micros})
            .group_by(["u", "a", "p"], use_threads=False)
            .aggregate([("t", "min")])
        )
        codes = [grouped.column(c).to_numpy() for c in ("u", "a", "p")]
    return pa.table(
        {
            name: values.take(pa.array(code))
            for name, (values, _), code in zip(
                ("user_id", "anonymous_id", "previous_id"), coded, codes, strict=True
            )
        }
        | {"timestamp": grouped.column("t_min")}
    )


class _Parallel(Generic[_T]):
    """``work()`` on a thread of its own; :meth:`result` waits and returns (or re-raises)."""

    def __init__(self, work: Callable[[], _T]) -> None:
        self._value: _T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], _T]) -> None:
        try:
            self._value = work()
        except BaseException as exc:  # re-raised by result()
            self._error = exc

    def result(self) -> _T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class SideInputs:
    """What the side table needs that stitching does not change (the distinct id triples
    stitching reads, event names, channels, the rows' ids), computed on a thread of its own
    while the importing thread stitches; the triples first, as stitching waits for them, then
    the rows' ids. Names and channels take a second thread, started once the file is known to
    be a new segment (:meth:`triples`): the importing thread leaves its core idle while it
    waits for the triples (at 10M events, about a second).

    ``timestamps``: the file's ``timestamp`` column (a tz-aware timestamp), read on the
    thread by a callable (first: :meth:`timestamps` hands it to the proof of validity, which
    would read it again), for the triples' earliest times. The channel keys are evaluated on
    a private in-memory DuckDB connection: they read only the distinct inputs, no table of
    the store.
    """

    def __init__(self, table: pa.Table, timestamps: Callable[[], pa.ChunkedArray]) -> None:
        self.rows = table.num_rows
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()  # set by discard(): only the triples are wanted
        self._triples: pa.Table | None = None
        self._stamps: pa.ChunkedArray | None = None
        self._stamps_ready = threading.Event()
        self._table = table
        self._names: threading.Thread | None = None
        self._thread = threading.Thread(
            target=self._run, args=(table, timestamps), name="segment-side", daemon=True
        )
        self._thread.start()

    def _run(self, table: pa.Table, timestamps: Callable[[], pa.ChunkedArray]) -> None:
        try:
            # the anonymous ids' codes (the largest dictionaries) on a thread of their own: the
            # importing thread waits for the triples with its core idle
            anons = _Parallel(lambda: _codes(table, "anonymous_id"))
            self._stamps = timestamps()
            self._stamps_ready.set()
            users, previous = _codes(table, "user_id"), _codes(table, "previous_id")
            self._triples = _triples([users, anons.result(), previous], self._stamps)
            self._ready.set()
            if self._stop.is_set():
                return
            self.ids, self.inverse = _person_keys(users, anons.result())
        except BaseException as exc:  # re-raised by wait() on the importing thread
            self._error = exc
        finally:
            self._stamps_ready.set()
            self._ready.set()

    def _run_names(self) -> None:
        try:
            self.event = _events(self._table)
            with duckdb.connect() as con:
                self.channel = _channels(con, self._table)
        except BaseException as exc:  # re-raised by wait() on the importing thread
            self._error = exc

    def _start_names(self) -> None:
        if self._names is None and not self._stop.is_set():
            self._names = threading.Thread(
                target=self._run_names, name="segment-names", daemon=True
            )
            self._names.start()

    def _join(self) -> None:
        self._thread.join()
        if self._names is not None:
            self._names.join()
        if self._error is not None:
            raise self._error

    def timestamps(self) -> pa.ChunkedArray:
        """Wait for the file's ``timestamp`` column, as read."""
        self._stamps_ready.wait()
        if self._stamps is None:
            self._join()
            raise StoreError("segment side table: the timestamps were not read")
        return self._stamps

    def triples(self) -> pa.Table:
        """Wait for the distinct id triples (columns ``user_id``, ``anonymous_id``,
        ``previous_id``, ``timestamp``); unless :meth:`discard` was called, names and
        channels start meanwhile."""
        self._start_names()
        self._ready.wait()
        if self._triples is None:
            self._join()
            raise StoreError("segment side table: the id triples were not computed")
        return self._triples

    def wait(self) -> None:
        """Wait for everything (names and channels too)."""
        self._start_names()
        self._join()

    def discard(self, *, keep_triples: bool = False) -> None:
        """Stop after the triples (the file is not a new segment) and wait for the thread;
        ``keep_triples``: :meth:`triples` still answers (a re-import stitches from them)."""
        self._stop.set()
        self._thread.join()
        if self._names is not None:
            self._names.join()
        if not keep_triples:
            self._triples = None


def build_side_table(
    con: duckdb.DuckDBPyConnection, inputs: SideInputs, segment_id: int
) -> seg.SideCodes:
    """Create the side table of ``segment_id`` for the rows whose :class:`SideInputs` are
    ``inputs``, once their ids are stitched; the names behind its codes."""
    inputs.wait()
    # DuckDB refuses register() while a result of the connection is unfinished (the caller's
    # last fetchone()): finish it with a statement of our own
    con.execute("SELECT 1").fetchall()
    person = _persons(con, inputs.ids, inputs.inverse)
    return seg.write_side_table(con, segment_id, person, inputs.event, inputs.channel)
