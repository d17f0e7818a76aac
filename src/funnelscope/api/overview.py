"""The Overview page's answers, ready before anyone looks: the store summary, the stage report
with its KPI cards, and the channel table.

Routes (a read key is needed; periods and global filters as in :mod:`funnelscope.api.query`)::

    GET  /api/v1/info       store summary, filter values, pages this server offers
    GET  /api/v1/report     stage funnel + the stage KPI cards (value, change, series)
    GET  /api/v1/channels   spend, CTR, CAC and ROAS per channel
    GET  /api/v1/overview/status   whether the default view's answers are computed ahead

How they stay fast on a large store (docs/dashboard.md, "How the Overview stays fast"):

* the stage counts and the number of persons come from the embedded engine's in-memory person
  layout (one pass over arrays that each commit extends incrementally), not from SQL over the
  wide events table; the KPI cards' totals, their series and the stage counts run concurrently;
* :class:`OverviewWarmer` computes the three answers for the page's default view (the 30 days
  ending on the day of the latest event, no filters) in the background when the server starts
  and again after new data is committed, so a first look is served from the answer cache. A
  request that arrives while the warmer computes the same answer waits for it instead of
  computing it a second time.

The numbers are those of :func:`~funnelscope.analysis.report.stage_report` and
:func:`~funnelscope.analysis.kpis.compute_kpis`; nothing here has semantics of its own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request

from funnelscope.api.auth import require_read_key
from funnelscope.api.problems import as_http
from funnelscope.api.query import (
    Common,
    CommonDep,
    ResultCache,
    WorkspaceDep,
    _bounds,
    _catalogue_entry,
    _filterable,
    _run_kpis,
    answer_cache,
    json_object,
)
from funnelscope.store.store import Store
from funnelscope.workspace import Workspace

__all__ = [
    "CHANNEL_KPIS",
    "OverviewWarmer",
    "channels_answer",
    "default_period",
    "info_answer",
    "report_answer",
    "router",
]

log = logging.getLogger("funnelscope.overview")

#: The channel table: spend = cac's numerator, impressions and clicks = ctr's parts.
CHANNEL_KPIS: Final = ("ctr", "cac", "roas", "orders", "revenue")
CHANNEL_COLUMNS: Final = (*CHANNEL_KPIS, "spend", "impressions", "clicks", "new_customers")
#: Values of each filter offered in the dashboard's selects (most frequent first).
MAX_DIMENSION_VALUES: Final = 60
#: The dashboard's default period (web/static/js/state.js DEFAULT_RANGE): days up to and
#: including the day of the latest event.
DEFAULT_DAYS: Final = 30
#: After new data, the warmer recomputes only if the Overview was asked for within this time:
#: a collector nobody looks at should not spend CPU on dashboards.
IDLE_SECONDS: Final = 1800.0
#: The warmer spends at most about 1/(this) of the time warming: after a warm-up that took
#: t seconds it waits max(every_seconds, this * t) before the next.
BACKOFF_FACTOR: Final = 5.0
#: Pages that exist only when their router is mounted: page -> the router module it needs.
OPTIONAL_PAGES: Final = {
    "customers": "funnelscope.api.customers",
    "goals": "funnelscope.api.goals",
    "live": "funnelscope.api.live",
}

Filters = dict[str, list[str]]


# -- what the answers read, brought up to date first ------------------------------------------

_session_locks: weakref.WeakKeyDictionary[Store, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()
# Stores whose person layout this process has built: until then (the first seconds after start
# on a large store) requests count with SQL instead of waiting for the build.
_layouts_built: weakref.WeakSet[Store] = weakref.WeakSet()


def layout_built(ws: Workspace) -> bool:
    """True once the person layout of ``ws`` has been built in this process."""
    return ws.store in _layouts_built


def prepare(ws: Workspace, *, sessions: bool, layout: bool = True) -> None:
    """Refresh the person layout (``layout``) and the materialised sessions (``sessions``).

    Done before an answer's cache key is taken: a sessions refresh is itself a commit, so an
    answer keyed before it would be stale the moment it is stored. One refresh at a time per
    store: the warmer and a request arriving together do not both rebuild.
    """
    if layout:
        ws.engine.person_layout()
        _layouts_built.add(ws.store)
    if not sessions:
        return
    from funnelscope.analysis.sessions import sessions_relation

    with _locks_guard:
        lock = _session_locks.setdefault(ws.store, threading.Lock())
    with lock:
        sessions_relation(ws.engine)


def _filters_key(filters: Filters) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((k, tuple(v)) for k, v in filters.items()))


def _key(version: int, name: str, *rest: Any) -> tuple[Any, ...]:
    return (version, "overview", name, *rest)


# -- the answers ---------------------------------------------------------------------------------


def summary(ws: Workspace, *, use_layout: bool = True) -> dict[str, Any]:
    """:meth:`Workspace.info`, with persons counted from the person layout (``use_layout``).

    ``persons`` = canonical persons with at least one event, as ``count(DISTINCT canonical_id)``
    over the events counts them (the layout holds every event under its canonical person).
    """
    q = ws.store.query
    events, first, last = q('SELECT count(*), min("timestamp"), max("timestamp") FROM events')[0]
    if use_layout:
        persons = int(np.count_nonzero(np.diff(ws.engine.person_layout().offsets)))
    else:
        persons = int(
            q(
                "SELECT count(DISTINCT m.canonical_id) FROM events e "
                "LEFT JOIN person_map m USING (person_id)"
            )[0][0]
        )
    counts = {
        t: int(q(f"SELECT count(*) FROM {t}")[0][0])
        for t in ("ad_spend", "email_campaigns", "survey_responses", "products", "quarantine")
    }
    return {
        "path": str(ws.store.path),
        "schema_version": ws.store.schema_version,
        "currency": ws.store.currency,
        "events": int(events),
        "persons": persons,
        "first_event_at": first,
        "last_event_at": last,
        **counts,
    }


class _EventCounts:
    """Events per channel, device, country and event name, kept up to date from ``events.seq``.

    Events are only appended, so each look reads the rows above the last one seen. Should the
    table ever disagree (its row count differs from the counted total: rows removed, or
    committed below the mark), the counts are rebuilt from scratch.
    """

    _SQL = """
        SELECT channel, device_type, country, event, grouping(event) = 0 AS by_event,
               count(*) AS n
        FROM events WHERE seq > $low AND seq <= $high
        GROUP BY GROUPING SETS ((channel), (device_type), (country), (event))
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._mark = 0
        self._total = 0
        self._counts: dict[str, dict[str, int]] = {}

    def get(self, store: Store) -> dict[str, dict[str, int]]:
        """``{"channel" | "device" | "country" | "event": {value: events}}`` (no NULL values)."""
        with self._lock:
            rows, top = (
                int(v) for v in store.query("SELECT count(*), coalesce(max(seq), 0) FROM events")[0]
            )
            if top < self._mark or rows < self._total:
                self._reset()
            if top > self._mark:
                self._add(store, self._mark, top)
            if self._total != rows:  # rows committed below the mark: count afresh
                self._reset()
                self._add(store, 0, top)
            return {dim: dict(values) for dim, values in self._counts.items()}

    def _add(self, store: Store, low: int, high: int) -> None:
        cur = store.reader()
        try:
            found = cur.sql(self._SQL, params={"low": low, "high": high}).fetchall()
        finally:
            cur.close()
        for channel, device, country, event, by_event, n in found:
            for dim, value in (
                ("channel", channel),
                ("device", device),
                ("country", country),
                ("event", event),
            ):
                if value is not None:
                    counts = self._counts.setdefault(dim, {})
                    counts[value] = counts.get(value, 0) + int(n)
            if by_event:
                self._total += int(n)
        self._mark = high


_event_counts: weakref.WeakKeyDictionary[Store, _EventCounts] = weakref.WeakKeyDictionary()


def event_counts(store: Store) -> dict[str, dict[str, int]]:
    """Events per channel, device, country and event name (see :class:`_EventCounts`)."""
    with _locks_guard:
        counts = _event_counts.setdefault(store, _EventCounts())
    return counts.get(store)


def _most_frequent(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def info_answer(ws: Workspace, *, use_layout: bool = True) -> dict[str, Any]:
    """The store summary, the values of each global filter (most frequent first) and the pages
    this server offers."""
    from funnelscope.api.app import ROUTERS

    counts = event_counts(ws.store)
    dims = {
        dim: [v for v, _ in _most_frequent(counts.get(dim, {}))][:MAX_DIMENSION_VALUES]
        for dim in ("channel", "device", "country")
    }
    events = [{"event": e, "count": n} for e, n in _most_frequent(counts.get("event", {}))]
    features = {page: module in ROUTERS for page, module in OPTIONAL_PAGES.items()}
    return json_object(
        {
            **summary(ws, use_layout=use_layout),
            "dimensions": dims,
            "event_names": events,
            "features": features,
        }
    )


def _sparkline_granularity(start: datetime, end: datetime) -> str:
    days = (end - start).days
    return "day" if days <= 120 else "week" if days <= 730 else "month"


def _kpi_fields(row: Any) -> dict[str, Any]:
    return {
        "value": row.value,
        "previous_value": row.previous_value,
        "change": row.change,
        "unit": row.unit,
        "note": row.note,
    }


def report_answer(
    ws: Workspace, start: datetime, end: datetime, filters: Filters, *, use_layout: bool = True
) -> dict[str, Any]:
    """Stage counts, then per stage its main KPIs: the period's value, the previous period's,
    the change, and a series (day, week or month by the period's length) for a sparkline.
    KPIs that cannot be filtered by an active filter come back with ``value: null`` and
    ``unavailable`` saying why. The stage counts ignore the filters (``stage_filters_applied``).
    """
    from funnelscope.analysis.kpi_catalogue import MAIN_KPIS, kpi_by_name
    from funnelscope.analysis.report import stage_report

    names = [n for stage in MAIN_KPIS for n in MAIN_KPIS[stage]]
    usable, skipped = _filterable(names, filters)
    granularity = _sparkline_granularity(start, end)
    # Independent work, run together: the stage counts are numpy/numba (they release the GIL),
    # the KPI queries are DuckDB's; on 2 cores one computes while another waits.
    with ThreadPoolExecutor(3, thread_name_prefix="report") as pool:
        staged = pool.submit(
            stage_report, ws.engine, start=start, end=end, with_kpis=False, use_layout=use_layout
        )
        totals_job = pool.submit(
            _run_kpis, ws, usable, start, end, compare="previous_period", filters=filters
        )
        series_job = pool.submit(
            _run_kpis, ws, usable, start, end, granularity=granularity, filters=filters
        )
        with as_http():
            stage_result = staged.result()
        totals, series = totals_job.result(), series_job.result()
    by_name = {r.kpi: r for r in totals.rows}
    stages = []
    for stage_row in stage_result.rows:
        item = stage_row.to_dict()
        item["label"] = stage_row.stage.label
        # The stage's main KPIs, as the cards show them (stage_report's own ``kpis`` would
        # compute the same totals a second time).
        item["kpis"] = {
            n: _kpi_fields(by_name[n]) for n in MAIN_KPIS.get(stage_row.stage, ()) if n in by_name
        }
        stages.append(item)
    points: dict[str, list[dict[str, Any]]] = {}
    for r in series.rows:
        points.setdefault(r.kpi, []).append({"period": r.period, "value": r.value})
    cards = []
    for name in names:
        entry = _catalogue_entry(kpi_by_name(name))
        row = by_name.get(name)
        entry.update(
            {
                "value": row.value if row else None,
                "previous_value": row.previous_value if row else None,
                "change": row.change if row else None,
                "note": row.note if row else None,
                "unavailable": skipped.get(name),
                "series": points.get(name, []),
            }
        )
        cards.append(entry)
    return json_object(
        {
            "start": start,
            "end": end,
            "currency": totals.currency,
            "granularity": granularity,
            "stages": stages,
            "kpis": cards,
            "stage_filters_applied": not filters,
        }
    )


def channels_answer(
    ws: Workspace, start: datetime, end: datetime, filters: Filters
) -> dict[str, Any]:
    """Spend, impressions, clicks, CTR, orders, revenue, new customers, CAC and ROAS per channel
    (``unavailable`` instead when a filter cannot apply to spend)."""
    usable, skipped = _filterable(list(CHANNEL_KPIS), filters)
    if skipped:
        # Spend data is per channel and campaign only: a device or country filter cannot apply
        # to it, and an unfiltered table under a filter would mislead.
        return {
            "currency": ws.store.currency,
            "channels": [],
            "unavailable": "channel spend, CTR, CAC and ROAS "
            + next(iter(skipped.values()))
            + "; clear that filter to see them",
        }
    result = _run_kpis(ws, usable, start, end, breakdown=["channel"], filters=filters)
    table: dict[str, dict[str, Any]] = {}
    for row in result.rows:
        channel = dict(row.breakdown).get("channel") or "(none)"
        item = table.setdefault(channel, {"channel": channel, **dict.fromkeys(CHANNEL_COLUMNS)})
        item[row.kpi] = row.value
        if row.kpi == "ctr":
            item["clicks"], item["impressions"] = row.numerator, row.denominator
        elif row.kpi == "cac":
            item["spend"], item["new_customers"] = row.numerator, row.denominator
    rows = sorted(table.values(), key=lambda r: (-(r.get("revenue") or 0), r["channel"]))
    return json_object({"currency": result.currency, "channels": rows})


def default_period(ws: Workspace) -> tuple[datetime, datetime] | None:
    """The dashboard's default period: the :data:`DEFAULT_DAYS` days ending on the (UTC) day of
    the latest event, end exclusive; None for an empty store."""
    last = ws.store.query('SELECT max("timestamp") FROM events')[0][0]
    if last is None:
        return None
    day = last.astimezone(UTC).date()
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return end - timedelta(days=DEFAULT_DAYS), end


# -- routes --------------------------------------------------------------------------------------


def _answer(
    request: Request,
    ws: Workspace,
    key: tuple[Any, ...],
    compute: Callable[[bool], dict[str, Any]],
    *,
    sessions: bool,
) -> dict[str, Any]:
    """The cached answer, or ``compute(use_layout)`` after :func:`prepare`.

    Until the person layout has been built (the warm-up does it right after start), requests
    count with SQL rather than wait for the build: the same numbers, sooner. Without a warmer
    the request builds it.
    """
    warmer: OverviewWarmer | None = getattr(request.app.state, "overview_warmer", None)
    if warmer is not None:
        warmer.touch()
    cache = answer_cache(request)
    hit = cache.peek(_key(ws.store.version, *key))
    if hit is not None:
        return hit
    use_layout = warmer is None or layout_built(ws)
    prepare(ws, sessions=sessions, layout=use_layout)
    return cache.get(_key(ws.store.version, *key), lambda: compute(use_layout))


def _period(ws: Workspace, common: Common) -> tuple[datetime, datetime]:
    if common.start and common.end:
        return common.start, common.end
    return _bounds(ws, common)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    ws: Workspace | None = getattr(app.state, "workspace", None)
    settings = getattr(app.state, "settings", None)
    every = float(getattr(settings, "overview_warm_seconds", 10.0))
    if ws is None or every <= 0:
        yield
        return
    state = app.state

    def cache() -> ResultCache:
        current: ResultCache | None = getattr(state, "query_cache", None)
        if current is None:
            current = state.query_cache = ResultCache()
        return current

    warmer = OverviewWarmer(ws, cache, every_seconds=every)
    app.state.overview_warmer = warmer
    warmer.start()
    try:
        yield
    finally:
        warmer.stop()


router = APIRouter(
    prefix="/api/v1", tags=["query"], dependencies=[Depends(require_read_key)], lifespan=_lifespan
)


@router.get("/info", summary="Store summary, filter values and the pages this server offers")
def info(request: Request, ws: WorkspaceDep) -> dict[str, Any]:
    return _answer(
        request, ws, ("info",), lambda lay: info_answer(ws, use_layout=lay), sessions=False
    )


@router.get("/report", summary="The stage funnel and each stage's KPI cards")
def report(request: Request, ws: WorkspaceDep, common: CommonDep) -> dict[str, Any]:
    """Stage counts, then per stage its main KPIs: the period's value, the previous period's,
    the change, and a series (day, week or month by the period's length) for a sparkline.
    KPIs that cannot be filtered by an active filter come back with ``value: null`` and
    ``unavailable`` saying why."""
    start, end = _period(ws, common)
    return _answer(
        request,
        ws,
        ("report", start, end, _filters_key(common.filters)),
        lambda lay: report_answer(ws, start, end, common.filters, use_layout=lay),
        sessions=True,
    )


@router.get("/channels", summary="Spend, CTR, CAC and ROAS per channel, from the KPI catalogue")
def channels(request: Request, ws: WorkspaceDep, common: CommonDep) -> dict[str, Any]:
    start, end = _period(ws, common)
    return _answer(
        request,
        ws,
        ("channels", start, end, _filters_key(common.filters)),
        lambda _: channels_answer(ws, start, end, common.filters),
        sessions=True,
    )


@router.get("/overview/status", summary="Whether the Overview's default answers are warm")
def overview_status(request: Request, ws: WorkspaceDep) -> dict[str, Any]:
    """``ready``: the default view's answers for the current data are computed; ``runs``,
    ``last_seconds`` and ``last_error`` of the background warm-up (``enabled: false`` when
    ``overview_warm_seconds`` is 0)."""
    warmer: OverviewWarmer | None = getattr(request.app.state, "overview_warmer", None)
    if warmer is None:
        return {"enabled": False, "ready": False}
    return {
        "enabled": True,
        "ready": warmer.ready(),
        "version": ws.store.version,
        "warmed_version": warmer.warmed_version,
        "runs": warmer.runs,
        "failures": warmer.failures,
        "last_seconds": warmer.last_seconds,
        "last_error": warmer.last_error,
    }


# -- the warmer ----------------------------------------------------------------------------------


class OverviewWarmer:
    """Computes the Overview's default answers in the background, into the answer cache.

    It warms once when started, then again whenever the store's version changed, but only if
    the Overview was asked for within :data:`IDLE_SECONDS` and at most every
    ``max(every_seconds, BACKOFF_FACTOR * last warm-up time)``.

    Examples
    --------
    >>> import funnelscope
    >>> ws = funnelscope.open(":memory:")
    >>> cache = ResultCache()
    >>> warmer = OverviewWarmer(ws, lambda: cache, every_seconds=10)
    >>> warmer.warm() and warmer.ready()
    True
    """

    def __init__(
        self,
        ws: Workspace,
        cache: Callable[[], ResultCache],
        *,
        every_seconds: float,
        poll_seconds: float = 0.2,
    ) -> None:
        self.ws = ws
        self._cache = cache
        self.every_seconds = every_seconds
        self._poll = poll_seconds
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        # never asked for yet: after the start-up warm-up, a server that only collects must not
        # re-warm (each re-warm refreshes sessions under the write lock, stalling the collector)
        self._touched = -math.inf
        self._keys: tuple[tuple[Any, ...], ...] = ()
        self.runs = 0
        self.failures = 0
        self.last_seconds: float | None = None
        self.last_error: str | None = None
        self.warmed_version: int | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="funnelscope-overview", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def touch(self) -> None:
        """Someone looked at the Overview: keep its answers warm."""
        self._touched = time.monotonic()

    def ready(self) -> bool:
        """True when the default answers of the store's current version are in the cache."""
        cache = self._cache()
        return (
            bool(self._keys)
            and self._keys[0][0] == self.ws.store.version
            and all(cache.peek(k) is not None for k in self._keys)
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`ready` (or ``timeout`` seconds); returns :meth:`ready`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self.ready():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(self._poll if left is None else min(left, self._poll))
        return self.ready()

    def warm(self) -> bool:
        """Compute the default answers now (shared with requests for the same answers)."""
        started = time.perf_counter()
        ws, cache = self.ws, self._cache()
        prepare(ws, sessions=True)
        version = ws.store.version
        keys = [_key(version, "info")]
        cache.get(keys[0], lambda: info_answer(ws))
        period = default_period(ws)
        if period is not None:
            start, end = period
            keys += [
                _key(version, "report", start, end, ()),
                _key(version, "channels", start, end, ()),
            ]
            cache.get(keys[1], lambda: report_answer(ws, start, end, {}))
            cache.get(keys[2], lambda: channels_answer(ws, start, end, {}))
        self.last_seconds = time.perf_counter() - started
        self.warmed_version = version
        self.runs += 1
        with self._changed:
            self._keys = tuple(keys)
            self._changed.notify_all()
        return True

    def _due(self, last_end: float) -> bool:
        if self.warmed_version == self.ws.store.version:
            return False
        if self.warmed_version is None:
            return True
        if time.monotonic() - self._touched > IDLE_SECONDS:
            return False
        # the first warm-up builds the layout and the counts from nothing: not a measure
        last = (self.last_seconds or 0.0) if self.runs > 1 else 0.0
        pause = max(self.every_seconds, BACKOFF_FACTOR * last)
        return time.monotonic() - last_end >= pause

    def _loop(self) -> None:
        last_end = 0.0
        while not self._stop.is_set():
            if self._due(last_end):
                try:
                    self.warm()
                    self.last_error = None
                except Exception as exc:  # a failed warm-up must not stop the server
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.warmed_version = self.ws.store.version  # retry after the next commit
                    log.warning("overview warm-up failed: %s", self.last_error)
                last_end = time.monotonic()
            self._stop.wait(self._poll)
