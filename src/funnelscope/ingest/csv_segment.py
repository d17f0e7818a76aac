"""A clean chunk of CSV rows kept as a typed Parquet *segment* instead of rows in ``event_log``.

A CSV file is read as text (ingest/csv_read.py) and handed to the pipeline in chunks of
``files.CHUNK_ROWS``. Before a chunk goes to :func:`~funnelscope.ingest.pipeline.append_events`,
:func:`import_csv_segment` checks it: cleanliness with numpy (gathered block by block by a
:class:`ChunkScan` while the file is read), validity with the pipeline's own typing and checks
in one DuckDB scan. When every row is valid, already as the pipeline would store it, and new,
the chunk is written once as a typed Parquet file (text as read, ``timestamp`` as a UTC
timestamp, ``revenue`` as ``decimal(18, 4)``, ``items`` as the canonical list of line-item
structs, ``properties`` kept as JSON text) and registered as a reference segment
(store/segments.py), exactly as a clean Parquet import is (ingest/bulk.py). The result is the
same events, persons, channels and counts the pipeline gives; the chunk just skips the wide
native-table write, which is the largest cost of a CSV import.

The rule for a chunk (docs/import.md, "CSV segments"):

* at least ``bulk.MIN_SEGMENT_ROWS`` rows, no row already rejected by the parser (bad width,
  bad bytes), rows numbered without gaps, and a store in a file;
* every text value is empty or equal to its ``trim()`` (an empty CSV field is NULL);
* every row passes validation: the pipeline's checks, with one *sufficient* form of the items
  check (the list parses and no line item, price or quantity is NULL), run once per distinct
  ``items`` text;
* no ``event_id`` repeats in the chunk (ids that increase row by row need no count) or is
  already stored (within ``pipeline.DEDUP_WINDOW``; the stored ids are read between the chunk's
  least and greatest id, so ids that grow along a file skip its earlier chunks).

A chunk whose every row passes these checks and whose ids are all stored already (the file was
imported before) is only counted (``inserted = 0``), with the pipeline's identity shortcut.
Anything else returns None and the caller sends the chunk to the pipeline unchanged, so
quarantine codes, row numbers and payloads are the pipeline's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from funnelscope.errors import StoreError
from funnelscope.events.channels import derive_channel, host_sql
from funnelscope.events.schema import EVENT_SCHEMA, STAGING_COLUMNS
from funnelscope.events.vocabulary import canonical_event
from funnelscope.ingest.bulk import _CHANNEL_INPUTS, MIN_SEGMENT_ROWS
from funnelscope.ingest.clean_text import all_trimmed, suspects
from funnelscope.ingest.pipeline import (
    _CHECKED,
    _ITEM_JSON_SHAPE,
    DEDUP_WINDOW,
    IngestReport,
    _channel_keys,
    _checks,
    _identities_change,
    _text,
    _typed_columns,
)
from funnelscope.store import segments as seg
from funnelscope.store.identity import assign_persons
from funnelscope.store.store import Store

__all__ = [
    "DERIVE_GROUP_ROWS",
    "SEGMENT_ROW_GROUP_ROWS",
    "ChunkScan",
    "block_suspects",
    "import_csv_segment",
]

#: Rows per row group of a segment file: DuckDB scans a Parquet file one row group per thread.
SEGMENT_ROW_GROUP_ROWS: Final = 131_072
#: Rows whose event names and channels :class:`ChunkScan` derives at once, while the reader
#: parses the next blocks (a smaller group repeats the per-distinct work more often).
DERIVE_GROUP_ROWS: Final = 131_072
#: Columns typed by SQL and written typed; every other stored column is written as read.
_TYPED: Final = ("timestamp", "revenue", "currency", "items")
_CURRENCY: Final = "event.unknown_currency"
#: Columns written without a dictionary: their values rarely repeat.
_UNIQUE: Final = ("event_id", "timestamp", "properties", "items")
#: Columns whose Parquet statistics are written.
_STATISTICS: Final = ("event_id", "timestamp", "user_id", "anonymous_id")
_ITEM_SQL_TYPE: Final = (
    "STRUCT(product_id VARCHAR, sku VARCHAR, name VARCHAR, category VARCHAR, brand VARCHAR, "
    "variant VARCHAR, price DECIMAL(18, 4), quantity INTEGER)[]"
)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _items_sql() -> str:
    """Over ``s.items`` (text): the typed list (``items``) and whether it passes a sufficient
    condition for the pipeline's items check (``ok``).

    The pipeline parses ``NULLIF(trim(x), '')`` when it is a JSON array, and its check compares,
    per field, the non-null prices (quantities) of the JSON with those of the parsed list. Here:

    * ``json_transform(x)`` without the trim: JSON may only be padded with JSON whitespace, which
      the parser skips, so a text that parses gives the same list; one that does not (padded
      with a Unicode space, say) raises, and the chunk takes the pipeline;
    * no ``json_type`` guard: ``json_transform`` with a list shape gives NULL for every other
      JSON type (object, string, number, boolean, null), and a NULL list fails the condition;
    * the condition: no NULL element, price or quantity in the list. Its non-null counts are then
      the list's length, and the JSON cannot have more (``json_transform`` maps element to
      element and reads exactly the key ``price``, case-sensitively, the first of duplicates),
      so the pipeline's check holds. tests/unit/test_csv_segment.py pins these behaviours.

    Both depend on the text alone, so :class:`ChunkScan` evaluates them once per distinct text
    (a shop's line items repeat: 29,000 distinct lists among 333,000 in 1M simulator events).
    """
    shape = _ITEM_JSON_SHAPE.replace("'", "''")
    empty = "(s.items IS NULL OR s.items = '')"
    parsed = (
        f"CASE WHEN NOT {empty} "
        f"THEN TRY_CAST(json_transform(s.items, '{shape}') AS {_ITEM_SQL_TYPE}) END"
    )
    ok = (
        "(_items_empty OR coalesce(len(list_filter(items, lambda x: x IS NULL "
        "OR x.price IS NULL OR x.quantity IS NULL)) = 0, FALSE))"
    )
    return (
        f"SELECT items, {ok} AS ok FROM (SELECT s._i, {parsed} AS items, {empty} AS _items_empty "
        "FROM _distinct s) ORDER BY _i"
    )


def _typed_items(con: duckdb.DuckDBPyConnection, texts: list[pa.Array]) -> pa.Array | None:
    """The typed items of ``texts`` (chunks of one text column), row by row, or None when a
    row fails :func:`_items_sql`'s condition or is not JSON (the pipeline's cases)."""
    dictionary, indices = _encode(texts)
    con.register("_distinct", pa.table({"items": dictionary, "_i": np.arange(len(dictionary))}))
    try:
        typed = con.sql(_items_sql()).to_arrow_table()
    except (duckdb.InvalidInputException, duckdb.ConversionException):
        return None  # items text that is not JSON
    finally:
        con.unregister("_distinct")
    # every distinct text occurs in some row: all rows pass when every distinct text does
    if not pc.all(typed.column("ok")).as_py():
        return None
    return typed.column("items").combine_chunks().take(pa.array(indices))


def _checked_sql(schema: pa.Schema, store_currency: str, *, clean: bool) -> str:
    """One scan of ``stg`` (staging columns, ``_row`` and :func:`_derived_columns`): the typed
    columns the segment and the side table need, and a problem of each row (``_reason``:
    the pipeline's checks, order and codes; items are typed and checked by :class:`ChunkScan`).

    ``clean``: every text value is empty or equal to its ``trim()``, which makes trimming a
    no-op (the pipeline trims every text value: 0.1 s per column and 1M rows).
    """
    cols, _, _ = _typed_columns(schema, store_currency)
    # the currency check is left to _verdict, over the distinct currencies: its list literal
    # makes DuckDB return the rows out of order (and the file must keep the CSV's order)
    reason = (
        "CASE "
        + " ".join(
            f"WHEN {cond} THEN '{code}'"
            for code, cond, _ in _checks('"timestamp"')
            if code != _CURRENCY
        )
        + " END"
    )
    if clean:
        # text equal to its trim(): NULLIF(x, '') is the pipeline's NULLIF(trim(x), '')
        for name in schema.names:
            if name not in (*_TYPED, "_row"):
                text = _text(name, pa.string())
                cols = {k: v.replace(text, f"NULLIF(s.{_q(name)}, '')") for k, v in cols.items()}
        # properties are typed by their own expression (pipeline._properties_expr)
        props = "NULLIF(trim(CAST(s.properties AS VARCHAR)), '')"
        cols = {k: v.replace(props, "NULLIF(s.properties, '')") for k, v in cols.items()}
    cols["event"] = "s._event"  # the canonical name, from _derived_columns (no join: keeps order)
    # items are typed and checked apart, once per distinct text (_typed_items): a chunk gets
    # here only when every row passed, so their check is TRUE
    cols["_items_ok"] = "TRUE"
    typed = ",\n  ".join(f"{cols[c]} AS {_q(c)}" for c in _CHECKED)
    return (
        f"WITH checked AS (SELECT s._row,\n  {typed}\n FROM stg s)\n"
        'SELECT _row, event_id, user_id, anonymous_id, previous_id, "timestamp", '
        f"revenue, currency, {reason} AS _reason FROM checked"
    )


Codes = Callable[[str], tuple[pa.Array, np.ndarray]]


def _evaluate(
    con: duckdb.DuckDBPyConnection, columns: dict[str, pa.Array], rows: int, exprs: dict[str, str]
) -> pa.Table:
    """``exprs`` over the (few) rows of ``columns``, in their order."""
    table = pa.table({**columns, "_i": pa.array(np.arange(rows, dtype=np.int64))})
    con.register("_distinct", table)
    select = ", ".join(f"{expr} AS {_q(name)}" for name, expr in exprs.items())
    values = con.sql(f"SELECT {select} FROM _distinct s ORDER BY _i").to_arrow_table()
    con.unregister("_distinct")
    return values


#: Per column, each value's results of the expressions :func:`_per_value` evaluates for it.
Memo = dict[str, dict[str | None, tuple[str | None, ...]]]


def _per_value(
    con: duckdb.DuckDBPyConnection,
    rows: int,
    codes_of: Codes,
    names: Collection[str],
    name: str,
    exprs: dict[str, str],
    memo: Memo,
) -> tuple[dict[str, list[str | None]], np.ndarray]:
    """``exprs`` (SQL over ``s.<name>`` alone, text results) once per distinct value of column
    ``name``: each expression's values, and each row's index into them (a column not in
    ``names``: one NULL value). ``memo`` keeps the results of values seen in earlier groups,
    so only new values go to DuckDB (a shop's pages and referrers recur group after group)."""
    if name in names:
        dictionary, indices = codes_of(name)
    else:
        dictionary, indices = pa.nulls(1, pa.string()), np.zeros(rows, np.int64)
    values: list[str | None] = dictionary.to_pylist()
    known = memo.setdefault(name, {})
    new = [v for v in values if v not in known]
    if new:
        found = _evaluate(con, {name: pa.array(new, pa.string())}, len(new), exprs)
        results = [found.column(e).to_pylist() for e in exprs]
        for i, value in enumerate(new):
            known[value] = tuple(r[i] for r in results)
    per_value = {e: [known[v][j] for v in values] for j, e in enumerate(exprs)}
    return per_value, indices


def _derived_columns(
    con: duckdb.DuckDBPyConnection,
    rows: int,
    names: Collection[str],
    codes_of: Codes,
    channels: dict[tuple[str, str, str, bool], str],
    memo: Memo,
) -> pa.Table:
    """Per row: the canonical event name (``_event``) and the channel (``_channel``), as the
    pipeline derives them (``_event_names``; ``_channel_keys`` then ``derive_channel`` per
    distinct key). ``names``: the text columns present; ``channels``: the channel of each key
    derived so far and ``memo`` the per-value results (both shared by the groups of a chunk).

    The URL regular expressions are the most expensive part of validation, and joins would
    reorder the rows. Each part of the key reads one column (the internal flag compares the
    referrer's host with the page's), so each is computed once per distinct value of its
    column: a shop has few names, sources and referrers, and a few thousand pages (the
    combinations of page and referrer are several times more)."""
    # the store currency only types the currency column, which the channel keys do not read
    cols, _, _ = _typed_columns(pa.schema([(c, pa.string()) for c in _CHANNEL_INPUTS]), "USD")
    keys = _channel_keys(cols)  # _ch_src, _ch_med and _ch_ref read one column each
    src, src_i = _per_value(con, rows, codes_of, names, "utm_source", {"k": keys["_ch_src"]}, memo)
    med, med_i = _per_value(con, rows, codes_of, names, "utm_medium", {"k": keys["_ch_med"]}, memo)
    ref_exprs = {"k": keys["_ch_ref"], "host": host_sql(cols["referrer"])}
    ref, ref_i = _per_value(con, rows, codes_of, names, "referrer", ref_exprs, memo)
    page, page_i = _per_value(
        con, rows, codes_of, names, "page_url", {"host": host_sql(cols["page_url"])}, memo
    )
    # the pipeline's _ch_internal: coalesce(referrer host = page host, FALSE), as host numbers
    hosts: dict[str, int] = {}
    ref_host = np.array(
        [hosts.setdefault(h, len(hosts)) if h is not None else -1 for h in ref["host"]],
        np.int64,
    )
    page_host = np.array(
        [hosts.setdefault(h, len(hosts)) if h is not None else -2 for h in page["host"]],
        np.int64,
    )
    internal = (ref_host[ref_i] == page_host[page_i]).astype(np.int64)
    key = ((src_i * max(len(med["k"]), 1) + med_i) * max(len(ref["k"]), 1) + ref_i) * 2 + internal
    _, first, which = np.unique(key, return_index=True, return_inverse=True)
    values = [t["k"] for t in (src, med, ref)]
    per_key = []
    for row in first.tolist():
        found = (
            values[0][src_i[row]],
            values[1][med_i[row]],
            values[2][ref_i[row]],
            bool(internal[row]),
        )
        if found not in channels:
            channels[found] = derive_channel(*found)
        per_key.append(channels[found])
    channel = pa.array(per_key, pa.string()).take(pa.array(which.reshape(-1)))
    if "event" not in names:
        event = pa.nulls(rows, pa.string())
    else:
        raw, indices = _per_value(
            con, rows, codes_of, names, "event", {"raw": _text("event", pa.string())}, memo
        )
        canonical = pa.array(
            [None if v is None else canonical_event(v) for v in raw["raw"]], pa.string()
        )
        event = canonical.take(pa.array(indices))
    return pa.table({"_event": event, "_channel": channel})


def _encode(chunks: list[pa.Array]) -> tuple[pa.Array, np.ndarray]:
    """(distinct values, each row's index into them) of a chunked text column, NULL a value."""
    if not chunks:
        return pa.array([], pa.string()), np.empty(0, np.int64)
    encoded = pc.dictionary_encode(pa.chunked_array(chunks), null_encoding="encode").chunks
    # a chunked encode shares one memo across chunks: the last dictionary has every value
    dictionary = encoded[-1].dictionary
    if any(len(c.dictionary) > len(dictionary) for c in encoded):
        whole = pc.dictionary_encode(pa.concat_arrays(chunks), null_encoding="encode")
        return whole.dictionary, whole.indices.to_numpy().astype(np.int64)
    indices = np.concatenate([c.indices.to_numpy() for c in encoded]).astype(np.int64)
    return dictionary, indices


def _person_keys(columns: dict[str, list[pa.Array]], rows: int) -> tuple[pa.Array, np.ndarray]:
    """The pipeline's person key ``coalesce(user_id, anonymous_id)``, hash-encoded. On a clean
    chunk the stored ids are the values as read, with ``''`` as NULL."""
    ids = [
        _as_null(pa.chunked_array(columns[c], pa.string()))
        for c in ("user_id", "anonymous_id")
        if columns.get(c)
    ]
    if not ids:
        return _encode([pa.nulls(rows, pa.string())])
    key = ids[0] if len(ids) == 1 else pc.coalesce(*ids)
    return _encode(key.chunks)


def _persons(con: duckdb.DuckDBPyConnection, dictionary: pa.Array, indices: np.ndarray) -> pa.Array:
    """Each row's person (``identities.person_id`` of its person key: ``dictionary`` taken at
    ``indices``), looked up once per distinct key after stitching."""
    con.register("_ids", pa.table({"id": dictionary, "_i": np.arange(len(dictionary))}))
    # the join's rows come in any order: each key's person is put back at its index in numpy
    # (an ORDER BY cost as much as the join)
    found = con.sql(
        "SELECT d._i, i.person_id FROM _ids d JOIN identities i ON i.distinct_id = d.id"
    ).to_arrow_table()
    con.unregister("_ids")
    if found.num_rows != len(dictionary):
        # stitching registers every id once: a broken invariant, not bad input
        raise StoreError("a row of the CSV segment has no person after stitching")
    person = np.empty(len(dictionary), np.int32)
    person[found.column("_i").to_numpy()] = found.column("person_id").to_numpy()
    return pa.array(person[indices])


def _increasing(ids: pa.ChunkedArray) -> bool:
    """Whether every text of ``ids`` is greater than the one before (so no two are equal).

    Ids that grow along the file (sequences, ULIDs, time-ordered UUIDs, exports sorted by id)
    are common; proving them distinct this way costs 0.005 s per 1M rows, a hash count 0.11.
    """
    column = ids.combine_chunks()
    if len(column) < 2:
        return True
    return bool(pc.all(pc.less(column.slice(0, len(column) - 1), column.slice(1))).as_py())


def _verdict(
    con: duckdb.DuckDBPyConnection, rows: int, clean: bool, increasing: bool = False
) -> str:
    """``segment`` (every row valid, clean and new), ``stored`` (every row valid, every id
    already stored) or ``pipeline``. ``increasing``: the ids as read increase row by row
    (:func:`_increasing`), so they are distinct; on a clean chunk they are stored as read,
    or are NULL and the row is not valid."""
    distinct_sql = "NULL" if increasing else "count(DISTINCT event_id)"
    valid, distinct, lo, hi, first_id, last_id = con.execute(
        f"SELECT count(*) FILTER (_reason IS NULL), {distinct_sql}, "
        'min("timestamp"), max("timestamp"), min(event_id), max(event_id) FROM _v'
    ).fetchall()[0]
    if increasing:
        distinct = rows
    if valid != rows or lo is None:
        return "pipeline"
    currency = next(cond for code, cond, _ in _checks('"timestamp"') if code == _CURRENCY)
    (unknown,) = con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT currency FROM _v) WHERE {currency}"
    ).fetchall()[0]
    if unknown:
        return "pipeline"
    # rows whose id is stored. The bounds are constants, so the scan of the stored ids skips
    # every row group whose statistics lie outside them: the time window (the dedup rule) and
    # the chunk's least and greatest id (a stored id equal to one of the chunk's lies between
    # them; ids that grow with time, as a file's earlier chunks have, are skipped whole)
    (already,) = con.execute(
        "SELECT count(*) FROM _v v WHERE EXISTS (SELECT 1 FROM event_keys e "
        "WHERE e.event_id = v.event_id AND e.event_id BETWEEN $3 AND $4 "
        'AND e."timestamp" BETWEEN $1 AND $2)',
        [lo - DEDUP_WINDOW, hi + DEDUP_WINDOW, first_id, last_id],
    ).fetchall()[0]
    if already == rows:  # every id stored (repeats in the chunk included): a re-import
        return "stored"
    if clean and distinct == rows and not already:
        return "segment"
    return "pipeline"


def _first_stored(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the chunk's first event_id is stored (a re-import, most likely)."""
    (found,) = con.execute(
        'SELECT count(*) FROM (SELECT event_id, "timestamp" FROM _v LIMIT 1) v '
        "WHERE EXISTS (SELECT 1 FROM event_keys e WHERE e.event_id = v.event_id "
        'AND e."timestamp" BETWEEN v."timestamp" - $1 AND v."timestamp" + $1)',
        [DEDUP_WINDOW],
    ).fetchall()[0]
    return bool(found)


class ChunkScan:
    """What :func:`import_csv_segment` needs of a chunk besides SQL, gathered block by block.

    The CSV reader stages each block on the importing thread while the next blocks are parsed
    on another; the work done here uses that time instead of the import's: each block's text
    is checked for cleanliness, and every ``group_rows`` rows the event names and channels of
    the group are derived (:func:`_derived_columns`, one hash encoding per column and group),
    so only the last group's are left for the chunk's end (:meth:`derived`).

    Examples
    --------
    >>> import pyarrow as pa
    >>> scan = ChunkScan()
    >>> scan.add(pa.table({"event": ["a", "b "], "_row": pa.array([0, 1], pa.int64())}))
    >>> scan.rows, scan.is_clean
    (2, False)
    >>> scan.derived().column("_event").to_pylist()
    ['a', 'b']
    """

    def __init__(self, group_rows: int = DERIVE_GROUP_ROWS) -> None:
        self.rows = 0
        self.is_clean = True
        self.suspects: list[pa.Array] = []
        self.group_rows = group_rows
        self._columns: dict[str, list[pa.Array]] = {}
        self._pending = 0
        self._names: set[str] = set()
        self._groups: list[pa.Table] = []
        self._keys: list[tuple[pa.Array, np.ndarray]] = []
        self._channels: dict[tuple[str, str, str, bool], str] = {}
        self._memo: Memo = {}
        self._con: duckdb.DuckDBPyConnection | None = None
        #: every row's items passed :func:`_items_sql` so far (else the chunk is the pipeline's)
        self.items_ok = True
        self._has_items = False
        self._items: list[pa.Array] = []
        self._typed: pa.Array | None = None

    def add(self, block: pa.Table, found: dict[str, list[pa.Array] | None] | None = None) -> None:
        """Scan the next block of the chunk (text staging columns and ``_row``). ``found``:
        ``clean_text.suspects`` of some of its columns, computed already (the CSV reader's
        threads do it while this thread is busy: :func:`block_suspects`)."""
        self.rows += block.num_rows
        if "items" in block.column_names and pa.types.is_string(block.schema.field("items").type):
            self._has_items = True
            self._items.extend(block.column("items").chunks)
        for name in block.column_names:
            if (
                name in _TYPED
                or name == "_row"
                or not pa.types.is_string(block.schema.field(name).type)
            ):
                continue
            self._names.add(name)
            column = block.column(name)
            if self.is_clean:
                odd = found[name] if found is not None and name in found else suspects(column)
                if odd is None:
                    self.is_clean = False
                else:
                    self.suspects.extend(odd)
            if name in (*_CHANNEL_INPUTS, "event", "user_id", "anonymous_id"):
                self._columns.setdefault(name, []).extend(column.chunks)
        self._pending += block.num_rows
        if self._pending >= self.group_rows:
            self._derive()

    def codes(self, name: str) -> tuple[pa.Array, np.ndarray]:
        """(distinct values of column ``name`` among the rows not derived yet, each row's index
        into them): Arrow's hash encoding, NULL a value too."""
        return _encode(self._columns.get(name, []))

    def derived(self) -> pa.Table:
        """``_event`` and ``_channel`` of every row added (:func:`_derived_columns`); the
        items are typed too (:meth:`items`)."""
        self._derive()
        self.items()
        if self._con is not None:
            self._con.close()
            self._con = None
        if not self._groups:
            return pa.table(
                {"_event": pa.array([], pa.string()), "_channel": pa.array([], pa.string())}
            )
        return pa.concat_tables(self._groups)

    def _derive(self) -> None:
        if not self._pending:
            return
        if self._con is None:  # in memory: the expressions only read the registered rows
            # one thread: the queries are small, and the store's own threads run meanwhile
            self._con = duckdb.connect(config={"threads": 1})
        self._groups.append(
            _derived_columns(
                self._con, self._pending, self._names, self.codes, self._channels, self._memo
            )
        )
        self._keys.append(_person_keys(self._columns, self._pending))
        self._columns, self._pending = {}, 0

    def items(self) -> pa.Array | None:
        """Every row's typed items (:func:`_items_sql`), in the order added; None when the
        chunk has no items column or a row's items fail the check (then ``items_ok`` is
        False). Typed once per distinct text of the whole chunk: per group of rows, while
        the reader parses, they cost twice as much (a group's distinct texts are a larger
        share of its rows)."""
        if self._typed is None and self._has_items and self.items_ok:
            if self._con is None:
                self._con = duckdb.connect(config={"threads": 1})
            self._typed = _typed_items(self._con, self._items)
            self.items_ok = self._typed is not None
            self._items = []
        return self._typed

    def person_keys(self) -> tuple[pa.Array, np.ndarray]:
        """Every row's person key (:func:`_person_keys`): (keys, each row's index into them).
        A key seen in several groups is listed once per group."""
        self._derive()
        if not self._keys:
            return pa.array([], pa.string()), np.empty(0, np.int64)
        offsets = np.cumsum([0, *(len(d) for d, _ in self._keys[:-1])])
        return (
            pa.concat_arrays([d for d, _ in self._keys]),
            np.concatenate([i + o for (_, i), o in zip(self._keys, offsets, strict=True)]),
        )


def block_suspects(columns: dict[str, pa.Array]) -> dict[str, list[pa.Array] | None]:
    """``clean_text.suspects`` of each text column of a block that :meth:`ChunkScan.add`
    checks (``columns``: staging name -> text), for ``add(..., found=)``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> found = block_suspects({"event": pa.array(["a", "caf\u00e9"]), "user_id": pa.array([" u"])})
    >>> [v.to_pylist() for v in found["event"]], found["user_id"]
    ([['café']], None)
    """
    return {
        name: suspects(column)
        for name, column in columns.items()
        if name not in _TYPED and pa.types.is_string(column.type)
    }


def _as_null(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A text column with its empty values as NULL (what the pipeline stores for ``''``).

    The validity bitmap is computed from the offsets with numpy; the text buffers are shared.
    """
    chunks = []
    for chunk in column.chunks:
        offsets = np.frombuffer(chunk.buffers()[1], np.int32)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        empty = offsets[1:] == offsets[:-1]
        if not empty.any():
            chunks.append(chunk)
        elif chunk.null_count or chunk.offset:
            chunks.append(pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), chunk))
        else:
            validity = pa.py_buffer(np.packbits(~empty, bitorder="little"))
            chunks.append(
                pa.Array.from_buffers(
                    pa.string(),
                    len(chunk),
                    [validity, chunk.buffers()[1], chunk.buffers()[2]],
                    offset=chunk.offset,
                )
            )
    return pa.chunked_array(chunks, pa.string())


def _segment_columns(names: list[str]) -> list[str]:
    """The stored columns a chunk with staging columns ``names`` has, in store order; a
    ``currency`` column is added where the pipeline fills in the store currency."""
    present = set(names)
    if "revenue" in present:
        present.add("currency")
    return [n for n in EVENT_SCHEMA.names if n in present]


def _segment_table(
    staging: pa.Table, checked: pa.Table, first_row: int, items: pa.ChunkedArray | None
) -> pa.Table:
    """The segment file in staging order: typed columns from ``checked`` (in the order DuckDB
    produced them) and ``items`` (in staging order), the others as read ('' as NULL)."""
    typed = checked.select([n for n in _TYPED if n in checked.column_names])
    position = checked.column("_row").to_numpy() - first_row
    if not (position == np.arange(len(position))).all():
        # DuckDB's parallel scan returns checked's rows in any order, a permutation of staging's
        order = np.empty(len(position), np.int64)
        order[position] = np.arange(len(position), dtype=np.int64)
        typed = typed.take(pa.array(order))
    columns = {}
    for name in _segment_columns(staging.column_names):
        if name == "items":
            if items is None:  # the scan's check failed: the verdict cannot be "segment"
                raise _Pipeline
            columns[name] = items
        elif name in _TYPED:
            columns[name] = typed.column(name)
        else:
            columns[name] = _as_null(staging.column(name))
    return pa.table(columns)


class _Writer(threading.Thread):
    """Writes the segment file on the other core while DuckDB stitches (pyarrow drops the GIL)."""

    def __init__(self, table: pa.Table, path: Path) -> None:
        super().__init__(name="csv-segment-writer", daemon=True)
        self.table, self.path = table, path
        self.error: BaseException | None = None

    @classmethod
    def started(cls, table: pa.Table, path: Path) -> _Writer:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cls(table, path)
        writer.start()
        return writer

    def run(self) -> None:
        try:
            pq.write_table(
                self.table,
                self.path,
                row_group_size=SEGMENT_ROW_GROUP_ROWS,
                # statistics where readers filter (dedup by id and time, a person's events);
                # min/max of every text column would cost a fifth of the write
                write_statistics=[c for c in _STATISTICS if c in self.table.column_names],
                # no dictionary attempt for columns of (nearly) unique values
                use_dictionary=[c for c in self.table.column_names if c not in _UNIQUE],
            )
        except BaseException as exc:  # re-raised by the importing thread
            self.error = exc

    def discard(self) -> None:
        self.join()
        self.path.unlink(missing_ok=True)

    def finish(self) -> None:
        self.join()
        if self.error is not None:
            raise StoreError(f"writing segment file {self.path} failed: {self.error}")


def import_csv_segment(
    store: Store,
    staging: pa.Table,
    *,
    source: str,
    received_at: datetime,
    scan: ChunkScan | None = None,
) -> IngestReport | None:
    """Store one chunk of text staging rows as a segment; None when it must take the pipeline.

    ``staging`` is what :func:`~funnelscope.ingest.pipeline.append_events` would get: text
    columns named as the staging columns and ``_row``, the CSV record number. ``scan``: the
    same rows added block by block to a :class:`ChunkScan` (else they are scanned here).
    Nothing is written when None is returned.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> import funnelscope, pyarrow as pa, tempfile, pathlib
    >>> n = 10_000
    >>> staging = pa.table({
    ...     "event_id": [f"e{i}" for i in range(n)],
    ...     "timestamp": ["2024-05-01T10:00:00Z"] * n,
    ...     "event": ["Order Completed"] * n,
    ...     "user_id": [f"u{i % 100}" for i in range(n)],
    ...     "_row": pa.array(range(n), pa.int64())})
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with funnelscope.open(folder / "shop.duckdb") as ws:
    ...     r = import_csv_segment(ws.store, staging, source="import:e.csv",
    ...                            received_at=datetime(2024, 6, 1, tzinfo=UTC))
    ...     (r.inserted, ws.store.query("SELECT count(*) FROM event_segments")[0][0])
    (10000, 1)
    """
    folder = seg.segments_folder(store.path)
    rows = staging.num_rows
    if folder is None or rows < MIN_SEGMENT_ROWS or "_row" not in staging.column_names:
        return None
    if set(staging.column_names) - {*STAGING_COLUMNS, "_row"}:
        return None
    if any(not pa.types.is_string(f.type) for f in staging.schema if f.name != "_row"):
        return None  # typed staging (frames, Parquet) has its own road
    numbers = staging.column("_row").to_numpy()
    first_row = int(numbers[0])
    if not (numbers == np.arange(first_row, first_row + rows)).all():
        return None  # rows numbered in order without gaps: seq follows the file's order
    try:
        if scan is None or scan.rows != rows:
            scan = ChunkScan()
            scan.add(staging)
        return _import(store, staging, scan, folder, first_row, source, received_at)
    except _Pipeline:
        return None


def _checked(
    con: duckdb.DuckDBPyConnection,
    staging: pa.Table,
    derived: pa.Table,
    currency: str,
    received_at: datetime,
    clean: bool,
) -> pa.Table:
    """The chunk typed and checked (:func:`_checked_sql`) in one DuckDB scan."""
    con.register("stg", staging.append_column("_event", derived.column("_event")))
    sql = _checked_sql(staging.schema, currency, clean=clean).replace("$received_at", "$1")
    try:
        return con.sql(sql, params=[received_at]).to_arrow_table()
    except (duckdb.InvalidInputException, duckdb.ConversionException):
        raise _Pipeline from None  # items text that is not JSON: the pipeline's case


class _Pipeline(Exception):
    """The chunk must take the pipeline: raised inside the transaction so it rolls back."""


def _import(
    store: Store,
    staging: pa.Table,
    scan: ChunkScan,
    folder: Path,
    first_row: int,
    source: str,
    received_at: datetime,
) -> IngestReport:
    rows = staging.num_rows
    report = IngestReport(source=source, rows=rows, accepted=rows)
    writer: _Writer | None = None
    target: Path | None = None
    try:
        with store.write() as con:
            clean = scan.is_clean and all_trimmed(con, scan.suspects)
            derived = scan.derived()
            if not scan.items_ok:  # a row's items fail the check: the pipeline's case
                raise _Pipeline
            checked = _checked(con, staging, derived, store.currency, received_at, clean)
            con.register("_v", checked)
            segment_id = seg.next_segment_id(con)
            partial = folder / f".{segment_id}.parquet.partial"
            if clean and checked.column("_reason").null_count == rows and not _first_stored(con):
                # likely a segment: write the file on the other core from now on (verdict,
                # stitching and the side table run meanwhile); dropped if the verdict says no
                writer = _Writer.started(
                    _segment_table(staging, checked, first_row, scan.items()), partial
                )
            increasing = (
                clean
                and "event_id" in staging.column_names
                and _increasing(staging.column("event_id"))
            )
            verdict = _verdict(con, rows, clean, increasing)
            if verdict != "segment" and writer is not None:
                writer.discard()
                writer = None
            if verdict == "pipeline":
                raise _Pipeline
            if verdict == "segment" and writer is None:
                writer = _Writer.started(
                    _segment_table(staging, checked, first_row, scan.items()), partial
                )
            # as the pipeline: nothing to stitch when every id is known and nothing merges
            if verdict == "segment" or _identities_change(con):
                con.execute(
                    "CREATE OR REPLACE TEMP VIEW _good AS SELECT user_id, anonymous_id, "
                    'previous_id, "timestamp" FROM _v'
                )
                assign_persons(con, "_good")
                con.execute("DROP VIEW _good")
            if writer is None:  # stored: every row is a duplicate
                report.duplicates = rows
                return report
            first_seq = store.next_seq(con)
            # the side table in file order, built in Arrow: a join and sort by row in SQL
            # cost three times as much (insertion order is kept: one ordered Arrow scan)
            codes = seg.write_side_table(
                con,
                segment_id,
                _persons(con, *scan.person_keys()),
                derived.column("_event"),
                derived.column("_channel"),
            )
            writer.finish()
            target = folder / f"{segment_id}.parquet"
            writer.path.replace(target)
            seg.register_segment(
                con,
                store,
                segment_id=segment_id,
                columns={name: name for name in _segment_columns(staging.column_names)},
                source=source,
                received_at=received_at,
                row_count=rows,
                first_seq=first_seq,
                codes=codes,
            )
            report.inserted = rows
    except BaseException:
        if writer is not None:
            writer.discard()
        if target is not None:
            target.unlink(missing_ok=True)
        raise
    return report
