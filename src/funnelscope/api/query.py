"""The read API: thin JSON endpoints over the Workspace, for the dashboard and for scripts.

Every route needs a read key (``Authorization: Bearer <key>``; write keys are refused). JSON is
snake_case. Invalid input answers 422 with FastAPI's shape, ``{"detail": [{"type", "loc",
"msg"}, ...]}``, one entry per :class:`~funnelscope.errors.Problem` (``type`` is its stable
code), all problems at once.

Periods are ``start`` (inclusive) and ``end`` (exclusive): ISO dates (``2024-05-01``, midnight
UTC) or ISO datetimes (UTC when no offset is given). The global filters are ``channel``,
``device``, ``country`` and ``customer`` (``new`` or ``returning``); each takes one value or a
comma-separated list.

Routes (the Overview's ``/api/v1/info``, ``/report`` and ``/channels`` are in
:mod:`funnelscope.api.overview`, which computes them ahead of the first look)::

    POST /api/v1/funnels              a FunnelSpec as JSON -> the FunnelResult as JSON
    POST /api/v1/funnels/persons      CSV of the persons at, or dropped at, step N
    GET  /api/v1/funnels/explain      why one person is counted where they are
    GET  /api/v1/kpis                 any KPIs over time, with breakdown and comparison
    GET  /api/v1/kpis/catalogue       every KPI: name, stage, unit, formula, description
    GET  /api/v1/quarantine           rejected rows with reasons, paged
    GET  /api/v1/imports              import history
    GET  /api/v1/sources              sources with their keys (never the secrets) and volumes
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from funnelscope.api.auth import require_read_key
from funnelscope.api.problems import as_http, problem_detail
from funnelscope.errors import Problem
from funnelscope.workspace import Workspace

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["query"], dependencies=[Depends(require_read_key)])

#: Global filter parameter -> the KPI dimension it filters (analysis/kpi_catalogue.DIMENSIONS).
FILTER_PARAMS: Final = {
    "channel": "channel",
    "device": "device",
    "country": "country",
    "customer": "new_vs_returning",
}
CUSTOMER_TYPES: Final = ("new", "returning")
#: ``total`` is one value for the whole period (no time buckets).
GRANULARITIES: Final = ("day", "week", "month", "total")
COMPARES: Final = ("previous_period", "none")
MAX_PAGE: Final = 500
MAX_PAYLOAD_CHARS: Final = 4000
#: Answers kept by the result cache (each a few KB to a few hundred KB of JSON-able data).
MAX_CACHED: Final = 64


# -- plumbing -------------------------------------------------------------------------------------


def get_workspace(request: Request) -> Workspace:
    """The app's Workspace (set by :func:`funnelscope.api.app.create_app`)."""
    ws: Workspace = request.app.state.workspace
    return ws


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]


class ResultCache:
    """Answers of the read routes, keyed by the store's write version and the request.

    Every committed write bumps ``Store.version``, so a cached answer is never older than the
    data: the dashboard's second look at a page costs nothing, and a new event invalidates all.
    A key being computed is computed once: a second caller (another tab, or the Overview's
    background warm-up, api/overview.py) waits for that answer instead of computing it again.
    """

    def __init__(self, size: int = MAX_CACHED) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._pending: dict[tuple[Any, ...], threading.Event] = {}
        #: answers computed here (not served from the cache): tells warm-up from a request
        self.computed = 0

    def peek(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        """The cached answer for ``key``, or None (never computes)."""
        with self._lock:
            return self._items.get(key)

    def get(self, key: tuple[Any, ...], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                running = self._pending.get(key)
                if running is None:
                    done = self._pending[key] = threading.Event()
                    break
            running.wait()  # then take its answer, or compute ourselves if it failed
        try:
            value = compute()
            with self._lock:
                self.computed += 1
                self._items[key] = value
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
            return value
        finally:
            with self._lock:
                del self._pending[key]
            done.set()


def answer_cache(request: Request) -> ResultCache:
    """The app's answer cache (created on first use)."""
    cache: ResultCache | None = getattr(request.app.state, "query_cache", None)
    if cache is None:
        cache = request.app.state.query_cache = ResultCache()
    return cache


def cached(
    request: Request, ws: Workspace, compute: Callable[[], dict[str, Any]], *extra: Any
) -> dict[str, Any]:
    """``compute()``, or its answer for the same route, query, body and store version."""
    key = (ws.store.version, request.url.path, str(request.url.query), *extra)
    return answer_cache(request).get(key, compute)


def jsonable(value: Any) -> Any:
    """Plain JSON: ISO datetimes, money as numbers (JSON has no decimal), NaN as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and value != value:  # NaN
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return json_object(value.item())
    if value is not None and type(value).__name__ in ("NaTType", "NAType"):
        return None
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return value.isoformat()
    return value


def json_object(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = jsonable(value)
    return out


def parse_instant(text: str, location: str, problems: list[Problem]) -> datetime | None:
    """An ISO date (midnight UTC) or datetime (UTC unless it has an offset)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        problems.append(
            Problem(
                "query.bad_datetime",
                location,
                f"{text!r} is not an ISO date (2024-05-01) or datetime",
            )
        )
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_period(
    start: str | None, end: str | None, problems: list[Problem]
) -> tuple[datetime | None, datetime | None]:
    """``[start, end)``; either may be omitted (the store's first or last event is used)."""
    begin = parse_instant(start, "start", problems) if start else None
    finish = parse_instant(end, "end", problems) if end else None
    if begin and finish and finish <= begin:
        problems.append(
            Problem("query.empty_period", "end", f"end ({end}) must be after start ({start})")
        )
    return begin, finish


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_filters(params: dict[str, str | None], problems: list[Problem]) -> dict[str, list[str]]:
    """The global filters as ``{column: [values]}`` (values OR-ed, columns AND-ed)."""
    filters: dict[str, list[str]] = {}
    for name, column in FILTER_PARAMS.items():
        values = split_list(params.get(name))
        if not values:
            continue
        if name == "customer":
            bad = [v for v in values if v not in CUSTOMER_TYPES]
            if bad:
                problems.append(
                    Problem(
                        "query.bad_customer_type",
                        "customer",
                        f"{bad[0]!r} is not allowed; use new or returning",
                    )
                )
                continue
        filters[column] = values
    return filters


class Common:
    """The period and global filters every analytical route takes."""

    def __init__(
        self,
        start: Annotated[str | None, Query(description="ISO date or datetime, inclusive")] = None,
        end: Annotated[str | None, Query(description="ISO date or datetime, exclusive")] = None,
        channel: Annotated[str | None, Query(description="channel(s), comma-separated")] = None,
        device: Annotated[str | None, Query(description="device type(s)")] = None,
        country: Annotated[str | None, Query(description="country code(s)")] = None,
        customer: Annotated[str | None, Query(description="new or returning")] = None,
    ) -> None:
        problems: list[Problem] = []
        self.start, self.end = parse_period(start, end, problems)
        self.filters = parse_filters(
            {"channel": channel, "device": device, "country": country, "customer": customer},
            problems,
        )
        if problems:
            raise HTTPException(422, [problem_detail(p) for p in problems])


CommonDep = Annotated[Common, Depends(Common)]


def _bounds(ws: Workspace, common: Common) -> tuple[datetime, datetime]:
    """The period with its open ends filled from the store's first and last event."""
    first, last = ws.store.query('SELECT min("timestamp"), max("timestamp") FROM events')[0]
    fallback = datetime(2000, 1, 1, tzinfo=UTC)
    start = common.start or first or fallback
    end = common.end or (last + timedelta(microseconds=1) if last else start + timedelta(days=1))
    return start, end


def _dataframe_rows(frame: Any) -> list[dict[str, Any]]:
    """A pandas DataFrame's rows as JSON-able dicts."""
    records: list[dict[str, Any]] = frame.to_dict(orient="records")
    return [jsonable(r) for r in records]


# -- data: quarantine, imports, sources ----------------------------------------------------------


def _payload_text(payload: bytes | None) -> str | None:
    if payload is None:
        return None
    text = bytes(payload).decode("utf-8", errors="replace")
    return text if len(text) <= MAX_PAYLOAD_CHARS else text[:MAX_PAYLOAD_CHARS] + "…"


@router.get("/quarantine", summary="Rejected rows with their reasons, newest first, paged")
def quarantine(
    ws: WorkspaceDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    reason: Annotated[str | None, Query(description="a reason code")] = None,
    source: Annotated[str | None, Query(description="a source name")] = None,
) -> dict[str, Any]:
    where, params = ["TRUE"], []
    if reason:
        where.append("reason_code = ?")
        params.append(reason)
    if source:
        where.append("source = ?")
        params.append(source)
    cond = " AND ".join(where)
    total = int(ws.store.query(f"SELECT count(*) FROM quarantine WHERE {cond}", params)[0][0])
    rows = ws.store.query(
        f"SELECT quarantined_at, source, row_number, reason_code, message, payload "
        f"FROM quarantine WHERE {cond} ORDER BY quarantined_at DESC, row_number "
        f"LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    reasons = ws.store.query(
        "SELECT reason_code, count(*) AS n, max(message) FROM quarantine "
        "GROUP BY reason_code ORDER BY n DESC, reason_code"
    )
    return json_object(
        {
            "total": total,
            "offset": offset,
            "limit": limit,
            "reasons": [{"reason_code": r, "count": int(n), "example": m} for r, n, m in reasons],
            "rows": [
                {
                    "quarantined_at": at,
                    "source": src,
                    "row_number": row,
                    "reason_code": code,
                    "message": msg,
                    "payload": _payload_text(payload),
                }
                for at, src, row, code, msg, payload in rows
            ],
        }
    )


@router.get("/imports", summary="Import history, newest first")
def imports(
    ws: WorkspaceDep, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100
) -> dict[str, Any]:
    cols = (
        "import_id",
        "started_at",
        "finished_at",
        "source",
        "kind",
        "rows",
        "accepted",
        "rejected",
        "inserted",
    )
    rows = ws.store.query(
        f"SELECT {', '.join(cols)} FROM imports ORDER BY started_at DESC LIMIT ?", [limit]
    )
    return json_object({"imports": [dict(zip(cols, r, strict=True)) for r in rows]})


@router.get("/sources", summary="Sources with their event volumes and keys (no secrets)")
def sources(ws: WorkspaceDep) -> dict[str, Any]:
    from funnelscope.keys import list_keys

    volumes = {
        src: (int(n), last, received)
        for src, n, last, received in ws.store.query(
            "SELECT coalesce(source, 'unknown'), count(*), max(\"timestamp\"), max(received_at) "
            "FROM events GROUP BY 1"
        )
    }
    keys: dict[str, list[dict[str, Any]]] = {}
    for key in list_keys(ws.store):
        # Only the displayed prefix: a read key's secret is not stored, and listing write keys
        # in full would turn a screen share into a leak of every source's key.
        keys.setdefault(key.source, []).append(
            {
                "key_id": key.key_id,
                "kind": key.kind,
                "is_admin": key.is_admin,
                "prefix": key.prefix,
                "created_at": key.created_at,
                "revoked": key.revoked_at is not None,
                "revoked_at": key.revoked_at,
            }
        )
    # The collector tags events "<wire>:<key source>" (native:web-shop, segment:web-shop):
    # list a key with the event sources it writes, and on its own only when it wrote nothing.
    owner = {src: src.partition(":")[2] or src for src in volumes}
    used = {owner[src] for src in volumes if owner[src] in keys}
    rows = [
        {
            "source": src,
            "events": n,
            "last_event_at": last,
            "last_received_at": received,
            "keys": keys.get(owner[src], []),
        }
        for src, (n, last, received) in volumes.items()
    ]
    rows += [
        {
            "source": name,
            "events": 0,
            "last_event_at": None,
            "last_received_at": None,
            "keys": found,
        }
        for name, found in keys.items()
        if name not in used
    ]
    rows.sort(key=lambda r: (-r["events"], r["source"]))
    return json_object({"sources": rows})


# -- KPIs ------------------------------------------------------------------------------------------


def _catalogue_entry(kpi: Any) -> dict[str, Any]:
    return {
        "name": kpi.name,
        "label": kpi.name.replace("_", " ").capitalize()
        if kpi.name not in _ACRONYMS
        else kpi.name.upper(),
        "stage": kpi.stage.name.lower(),
        "unit": kpi.unit,
        "description": kpi.description,
        "higher_is_better": kpi.higher_is_better,
        "additive": kpi.additive,
        "breakdowns": list(kpi.breakdowns),
    }


_ACRONYMS: Final = frozenset({"cpm", "ctr", "cpc", "aov", "roas", "cac", "nps"})


@router.get("/kpis/catalogue", summary="Every KPI: name, stage, unit, formula, breakdowns")
def kpi_catalogue() -> dict[str, Any]:
    from funnelscope.analysis.kpi_catalogue import CATALOGUE, DIMENSIONS

    return {"kpis": [_catalogue_entry(k) for k in CATALOGUE], "dimensions": DIMENSIONS}


def _run_kpis(
    ws: Workspace,
    names: list[str],
    start: datetime,
    end: datetime,
    *,
    breakdown: list[str] | None = None,
    granularity: str | None = None,
    compare: str | None = None,
    filters: dict[str, list[str]] | None = None,
) -> Any:
    from funnelscope.analysis.kpis import KpiSpec, compute_kpis

    with as_http():
        spec = KpiSpec.create(
            names,
            start,
            end,
            breakdown=breakdown or (),
            granularity=granularity,
            compare=compare,
            filters=filters,
        )
        return compute_kpis(ws.engine, spec)


def _filterable(
    names: list[str], filters: dict[str, list[str]]
) -> tuple[list[str], dict[str, str]]:
    """KPIs that support every active filter, and why each other one does not."""
    from funnelscope.analysis.kpi_catalogue import kpi_by_name

    usable, skipped = [], {}
    for name in names:
        missing = [d for d in filters if d not in kpi_by_name(name).breakdowns]
        if missing:
            skipped[name] = f"cannot be filtered by {', '.join(missing)}"
        else:
            usable.append(name)
    return usable, skipped


@router.get("/kpis", summary="KPIs over time, with breakdown and comparison")
def kpis(
    request: Request,
    ws: WorkspaceDep,
    common: CommonDep,
    names: Annotated[str, Query(description="KPI names, comma-separated")],
    breakdown: Annotated[str | None, Query(description="dimensions, comma-separated")] = None,
    granularity: Annotated[str, Query(description="day, week, month or total")] = "day",
    compare: Annotated[str, Query(description="previous_period or none")] = "none",
) -> dict[str, Any]:
    problems: list[Problem] = []
    if granularity not in GRANULARITIES:
        problems.append(
            Problem(
                "query.bad_granularity",
                "granularity",
                f"{granularity!r} is not allowed; use {', '.join(GRANULARITIES)}",
            )
        )
    if compare not in COMPARES:
        problems.append(
            Problem(
                "query.bad_compare",
                "compare",
                f"{compare!r} is not allowed; use {' or '.join(COMPARES)}",
            )
        )
    if not split_list(names):
        problems.append(Problem("query.no_kpis", "names", "name at least one KPI"))
    if problems:
        raise HTTPException(422, [problem_detail(p) for p in problems])

    def compute() -> dict[str, Any]:
        start, end = _bounds(ws, common)
        result = _run_kpis(
            ws,
            split_list(names),
            start,
            end,
            breakdown=split_list(breakdown),
            granularity=None if granularity == "total" else granularity,
            compare=None if compare == "none" else compare,
            filters=common.filters,
        )
        out: dict[str, Any] = result.to_dict()
        out["granularity"] = granularity
        return json_object(out)

    return cached(request, ws, compute)


# -- recent events (the Live page's stream) ---------------------------------------------------

RECENT_COLUMNS: Final = (
    "seq",
    "timestamp",
    "received_at",
    "event",
    "person_id",
    "channel",
    "source",
    "page_path",
    "product_id",
    "revenue",
    "currency",
    "country",
    "device_type",
)


@router.get("/events/recent", summary="The latest events by arrival, after a sequence number")
def recent_events(
    ws: WorkspaceDep,
    after: Annotated[int, Query(ge=-1, description="only events with seq > after")] = -1,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> dict[str, Any]:
    """Newest first. ``seq`` is the arrival order; pass the largest seen as ``after`` to poll.
    ``person_id`` is the stitched (canonical) person."""
    cols = ", ".join(f'e."{c}"' if c != "person_id" else "m.canonical_id" for c in RECENT_COLUMNS)
    rows = ws.store.query(
        f"SELECT {cols} FROM events e JOIN person_map m USING (person_id) "
        "WHERE e.seq > ? ORDER BY e.seq DESC LIMIT ?",
        [after, limit],
    )
    return json_object({"events": [dict(zip(RECENT_COLUMNS, r, strict=True)) for r in rows]})


# -- funnels ---------------------------------------------------------------------------------------

PersonsFormat = Literal["csv", "json"]


def _funnel_spec(data: Any, prefix: str) -> Any:
    from funnelscope.analysis.funnel import FunnelSpec

    if not isinstance(data, dict):
        raise HTTPException(
            422,
            [
                problem_detail(
                    Problem("funnel.bad_spec", "", "the funnel spec must be a JSON object"), prefix
                )
            ],
        )
    with as_http(prefix):
        return FunnelSpec.from_dict(data)


def _run_funnel(ws: Workspace, spec: Any, prefix: str) -> Any:
    with as_http(prefix):
        return ws.funnel(spec)


@router.post("/funnels", summary="Run a funnel: a FunnelSpec as JSON -> the FunnelResult")
def funnel(
    request: Request,
    ws: WorkspaceDep,
    spec: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "steps": [
                        "product_viewed",
                        "product_added",
                        {"event": "order_completed", "filters": ["revenue>=50"]},
                    ],
                    "window": "7d",
                    "mode": "ordered",
                    "breakdowns": ["channel"],
                    "start_at": "2024-01-01",
                    "end_at": "2024-02-01",
                    "trend_period": "day",
                }
            ]
        ),
    ],
) -> dict[str, Any]:
    """The body is a :class:`~funnelscope.analysis.funnel.FunnelSpec` as in docs/funnels.md
    (``steps``, ``window``, ``mode``, ``counting``, ``breakdowns``, ``filters``, ...)."""
    parsed = _funnel_spec(spec, "body")
    return cached(
        request,
        ws,
        lambda: json_object(_run_funnel(ws, parsed, "body").to_dict()),
        json.dumps(spec, sort_keys=True, default=str),
    )


class PersonsRequest(BaseModel):
    """Which units of a funnel to list: those at step N, or those dropped at step N."""

    spec: dict[str, Any]
    step: int | None = Field(None, ge=1, description="1-based step; none: every unit")
    dropped: bool = Field(False, description="units that reached the step before but not this")
    format: PersonsFormat = "csv"
    limit: int | None = Field(None, ge=1, le=100_000, description="json only: first N rows")


@router.post(
    "/funnels/persons",
    summary="The persons at (or dropped at) step N, as CSV or JSON",
    response_model=None,
)
def funnel_persons(ws: WorkspaceDep, body: PersonsRequest) -> Response | dict[str, Any]:
    spec = _funnel_spec(body.spec, "body.spec")
    result = _run_funnel(ws, spec, "body.spec")
    with as_http("body"):
        frame = result.persons(body.step, dropped=body.dropped)
    if body.format == "json":
        total = len(frame)
        if body.limit is not None:
            frame = frame.head(body.limit)
        return json_object({"total": total, "persons": _dataframe_rows(frame)})
    what = "all" if body.step is None else f"{'dropped' if body.dropped else 'at'}-step-{body.step}"
    return Response(
        frame.to_csv(index=False),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="funnel-persons-{what}.csv"'},
    )


@router.get("/funnels/explain", summary="Why one person is counted where they are")
def funnel_explain(
    ws: WorkspaceDep,
    spec: Annotated[str, Query(description="the FunnelSpec as JSON")],
    person: Annotated[int, Query(ge=0, description="a stitched person id")],
) -> dict[str, Any]:
    try:
        data = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise HTTPException(
            422,
            [
                problem_detail(
                    Problem("funnel.bad_json", "spec", f"spec is not valid JSON: {exc.msg}")
                )
            ],
        ) from exc
    result = _run_funnel(ws, _funnel_spec(data, "query.spec"), "query.spec")
    with as_http():
        text = result.explain(person)
    furthest = None
    rows = result.persons()
    match = rows[rows["person_id"] == person] if "person_id" in rows else rows.iloc[0:0]
    if len(match):
        furthest = int(match["furthest_step"].max())
    return {"person": person, "furthest_step": furthest, "explanation": text}
