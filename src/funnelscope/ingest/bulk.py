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
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from funnelscope.errors import StoreError
from funnelscope.events.schema import EVENT_SCHEMA, ITEM_TYPE, STAGING_COLUMNS
from funnelscope.ingest.pipeline import (
    DEDUP_WINDOW,
    IngestReport,
    _channel_keys,
    _from_staging,
    _identities_change,
    _register_channels,
    _register_event_names,
    _typed_columns,
    quarantine_checked,
)
from funnelscope.store import segments as seg
from funnelscope.store.identity import assign_persons
from funnelscope.store.store import Store

__all__ = ["eligible_schema", "import_parquet_segment"]

#: Files smaller than this go through the pipeline: a segment per tiny file would make every
#: reader's view longer for no gain.
MIN_SEGMENT_ROWS: Final = 10_000

_TYPED: Final = {"timestamp", "revenue", "items"}


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
    keep = (
        "event_id",
        "user_id",
        "anonymous_id",
        "previous_id",
        "timestamp",
        "event",
        "properties",
        "revenue",
        "currency",
        "_props_ok",
        "_items_ok",
        "_rev_raw",
    )
    typed = ",\n  ".join(f"{cols[c]} AS {_q(c)}" for c in keep)
    keys = ", ".join(f"{expr} AS {name}" for name, expr in _channel_keys(cols).items())
    # the raw value is what the pipeline would store (NULLIF(trim(x), '')), in a cheaper form
    clean = [
        f"(s.{_q(c)} IS NULL OR (s.{_q(c)} <> '' AND s.{_q(c)} = trim(s.{_q(c)})))"
        for c in schema.names
        if c not in (*_TYPED, "_row", "currency")
    ]
    if "currency" in schema.names:
        clean.append(f"s.currency IS NOT DISTINCT FROM {cols['currency']}")
    elif "revenue" in schema.names:
        clean.append("s.revenue IS NULL")
    return (
        f"WITH typed AS (SELECT s._row,\n  {typed},\n  {keys},\n"
        f"  {' AND '.join(clean) or 'TRUE'} AS _clean\n {_from_staging(schema)})\n"
        f'SELECT _row, event_id, user_id, anonymous_id, previous_id, "timestamp", event, '
        f"_ch_src, _ch_med, _ch_ref, _ch_internal, _clean, {reason} AS _reason, "
        f"{message} AS _message FROM typed"
    )


def import_parquet_segment(
    store: Store,
    path: Path,
    plan: dict[str, str],
    *,
    source: str,
    received_at: datetime,
) -> IngestReport | None:
    """Import ``path`` as a reference segment; None when the file must take the pipeline.

    ``plan`` maps staging columns to the file's columns (``files._column_plan``). Nothing is
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
    try:
        with store.write() as con:
            _stage_view(con, path, plan)
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
            con.execute(
                f"CREATE TABLE {seg.side_table(segment_id)} AS "
                "SELECT $1 + v._row AS seq, i.person_id, v.event, k.channel "
                "FROM _v v JOIN _channels k USING (_ch_src, _ch_med, _ch_ref, _ch_internal) "
                "JOIN identities i ON i.distinct_id = coalesce(v.user_id, v.anonymous_id) "
                "ORDER BY v._row",
                [first_seq],
            )
            side = con.execute(f"SELECT count(*) FROM {seg.side_table(segment_id)}").fetchone()
            if not side or side[0] != rows:  # the positional join needs one side row per row
                raise StoreError(f"segment side table of {path} has {side} rows, not {rows}")
            columns = {name: col for name, col in plan.items() if name in EVENT_SCHEMA.names}
            seg.register_segment(
                con,
                segment_id=segment_id,
                kind="reference",
                columns=columns,
                source=source,
                received_at=received_at,
                row_count=rows,
                first_seq=first_seq,
                last_seq=first_seq + rows - 1,
                store_path=store.path,
            )
            store.advance_seq(first_seq + rows)
            report.inserted = rows
            _drop_temp(con)
    except BaseException:
        if target is not None:
            target.unlink(missing_ok=True)
        raise
    return report


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
    for name in ("_v", "_evmap", "_channels"):
        con.execute(f"DROP TABLE IF EXISTS {name}")
    con.execute("DROP VIEW IF EXISTS stg")
