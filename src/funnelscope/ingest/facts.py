"""Loaders for the facts that are not person events: ad spend, email sends, surveys, catalog, rates.

:func:`append_facts` takes an Arrow table of one fact kind (text or typed columns named as in
:data:`FACT_COLUMNS`) and, in one transaction,

1. types and validates every row in SQL; a bad row goes to ``quarantine`` with a stable reason
   code (``ad_spend.bad_date``, ``survey.score_out_of_range``, ``fact.unknown_currency``...), a
   message naming the allowed range and the row itself as payload;
2. keeps the last row of each key in the batch (:data:`FACT_KEYS`) and replaces the stored row
   of that key, so loading the same file twice changes nothing (re-loading an ad-spend export
   never double-counts spend);
3. resolves survey respondents to person ids through ``identities`` when they are known.

``accepted + rejected == rows``; ``inserted`` counts new or changed rows and ``duplicates`` the
accepted rows that changed nothing (a repeated key in the batch, or a row already stored as is).
docs/data-model.md ("Facts") lists the columns, keys and reason codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

import duckdb
import pyarrow as pa

from funnelscope.errors import InvalidInputError, Problem
from funnelscope.events.channels import CHANNELS
from funnelscope.events.currency import ISO_CURRENCIES
from funnelscope.ingest.pipeline import (
    EARLIEST_TIMESTAMP,
    MAX_FUTURE_SKEW,
    IngestReport,
    _quarantine_parsed,
    quarantine_checked,
)
from funnelscope.ingest.utf8 import split_invalid_utf8
from funnelscope.store.store import Store

__all__ = [
    "FACT_COLUMNS",
    "FACT_KEYS",
    "FACT_KINDS",
    "FactColumn",
    "FactKind",
    "append_facts",
]


class FactKind(StrEnum):
    """The fact tables, named as in the store."""

    AD_SPEND = "ad_spend"
    EMAIL_CAMPAIGNS = "email_campaigns"
    SURVEY_RESPONSES = "survey_responses"
    PRODUCTS = "products"
    CURRENCY_RATES = "currency_rates"


FACT_KINDS: Final = tuple(k.value for k in FactKind)


@dataclass(frozen=True, slots=True)
class FactColumn:
    """One expected column of a fact table.

    ``type`` is one of text, channel, currency, date, timestamp, integer, decimal, double.
    ``default`` is a SQL literal (or ``$store_currency``) used when the value is empty.
    """

    name: str
    type: str
    required: bool
    meaning: str
    is_non_negative: bool = False
    default: str | None = None


def _col(
    name: str,
    type_: str,
    meaning: str,
    *,
    required: bool = False,
    non_negative: bool = False,
    default: str | None = None,
) -> FactColumn:
    return FactColumn(name, type_, required, meaning, non_negative, default)


#: Expected columns of each kind, in store order (docs/data-model.md renders them).
FACT_COLUMNS: Final[dict[FactKind, tuple[FactColumn, ...]]] = {
    FactKind.AD_SPEND: (
        _col("date", "date", "the day (UTC) the spend is for", required=True),
        _col(
            "channel",
            "channel",
            "one of the derived channels (paid_search, display...)",
            required=True,
        ),
        _col("source", "text", "the platform, as in utm_source (google, facebook...)"),
        _col("campaign", "text", "the campaign, as in utm_campaign"),
        _col("impressions", "integer", "ads shown", required=True, non_negative=True),
        _col(
            "clicks",
            "integer",
            "clicks on the ads; at most impressions",
            required=True,
            non_negative=True,
        ),
        _col("spend", "decimal", "cost of the day in `currency`", required=True, non_negative=True),
        _col(
            "currency",
            "currency",
            "ISO 4217; empty means the store currency",
            default="$store_currency",
        ),
        _col(
            "reach",
            "integer",
            "distinct people reached, when the platform reports it",
            non_negative=True,
        ),
    ),
    FactKind.EMAIL_CAMPAIGNS: (
        _col(
            "campaign_id",
            "text",
            "the campaign's id, as in email events' properties",
            required=True,
        ),
        _col("name", "text", "the campaign's name, as in utm_campaign"),
        _col("sent_at", "timestamp", "when it was sent (UTC)", required=True),
        _col("recipients", "integer", "addresses it was sent to", required=True, non_negative=True),
        _col(
            "delivered",
            "integer",
            "emails delivered; at most recipients",
            required=True,
            non_negative=True,
        ),
    ),
    FactKind.SURVEY_RESPONSES: (
        _col("response_id", "text", "the response's unique id", required=True),
        _col("answered_at", "timestamp", "when it was answered (UTC)", required=True),
        _col("user_id", "text", "the respondent's user id, when known"),
        _col("anonymous_id", "text", "the respondent's anonymous id, when known"),
        _col("score", "integer", "the NPS answer, a whole number 0..10", required=True),
        _col("comment", "text", "free text"),
        _col("survey", "text", "which survey; empty means 'nps'", default="'nps'"),
    ),
    FactKind.PRODUCTS: (
        _col("product_id", "text", "the product id used in events' items", required=True),
        _col("sku", "text", "stock keeping unit"),
        _col("name", "text", "product name"),
        _col("category", "text", "category"),
        _col("brand", "text", "brand"),
        _col("price", "decimal", "list price in `currency`", non_negative=True),
        _col(
            "currency",
            "currency",
            "ISO 4217; empty means the store currency",
            default="$store_currency",
        ),
    ),
    FactKind.CURRENCY_RATES: (
        _col("date", "date", "the rate holds from this day on", required=True),
        _col("currency", "currency", "ISO 4217 code of the foreign currency", required=True),
        _col(
            "rate",
            "double",
            "store-currency units for one unit of `currency`; above 0",
            required=True,
        ),
    ),
}

#: The key of each kind: a load replaces the stored row with the same key.
FACT_KEYS: Final[dict[FactKind, tuple[str, ...]]] = {
    FactKind.AD_SPEND: ("date", "channel", "source", "campaign"),
    FactKind.EMAIL_CAMPAIGNS: ("campaign_id",),
    FactKind.SURVEY_RESPONSES: ("response_id",),
    FactKind.PRODUCTS: ("product_id",),
    FactKind.CURRENCY_RATES: ("date", "currency"),
}

# Reason-code prefix of each kind (codes read as ``survey.score_out_of_range``).
_PREFIX: Final[dict[FactKind, str]] = {
    FactKind.AD_SPEND: "ad_spend",
    FactKind.EMAIL_CAMPAIGNS: "email_campaign",
    FactKind.SURVEY_RESPONSES: "survey",
    FactKind.PRODUCTS: "product",
    FactKind.CURRENCY_RATES: "currency_rate",
}

#: Whole numbers, optionally written with a zero fraction ("12" or "12.0"); "1.5" is not one.
_INTEGER_PATTERN: Final = r"[+-]?[0-9]{1,18}(\.0*)?"

# Kind-specific checks after the generic ones: (code suffix, condition on typed columns, message)
_KIND_CHECKS: Final[dict[FactKind, tuple[tuple[str, str, str], ...]]] = {
    FactKind.AD_SPEND: (
        (
            "clicks_exceed_impressions",
            "clicks > impressions",
            "clicks must be at most impressions (0 <= clicks <= impressions)",
        ),
        (
            "reach_exceeds_impressions",
            "reach > impressions",
            "reach must be at most impressions (0 <= reach <= impressions)",
        ),
    ),
    FactKind.EMAIL_CAMPAIGNS: (
        (
            "delivered_exceed_recipients",
            "delivered > recipients",
            "delivered must be at most recipients (0 <= delivered <= recipients)",
        ),
    ),
    FactKind.SURVEY_RESPONSES: (
        ("score_out_of_range", "score < 0 OR score > 10", "score must be a whole number in 0..10"),
    ),
    FactKind.PRODUCTS: (),
    FactKind.CURRENCY_RATES: (("bad_rate", "rate <= 0", "rate must be a finite number above 0"),),
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parse_kind(kind: FactKind | str) -> FactKind:
    try:
        return FactKind(str(kind).strip().lower())
    except ValueError:
        raise InvalidInputError(
            [
                Problem(
                    "fact.unknown_kind",
                    "kind",
                    f"unknown fact kind {kind!r}; allowed: {', '.join(FACT_KINDS)}",
                )
            ]
        ) from None


def _normalise_columns(kind: FactKind, table: pa.Table) -> pa.Table:
    """Match column names case- and space-insensitively; drop the ones this kind has not."""
    expected = {c.name for c in FACT_COLUMNS[kind]}
    names = [n.strip().lower().replace(" ", "_") for n in table.column_names]
    table = table.rename_columns(names)
    keep = [n for n in dict.fromkeys(names) if n in expected]
    missing = [c.name for c in FACT_COLUMNS[kind] if c.required and c.name not in keep]
    if missing:
        allowed = ", ".join(c.name for c in FACT_COLUMNS[kind])
        raise InvalidInputError(
            [
                Problem(
                    "fact.missing_column",
                    f"{kind.value}.{name}",
                    f"required column {name!r} is missing; {kind.value} columns: {allowed}",
                )
                for name in missing
            ]
        )
    return table.select(keep)


def _typed(column: FactColumn, present: bool) -> tuple[str, str]:
    """(raw text expression, typed expression) of one column of the staged table ``s``."""
    if not present:
        raw = "CAST(NULL AS VARCHAR)"
    else:
        raw = f"NULLIF(trim(CAST(s.{_q(column.name)} AS VARCHAR)), '')"
    if column.default is not None:
        raw = f"COALESCE({raw}, {column.default})"
    typed = {
        "text": raw,
        "channel": f"trim(regexp_replace(lower({raw}), '[^0-9a-z]+', '_', 'g'), '_')",
        "currency": f"upper({raw})",
        "date": f"TRY_CAST({raw} AS DATE)",
        "timestamp": f"TRY_CAST({raw} AS TIMESTAMPTZ)",
        "integer": (
            f"CASE WHEN regexp_full_match({raw}, '{_INTEGER_PATTERN}') "
            f"THEN TRY_CAST(TRY_CAST({raw} AS DECIMAL(38, 6)) AS BIGINT) END"
        ),
        "decimal": f"TRY_CAST({raw} AS DECIMAL(18, 4))",
        "double": (
            f"CASE WHEN isfinite(TRY_CAST({raw} AS DOUBLE)) THEN TRY_CAST({raw} AS DOUBLE) END"
        ),
    }[column.type]
    return raw, typed


_BAD_VALUE: Final[dict[str, tuple[str, str]]] = {
    "date": ("bad_date", "is not a date: use ISO 8601 (2024-05-01)"),
    "timestamp": ("bad_timestamp", "is not a time: use ISO 8601 (2024-05-01T10:00:00Z)"),
    "integer": ("bad_number", "is not a whole number"),
    "decimal": ("bad_number", "is not a number in -1e14 .. 1e14"),
    "double": ("bad_number", "is not a finite number"),
}


def _checks(kind: FactKind) -> list[tuple[str, str, str]]:
    """(reason code, condition on the typed row, message), first match wins."""
    prefix = _PREFIX[kind]
    columns = FACT_COLUMNS[kind]
    checks: list[tuple[str, str, str]] = []
    for c in columns:
        if c.required:
            checks.append(
                (
                    f"{prefix}.missing_value",
                    f"{_q('_raw_' + c.name)} IS NULL",
                    f"{c.name} is missing: it is required",
                )
            )
    for c in columns:
        if c.type in _BAD_VALUE:
            suffix, text = _BAD_VALUE[c.type]
            checks.append(
                (
                    f"{prefix}.{suffix}",
                    f"{_q(c.name)} IS NULL AND {_q('_raw_' + c.name)} IS NOT NULL",
                    f"{c.name} {text}",
                )
            )
    for c in columns:
        if c.type in ("date", "timestamp"):
            lo = f"TIMESTAMPTZ '{EARLIEST_TIMESTAMP}'"
            hi = f"$received_at + INTERVAL {int(MAX_FUTURE_SKEW.total_seconds())} SECOND"
            checks.append(
                (
                    f"{prefix}.{'date' if c.type == 'date' else 'timestamp'}_out_of_range",
                    f"{_q(c.name)} < {lo} OR {_q(c.name)} > {hi}",
                    f"{c.name} is outside the accepted range "
                    f"{EARLIEST_TIMESTAMP[:10]} .. received_at + 1 day",
                )
            )
    for c in columns:
        if c.is_non_negative:
            checks.append(
                (f"{prefix}.negative_value", f"{_q(c.name)} < 0", f"{c.name} must be 0 or more")
            )
    currencies = "[" + ", ".join(_lit(c) for c in sorted(ISO_CURRENCIES)) + "]"
    for c in columns:
        if c.type == "currency":
            checks.append(
                (
                    "fact.unknown_currency",
                    f"{_q(c.name)} IS NOT NULL AND NOT list_contains({currencies}, {_q(c.name)})",
                    f"{c.name} is not an ISO 4217 code (e.g. USD, EUR, GBP)",
                )
            )
        if c.type == "channel":
            channels = "[" + ", ".join(_lit(ch) for ch in CHANNELS) + "]"
            checks.append(
                (
                    f"{prefix}.unknown_channel",
                    f"{_q(c.name)} IS NOT NULL AND NOT list_contains({channels}, {_q(c.name)})",
                    f"{c.name} must be one of {', '.join(CHANNELS)}",
                )
            )
    checks.extend((f"{prefix}.{code}", cond, msg) for code, cond, msg in _KIND_CHECKS[kind])
    return checks


def _validated_sql(kind: FactKind, present: set[str]) -> str:
    fields = ["s._row AS _row"]
    for c in FACT_COLUMNS[kind]:
        raw, typed = _typed(c, c.name in present)
        fields.append(f"{raw} AS {_q('_raw_' + c.name)}")
        fields.append(f"{typed} AS {_q(c.name)}")
    checks = _checks(kind)
    reason = "CASE " + " ".join(f"WHEN {cond} THEN {_lit(code)}" for code, cond, _ in checks)
    message = "CASE " + " ".join(f"WHEN {cond} THEN {_lit(msg)}" for _, cond, msg in checks)
    return (
        f"WITH typed AS (SELECT {', '.join(fields)} FROM stg s)\n"
        f"SELECT typed.*, {reason} END AS _reason, {message} END AS _message FROM typed"
    )


def append_facts(
    store: Store,
    kind: FactKind | str,
    table: pa.Table,
    *,
    source: str,
    received_at: datetime,
) -> IngestReport:
    """Validate, quarantine and upsert one table of facts, atomically.

    Parameters
    ----------
    store
        The store to write to.
    kind
        One of :data:`FACT_KINDS`.
    table
        Columns named as in :data:`FACT_COLUMNS` (case-insensitive), text or typed; columns of
        other names are ignored; a missing required column raises ``fact.missing_column``.
    source
        Where the rows came from (kept in quarantine rows), e.g. ``import:spend.csv``.
    received_at
        When the rows were received; dates more than a day after it are rejected.

    Returns
    -------
    IngestReport
        ``accepted + rejected == rows``; ``inserted`` new or changed rows.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from datetime import UTC, datetime
    >>> from funnelscope.store import Store
    >>> spend = pa.table({"date": ["2024-05-01", "2024-05-01"], "channel": ["paid_search"] * 2,
    ...                   "source": ["google", "bing"], "impressions": ["1000", "10"],
    ...                   "clicks": ["40", "20"], "spend": ["52.10", "3"]})
    >>> report = append_facts(Store(":memory:"), "ad_spend", spend, source="doc",
    ...                       received_at=datetime(2024, 6, 1, tzinfo=UTC))
    >>> report.accepted, report.rejected, dict(report.reasons)
    (1, 1, {'ad_spend.clicks_exceed_impressions': 1})
    """
    fact = _parse_kind(kind)
    table = _normalise_columns(fact, table)
    table = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    report = IngestReport(source=source, rows=table.num_rows)
    # text that is not UTF-8 would be a fatal error in DuckDB (ingest/utf8.py)
    table, not_utf8 = split_invalid_utf8(table, table.column("_row").to_numpy())
    columns = [c.name for c in FACT_COLUMNS[fact]]
    col_list = ", ".join(_q(c) for c in columns)
    with store.write() as con:
        con.register("stg", table)
        sql = _validated_sql(fact, set(table.column_names))
        sql = sql.replace("$store_currency", _lit(store.currency)).replace("$received_at", "$1")
        params = [received_at] if "$1" in sql else []  # products have no dates to bound
        con.execute(f"CREATE OR REPLACE TEMP TABLE _fv AS {sql}", params)
        quarantine_checked(con, "_fv", source, received_at, report)
        _quarantine_parsed(con, not_utf8, source, received_at, report)
        con.unregister("stg")
        report.accepted = report.rows - report.rejected
        order = "_row DESC"  # the last row of a key in the batch wins
        keys = ", ".join(_q(k) for k in FACT_KEYS[fact])
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _fnew AS SELECT {col_list} FROM _fv "
            f"WHERE _reason IS NULL "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
        )
        target = _q(fact.value)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _fchanged AS SELECT {col_list} FROM _fnew "
            f"EXCEPT SELECT {col_list} FROM main.{target}"
        )
        same_key = " AND ".join(
            f"t.{_q(k)} IS NOT DISTINCT FROM n.{_q(k)}" for k in FACT_KEYS[fact]
        )
        con.execute(f"DELETE FROM main.{target} t USING _fchanged n WHERE {same_key}")
        con.execute(f"INSERT INTO main.{target} ({col_list}) SELECT {col_list} FROM _fchanged")
        (changed,) = con.execute("SELECT count(*) FROM _fchanged").fetchone() or (0,)
        report.inserted = int(changed)
        report.duplicates = report.accepted - report.inserted
        if fact is FactKind.SURVEY_RESPONSES:
            _resolve_respondents(con)
        for name in ("_fv", "_fnew", "_fchanged"):
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return report


def _resolve_respondents(con: duckdb.DuckDBPyConnection) -> None:
    """Fill ``person_id`` of responses whose user id (else anonymous id) is a known identity.

    Runs on every survey load, so responses loaded before their respondent's events get their
    person once the events arrive and another survey batch is loaded.
    """
    for column in ("user_id", "anonymous_id"):
        con.execute(
            f"UPDATE main.survey_responses r SET person_id = i.person_id "
            f"FROM main.identities i "
            f"WHERE r.person_id IS NULL AND i.distinct_id = r.{_q(column)}"
        )
