"""Bulk import of a clean Parquet file as a *reference segment* (store/segments.py).

A Parquet file whose columns already have the canonical types and whose rows are all valid,
clean and new is not rewritten: it is copied next to the store and the import stores only what
it computes per row (``seq``, ``person_id``, canonical ``event``, ``channel``) in a side table.
Everything else (validation, quarantine codes, identity stitching, channel derivation, event
names) is the pipeline's own SQL (:mod:`funnelscope.ingest.pipeline`), run over the file.

The rule, checked from the schema and then in one scan (docs/import.md, "Parquet segments"):

* schema: every mapped column has its canonical type: text columns ``string``, ``timestamp`` a
  time-zone-aware timestamp (s/ms/us), ``revenue`` ``decimal(18, 4)``, ``items`` the canonical
  list of line-item structs, ``properties`` JSON text;
* rows: every text value is already as the pipeline would store it (trimmed, non-empty or NULL;
  ``currency`` upper case and present when ``revenue`` is), every row passes validation, no
  ``event_id`` repeats within the file or is already stored.

A file that breaks the rule is imported by the pipeline instead (chunks into ``event_log``),
with identical results; a file whose every valid row is already stored is only counted.

Two roads decide it. The *scan* (:func:`_scan_verdict`) keeps no row: a read of the text
columns (:class:`~funnelscope.ingest.clean_text.TextScan`, on a thread of its own, from their
Parquet dictionaries: cleanliness, and whether the ids strictly increase); from that read a
proof that every row passes the pipeline's conditions (:func:`_proven_numbers`: NULL counts,
byte lengths, the time range's ends, the dictionaries of ``properties`` and ``currency``),
or, where it declines, one DuckDB aggregate pass that counts; then distinct id hashes if the
ids do not increase. When it finds every row valid, clean and new (the usual import) or every
id stored (a re-import), the import goes on from it: stitching over the distinct id triples,
and the side table from the dictionary codes the text read kept
(:mod:`funnelscope.ingest.segment_side`, on a thread started as soon as the read is clean: the
triples first, then names, channels and persons once per distinct input).
Anything else takes the *per-row* road: the validated rows as a temp table ``_v``, quarantine,
the partly-stored verdict, or the pipeline.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from funnelscope.errors import StoreError
from funnelscope.events.channels import derive_channel
from funnelscope.events.currency import ISO_CURRENCIES
from funnelscope.events.schema import EVENT_SCHEMA, ITEM_TYPE, STAGING_COLUMNS
from funnelscope.ingest.clean_text import TextScan, TextScanResult
from funnelscope.ingest.pipeline import (
    _CHANNEL_KEY,
    _CHECKED,
    DEDUP_WINDOW,
    MAX_ID_LENGTH,
    IngestReport,
    _channel_keys,
    _checks,
    _from_staging,
    _identities_change,
    _register_channels,
    _register_event_names,
    _typed_columns,
    quarantine_checked,
)
from funnelscope.ingest.segment_side import SIDE_INPUTS, SideInputs, build_side_table
from funnelscope.store import segments as seg
from funnelscope.store.identity import assign_persons
from funnelscope.store.store import Store

__all__ = ["eligible_schema", "import_parquet_segment"]

#: Files smaller than this go through the pipeline: a segment per tiny file would make every
#: reader's view longer for no gain.
MIN_SEGMENT_ROWS: Final = 10_000

_TYPED: Final = {"timestamp", "revenue", "items"}
#: Files up to this many rows build their side table from the text check's read (28 bytes a
#: row kept in memory); larger ones build it in SQL from the file.
ARROW_SIDE_MAX_ROWS: Final = 50_000_000


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _same_type(got: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_list(got) and pa.types.is_list(want):
        return _same_type(got.value_type, want.value_type)
    if pa.types.is_struct(got) and pa.types.is_struct(want):
        return [(f.name, f.type) for f in got] == [(f.name, f.type) for f in want]
    return bool(got == want)


def eligible_schema(schema: pa.Schema, plan: dict[str, str]) -> bool:
    """True when every planned column has its canonical Arrow type (see module docstring)."""
    for name, column in plan.items():
        got = schema.field(column).type
        if name == "timestamp":
            ok = pa.types.is_timestamp(got) and got.tz is not None and got.unit != "ns"
        elif name == "revenue":
            ok = got == pa.decimal128(18, 4)
        elif name == "items":
            ok = _same_type(got, pa.list_(ITEM_TYPE))
        else:
            ok = got == pa.string()
        if not ok:
            return False
    return True


def _stage_view(con: duckdb.DuckDBPyConnection, path: Path, plan: dict[str, str]) -> None:
    """``stg``: the file's planned columns under their staging names, plus ``_row``."""
    select = ", ".join(f"{_q(file_col)} AS {_q(name)}" for name, file_col in plan.items())
    literal = "'" + str(path).replace("'", "''") + "'"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW stg AS SELECT {select}, file_row_number AS _row "
        f"FROM read_parquet({literal}, file_row_number = true)"
    )


def _checked_sql(schema: pa.Schema, store_currency: str) -> str:
    """The pipeline's validation over ``stg`` plus ``_clean``: the row is stored unchanged."""
    cols, reason, message = _typed_columns(schema, store_currency)
    typed = ",\n  ".join(f"{cols[c]} AS {_q(c)}" for c in _CHECKED)
    keys = ", ".join(f"{expr} AS {name}" for name, expr in _channel_keys(cols).items())
    return (
        f"WITH typed AS (SELECT s._row,\n  {typed},\n  {keys},\n"
        f"  {_clean_sql(schema, cols)} AS _clean\n {_from_staging(schema)})\n"
        f'SELECT _row, event_id, user_id, anonymous_id, previous_id, "timestamp", event, '
        f"_ch_src, _ch_med, _ch_ref, _ch_internal, _clean, {reason} AS _reason, "
        f"{message} AS _message FROM typed"
    )


def _text_columns(schema: pa.Schema) -> list[str]:
    """The staging columns whose raw value must equal ``NULLIF(trim(x), '')`` to be clean."""
    return [c for c in schema.names if c not in (*_TYPED, "_row", "currency")]


def _clean_sql(schema: pa.Schema, cols: dict[str, str], *, text: bool = True) -> str:
    """TRUE (or NULL) when every raw value of the row is what the pipeline would store:
    ``NULLIF(trim(x), '')`` for text, the typed ``currency``; FALSE otherwise. ``text=False``
    leaves the text columns out: :class:`clean_text.TextScan` proves them clean apart."""
    clean = [
        f"(s.{_q(c)} IS NULL OR (s.{_q(c)} <> '' AND s.{_q(c)} = trim(s.{_q(c)})))"
        for c in (_text_columns(schema) if text else [])
    ]
    if "currency" in schema.names:
        clean.append(f"s.currency IS NOT DISTINCT FROM {cols['currency']}")
    elif "revenue" in schema.names:
        clean.append("s.revenue IS NULL")
    return " AND ".join(clean) or "TRUE"


#: The reason code whose condition the scan checks over the distinct values instead of per row.
_CURRENCY_CHECK: Final = "event.unknown_currency"
#: Checked columns the pipeline types with ``NULLIF(trim(x), '')`` (the canonical name for
#: ``event``): on a clean row that is the raw value, so the scan reads them as they are.
_RAW_CHECKED: Final = ("event_id", "event", "user_id", "anonymous_id", "previous_id")


def _scan_sql(schema: pa.Schema, store_currency: str) -> str:
    """One aggregate pass over ``stg`` deciding whether the file is a segment as it is.

    The pipeline's own conditions (:func:`pipeline._checks`) over the pipeline's typed columns,
    except that the text columns it trims are read raw: :class:`clean_text.TextScan` proves
    them clean apart, and on a clean row the two agree; this pass checks the currency
    (``unclean = 0``: upper case, present with revenue). Columns: ``rows``, ``unclean``,
    ``bad`` (rows with some reason), ``currencies`` (the distinct typed currencies, checked
    against ISO 4217 in Python rather than per row), ``ids`` (-1: whether the ids are distinct
    is decided by :func:`_scan_verdict`), ``lo`` and ``hi`` (the time range).
    """
    cols, _, _ = _typed_columns(schema, store_currency)
    names = set(schema.names)
    typed = {
        **{c: cols[c] for c in _CHECKED if c not in _RAW_CHECKED},
        **{c: f"s.{_q(c)}" if c in names else "CAST(NULL AS VARCHAR)" for c in _RAW_CHECKED},
    }
    select = ",\n  ".join(f"{expr} AS {_q(name)}" for name, expr in typed.items())
    bad = " OR ".join(
        f"({cond})" for code, cond, _ in _checks('"timestamp"') if code != _CURRENCY_CHECK
    )
    return (
        f"WITH typed AS (SELECT\n  {select},\n  {_clean_sql(schema, cols, text=False)} AS _clean\n"
        " FROM stg s)\n"
        "SELECT count(*) AS rows, count(*) FILTER (NOT _clean) AS unclean,\n"
        f"  count(*) FILTER ({bad}) AS bad,\n"
        "  list(DISTINCT currency) FILTER (currency IS NOT NULL) AS currencies,\n"
        '  -1 AS ids, min("timestamp") AS lo, max("timestamp") AS hi\n'
        "FROM typed"
    ).replace("$received_at", "$1")


def _scan_verdict(
    con: duckdb.DuckDBPyConnection,
    schema: pa.Schema,
    currency: str,
    received_at: datetime,
    *,
    path: Path,
    plan: dict[str, str],
) -> tuple[str, SideInputs | None]:
    """From the text check (and the aggregate scan when the check's read cannot prove every
    row valid): ``segment`` (every row valid, clean and new, no event_id repeated),
    ``stored`` (the same, but every id is stored already: a re-import), ``pipeline`` (not a
    segment, and no stored event near the file's times: nothing to gain from the per-row
    verdict) or ``rows`` (the per-row verdict of :func:`_verdict` decides); for a segment,
    the side table's inputs (from the columns the text check kept) when it has them, for a
    re-import the same object for its id triples only."""
    text = [c for c in _text_columns(schema) if c != "event_id"]
    # a currency the scan finds clean is trimmed, so checking it as text changes no verdict
    text += ["currency"] if "currency" in schema.names else []
    side = _rows(con) <= ARROW_SIDE_MAX_ROWS
    keep = [c for c in dict.fromkeys((*SIDE_INPUTS, *_PROOF_INPUTS)) if c in text] if side else []
    ids = plan["event_id"]
    scan = TextScan(path, [plan[c] for c in text], [plan[c] for c in keep], ids=ids).result(con)
    kept = scan.kept.rename_columns(keep) if scan.kept is not None else None
    got = None
    inputs = None
    if scan.clean and kept is not None:
        # most clean files are segments: the side table's inputs (first the id triples that
        # stitching waits for) start on another thread while this one proves the rows valid
        inputs = SideInputs(kept, _column_reader(path, plan["timestamp"]))
        got = _proven_numbers(
            con, schema, currency, received_at, scan, kept, path, plan, inputs.timestamps
        )
    if got is None:  # the exact counts of a file that may not be a segment: the SQL scan
        got = _scan_numbers(con, schema, currency, received_at)
    if scan.ids_increasing:
        got["ids"] = got["rows"]  # strictly increasing ids are distinct
    elif scan.clean and not got["unclean"] and not got["bad"]:
        # a 64-bit hash per id: a hash table of integers is a third cheaper than one of text;
        # a collision only sends the file to the per-row road
        (got["ids"],) = con.execute("SELECT count(DISTINCT hash(event_id)) FROM stg").fetchall()[0]
    verdict = _decide(con, got, clean=scan.clean)
    if inputs is not None and verdict != "segment":
        # a re-import still stitches from the triples; nothing else of the side is needed
        inputs.discard(keep_triples=verdict == "stored")
        inputs = inputs if verdict == "stored" else None
    return verdict, inputs


#: The text columns the proof of :func:`_proven_numbers` reads from the text check's read.
_PROOF_INPUTS: Final = ("event", "user_id", "anonymous_id", "properties", "currency")
#: The pipeline's reason codes :func:`_proven_numbers` knows how to rule out; a code added to
#: ``pipeline._checks`` and not here sends every file to the SQL scan (slower, still exact).
_PROVEN_CODES: Final = frozenset(
    {
        "event.missing_id",
        "event.bad_id",
        "event.missing_name",
        "event.missing_identity",
        "event.bad_timestamp",
        "event.timestamp_out_of_range",
        "event.invalid_properties",
        "event.properties_too_large",
        "event.bad_revenue",
        "event.unknown_currency",
        "event.bad_items",
    }
)


def _proven_numbers(
    con: duckdb.DuckDBPyConnection,
    schema: pa.Schema,
    currency: str,
    received_at: datetime,
    scan: TextScanResult,
    kept: pa.Table,
    path: Path,
    plan: dict[str, str],
    timestamps: Callable[[], pa.ChunkedArray],
) -> dict[str, Any] | None:
    """:func:`_scan_numbers` of a file with no unclean and no bad row, proven from what the
    text check read (its columns as dictionaries) instead of an aggregate scan; None when the
    proof fails, and the scan must count. ``timestamps``: the file's ``timestamp`` column
    (read once, on the side inputs' thread).

    Each of the pipeline's conditions reads one column (``missing_identity`` two), so each is
    ruled out over what decides it: NULL counts of ``event_id`` and ``event`` and of rows with
    neither id; the ids' longest value in bytes (``length()`` counts characters, never more);
    the time range's two ends and the ``properties`` and ``currency`` dictionaries (every
    value of the file, and the unused entries too: at worst a clean file is counted by the
    scan), under the pipeline's own SQL expressions; a ``decimal(18, 4)`` revenue and a list
    of line-item structs are valid by their type (the schema was checked).
    """
    checks = {code: cond for code, cond, _ in _checks('"timestamp"')}
    names = set(schema.names)
    cols, _, _ = _typed_columns(schema, currency)
    people = [c for c in ("user_id", "anonymous_id") if c in names]
    if (
        set(checks) != _PROVEN_CODES
        or cols["_items_ok"] != "TRUE"
        or not people
        or "event" not in names
        or any(c in names and c not in kept.column_names for c in _PROOF_INPUTS)
        or scan.ids_nulls
        or scan.ids_max_bytes > MAX_ID_LENGTH
        or kept.column("event").null_count
    ):
        return None
    nobody = functools.reduce(pc.and_, [pc.is_null(kept.column(c)) for c in people])
    if pc.any(nobody).as_py():
        return None
    revenue = _column_reader(path, plan["revenue"])() if "revenue" in names else None
    stamps = timestamps()
    if stamps.null_count or not len(stamps):
        return None
    ends = pc.min_max(stamps)
    # the range check at the two ends decides every row's
    timely = " OR ".join(
        f"({checks[c]})" for c in ("event.bad_timestamp", "event.timestamp_out_of_range")
    ).replace("$received_at", "$1")
    late, lo, hi = _over(
        con,
        pa.table({"timestamp": pa.array([ends["min"].as_py(), ends["max"].as_py()], stamps.type)}),
        f'SELECT count(*) FILTER ({timely}), min("timestamp"), max("timestamp") '
        f'FROM (SELECT {cols["timestamp"]} AS "timestamp" FROM _proof s)',
        [received_at],
    )
    if late:
        return None
    if "properties" in names:
        json = " OR ".join(
            f"({checks[c]})" for c in ("event.invalid_properties", "event.properties_too_large")
        )
        (invalid,) = _over(
            con,
            pa.table({"properties": _dictionary_values(kept.column("properties"))}),
            f"SELECT count(*) FILTER ({json}) FROM (SELECT {cols['properties']} AS properties, "
            f"{cols['_props_ok']} AS _props_ok FROM _proof s)",
        )
        if invalid:
            return None
    currencies: list[str] = []
    if "currency" in names:
        # a clean currency is its own upper case; a row without one has no revenue
        unclean, found = _over(
            con,
            pa.table({"v": _dictionary_values(kept.column("currency"))}),
            "SELECT count(*) FILTER (v IS DISTINCT FROM upper(NULLIF(trim(v), ''))), "
            "list(DISTINCT v) FILTER (v IS NOT NULL) FROM _proof",
        )
        if unclean or (
            revenue is not None
            and pc.any(pc.and_(pc.is_null(kept.column("currency")), pc.is_valid(revenue))).as_py()
        ):
            return None
        currencies = list(found or ())
    elif revenue is not None and revenue.null_count != len(revenue):
        return None  # revenue without a currency column: the store's currency would be added
    return {
        "rows": kept.num_rows,
        "unclean": 0,
        "bad": 0,
        "currencies": currencies,
        "ids": -1,
        "lo": lo,
        "hi": hi,
    }


def _dictionary_values(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Every value a string column may hold: its chunks' dictionaries (or the chunks)."""
    return pa.chunked_array(
        [c.dictionary if isinstance(c, pa.DictionaryArray) else c for c in column.chunks],
        pa.string(),
    )


def _over(
    con: duckdb.DuckDBPyConnection, table: pa.Table, sql: str, params: list[Any] | None = None
) -> tuple[Any, ...]:
    """The one row of ``sql`` over ``table`` registered as ``_proof``."""
    # DuckDB refuses register() while a result of the connection is unfinished
    con.execute("SELECT 1").fetchall()
    con.register("_proof", table)
    try:
        row = con.execute(sql, params or []).fetchall()[0]
    finally:
        con.unregister("_proof")
    return tuple(row)


def _rows(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT count(*) FROM stg").fetchall()[0][0])


def _scan_numbers(
    con: duckdb.DuckDBPyConnection, schema: pa.Schema, currency: str, received_at: datetime
) -> dict[str, Any]:
    """The columns of :func:`_scan_sql` by name."""
    cur = con.execute(_scan_sql(schema, currency), [received_at])
    rows = cur.fetchall()
    assert len(rows) == 1 and cur.description is not None
    return dict(zip([d[0] for d in cur.description], rows[0], strict=True))


def _decide(con: duckdb.DuckDBPyConnection, got: dict[str, Any], *, clean: bool) -> str:
    total = got["rows"]
    if not total or got["lo"] is None:
        return "rows"
    window = DEDUP_WINDOW
    lo, hi = got["lo"] - window, got["hi"] + window
    (near,) = con.execute(
        'SELECT count(*) FROM event_keys WHERE "timestamp" BETWEEN $1 AND $2', [lo, hi]
    ).fetchall()[0]
    as_is = (
        clean
        and not (got["unclean"] or got["bad"] or got["ids"] != total)
        and set(got["currencies"] or ()) <= ISO_CURRENCIES
    )
    if not near:
        # nothing stored near the file's times (a superset of its valid rows' window): no
        # re-import, so a file that is not a segment as it is goes straight to the pipeline
        return "segment" if as_is else "pipeline"
    if not as_is:
        return "rows"
    (stored,) = con.execute(
        "SELECT count(*) FROM stg s SEMI JOIN (SELECT event_id FROM event_keys "
        'WHERE "timestamp" BETWEEN $1 AND $2) e USING (event_id)',
        [lo, hi],
    ).fetchall()[0]
    return "segment" if not stored else "stored" if stored == total else "rows"


def _stage_identities(con: duckdb.DuckDBPyConnection, schema: pa.Schema, currency: str) -> None:
    """``_ids``: each distinct (user, anonymous, previous) id triple of a clean, valid ``stg``
    at its first time. Stitching over it derives the same links and first-seen times as over
    every row, from a tenth of the rows."""
    names = set(schema.names)
    cols, _, _ = _typed_columns(schema, currency)
    ids = ", ".join(
        f"{f's.{_q(c)}' if c in names else 'CAST(NULL AS VARCHAR)'} AS {c}"
        for c in ("user_id", "anonymous_id", "previous_id")
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _ids AS SELECT {ids}, "
        f'min({cols["timestamp"]}) AS "timestamp" FROM stg s GROUP BY ALL'
    )


def _stage_triples(con: duckdb.DuckDBPyConnection, inputs: SideInputs) -> None:
    """``_ids`` (as :func:`_stage_identities`) from the triples :class:`SideInputs` found."""
    triples = inputs.triples()
    # DuckDB refuses register() while a result of the connection is unfinished
    con.execute("SELECT 1").fetchall()
    con.register("_id_triples", triples)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _ids AS SELECT * FROM _id_triples")
    finally:
        con.unregister("_id_triples")


def _column_reader(path: Path, column: str) -> Callable[[], pa.ChunkedArray]:
    """A callable reading one column of the Parquet file ``path`` (on the caller's thread)."""

    def read() -> pa.ChunkedArray:
        # ParquetFile.read, not read_table: the datasets layer behind read_table costs ~0.25
        # CPU-s the first time a process calls it
        return pq.ParquetFile(str(path)).read(columns=[column], use_threads=False).column(0)

    return read


def import_parquet_segment(
    store: Store,
    path: Path,
    plan: dict[str, str],
    *,
    source: str,
    received_at: datetime,
) -> IngestReport | None:
    """Import ``path`` as a reference segment; None when the file must take the pipeline.

    ``plan`` maps staging columns to the file's columns (``columns.column_plan``). Nothing is
    written when None is returned.
    """
    folder = seg.segments_folder(store.path)
    if folder is None:
        return None
    file = pq.ParquetFile(str(path))
    rows = file.metadata.num_rows
    schema = file.schema_arrow
    if rows < MIN_SEGMENT_ROWS or not eligible_schema(schema, plan):
        return None
    unknown = set(plan) - set(STAGING_COLUMNS)
    if unknown:
        return None
    staged = pa.schema(
        [pa.field(name, schema.field(col).type) for name, col in plan.items()]
        + [pa.field("_row", pa.int64())]
    )
    report = IngestReport(source=source, rows=rows)
    target: Path | None = None
    copy: seg.SegmentCopy | None = None
    try:
        with store.write() as con:
            _stage_view(con, path, plan)
            # the canonical names (``_evmap``) only where SQL reads them: the per-row road and the
            # SQL side table; the usual road names each distinct raw name on the side thread
            fast, inputs = _scan_verdict(
                con, staged, store.currency, received_at, path=path, plan=plan
            )
            if fast == "pipeline":
                _drop_temp(con)
                return None
            if fast == "segment":  # the usual case: the file is copied meanwhile
                copy = seg.SegmentCopy(path, folder)
            # the distinct id triples stitching reads: from the dictionary codes on the side
            # inputs' thread, else from the file
            if inputs is not None and copy is None:
                _stage_triples(con, inputs)
            elif inputs is None and fast != "rows":
                _stage_identities(con, staged, store.currency)
            if fast != "rows":
                report.accepted = rows
            if copy is not None:
                target = _add_segment(
                    con, store, staged, copy, plan, source, received_at, inputs=inputs
                )
                report.inserted = rows
                _drop_temp(con)
                return report
            if fast == "stored":
                # as the pipeline: stitch only if some id is new or a link would merge persons
                con.execute("CREATE OR REPLACE TEMP VIEW _v AS SELECT *, NULL AS _reason FROM _ids")
                if _identities_change(con):
                    assign_persons(con, "_ids")
                con.execute("DROP VIEW _v")
                report.duplicates = rows
                _drop_temp(con)
                return report
            # else the scan of every row's verdict: quarantine, re-import, or the pipeline
            _register_event_names(con, staged.empty_table())
            sql = _checked_sql(staged, store.currency)
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _v AS {sql.replace('$received_at', '$1')}",
                [received_at],
            )
            verdict = _verdict(con)
            if verdict == "pipeline":
                _drop_temp(con)
                return None
            quarantine_checked(con, "_v", source, received_at, report)
            report.accepted = report.rows - report.rejected
            # the pipeline's shortcut for a re-import (every id known, nothing merges: nothing to
            # stitch); a file of new events has new ids, where the check would only cost a scan
            if verdict == "segment" or _identities_change(con):
                con.execute(
                    "CREATE OR REPLACE TEMP VIEW _good AS SELECT user_id, anonymous_id, "
                    'previous_id, "timestamp" FROM _v WHERE _reason IS NULL'
                )
                assign_persons(con, "_good")
                con.execute("DROP VIEW _good")
            if verdict == "stored":
                report.duplicates = report.accepted
                _drop_temp(con)
                return report
            _register_channels(con)
            first_seq = store.next_seq(con)
            segment_id = seg.next_segment_id(con)
            target = seg.add_segment_file(folder, path, segment_id)
            codes = _side_from_sql(
                con,
                segment_id,
                "SELECT i.person_id, v.event, k.channel "
                "FROM _v v JOIN _channels k USING (_ch_src, _ch_med, _ch_ref, _ch_internal) "
                "JOIN identities i ON i.distinct_id = coalesce(v.user_id, v.anonymous_id) "
                "ORDER BY v._row",
            )
            side = con.execute(f"SELECT count(*) FROM {seg.side_table(segment_id)}").fetchone()
            if not side or side[0] != rows:  # the positional join needs one side row per row
                raise StoreError(f"segment side table of {path} has {side} rows, not {rows}")
            columns = {name: col for name, col in plan.items() if name in EVENT_SCHEMA.names}
            seg.register_segment(
                con,
                store,
                segment_id=segment_id,
                columns=columns,
                source=source,
                received_at=received_at,
                row_count=rows,
                first_seq=first_seq,
                codes=codes,
            )
            report.inserted = rows
            _drop_temp(con)
    except BaseException:
        if copy is not None:
            copy.discard()
        if target is not None:
            target.unlink(missing_ok=True)
        raise
    return report


def _add_segment(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    schema: pa.Schema,
    copy: seg.SegmentCopy,
    plan: dict[str, str],
    source: str,
    received_at: datetime,
    *,
    inputs: SideInputs | None = None,
) -> Path:
    """Stitch, derive channels and write the side table of a file that :func:`_scan_verdict`
    found a new segment; place the copied file and register the segment. Returns the segment's
    file. ``inputs``: the side table's inputs and the id triples to stitch, from the columns
    the text check read (:mod:`segment_side`: no join, no sort); else ``_ids`` and SQL over
    the file."""
    names = set(schema.names)
    if inputs is not None:
        # stitching reads the triples once: straight from Arrow, not copied into a temp table
        triples = inputs.triples()
        con.execute("SELECT 1").fetchall()  # register() needs the last result finished
        con.register("_id_triples", triples)
        try:
            assign_persons(con, "_id_triples")
        finally:
            con.unregister("_id_triples")
        segment_id = seg.next_segment_id(con)
        codes = build_side_table(con, inputs, segment_id)
        return _register(con, store, copy, plan, source, received_at, segment_id, codes)

    def raw(column: str) -> str:  # a clean value is what the pipeline stores
        return f"s.{_q(column)}" if column in names else "CAST(NULL AS VARCHAR)"

    cols, _, _ = _typed_columns(schema, store.currency)
    assign_persons(con, "_ids")
    _register_event_names(con, schema.empty_table())
    person = f"coalesce({raw('user_id')}, {raw('anonymous_id')})"
    # the persons of this file's ids only, met by a 64-bit hash of the id rather than by text:
    # exact when no two of these ids share a hash (checked; else the text join)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _pid AS SELECT hash(i.distinct_id) AS _hash, i.distinct_id, "
        "i.person_id FROM identities i SEMI JOIN "
        "(SELECT coalesce(user_id, anonymous_id) AS distinct_id FROM _ids) f USING (distinct_id)"
    )
    (unique,) = con.execute("SELECT count(DISTINCT _hash) = count(*) FROM _pid").fetchall()[0]
    person_on = f"i._hash = hash({person})" if unique else f"i.distinct_id = {person}"
    on = _register_channel_map(con, names, cols)
    segment_id = seg.next_segment_id(con)
    codes = _side_from_sql(
        con,
        segment_id,
        f"SELECT i.person_id, m.canonical AS event, k.channel FROM stg s JOIN _pid i ON "
        f"{person_on} JOIN _evmap m ON m.raw = s.event JOIN _chmap k ON {on} ORDER BY s._row",
    )
    return _register(con, store, copy, plan, source, received_at, segment_id, codes)


def _side_from_sql(con: duckdb.DuckDBPyConnection, segment_id: int, sql: str) -> seg.SideCodes:
    """The side table of ``segment_id`` from a query of ``person_id, event, channel`` in file
    order (the SQL roads): its rows pass through Arrow to be coded."""
    con.execute("SELECT 1").fetchall()  # con.sql() needs the last result finished
    rows = con.sql(sql).to_arrow_table()
    return seg.write_side_table(
        con, segment_id, rows.column("person_id"), rows.column("event"), rows.column("channel")
    )


def _register(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    copy: seg.SegmentCopy,
    plan: dict[str, str],
    source: str,
    received_at: datetime,
    segment_id: int,
    codes: seg.SideCodes,
) -> Path:
    """Check the side table's length, place the copied file, register the segment."""
    (count,) = con.execute(f"SELECT count(*) FROM {seg.side_table(segment_id)}").fetchall()[0]
    total = _rows(con)
    if count != total:  # the positional join needs one side row per row
        raise StoreError(f"segment side table has {count} rows, not {total}")
    target = copy.place(segment_id)
    seg.register_segment(
        con,
        store,
        segment_id=segment_id,
        columns={name: col for name, col in plan.items() if name in EVENT_SCHEMA.names},
        source=source,
        received_at=received_at,
        row_count=total,
        first_seq=store.next_seq(con),
        codes=codes,
    )
    return target


#: The raw columns a row's channel depends on (``page_url`` only when there is a referrer).
_CHANNEL_INPUTS: Final = ("utm_source", "utm_medium", "referrer", "page_url")


def _register_channel_map(
    con: duckdb.DuckDBPyConnection, names: set[str], cols: dict[str, str]
) -> str:
    """The temp table ``_chmap``: each distinct raw channel input of ``stg`` and its channel,
    derived as the pipeline derives it; returns the join condition of ``stg s`` on it."""
    inputs = [c for c in _CHANNEL_INPUTS if c in names]
    if "page_url" in inputs and "referrer" not in inputs:
        inputs.remove("page_url")  # without a referrer the page is never read
    raw = {c: f"s.{_q(c)}" for c in inputs}
    if "page_url" in raw:
        raw["page_url"] = 'CASE WHEN s.referrer IS NULL THEN NULL ELSE s."page_url" END'
    distinct = ", ".join(f"{expr} AS {_q(c)}" for c, expr in raw.items()) or "1 AS _one"
    keys = ", ".join(f"{expr} AS {name}" for name, expr in _channel_keys(cols).items())
    # a row meets its channel by one 64-bit hash of its inputs, not by four text keys; exact
    # as long as no two distinct inputs of the file share a hash (checked; else the text keys)
    row_hash = f"hash({', '.join(raw.values()) or '1'})"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _chraw AS SELECT s.*, {keys}, "
        f"hash({', '.join(f's.{_q(c)}' for c in raw) or '1'}) AS _hash "
        f"FROM (SELECT DISTINCT {distinct} FROM stg s) s"
    )
    found = con.execute(f"SELECT DISTINCT {', '.join(_CHANNEL_KEY)} FROM _chraw").fetchall()
    con.register(
        "_chk",
        pa.table(
            {
                **{name: [r[i] for r in found] for i, name in enumerate(_CHANNEL_KEY)},
                "channel": [derive_channel(a, b, c, bool(d)) for a, b, c, d in found],
            }
        ),
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _chmap AS SELECT r.*, k.channel FROM _chraw r "
        f"JOIN _chk k USING ({', '.join(_CHANNEL_KEY)})"
    )
    con.unregister("_chk")
    (unique,) = con.execute("SELECT count(DISTINCT _hash) = count(*) FROM _chraw").fetchall()[0]
    if unique:
        return f"k._hash = {row_hash}"
    return " AND ".join(f"k.{_q(c)} IS NOT DISTINCT FROM {expr}" for c, expr in raw.items()) or (
        "TRUE"
    )


def _verdict(con: duckdb.DuckDBPyConnection) -> str:
    """``segment`` (every row valid, clean, new), ``stored`` (no valid row is new; only
    counting and quarantine left) or ``pipeline``."""
    row = con.execute(
        "SELECT count(*), count(*) FILTER (_reason IS NULL), bool_and(_clean), "
        "count(DISTINCT event_id) FILTER (_reason IS NULL), "
        'min("timestamp") FILTER (_reason IS NULL), max("timestamp") FILTER (_reason IS NULL) '
        "FROM _v"
    ).fetchone()
    assert row is not None
    total, valid, clean, distinct, lo, hi = row
    if lo is None:
        return "stored" if total else "pipeline"
    window = DEDUP_WINDOW
    stored = con.execute(
        "SELECT count(DISTINCT v.event_id) FROM _v v "
        "WHERE v._reason IS NULL AND EXISTS (SELECT 1 FROM event_keys e "
        'WHERE e.event_id = v.event_id AND e."timestamp" BETWEEN $1 AND $2)',
        [lo - window, hi + window],
    ).fetchone()
    already = int(stored[0]) if stored else 0
    if already and already == distinct:
        return "stored"
    if valid == total and clean and distinct == valid and not already:
        return "segment"
    return "pipeline"


def _drop_temp(con: duckdb.DuckDBPyConnection) -> None:
    for name in ("_v", "_evmap", "_channels", "_ids", "_pid", "_chraw", "_chmap"):
        con.execute(f"DROP TABLE IF EXISTS {name}")
    con.execute("DROP VIEW IF EXISTS stg")
