"""Sessions: a person's on-site events cut into visits, written once as SQL window functions.

The definition (docs/sessions.md has the long form and examples):

* only **on-site** events take part (:data:`OFF_SITE_EVENTS` are ad impressions, social and
  email activity, surveys, refunds and returns, identity calls: they happen elsewhere);
* a person's on-site events are ordered by ``(timestamp, event_id)``;
* a new session starts at the person's first event, after a gap **longer than** the
  inactivity timeout (:data:`DEFAULT_SESSION_TIMEOUT`, 30 minutes; a gap of exactly the timeout
  continues the session), or at an event whose UTM campaign (source, medium, campaign) is set and
  differs from the campaign the session started with (an untagged session is "no campaign", so a
  tagged event always starts a new one; untagged events never do);
* a session belongs to the day (week, month, period) in which it **starts**, also when it
  crosses midnight;
* landing page = the page path of its first event that has one; exit page = of its last;
  duration = last event time - first event time; page count = its ``page_viewed`` events;
  channel, UTM tags, device and country = those of its first event (the channel was derived from
  UTM and referrer at ingest); ``is_new_visitor`` = it is the person's first session ever;
* bounce, decided at query time by :class:`SessionSpec`: ``single_page`` (at most one page
  view and no interaction, i.e. no event other than :data:`VIEW_EVENTS`) or ``engagement``
  (shorter than ``engagement_window``).

Persons are stitched persons, so anonymous browsing later linked to a login belongs to the same
person, and that person's first (anonymous) session is their only new-visitor session.

Orders are attributed to the session they were placed in (:func:`order_ctes`, last touch).

On the embedded engine, sessions with the default timeout and the relations derived from them
are materialised (``sessions``, ``attributed_orders``, ``cart_sessions``, ``email_touches``,
``site_facts``) and refreshed incrementally (:func:`refresh_sessions`: only persons touched
since the last refresh are recomputed); other engines and other timeouts run the same SQL inline
as common table expressions. The cached ``sessions`` rows are computed by a numba kernel over
narrow arrays (:mod:`funnelscope.kernels.sessions`) that gives exactly the rows of
:func:`session_ctes` (tests/unit/test_sessions_kernel.py checks it); the SQL stays the
definition.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from funnelscope.engines.base import Engine
from funnelscope.errors import InvalidSpecError, Problem, StoreError
from funnelscope.kernels.sessions import (
    FIRST_EVENT_COLUMNS,
    KIND_CODES,
    OTHER_KIND,
    sessions_from_rows,
)
from funnelscope.store.store import Store

__all__ = [
    "CACHE_VERSION",
    "DEFAULT_ENGAGEMENT_WINDOW",
    "DEFAULT_SESSION_TIMEOUT",
    "IN_SESSION",
    "OFF_SITE_EVENTS",
    "SITE_FACT_EVENTS",
    "VIEW_EVENTS",
    "SessionSpec",
    "bounce_sql",
    "journey_ctes",
    "order_ctes",
    "refresh_sessions",
    "session_ctes",
    "session_table",
    "sessions_relation",
]

#: Inactivity that ends a session (a longer gap starts a new one).
DEFAULT_SESSION_TIMEOUT: Final = timedelta(minutes=30)
#: With ``bounce="engagement"``, a session shorter than this is a bounce.
DEFAULT_ENGAGEMENT_WINDOW: Final = timedelta(seconds=10)
#: Events that do not happen on the shop's site or app, so take no part in sessions.
OFF_SITE_EVENTS: Final = (
    "ad_impression",
    "social_impression",
    "social_engaged",
    "email_opened",
    "email_clicked",
    "nps_answered",
    "order_refunded",
    "order_cancelled",
    "product_returned",
    "identify",
    "alias",
    "group",
)
#: Events that only show something; any other on-site event is an interaction (no bounce).
VIEW_EVENTS: Final = ("page_viewed", "product_viewed", "product_list_viewed", "promotion_viewed")
MAX_SESSION_TIMEOUT: Final = timedelta(days=1)

BounceRule = Literal["single_page", "engagement"]


@dataclass(frozen=True)
class SessionSpec:
    """How events are cut into sessions, and what counts as a bounce.

    Examples
    --------
    >>> SessionSpec().timeout
    datetime.timedelta(seconds=1800)
    >>> SessionSpec(bounce="engagement", engagement_window=timedelta(seconds=5)).validate()
    """

    timeout: timedelta = DEFAULT_SESSION_TIMEOUT
    bounce: BounceRule = "single_page"
    engagement_window: timedelta = DEFAULT_ENGAGEMENT_WINDOW

    def validate(self) -> None:
        problems: list[Problem] = []
        if not timedelta(seconds=1) <= self.timeout <= MAX_SESSION_TIMEOUT:
            problems.append(
                Problem(
                    "session.bad_timeout",
                    "session.timeout",
                    "the session timeout must be between 1 second and 1 day",
                )
            )
        if self.bounce not in ("single_page", "engagement"):
            problems.append(
                Problem(
                    "session.bad_bounce",
                    "session.bounce",
                    f"unknown bounce rule {self.bounce!r}; allowed: single_page, engagement",
                )
            )
        if not timedelta(0) < self.engagement_window <= MAX_SESSION_TIMEOUT:
            problems.append(
                Problem(
                    "session.bad_engagement_window",
                    "session.engagement_window",
                    "the engagement window must be between 0 and 1 day",
                )
            )
        if problems:
            raise InvalidSpecError(problems)

    @property
    def timeout_us(self) -> int:
        return _micros(self.timeout)

    @property
    def is_default_cut(self) -> bool:
        """True when sessions are cut as the materialised table is (bounce is a query option)."""
        return self.timeout == DEFAULT_SESSION_TIMEOUT


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


_ORDER = "PARTITION BY person_id ORDER BY ts, event_id"
# After the first pass, rn is that same order as one integer: a much cheaper sort key.
_BY_RN = "PARTITION BY person_id ORDER BY rn"


def session_ctes(
    spec: SessionSpec = SessionSpec(), *, source: str = "events"
) -> list[tuple[str, str]]:
    """The sessions definition as ``(name, select)`` common table expressions over ``events``.

    The last one is named ``sessions``. DuckDB dialect; :meth:`Engine.sql` transpiles it.
    ``source`` is a trusted relation with the columns of the stitched ``events`` view.
    """
    timeout = int(spec.timeout_us)  # an int from a timedelta: safe to inline
    sep = "chr(31)"
    tag = (
        "CASE WHEN utm_source IS NULL AND utm_medium IS NULL AND utm_campaign IS NULL THEN NULL "
        f"ELSE concat_ws({sep}, coalesce(utm_source, ''), coalesce(utm_medium, ''), "
        "coalesce(utm_campaign, '')) END"
    )
    site = f"""
        SELECT person_id, event_id, "timestamp" AS ts, event, page_path, channel, utm_source,
               utm_medium, utm_campaign, device_type, country, {tag} AS tag
        FROM {source} WHERE event NOT IN ({_quoted(OFF_SITE_EVENTS)})
    """
    gaps = f"""
        SELECT *, row_number() OVER ({_ORDER}) AS rn,
               CASE WHEN lag(ts) OVER ({_ORDER}) IS NULL THEN TRUE
                    WHEN date_diff('microsecond', lag(ts) OVER ({_ORDER}), ts) > {timeout}
                    THEN TRUE ELSE FALSE END AS is_gap
        FROM _s_site
    """
    # The campaign a session started with, carried forward: a gap resets it to the new
    # event's tag ('' = untagged), so the last non-null state before an event is its session's.
    flagged = f"""
        SELECT *,
               CASE WHEN is_gap THEN 1
                    WHEN tag IS NOT NULL AND tag IS DISTINCT FROM last_value(
                        CASE WHEN is_gap THEN coalesce(tag, '') ELSE tag END IGNORE NULLS)
                        OVER ({_BY_RN} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                    THEN 1 ELSE 0 END AS is_start
        FROM _s_gaps
    """
    numbered = f"""
        SELECT *,
               sum(is_start) OVER ({_BY_RN} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                 AS session_number,
               lead(ts) OVER ({_BY_RN}) AS next_ts,
               lead(is_start) OVER ({_BY_RN}) AS next_is_start
        FROM _s_flagged
    """
    first = "max(CASE WHEN is_start = 1 THEN {col} END)"
    sessions = f"""
        SELECT person_id, session_number,
               min(ts) AS started_at, max(ts) AS ended_at,
               {first.format(col="event_id")} AS first_event_id,
               arg_max(event_id, rn) AS last_event_id,
               arg_min(page_path, rn) FILTER (WHERE page_path IS NOT NULL) AS landing_page,
               arg_max(page_path, rn) FILTER (WHERE page_path IS NOT NULL) AS exit_page,
               date_diff('microsecond', min(ts), max(ts)) AS duration_us,
               count(*) AS event_count,
               count(*) FILTER (WHERE event = 'page_viewed') AS page_count,
               count(*) FILTER (WHERE event NOT IN ({_quoted(VIEW_EVENTS)})) AS interactions,
               count(*) FILTER (WHERE event = 'product_viewed') AS product_views,
               count(*) FILTER (WHERE event = 'product_added') AS cart_adds,
               min(ts) FILTER (WHERE event = 'product_added') AS first_add_at,
               min(ts) FILTER (WHERE event = 'checkout_started') AS first_checkout_at,
               coalesce(sum(date_diff('microsecond', ts, next_ts))
                   FILTER (WHERE event = 'page_viewed' AND next_is_start = 0), 0)
                 AS timed_page_us,
               count(*) FILTER (WHERE event = 'page_viewed' AND next_is_start = 0) AS timed_pages,
               {first.format(col="channel")} AS channel,
               {first.format(col="utm_source")} AS utm_source,
               {first.format(col="utm_medium")} AS utm_medium,
               {first.format(col="utm_campaign")} AS utm_campaign,
               {first.format(col="device_type")} AS device_type,
               {first.format(col="country")} AS country,
               session_number = 1 AS is_new_visitor
        FROM _s_numbered
        GROUP BY person_id, session_number
    """
    return [
        ("_s_site", site),
        ("_s_gaps", gaps),
        ("_s_flagged", flagged),
        ("_s_numbered", numbered),
        ("sessions", sessions),
    ]


def _with(ctes: list[tuple[str, str]], select: str) -> str:
    return "WITH " + ",\n".join(f"{name} AS ({body})" for name, body in ctes) + "\n" + select


def bounce_sql(spec: SessionSpec, alias: str = "") -> str:
    """A boolean SQL expression: the session (columns of ``sessions``) is a bounce."""
    prefix = f"{alias}." if alias else ""
    if spec.bounce == "engagement":
        return f"({prefix}duration_us < {int(_micros(spec.engagement_window))})"
    return f"({prefix}page_count <= 1 AND {prefix}interactions = 0)"


# -- orders, attributed to the session they were placed in --------------------------------------

# Orders are order_completed events, one per order_id (the first by time, then event_id).
_ORDER_EVENTS = """
    SELECT person_id, event_id, ts, order_key, revenue, currency, items FROM (
        SELECT person_id, event_id, "timestamp" AS ts, coalesce(order_id, event_id) AS order_key,
               revenue, currency, items,
               row_number() OVER (PARTITION BY coalesce(order_id, event_id)
                                  ORDER BY "timestamp", event_id) AS dup
        FROM {source} WHERE event = 'order_completed'
    ) WHERE dup = 1
"""
# An event belongs to the session whose (first, last) events enclose it in (ts, event_id) order.
IN_SESSION: Final = """s.person_id = {a}.person_id
    AND ({a}.ts > s.started_at OR ({a}.ts = s.started_at AND {a}.event_id >= s.first_event_id))
    AND ({a}.ts < s.ended_at OR ({a}.ts = s.ended_at AND {a}.event_id <= s.last_event_id))"""
_ATTRIBUTED_ORDERS = f"""
    SELECT o.person_id, o.event_id, o.ts, o.order_key, o.revenue, o.currency, o.items,
           row_number() OVER (PARTITION BY o.person_id ORDER BY o.ts, o.order_key) AS order_rank,
           s.channel, s.utm_campaign AS campaign, s.device_type AS device, s.country
    FROM _order_events o LEFT JOIN sessions s ON {IN_SESSION.format(a="o")}
"""


def order_ctes(*, source: str = "events") -> list[tuple[str, str]]:
    """Orders with the session they were placed in, as CTEs over ``events`` and ``sessions``.

    ``attributed_orders`` has one row per order (``order_key``) with its person's order rank
    (1 = first order ever, by time then order key) and the channel, campaign, device and
    country of its session (last touch). ``cart_sessions`` has one row per session with an
    add-to-cart or a checkout start and the person's first order at or after each.
    """
    return [
        ("_order_events", _ORDER_EVENTS.format(source=source)),
        ("attributed_orders", _ATTRIBUTED_ORDERS),
        ("cart_sessions", _CART_SESSIONS),
    ]


# Email opens and clicks per person and campaign (matched to email_campaigns at query time).
_EMAIL_TOUCHES = """
    SELECT person_id, coalesce(properties->>'$.campaign_id', utm_campaign) AS campaign_key,
           max(CASE WHEN event = 'email_clicked' THEN 1 ELSE 0 END) AS clicked
    FROM {source}
    WHERE event IN ('email_opened', 'email_clicked')
      AND coalesce(properties->>'$.campaign_id', utm_campaign) IS NOT NULL
    GROUP BY person_id, coalesce(properties->>'$.campaign_id', utm_campaign)
"""


# Sessions with an add-to-cart or a checkout start, and the person's first order at or after
# each (whether that is within the cart window is decided at query time).
_CART_SESSIONS = """
    SELECT s.person_id, s.session_number, s.first_add_at, s.first_checkout_at,
           min(o.ts) FILTER (WHERE o.ts >= s.first_add_at) AS add_order_at,
           min(o.ts) FILTER (WHERE o.ts >= s.first_checkout_at) AS checkout_order_at,
           s.channel, s.utm_campaign AS campaign, s.device_type AS device, s.country,
           s.is_new_visitor
    FROM sessions s LEFT JOIN attributed_orders o ON o.person_id = s.person_id
    WHERE s.first_add_at IS NOT NULL OR s.first_checkout_at IS NOT NULL
    GROUP BY s.person_id, s.session_number, s.first_add_at, s.first_checkout_at, s.channel,
             s.utm_campaign, s.device_type, s.country, s.is_new_visitor
"""
#: Events the ``site_facts`` relation keeps (page views only where a load time is tracked).
SITE_FACT_EVENTS: Final = (
    "ad_impression",
    "social_engaged",
    "product_viewed",
    "content_engaged",
    "page_viewed",
)
# The events KPIs count one by one, with their tracked properties extracted once.
_SITE_FACTS = """
    SELECT ts, person_id, event, channel, campaign, device, country, product, page,
           social_action, scroll_depth, load_ms FROM (
        SELECT "timestamp" AS ts, person_id, event, channel, utm_campaign AS campaign,
               device_type AS device, country, product_id AS product, page_path AS page,
               CASE WHEN event = 'social_engaged' THEN lower(coalesce(
                   properties->>'$.action', properties->>'$.type')) END AS social_action,
               CASE WHEN event = 'content_engaged'
                    THEN TRY_CAST(properties->>'$.scroll_depth' AS DOUBLE) END AS scroll_depth,
               CASE WHEN event = 'page_viewed'
                    THEN TRY_CAST(properties->>'$.load_time_ms' AS DOUBLE) END AS load_ms
        FROM {source}
        WHERE event IN ('ad_impression', 'social_engaged', 'product_viewed', 'content_engaged',
                        'page_viewed')
    ) WHERE event <> 'page_viewed' OR load_ms IS NOT NULL
"""


def journey_ctes(
    spec: SessionSpec = SessionSpec(), *, source: str = "events"
) -> list[tuple[str, str]]:
    """``sessions``, ``attributed_orders``, ``email_touches`` (a person's opened or clicked
    email campaigns) and ``site_facts`` (the events of :data:`SITE_FACT_EVENTS` with their
    tracked properties) inline: what the materialised tables hold."""
    return [
        *session_ctes(spec, source=source),
        *order_ctes(source=source),
        ("email_touches", _EMAIL_TOUCHES.format(source=source)),
        ("site_facts", _SITE_FACTS.format(source=source)),
    ]


# -- the materialised tables (embedded engine) -------------------------------------------------

#: Bumped when the cached tables' definition changes: the next refresh rebuilds them.
CACHE_VERSION: Final = 5
_STATE_COLUMNS = ("cache_version", "timeout_us", "watermark_seq", "events_seen")
# The cache's own tables. They are created here rather than by a migration because they belong
# to this code: a new definition (CACHE_VERSION) rebuilds them, and dropping them loses nothing.
_CACHE_DDL = (
    """CREATE TABLE IF NOT EXISTS main.attributed_orders (
        person_id INTEGER NOT NULL, event_id VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL,
        order_key VARCHAR NOT NULL, revenue DECIMAL(18, 4), currency VARCHAR,
        items STRUCT(product_id VARCHAR, sku VARCHAR, name VARCHAR, category VARCHAR,
                     brand VARCHAR, variant VARCHAR, price DECIMAL(18, 4), quantity INTEGER)[],
        order_rank BIGINT NOT NULL, channel VARCHAR, campaign VARCHAR, device VARCHAR,
        country VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS main.email_touches "
    "(person_id INTEGER NOT NULL, campaign_key VARCHAR NOT NULL, clicked INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS main.cart_sessions (
        person_id INTEGER NOT NULL, session_number BIGINT NOT NULL, first_add_at TIMESTAMPTZ,
        first_checkout_at TIMESTAMPTZ, add_order_at TIMESTAMPTZ, checkout_order_at TIMESTAMPTZ,
        channel VARCHAR, campaign VARCHAR, device VARCHAR, country VARCHAR,
        is_new_visitor BOOLEAN NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS main.site_facts (
        ts TIMESTAMPTZ NOT NULL, person_id INTEGER NOT NULL, event VARCHAR NOT NULL,
        channel VARCHAR, campaign VARCHAR, device VARCHAR, country VARCHAR, product VARCHAR,
        page VARCHAR, social_action VARCHAR, scroll_depth DOUBLE, load_ms DOUBLE)""",
    # person_map as the cached rows saw it: a changed row is a merge to re-sessionise
    "CREATE TABLE IF NOT EXISTS main.sessions_person_map "
    "(person_id INTEGER NOT NULL, canonical_id INTEGER NOT NULL)",
)


def _canonical_events(where: str = "") -> str:
    # The stitched events, as the engine's ``events`` view shows them (a temp view cannot be
    # used inside the write transaction: there ``main.events`` would bind to the view itself).
    return f"""(
        SELECT e.* REPLACE (m.canonical_id AS person_id)
        FROM main.events e JOIN main.person_map m ON m.person_id = e.person_id {where}
    )"""


# The persons whose cached rows may be stale after events with seq > $wm arrived:
# persons with new events, both sides of every changed stitching, and the owners of orders
# whose order_id a new order_completed re-uses (the first such event wins the order).
_AFFECTED_SQL = """
    CREATE OR REPLACE TEMP TABLE _affected AS
    SELECT m.canonical_id AS person_id
    FROM main.events e JOIN main.person_map m ON m.person_id = e.person_id WHERE e.seq > $wm
    UNION SELECT new_id FROM _remapped
    UNION SELECT old_id FROM _remapped WHERE old_id IS NOT NULL
    UNION SELECT a.person_id FROM main.attributed_orders a
          WHERE a.order_key IN (SELECT coalesce(order_id, event_id) FROM main.events
                                WHERE seq > $wm AND event = 'order_completed')
"""
_REMAPPED_SQL = """
    CREATE OR REPLACE TEMP TABLE _remapped AS
    SELECT m.person_id, m.canonical_id AS new_id, p.canonical_id AS old_id
    FROM main.person_map m LEFT JOIN main.sessions_person_map p ON p.person_id = m.person_id
    WHERE p.canonical_id IS DISTINCT FROM m.canonical_id
"""
_AFFECTED_KEYS_SQL = """
    CREATE OR REPLACE TEMP TABLE _affected_keys AS
    SELECT DISTINCT coalesce(e.order_id, e.event_id) AS order_key
    FROM main.events e JOIN main.person_map m ON m.person_id = e.person_id
    WHERE e.event = 'order_completed' AND m.canonical_id IN (SELECT person_id FROM _affected)
"""
# store -> (store.version, timeout_us) last seen fresh, so unchanged stores skip the checks
_fresh: weakref.WeakKeyDictionary[Store, tuple[int, int]] = weakref.WeakKeyDictionary()


def _ensure_cache_tables(cur: duckdb.DuckDBPyConnection) -> None:
    columns = tuple(
        r[0]
        for r in cur.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
            "AND table_name = 'sessions_state' ORDER BY column_index"
        ).fetchall()
    )
    if columns != _STATE_COLUMNS:  # migration 0005's (timeout_us, fingerprint), or none
        cur.execute("DROP TABLE IF EXISTS main.sessions_state")
        cur.execute(
            "CREATE TABLE main.sessions_state (cache_version INTEGER NOT NULL, "
            "timeout_us BIGINT NOT NULL, watermark_seq BIGINT NOT NULL, "
            "events_seen BIGINT NOT NULL)"
        )
    for ddl in _CACHE_DDL:
        cur.execute(ddl)


# -- the kernel build of ``sessions`` (same rows as session_ctes; kernels/sessions.py) ---------

_KIND_SQL = (
    "CAST(CASE event "
    + " ".join(f"WHEN '{name}' THEN {code}" for name, code in KIND_CODES.items())
    + f" ELSE {OTHER_KIND} END AS TINYINT)"
)
_TAG_SQL = (
    "CASE WHEN utm_source IS NULL AND utm_medium IS NULL AND utm_campaign IS NULL THEN NULL "
    "ELSE concat_ws(chr(31), coalesce(utm_source, ''), coalesce(utm_medium, ''), "
    "coalesce(utm_campaign, '')) END"
)
# The narrow on-site rows, person ids as stored (stitched in numpy: no join, scan order kept).
_SITE_ROWS_SQL = f"""
    SELECT person_id, epoch_us("timestamp") AS ts, {_KIND_SQL} AS kind, event_id, page_path,
           {_TAG_SQL} AS tag, seq
    FROM main.events WHERE event NOT IN ({_quoted(OFF_SITE_EVENTS)}) {{persons}}
"""
_OF_AFFECTED = (
    "AND person_id IN (SELECT m.person_id FROM main.person_map m "
    "WHERE m.canonical_id IN (SELECT person_id FROM _affected))"
)
_INSERT_BATCH_ROWS: Final = 100_000
_FIRST_EVENT_SQL = (
    "SELECT w.i, "
    + ", ".join(f"e.{c}" for c in FIRST_EVENT_COLUMNS)
    + " FROM main.events e JOIN _session_firsts w ON w.seq = e.seq"
)


def _insert_kernel_sessions(
    cur: duckdb.DuckDBPyConnection, spec: SessionSpec, *, persons: bool
) -> None:
    """Insert the ``sessions`` rows (of ``_affected`` persons, or everyone) via the kernel."""
    rows = cur.sql(_SITE_ROWS_SQL.format(persons=_OF_AFFECTED if persons else "")).to_arrow_table()
    if rows.num_rows == 0:
        return
    pmap = cur.sql("SELECT person_id, canonical_id FROM main.person_map").to_arrow_table()
    raw = np.asarray(pmap.column("person_id").to_numpy(), np.int64)
    stored = np.asarray(rows.column("person_id").to_numpy(), np.int64)
    canonical = np.full(max(int(raw.max(initial=-1)), int(stored.max())) + 1, -1, np.int64)
    canonical[raw] = pmap.column("canonical_id").to_numpy()
    person = canonical[stored]
    rows = rows.set_column(0, "person_id", pa.array(person))
    if (person < 0).any():  # as the SQL's join: events of unmapped persons take no part
        rows = rows.filter(pa.array(person >= 0))
        if rows.num_rows == 0:
            return
    seq = np.asarray(rows.column("seq").to_numpy(), np.int64)

    def first_event_attributes(first: npt.NDArray[np.int64]) -> pa.Table:
        # only the sessions' first events: the six attributes of every row cost 4x more
        want = pa.table({"i": np.arange(first.shape[0], dtype=np.int64), "seq": seq[first]})
        cur.register("_session_firsts", want)
        try:
            found = cur.sql(_FIRST_EVENT_SQL).to_arrow_table()
        finally:
            cur.unregister("_session_firsts")
        if found.num_rows != first.shape[0]:  # seq ranges are allocated per batch: unique
            raise StoreError("events.seq is not unique: the sessions cache cannot be built")
        at = np.empty(first.shape[0], np.int64)
        at[np.asarray(found.column("i").to_numpy(), np.int64)] = np.arange(found.num_rows)
        return found.take(pa.array(at))

    table = sessions_from_rows(rows, spec.timeout_us, first_event_attributes)
    # in record batches: DuckDB scans an Arrow table's batches in parallel, one chunk serially
    table = pa.Table.from_batches(table.to_batches(max_chunksize=_INSERT_BATCH_ROWS))
    cur.register("_kernel_sessions", table)
    try:
        cur.execute("INSERT INTO main.sessions SELECT * FROM _kernel_sessions")
    finally:
        cur.unregister("_kernel_sessions")


def _rebuild(cur: duckdb.DuckDBPyConnection, spec: SessionSpec, *, persons: bool) -> None:
    """Recompute the cached rows: of the persons in ``_affected`` only, or of everyone."""
    person_filter = "WHERE m.canonical_id IN (SELECT person_id FROM _affected)" if persons else ""
    if persons:
        cur.execute(
            "DELETE FROM main.sessions WHERE person_id IN (SELECT person_id FROM _affected)"
        )
        cur.execute(
            "DELETE FROM main.attributed_orders "
            "WHERE person_id IN (SELECT person_id FROM _affected)"
        )
        cur.execute(
            "DELETE FROM main.email_touches WHERE person_id IN (SELECT person_id FROM _affected)"
        )
        cur.execute(
            "DELETE FROM main.site_facts WHERE person_id IN (SELECT person_id FROM _affected)"
        )
        cur.execute(
            "DELETE FROM main.cart_sessions WHERE person_id IN (SELECT person_id FROM _affected)"
        )
    else:
        cur.execute("DELETE FROM main.sessions")
        cur.execute("DELETE FROM main.attributed_orders")
        cur.execute("DELETE FROM main.email_touches")
        cur.execute("DELETE FROM main.site_facts")
        cur.execute("DELETE FROM main.cart_sessions")
    source = _canonical_events(person_filter)
    # the rows of session_ctes(spec, source=source), computed by the kernel
    _insert_kernel_sessions(cur, spec, persons=persons)
    cur.execute("INSERT INTO main.email_touches " + _EMAIL_TOUCHES.format(source=source))
    cur.execute("INSERT INTO main.site_facts " + _SITE_FACTS.format(source=source))
    # Which order event wins an order_id is decided over every person's events with that id.
    order_source = _canonical_events("WHERE e.event = 'order_completed'")
    keep = ""
    if persons:
        cur.execute(_AFFECTED_KEYS_SQL)
        order_source = _canonical_events(
            "WHERE e.event = 'order_completed' AND coalesce(e.order_id, e.event_id) IN "
            "(SELECT order_key FROM _affected_keys)"
        )
        keep = " WHERE person_id IN (SELECT person_id FROM _affected)"
    # ``sessions`` here is main.sessions, just refreshed
    cur.execute(
        "INSERT INTO main.attributed_orders "
        + _with(order_ctes(source=order_source)[:2], "SELECT * FROM attributed_orders" + keep)
    )
    # ``sessions`` and ``attributed_orders`` here are the tables, both refreshed
    cur.execute(
        "INSERT INTO main.cart_sessions "
        + _CART_SESSIONS
        + (" HAVING s.person_id IN (SELECT person_id FROM _affected)" if persons else "")
    )


def refresh_sessions(store: Store, spec: SessionSpec = SessionSpec()) -> bool:
    """Bring the cached tables of :func:`journey_ctes` up to date; True if they changed.

    ``sessions`` is computed by the kernel of :mod:`funnelscope.kernels.sessions` (the same
    rows as :func:`session_ctes`); the other tables by the SQL of :func:`journey_ctes`.
    Incremental: only the persons touched since the last refresh are re-sessionised (persons
    with events of a higher ``seq`` than the watermark, persons merged by stitching, owners of
    re-used order ids), so the cost follows the new events, not the store. The tables are
    rebuilt in full the first time, for another timeout, for a new :data:`CACHE_VERSION`, or
    when rows appeared or vanished below the watermark. The bounce rule is applied at query
    time. Read-only stores cannot be refreshed (callers then run the SQL inline).

    Examples
    --------
    >>> import funnelscope
    >>> ws = funnelscope.open(":memory:")
    >>> refresh_sessions(ws.store), refresh_sessions(ws.store)
    (True, False)
    """
    if _fresh.get(store) == (store.version, spec.timeout_us):
        return False
    changed = True
    with store.write() as cur:
        _ensure_cache_tables(cur)
        state = cur.execute(
            "SELECT cache_version, timeout_us, watermark_seq, events_seen FROM main.sessions_state"
        ).fetchall()
        top, total = cur.execute(
            "SELECT coalesce(max(seq), -1), count(*) FROM main.events"
        ).fetchall()[0]
        incremental = bool(state) and tuple(state[0][:2]) == (CACHE_VERSION, spec.timeout_us)
        if incremental:
            watermark, seen = int(state[0][2]), int(state[0][3])
            below = cur.execute(
                "SELECT count(*) FROM main.events WHERE seq <= ?", [watermark]
            ).fetchall()[0][0]
            incremental = int(below) == seen
        if incremental:
            cur.execute(_REMAPPED_SQL)
            cur.execute(_AFFECTED_SQL, {"wm": watermark})
            changed = bool(cur.execute("SELECT count(*) FROM _affected").fetchall()[0][0])
            if changed:
                _rebuild(cur, spec, persons=True)
            cur.execute(
                "DELETE FROM main.sessions_person_map "
                "WHERE person_id IN (SELECT person_id FROM _remapped)"
            )
            cur.execute(
                "INSERT INTO main.sessions_person_map SELECT person_id, new_id FROM _remapped"
            )
        else:
            _rebuild(cur, spec, persons=False)
            cur.execute("DELETE FROM main.sessions_person_map")
            cur.execute(
                "INSERT INTO main.sessions_person_map SELECT person_id, canonical_id "
                "FROM main.person_map"
            )
        cur.execute("DELETE FROM main.sessions_state")
        cur.execute(
            "INSERT INTO main.sessions_state VALUES (?, ?, ?, ?)",
            [CACHE_VERSION, spec.timeout_us, int(top), int(total)],
        )
        for name in ("_remapped", "_affected", "_affected_keys"):
            cur.execute(f"DROP TABLE IF EXISTS {name}")
    _fresh[store] = (store.version, spec.timeout_us)
    return changed


def _materialised_store(engine: Engine) -> Store | None:
    from funnelscope.engines.embedded import EmbeddedEngine

    if not isinstance(engine, EmbeddedEngine):
        return None
    store = engine.store
    has_table = store.query(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'sessions' "
        "AND schema_name = 'main'"
    )[0][0]
    read_only = bool(store.query("SELECT current_setting('access_mode') = 'read_only'")[0][0])
    return store if has_table and not read_only else None


def sessions_relation(engine: Engine, spec: SessionSpec = SessionSpec()) -> list[tuple[str, str]]:
    """The CTEs a query needs before it can read the relations of :func:`journey_ctes`
    (``sessions``, ``attributed_orders``, ``cart_sessions``, ``email_touches``, ``site_facts``):
    none when they
    are materialised (embedded engine, default timeout, writable store)."""
    spec.validate()
    if spec.is_default_cut:
        store = _materialised_store(engine)
        if store is not None:
            refresh_sessions(store, spec)
            return []
    return journey_ctes(spec)


def session_table(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    spec: SessionSpec = SessionSpec(),
) -> pa.Table:
    """Every session that starts in ``[start, end)``, with its ``is_bounce`` flag.

    Examples
    --------
    >>> import funnelscope
    >>> from datetime import UTC, datetime
    >>> ws = funnelscope.open(":memory:")
    >>> session_table(ws.engine, start=datetime(2024, 1, 1, tzinfo=UTC),
    ...               end=datetime(2024, 2, 1, tzinfo=UTC)).num_rows
    0
    """
    ctes = sessions_relation(engine, spec)
    select = (
        f"SELECT *, {bounce_sql(spec)} AS is_bounce FROM sessions "
        "WHERE started_at >= $start AND started_at < $end "
        "ORDER BY person_id, session_number"
    )
    return engine.sql(_with(ctes, select) if ctes else select, {"start": start, "end": end})
