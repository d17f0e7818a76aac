"""The one road into the store: staging rows -> validated, deduplicated, stitched events.

Every source (files, frames, the collector's SDK routes, the simulator) hands a *staging* Arrow
table (text or already-typed columns named as in :data:`~funnelscope.events.schema.STAGING_COLUMNS`,
plus ``_row``, the row's position in the input) to :func:`append_events`. In one transaction it

1. types and validates every row in SQL; each bad row goes to ``quarantine`` with a stable
   reason code, a message naming the allowed range, and the row itself as payload;
2. keeps the first row of each event_id in the batch and drops ids already stored (idempotency);
3. assigns dense person ids and stitches identities (see :mod:`funnelscope.store.identity`);
4. inserts the events.

``accepted + rejected == rows`` always holds; ``inserted + duplicates == accepted``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.events.channels import derive_channel, host_sql
from funnelscope.events.currency import ISO_CURRENCIES
from funnelscope.events.schema import EVENT_SCHEMA, MAX_PROPERTIES_BYTES, STAGING_COLUMNS
from funnelscope.events.vocabulary import canonical_event
from funnelscope.store.identity import assign_persons
from funnelscope.store.store import Store

__all__ = [
    "DEDUP_WINDOW",
    "EARLIEST_TIMESTAMP",
    "IngestReport",
    "Rejection",
    "append_events",
    "quarantine_checked",
]

#: Events older than this are rejected (``event.timestamp_out_of_range``).
EARLIEST_TIMESTAMP: Final = datetime(2000, 1, 1).isoformat()
#: Events more than this far in the future of ``received_at`` are rejected.
MAX_FUTURE_SKEW: Final = timedelta(days=1)
#: An event_id is looked up among stored events within this distance in event time: retries of
#: one event differ by seconds of clock-skew correction, and the bound keeps the lookup to the
#: few row groups near the batch instead of the whole table.
DEDUP_WINDOW: Final = timedelta(days=7)
MAX_ID_LENGTH: Final = 200
#: Reports keep this many rejections in full; the quarantine table keeps all of them.
REPORTED_REJECTIONS: Final = 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    """One rejected input row: where, why (stable code) and what it was."""

    row: int
    code: str
    message: str
    payload: bytes | None = None


@dataclass(slots=True)
class IngestReport:
    """What one ingest did: accepted + rejected == rows, inserted + duplicates == accepted."""

    source: str
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    inserted: int = 0
    duplicates: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    rejections: list[Rejection] = field(default_factory=list)

    def merge(self, other: IngestReport) -> None:
        self.rows += other.rows
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.reasons.update(other.reasons)
        room = REPORTED_REJECTIONS - len(self.rejections)
        self.rejections.extend(other.rejections[: max(room, 0)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "reasons": dict(self.reasons),
            "rejections": [
                {"row": r.row, "code": r.code, "message": r.message} for r in self.rejections
            ],
        }


# -- typing and validation, in SQL -------------------------------------------------------------

_ITEM_JSON_SHAPE = json.dumps(
    [
        {
            "product_id": "VARCHAR",
            "sku": "VARCHAR",
            "name": "VARCHAR",
            "category": "VARCHAR",
            "brand": "VARCHAR",
            "variant": "VARCHAR",
            "price": "DECIMAL(18,4)",
            "quantity": "INTEGER",
        }
    ]
)
_ITEM_SQL_TYPE = (
    "STRUCT(product_id VARCHAR, sku VARCHAR, name VARCHAR, category VARCHAR, brand VARCHAR, "
    "variant VARCHAR, price DECIMAL(18, 4), quantity INTEGER)[]"
)
_TEXT_COLUMNS = tuple(
    c
    for c in STAGING_COLUMNS
    if c not in ("timestamp", "properties", "revenue", "currency", "items", "event_id")
)


#: The ISO 4217 codes as a SQL list literal, built once (it is planned into every batch's SQL).
_CURRENCY_LIST: Final = "[" + ", ".join(f"'{c}'" for c in sorted(ISO_CURRENCIES)) + "]"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(col: str, arrow_type: pa.DataType | None) -> str:
    if arrow_type is None or pa.types.is_null(arrow_type):
        return "CAST(NULL AS VARCHAR)"
    return f"NULLIF(trim(CAST(s.{_q(col)} AS VARCHAR)), '')"


def _timestamp_expr(arrow_type: pa.DataType | None) -> str:
    if arrow_type is None or pa.types.is_null(arrow_type):
        return "CAST(NULL AS TIMESTAMPTZ)"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return 'CAST(s."timestamp" AS TIMESTAMPTZ)'
    raw = """CAST(s."timestamp" AS VARCHAR)"""
    epoch = f"TRY_CAST({raw} AS DOUBLE)"
    return (
        f"COALESCE(TRY_CAST({raw} AS TIMESTAMPTZ), "
        f"CASE WHEN regexp_full_match(trim({raw}), '[0-9]{{9,13}}(\\.[0-9]+)?') THEN "
        f"to_timestamp(CASE WHEN {epoch} > 1e11 THEN {epoch} / 1000 ELSE {epoch} END) END)"
    )


def _properties_expr(arrow_type: pa.DataType | None) -> tuple[str, str]:
    """(typed JSON text or NULL, 'is valid' condition)."""
    if arrow_type is None or pa.types.is_null(arrow_type):
        return "CAST(NULL AS VARCHAR)", "TRUE"
    if pa.types.is_struct(arrow_type) or pa.types.is_map(arrow_type):
        return "CAST(to_json(s.properties) AS VARCHAR)", "TRUE"
    raw = "NULLIF(trim(CAST(s.properties AS VARCHAR)), '')"
    # CASE, not AND: DuckDB may evaluate both sides of AND, and json_type fails on bad JSON
    valid = (
        f"({raw} IS NULL OR CASE WHEN json_valid({raw}) "
        f"THEN json_type({raw}) = 'OBJECT' ELSE FALSE END)"
    )
    return raw, valid


def _items_expr(arrow_type: pa.DataType | None) -> tuple[str, str]:
    if arrow_type is None or pa.types.is_null(arrow_type):
        return f"CAST(NULL AS {_ITEM_SQL_TYPE})", "TRUE"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return f"TRY_CAST(s.items AS {_ITEM_SQL_TYPE})", "TRUE"
    raw = "NULLIF(trim(CAST(s.items AS VARCHAR)), '')"
    shape = _ITEM_JSON_SHAPE.replace("'", "''")
    parsed = (
        f"CASE WHEN json_valid({raw}) THEN CASE WHEN json_type({raw}) = 'ARRAY' "
        f"THEN TRY_CAST(json_transform({raw}, '{shape}') AS {_ITEM_SQL_TYPE}) END END"
    )
    # json_transform turns a value it cannot cast into NULL: compare non-null counts to catch it
    kept = " AND ".join(
        f"len(list_filter(json_extract({raw}, '$[*].{f}'), lambda x: json_type(x) <> 'NULL')) "
        f"= len(list_filter(({parsed}), lambda x: x.{f} IS NOT NULL))"
        for f in ("price", "quantity")
    )
    valid = f"({raw} IS NULL OR CASE WHEN ({parsed}) IS NOT NULL THEN {kept} ELSE FALSE END)"
    return parsed, valid


def _typed_columns(schema: pa.Schema, store_currency: str) -> tuple[dict[str, str], str, str]:
    """Typed expressions over ``stg s`` (joined to ``_evmap m``) for every column, plus the
    CASE expressions naming each row's first problem (code and message) over those columns."""
    types = {f.name: f.type for f in schema}
    t = types.get
    cols: dict[str, str] = {c: _text(c, t(c)) for c in (*_TEXT_COLUMNS, "event_id")}
    cols["raw_event"] = _text("event", t("event"))
    cols["event"] = "m.canonical"
    cols["timestamp"] = _timestamp_expr(t("timestamp"))
    props, props_valid = _properties_expr(t("properties"))
    cols["properties"] = props
    items, items_valid = _items_expr(t("items"))
    cols["items"] = items
    rev_raw = _text("revenue", t("revenue"))
    cols["revenue"] = f"TRY_CAST({rev_raw} AS DECIMAL(18, 4))"
    cur_raw = f"upper({_text('currency', t('currency'))})"
    cols["currency"] = (
        f"COALESCE({cur_raw}, CASE WHEN {rev_raw} IS NOT NULL THEN '{store_currency}' END)"
    )
    cols["_props_ok"] = props_valid
    cols["_items_ok"] = items_valid
    cols["_rev_raw"] = rev_raw
    ts = '"timestamp"'
    checks = _checks(ts)
    reason = "CASE " + " ".join(f"WHEN {cond} THEN '{code}'" for code, cond, _ in checks) + " END"
    message = (
        "CASE "
        + " ".join(
            f"WHEN {cond} THEN '{msg.replace(chr(39), chr(39) * 2)}'" for _, cond, msg in checks
        )
        + " END"
    )
    return cols, reason, message


def _checks(ts: str) -> list[tuple[str, str, str]]:
    """(reason code, SQL condition over the typed columns, message), first match wins."""
    return [
        (
            "event.missing_id",
            "event_id IS NULL",
            "event_id is missing: every event needs a unique id (messageId, uuid, eid)",
        ),
        (
            "event.bad_id",
            f"length(event_id) > {MAX_ID_LENGTH}",
            f"event_id is longer than {MAX_ID_LENGTH} characters",
        ),
        ("event.missing_name", "event IS NULL", "event name is missing or empty"),
        (
            "event.missing_identity",
            "user_id IS NULL AND anonymous_id IS NULL",
            "neither user_id nor anonymous_id is set: one of them is required",
        ),
        (
            "event.bad_timestamp",
            f"{ts} IS NULL",
            "timestamp is missing or not a time: use ISO 8601 (2024-05-01T10:00:00Z) "
            "or epoch seconds/milliseconds",
        ),
        (
            "event.timestamp_out_of_range",
            f"{ts} < TIMESTAMPTZ '{EARLIEST_TIMESTAMP}' OR {ts} > $received_at + INTERVAL "
            f"{int(MAX_FUTURE_SKEW.total_seconds())} SECOND",
            f"timestamp is outside the accepted range {EARLIEST_TIMESTAMP[:10]} .. "
            "received_at + 1 day",
        ),
        ("event.invalid_properties", "NOT _props_ok", "properties is not a JSON object"),
        (
            "event.properties_too_large",
            f"strlen(properties) > {MAX_PROPERTIES_BYTES}",
            f"properties are larger than {MAX_PROPERTIES_BYTES // 1024} KiB",
        ),
        (
            "event.bad_revenue",
            "revenue IS NULL AND _rev_raw IS NOT NULL",
            "revenue is not a number in -1e14 .. 1e14",
        ),
        (
            "event.unknown_currency",
            f"currency IS NOT NULL AND NOT list_contains({_CURRENCY_LIST}, currency)",
            "currency is not an ISO 4217 code (e.g. USD, EUR, GBP)",
        ),
        (
            "event.bad_items",
            "NOT _items_ok",
            "items is not a list of line items {product_id, name, category, brand, price, "
            "quantity} "
            "with numeric price and integer quantity",
        ),
    ]


#: The message of each reason code, as a CASE over ``_reason`` (conditions are planned once).
_MESSAGE_BY_CODE: Final = (
    "CASE _reason "
    + " ".join(
        f"WHEN '{code}' THEN '{msg.replace(chr(39), chr(39) * 2)}'"
        for code, _, msg in _checks('"timestamp"')
    )
    + " END"
)


# The typed columns the validation reads; the rest are typed only for rows that are inserted.
_CHECKED: Final = (
    "event_id",
    "event",
    "user_id",
    "anonymous_id",
    "previous_id",
    "timestamp",
    "properties",
    "revenue",
    "currency",
    "_props_ok",
    "_items_ok",
    "_rev_raw",
)
# What is kept of a validated batch: narrow, because copying wide rows is what costs.
_KEPT: Final = ("event_id", "user_id", "anonymous_id", "previous_id", "timestamp")


def _from_staging(schema: pa.Schema, where: str = "") -> str:
    event = _text("event", schema.field("event").type if "event" in schema.names else None)
    return f"FROM stg s LEFT JOIN _evmap m ON m.raw = {event} {where}"


def _channel_keys(cols: dict[str, str]) -> dict[str, str]:
    """The channel's inputs per row; never NULL ('' instead) so joins on them are equi-joins."""
    ref_host = host_sql(cols["referrer"])
    return {
        "_ch_src": f"coalesce(lower({cols['utm_source']}), '')",
        "_ch_med": f"coalesce(lower({cols['utm_medium']}), '')",
        "_ch_ref": f"coalesce({ref_host}, '')",
        "_ch_internal": f"CASE WHEN {cols['referrer']} IS NULL THEN FALSE "
        f"ELSE coalesce({ref_host} = {host_sql(cols['page_url'])}, FALSE) END",
    }


def _typed_cte(schema: pa.Schema, store_currency: str, columns: tuple[str, ...]) -> tuple[str, str]:
    """``WITH typed AS (...)`` (``_row``, the typed ``columns`` and the channel keys per row),
    and the list of what ``_v`` keeps of each row besides the verdict."""
    cols, _, _ = _typed_columns(schema, store_currency)
    typed = ",\n  ".join(f"{cols[c]} AS {_q(c)}" for c in columns)
    keys = ", ".join(f"{expr} AS {name}" for name, expr in _channel_keys(cols).items())
    kept = ", ".join(_q(c) for c in (*_KEPT, *_CHANNEL_KEY))
    cte = f"WITH typed AS (SELECT s._row,\n  {typed},\n  {keys}\n {_from_staging(schema)})"
    return cte, kept


@lru_cache(maxsize=64)  # a collector sends the same few staging schemas over and over
def _validation_sql(schema: pa.Schema, store_currency: str) -> str:
    _, reason, _ = _typed_columns(schema, store_currency)
    cte, kept = _typed_cte(schema, store_currency, _CHECKED)
    return (
        f"{cte},\n"
        f"checked AS (SELECT _row, {kept}, {reason} AS _reason FROM typed)\n"
        f"SELECT *, {_MESSAGE_BY_CODE} AS _message FROM checked"
    )


@lru_cache(maxsize=64)
def _typed_sql(schema: pa.Schema, store_currency: str) -> str:
    """:func:`_validation_sql`'s columns for rows already known to be valid: no checks (the
    JSON and item checks are most of its cost), every ``_reason`` NULL."""
    cte, kept = _typed_cte(schema, store_currency, _KEPT)
    return (
        f"{cte}\n"
        f"SELECT _row, {kept}, CAST(NULL AS VARCHAR) AS _reason, "
        "CAST(NULL AS VARCHAR) AS _message FROM typed"
    )


def _register_event_names(con: duckdb.DuckDBPyConnection, staging: pa.Table) -> None:
    """Canonical names for the batch's distinct raw names (few), computed once in Python, as
    the temp table ``_evmap`` (raw, canonical) that :func:`_validation_sql` joins."""
    con.register("_evmap_src", _event_names(con, staging))
    con.execute("CREATE OR REPLACE TEMP TABLE _evmap AS SELECT * FROM _evmap_src")
    con.unregister("_evmap_src")


def _event_names(con: duckdb.DuckDBPyConnection, staging: pa.Table) -> pa.Table:
    raw: list[str] = []
    if "event" in staging.column_names and not pa.types.is_null(staging.schema.field("event").type):
        rows = con.execute(
            "SELECT DISTINCT NULLIF(trim(CAST(event AS VARCHAR)), '') FROM stg"
        ).fetchall()
        raw = [r[0] for r in rows if r[0] is not None]
    return pa.table(
        {"raw": pa.array(raw, pa.string()), "canonical": [canonical_event(n) for n in raw]},
        schema=pa.schema([("raw", pa.string()), ("canonical", pa.string())]),
    )


def _prepare(staging: pa.Table, row_offset: int) -> pa.Table:
    if "_row" not in staging.column_names:
        rows = pa.array(range(row_offset, row_offset + staging.num_rows), pa.int64())
        staging = staging.append_column("_row", rows)
    return staging


def append_events(
    store: Store,
    staging: pa.Table,
    *,
    source: str,
    received_at: datetime,
    row_offset: int = 0,
    pre_rejected: Sequence[Rejection] = (),
    known_valid: bool = False,
) -> IngestReport:
    """Validate, quarantine, deduplicate, stitch and insert one batch, atomically.

    ``pre_rejected`` are rows a parser could not even stage (invalid JSON, bad bytes); they are
    quarantined in the same transaction and counted in the report. ``known_valid``: every
    staged row already passed this validation (the collector's journal holds only rows its ack
    stage validated, against an earlier ``received_at``), so it is not run again; such a load
    is deduplicated against every stored event (``event_id_hashes``), not only those within
    :data:`DEDUP_WINDOW` of the batch, and stores the same rows a validated load would.
    """
    staging = _prepare(staging, row_offset)
    unknown = set(staging.column_names) - {*STAGING_COLUMNS, "_row", "_received_at"}
    if unknown:
        staging = staging.drop_columns(sorted(unknown))
    report = IngestReport(source=source, rows=staging.num_rows + len(pre_rejected))
    with store.write() as con:
        # registrations live on the write cursor, which is closed on error
        con.register("stg", staging)
        # the lookups are registered Arrow tables, not temp tables: no catalog writes
        con.register("_evmap", _event_names(con, staging))
        if known_valid:
            _quarantine_parsed(con, pre_rejected, source, received_at, report)
            report.accepted = report.rows - report.rejected
            next_seq = store.next_seq(con)
            report.inserted = _insert_known_valid(
                con, staging, store.currency, received_at, source, next_seq
            )
            top = pc.max(staging["_row"]).as_py() if staging.num_rows else None
            store.advance_seq(next_seq + (int(top) + 1 if top is not None else 0))
            for name in ("stg", "_evmap"):
                con.unregister(name)
            report.duplicates = report.accepted - report.inserted
            return report
        else:
            sql = _validation_sql(staging.schema, store.currency)
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _v AS {sql.replace('$received_at', '$1')}",
                [received_at],
            )
        quarantine_checked(con, "_v", source, received_at, report)
        _quarantine_parsed(con, pre_rejected, source, received_at, report)
        report.accepted = report.rows - report.rejected
        next_seq = store.next_seq(con)
        report.inserted = _insert_new(
            con, staging.schema, store.currency, received_at, source, next_seq
        )
        top = pc.max(staging["_row"]).as_py() if staging.num_rows else None
        store.advance_seq(next_seq + (int(top) + 1 if top is not None else 0))
        for name in ("stg", "_evmap", "_channels"):
            con.unregister(name)
        report.duplicates = report.accepted - report.inserted
        con.execute("DROP TABLE IF EXISTS _v")
    return report


def quarantine_checked(
    con: duckdb.DuckDBPyConnection,
    checked: str,
    source: str,
    received_at: datetime,
    report: IngestReport,
) -> None:
    """Quarantine the rows of ``checked`` (a validated temp table with ``_row``, ``_reason``,
    ``_message``) that have a reason, with the staged row ``stg`` as payload; count them."""
    counts = con.execute(
        f"SELECT _reason, count(*) FROM {checked} WHERE _reason IS NOT NULL GROUP BY 1 ORDER BY 1"
    ).fetchall()
    if not counts:
        return
    for code, n in counts:
        report.reasons[str(code)] += int(n)
        report.rejected += int(n)
    con.execute(
        "INSERT INTO quarantine SELECT $1, $2, v._row, v._reason, v._message, "
        "encode(CAST(to_json(s) AS VARCHAR)) "
        f"FROM {checked} v JOIN stg s USING (_row) WHERE v._reason IS NOT NULL",
        [received_at, source],
    )
    for row, code, message in con.execute(
        f"SELECT _row, _reason, _message FROM {checked} WHERE _reason IS NOT NULL ORDER BY _row "
        f"LIMIT {REPORTED_REJECTIONS}"
    ).fetchall():
        report.rejections.append(Rejection(int(row), str(code), str(message)))


def _quarantine_parsed(
    con: duckdb.DuckDBPyConnection,
    rejected: Sequence[Rejection],
    source: str,
    received_at: datetime,
    report: IngestReport,
) -> None:
    if not rejected:
        return
    con.executemany(
        "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?)",
        [[received_at, source, r.row, r.code, r.message, r.payload] for r in rejected],
    )
    for r in rejected:
        report.reasons[r.code] += 1
        if len(report.rejections) < REPORTED_REJECTIONS:
            report.rejections.append(r)
    report.rejected += len(rejected)
    report.rejections.sort(key=lambda r: r.row)


_CHANNEL_KEY: Final = ("_ch_src", "_ch_med", "_ch_ref", "_ch_internal")


def _register_channels(con: duckdb.DuckDBPyConnection) -> None:
    """Derive the channel once per distinct key of the batch (the keys are in ``_v``), as the
    temp table ``_channels``."""
    con.register("_channels_src", _channel_table(con))
    con.execute("CREATE OR REPLACE TEMP TABLE _channels AS SELECT * FROM _channels_src")
    con.unregister("_channels_src")


def _channel_table(con: duckdb.DuckDBPyConnection) -> pa.Table:
    distinct = con.execute(
        f"SELECT DISTINCT {', '.join(_CHANNEL_KEY)} FROM _v WHERE _reason IS NULL"
    ).fetchall()
    return pa.table(
        {
            **{name: [row[i] for row in distinct] for i, name in enumerate(_CHANNEL_KEY)},
            "channel": [derive_channel(s, m, h, bool(i)) for s, m, h, i in distinct],
        },
        schema=pa.schema(
            [
                ("_ch_src", pa.string()),
                ("_ch_med", pa.string()),
                ("_ch_ref", pa.string()),
                ("_ch_internal", pa.bool_()),
                ("channel", pa.string()),
            ]
        ),
    )


#: True unless every id of the batch's good rows is known and no link (anonymous or previous
#: id -> user id) would merge (it already joins one person, or the anonymous id's person has a
#: user: a shared device): then stitching has nothing to do, which is the steady state of a
#: collector (returning visitors), and one query replaces a dozen.
_IDENTITIES_CHANGE: Final = """
WITH g AS (SELECT user_id, anonymous_id, previous_id FROM _v WHERE _reason IS NULL),
ids AS (
    SELECT user_id AS id FROM g WHERE user_id IS NOT NULL
    UNION SELECT anonymous_id FROM g WHERE anonymous_id IS NOT NULL
    UNION SELECT previous_id FROM g WHERE previous_id IS NOT NULL
),
known AS (
    SELECT i.distinct_id, m.canonical_id
    FROM identities i JOIN person_map m USING (person_id)
    WHERE i.distinct_id IN (SELECT id FROM ids)
),
links AS (
    SELECT anonymous_id AS anon, user_id FROM g
    WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL AND anonymous_id <> user_id
    UNION SELECT previous_id, user_id FROM g
    WHERE previous_id IS NOT NULL AND user_id IS NOT NULL AND previous_id <> user_id
)
SELECT (SELECT count(*) FROM ids) <> (SELECT count(DISTINCT distinct_id) FROM known)
    OR EXISTS (
        SELECT 1 FROM links l
        JOIN known a ON a.distinct_id = l.anon
        JOIN known u ON u.distinct_id = l.user_id
        WHERE a.canonical_id <> u.canonical_id
          -- a shared device: an anonymous id already in a user's person is never merged
          AND NOT EXISTS (
              SELECT 1 FROM person_map m2 JOIN identities i2 USING (person_id)
              WHERE m2.canonical_id = a.canonical_id AND i2.is_user
          )
    )
"""


def _received_at_expr(schema: pa.Schema) -> str:
    """The stored ``received_at``: the row's own arrival time when it carries one (the
    collector's journal keeps it), else the load's (``$1``)."""
    if "_received_at" in schema.names:
        return "coalesce(CAST(s._received_at AS TIMESTAMPTZ), $1)"
    return "$1"


def _identities_change(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(_IDENTITIES_CHANGE).fetchall()  # all: leaves no open result behind
    return bool(not rows or rows[0][0])


def _insert_new(
    con: duckdb.DuckDBPyConnection,
    schema: pa.Schema,
    store_currency: str,
    received_at: datetime,
    source: str,
    next_seq: int,
) -> int:
    """Stitch identities, then insert the batch's first row of each event_id not yet stored."""
    window = f"INTERVAL {int(DEDUP_WINDOW.total_seconds())} SECOND"
    if _identities_change(con):
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _good AS "
            'SELECT user_id, anonymous_id, previous_id, "timestamp" FROM _v WHERE _reason IS NULL'
        )
        assign_persons(con, "_good")
        con.execute("DROP VIEW _good")
    cols, _, _ = _typed_columns(schema, store_currency)
    con.register("_channels", _channel_table(con))
    select = []
    for name in EVENT_SCHEMA.names:
        if name == "received_at":
            select.append(_received_at_expr(schema))
        elif name == "channel":
            select.append("k.channel")
        elif name == "source":
            select.append(f"coalesce({cols['source']}, $2)")
        elif name == "person_id":
            select.append("i.person_id")
        else:
            select.append(cols[name])
    lo, hi = con.execute(
        f'SELECT min("timestamp") - {window}, max("timestamp") + {window} FROM _v '
        "WHERE _reason IS NULL"
    ).fetchall()[0]
    if lo is None:
        return 0
    # bounds as constants: the scan of stored ids prunes row groups by their timestamp stats
    inserted = con.execute(
        f"""
        INSERT INTO event_log ({", ".join(_q(n) for n in EVENT_SCHEMA.names)}, seq)
        WITH keep AS (
            SELECT min(_row) AS _row, arg_min(coalesce(user_id, anonymous_id), _row) AS person_key,
                   arg_min(ch.channel, _row) AS channel
            FROM _v v JOIN _channels ch USING (_ch_src, _ch_med, _ch_ref, _ch_internal)
            WHERE _reason IS NULL AND NOT EXISTS (
                SELECT 1 FROM event_keys e
                WHERE e.event_id = v.event_id AND e."timestamp" BETWEEN $3 AND $4
            )
            GROUP BY event_id
        )
        SELECT {", ".join(select)}, $5 + s._row
        {_from_staging(schema)}
        JOIN keep k ON k._row = s._row
        JOIN identities i ON i.distinct_id = k.person_key
        """,
        [received_at, source, lo, hi, next_seq],
    ).fetchall()
    return int(inserted[0][0]) if inserted else 0


# -- the known-valid load (the collector's journal) ----------------------------------------------

#: The channel's raw inputs (staging columns), derived once per distinct combination.
_CHANNEL_INPUTS: Final = ("utm_source", "utm_medium", "referrer", "page_url")
#: An id's hash as ``event_id_hashes`` keeps it (migration 0007): MD5's first 64 bits, stable
#: across DuckDB versions (``hash()`` is not).
_ID_HASH: Final = "md5_number_lower(event_id)"


def _channel_map(con: duckdb.DuckDBPyConnection, staging: pa.Table) -> tuple[str, str]:
    """Register ``_chmap`` (each distinct combination of the channel's raw inputs in
    ``staging``, with its channel) and return (join clause onto ``stg s``, channel expression).

    The distinct combinations are found by Arrow (no SQL over the batch), their keys typed by
    the same SQL as everywhere (:func:`_channel_keys`) over those few rows only.
    """
    present = [
        c
        for c in _CHANNEL_INPUTS
        if c in staging.column_names and not pa.types.is_null(staging.schema.field(c).type)
    ]
    if not present:  # one channel for every row
        return "", "'" + derive_channel("", "", "", False).replace("'", "''") + "'"
    if all(pa.types.is_string(staging.schema.field(c).type) for c in present):
        distinct = staging.select(present).group_by(present).aggregate([])
    else:  # typed inputs: let DuckDB find the distinct ones
        names = ", ".join(_q(c) for c in present)
        distinct = con.execute(f"SELECT DISTINCT {names} FROM stg").to_arrow_table()
    cols, _, _ = _typed_columns(distinct.schema, "USD")  # the currency plays no part here
    keys = ", ".join(f"{expr} AS {name}" for name, expr in _channel_keys(cols).items())
    con.register("_chraw", distinct)
    try:
        found = con.execute(f"SELECT {keys} FROM _chraw s").fetchall()
    finally:
        con.unregister("_chraw")
    channels = [derive_channel(a, b, c, bool(d)) for a, b, c, d in found]
    con.register("_chmap", distinct.append_column("channel", pa.array(channels, pa.string())))
    # each row of stg matches exactly one combination (NULLs match NULLs)
    on = " AND ".join(f"c.{_q(n)} IS NOT DISTINCT FROM s.{_q(n)}" for n in present)
    return f"JOIN _chmap c ON {on}", "c.channel"


def _insert_known_valid(
    con: duckdb.DuckDBPyConnection,
    staging: pa.Table,
    store_currency: str,
    received_at: datetime,
    source: str,
    next_seq: int,
) -> int:
    """:func:`_insert_new` for rows known to be valid, with the same stored rows, cheaper and
    exact: deduplicated against every stored event (``event_id_hashes``), not a time window.

    Statements: the narrow typed rows (``_v``: ids, time, each id's hash and whether it is the
    batch's first copy, whether its hash is stored), a confirmation only when some hash is
    stored (SDK retries, a replayed journal), stitching only when some id is new or a link
    would merge, one INSERT of the events typed once, and the hashes of what was inserted.
    """
    schema = staging.schema
    cols, _, _ = _typed_columns(schema, store_currency)
    _catch_up_hashes(con, next_seq)
    ids = ", ".join(
        f"{cols[c]} AS {_q(c)}" for c in ("event_id", "user_id", "anonymous_id", "previous_id")
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _v AS
        WITH typed AS (
            SELECT s._row, {ids}, {cols["timestamp"]} AS "timestamp" FROM stg s
        ), hashed AS (
            SELECT *, {_ID_HASH} AS _h,
                   row_number() OVER (PARTITION BY event_id ORDER BY _row) = 1 AS _first
            FROM typed
        ), stored AS (
            SELECT DISTINCT k.h FROM event_id_hashes k SEMI JOIN hashed ON k.h = hashed._h
        )
        SELECT hashed.*, st.h IS NOT NULL AS _seen, CAST(NULL AS VARCHAR) AS _reason
        FROM hashed LEFT JOIN stored st ON st.h = hashed._h
        """
    )
    seen = con.execute("SELECT count(*) FILTER (_seen AND _first) FROM _v").fetchall()[0][0]
    if seen:
        # a stored hash is a candidate: the event at its seq must carry the same id
        con.execute(
            """
            UPDATE _v SET _seen = FALSE WHERE _seen AND event_id NOT IN (
                SELECT e.event_id FROM events e
                JOIN (SELECT DISTINCT k.seq FROM event_id_hashes k
                      JOIN _v v ON k.h = v._h WHERE v._seen) c ON c.seq = e.seq
            )
            """
        )
    if _identities_change(con):
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _good AS "
            'SELECT user_id, anonymous_id, previous_id, "timestamp" FROM _v'
        )
        assign_persons(con, "_good")
        con.execute("DROP VIEW _good")
    chmap_join, channel = _channel_map(con, staging)
    items_join = ""
    if "items" in schema.names and pa.types.is_string(schema.field("items").type):
        # line items repeat (product-level events, popular carts): each distinct JSON text is
        # parsed once, and the ~1 us per row of parsing is a hash-join probe instead
        items_join = (
            f"LEFT JOIN (SELECT s.items AS _raw, {cols['items']} AS _typed "
            "FROM (SELECT DISTINCT items FROM stg) s) it ON it._raw IS NOT DISTINCT FROM s.items"
        )
    select = []
    for name in EVENT_SCHEMA.names:
        if name == "received_at":
            select.append(_received_at_expr(schema))
        elif name == "channel":
            select.append(channel)
        elif name == "source":
            select.append(f"coalesce({cols['source']}, $2)")
        elif name == "person_id":
            select.append("i.person_id")
        elif name in ("event_id", "user_id", "anonymous_id", "timestamp"):
            select.append(f"v.{_q(name)}")  # typed once, in _v
        elif name == "items" and items_join:
            select.append("it._typed")
        else:
            select.append(cols[name])
    inserted = con.execute(
        f"""
        INSERT INTO event_log ({", ".join(_q(n) for n in EVENT_SCHEMA.names)}, seq)
        SELECT {", ".join(select)}, $3 + s._row
        {_from_staging(schema)}
        JOIN _v v ON v._row = s._row AND v._first AND NOT v._seen
        JOIN identities i ON i.distinct_id = coalesce(v.user_id, v.anonymous_id)
        {chmap_join}
        {items_join}
        """,
        [received_at, source, next_seq],
    ).fetchall()
    if chmap_join:
        con.unregister("_chmap")
    count = int(inserted[0][0]) if inserted else 0
    top = pc.max(staging["_row"]).as_py() if staging.num_rows else None
    covered = next_seq + (int(top) + 1 if top is not None else 0)
    # one call for the three (ints of our own, not input): each return from DuckDB to Python
    # waits for the GIL, up to a switch interval while the event loop is busy
    con.execute(
        f"INSERT INTO event_id_hashes SELECT _h, {int(next_seq)} + _row FROM _v "
        "WHERE _first AND NOT _seen;\n"
        f"UPDATE event_id_hashes_state SET covered_seq = {int(covered)};\n"
        "DROP TABLE IF EXISTS _v"
    )
    return count


def _catch_up_hashes(con: duckdb.DuckDBPyConnection, next_seq: int) -> None:
    """Hash the stored events that other writers added since the last known-valid load (file
    imports, segments; on a store migrated from the old layout: everything)."""
    rows = con.execute("SELECT covered_seq FROM event_id_hashes_state").fetchall()
    covered = int(rows[0][0]) if rows else 0
    if covered >= next_seq:
        return
    con.execute(
        f"INSERT INTO event_id_hashes SELECT {_ID_HASH}, seq FROM events WHERE seq >= $1",
        [covered],
    )
    con.execute("UPDATE event_id_hashes_state SET covered_seq = $1", [next_seq])
