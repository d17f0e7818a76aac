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

On the embedded engine, sessions with the default timeout are materialised in the ``sessions``
table (migration 0005) and rebuilt when the events or the stitching change; other engines and
other timeouts run the same SQL inline as common table expressions.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

import pyarrow as pa

from funnelscope.engines.base import Engine
from funnelscope.errors import InvalidSpecError, Problem
from funnelscope.store.store import Store

__all__ = [
    "DEFAULT_ENGAGEMENT_WINDOW",
    "DEFAULT_SESSION_TIMEOUT",
    "OFF_SITE_EVENTS",
    "VIEW_EVENTS",
    "SessionSpec",
    "bounce_sql",
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
    "ad_impression", "social_impression", "social_engaged", "email_opened", "email_clicked",
    "nps_answered", "order_refunded", "order_cancelled", "product_returned", "identify",
    "alias", "group",
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
            problems.append(Problem("session.bad_timeout", "session.timeout",
                                    "the session timeout must be between 1 second and 1 day"))
        if self.bounce not in ("single_page", "engagement"):
            problems.append(Problem("session.bad_bounce", "session.bounce",
                                    f"unknown bounce rule {self.bounce!r}; allowed: "
                                    "single_page, engagement"))
        if not timedelta(0) < self.engagement_window <= MAX_SESSION_TIMEOUT:
            problems.append(Problem("session.bad_engagement_window", "session.engagement_window",
                                    "the engagement window must be between 0 and 1 day"))
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
    return [("_s_site", site), ("_s_gaps", gaps), ("_s_flagged", flagged),
            ("_s_numbered", numbered), ("sessions", sessions)]


def _with(ctes: list[tuple[str, str]], select: str) -> str:
    return "WITH " + ",\n".join(f"{name} AS ({body})" for name, body in ctes) + "\n" + select


def bounce_sql(spec: SessionSpec, alias: str = "") -> str:
    """A boolean SQL expression: the session (columns of ``sessions``) is a bounce."""
    prefix = f"{alias}." if alias else ""
    if spec.bounce == "engagement":
        return f"({prefix}duration_us < {int(_micros(spec.engagement_window))})"
    return f"({prefix}page_count <= 1 AND {prefix}interactions = 0)"


# -- the materialised table (embedded engine) --------------------------------------------------

_FINGERPRINT_SQL = """
    SELECT (SELECT count(*) FROM main.events) || ':' ||
           (SELECT coalesce(max(seq), -1) FROM main.events) || ':' ||
           (SELECT count(*) FROM main.person_map) || ':' ||
           (SELECT coalesce(bit_xor(hash(person_id, canonical_id)), 0) FROM main.person_map)
"""
# The stitched events, as the engine's ``events`` view shows them (a temp view cannot be used
# inside the write transaction: there ``main.events`` would bind to the view itself).
_CANONICAL_EVENTS = """(
    SELECT e.* REPLACE (m.canonical_id AS person_id)
    FROM main.events e JOIN main.person_map m ON m.person_id = e.person_id
)"""
# store -> (store.version, timeout_us) last seen fresh, so unchanged stores skip the fingerprint
_fresh: weakref.WeakKeyDictionary[Store, tuple[int, int]] = weakref.WeakKeyDictionary()


def refresh_sessions(store: Store, spec: SessionSpec = SessionSpec()) -> bool:
    """Rebuild the ``sessions`` table if the events or the stitching changed; True if rebuilt.

    The table always holds sessions cut with ``spec.timeout``; the bounce rule is applied at query
    time. Read-only stores cannot be refreshed (callers then run the SQL inline).
    """
    if _fresh.get(store) == (store.version, spec.timeout_us):
        return False
    fingerprint = str(store.query(_FINGERPRINT_SQL)[0][0])
    state = store.query("SELECT timeout_us, fingerprint FROM sessions_state")
    if state and (int(state[0][0]), str(state[0][1])) == (spec.timeout_us, fingerprint):
        _fresh[store] = (store.version, spec.timeout_us)
        return False
    with store.write() as cur:
        cur.execute("DELETE FROM main.sessions")
        ctes = session_ctes(spec, source=_CANONICAL_EVENTS)
        cur.execute("INSERT INTO main.sessions " + _with(ctes, "SELECT * FROM sessions"))
        cur.execute("DELETE FROM sessions_state")
        cur.execute("INSERT INTO sessions_state VALUES (?, ?)", [spec.timeout_us, fingerprint])
    _fresh[store] = (store.version, spec.timeout_us)
    return True


def _materialised_store(engine: Engine) -> Store | None:
    from funnelscope.engines.embedded import EmbeddedEngine

    if not isinstance(engine, EmbeddedEngine):
        return None
    store = engine.store
    has_table = store.query(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'sessions_state' "
        "AND schema_name = 'main'"
    )[0][0]
    read_only = bool(store.query("SELECT current_setting('access_mode') = 'read_only'")[0][0])
    return store if has_table and not read_only else None


def sessions_relation(engine: Engine, spec: SessionSpec = SessionSpec()) -> list[tuple[str, str]]:
    """The CTEs a query needs before it can read ``sessions``: none when materialised."""
    spec.validate()
    if spec.is_default_cut:
        store = _materialised_store(engine)
        if store is not None:
            refresh_sessions(store, spec)
            return []
    return session_ctes(spec)


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
