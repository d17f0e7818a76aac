"""Real time: what is happening right now, as JSON (``GET /api/v1/live``) and as a stream of
server-sent events (``GET /api/v1/live/stream``, one frame per second).

Each number is one SQL query on the store. The collector acknowledges an event once it is in the
journal and loads the journal about once a second; a read of the store first waits until everything
acknowledged before it is loaded (:meth:`funnelscope.api.journal.JournalLoader.sync`), so an
acknowledged event is in the next frame.
Windows are on event time (``timestamp``, clock-skew corrected by the collector), ending at the
snapshot time ``as_of``:

* ``events_per_minute``: events in each of the last 30 whole minutes (the last one running);
  ``events_last_minute``: events in the 60 s before ``as_of``;
* ``active_visitors``: distinct (stitched) persons with any event in the last 5 minutes;
* ``orders`` / ``revenue``: ``order_completed`` events and their revenue in the last 30 minutes,
  revenue per currency (never summed across currencies);
* ``today``: since midnight in the app's time zone, the distinct persons with an event of each
  stage (the default stage model of :mod:`funnelscope.events.stages`): a person's first order
  ever is Action, a repeat order Retention. These are stage reach counts, not a strict
  sequential funnel: a person counts in every stage they touched today.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from funnelscope.api.auth import require_read_key
from funnelscope.events.stages import (
    DEFAULT_STAGE_MODEL,
    ORDER_EVENT,
    STAGES,
    Stage,
    StageModel,
)
from funnelscope.store.store import Store

__all__ = ["LiveResult", "live_snapshot", "router"]

router = APIRouter(prefix="/api/v1", tags=["live"], dependencies=[Depends(require_read_key)])

MINUTES_SHOWN: Final = 30
ACTIVE_WINDOW: Final = timedelta(minutes=5)
ORDERS_WINDOW: Final = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class LiveResult:
    """One snapshot of the live view (see the module docstring for each number)."""

    as_of: datetime
    events_per_minute: tuple[tuple[datetime, int], ...]
    events_last_minute: int
    active_visitors: int
    orders: int
    revenue: tuple[tuple[str, Decimal], ...]
    today_start: datetime
    stages: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "events_per_minute": [
                {"minute": m.isoformat(), "events": n} for m, n in self.events_per_minute
            ],
            "events_last_minute": self.events_last_minute,
            "active_visitors": self.active_visitors,
            "active_window_minutes": int(ACTIVE_WINDOW.total_seconds() // 60),
            "orders": self.orders,
            "revenue": [{"currency": c, "amount": str(a)} for c, a in self.revenue],
            "orders_window_minutes": int(ORDERS_WINDOW.total_seconds() // 60),
            "today": {
                "start": self.today_start.isoformat(),
                "stages": [{"stage": s, "persons": n} for s, n in self.stages],
            },
        }


def live_snapshot(
    store: Store,
    *,
    now: datetime,
    timezone: str = "UTC",
    model: StageModel = DEFAULT_STAGE_MODEL,
) -> LiveResult:
    """The live numbers at ``now``.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from funnelscope.store.store import Store
    >>> live_snapshot(Store(":memory:"), now=datetime(2024, 5, 1, 12, tzinfo=UTC)).orders
    0
    """
    now = now.astimezone(UTC)
    first_minute = now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES_SHOWN - 1)
    local = now.astimezone(ZoneInfo(timezone))
    today = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    cur = store.reader()
    try:
        per_minute = dict(
            cur.execute(
                "SELECT date_trunc('minute', \"timestamp\") AS m, count(*) FROM events "
                'WHERE "timestamp" >= ? AND "timestamp" <= ? GROUP BY 1',
                [first_minute, now],
            ).fetchall()
        )
        (last_minute,) = cur.execute(
            'SELECT count(*) FROM events WHERE "timestamp" > ? AND "timestamp" <= ?',
            [now - timedelta(minutes=1), now],
        ).fetchone() or (0,)
        (active,) = cur.execute(
            "SELECT count(DISTINCT m.canonical_id) FROM events e "
            "JOIN person_map m USING (person_id) "
            'WHERE e."timestamp" > ? AND e."timestamp" <= ?',
            [now - ACTIVE_WINDOW, now],
        ).fetchone() or (0,)
        money = cur.execute(
            "SELECT currency, count(*), sum(revenue) FROM events "
            'WHERE event = ? AND "timestamp" > ? AND "timestamp" <= ? GROUP BY 1 ORDER BY 1',
            [ORDER_EVENT, now - ORDERS_WINDOW, now],
        ).fetchall()
        stage_rows = dict(cur.execute(_stage_sql(model), [today, now, ORDER_EVENT]).fetchall())
    finally:
        cur.close()
    minutes = tuple(
        (
            first_minute + timedelta(minutes=i),
            int(per_minute.get(first_minute + timedelta(minutes=i), 0)),
        )
        for i in range(MINUTES_SHOWN)
    )
    return LiveResult(
        as_of=now,
        events_per_minute=minutes,
        events_last_minute=int(last_minute),
        active_visitors=int(active),
        orders=sum(int(n) for _, n, _ in money),
        revenue=tuple((str(c), Decimal(s)) for c, _, s in money if c is not None and s is not None),
        today_start=today,
        stages=tuple((s.name.lower(), int(stage_rows.get(int(s), 0))) for s in STAGES),
    )


def _stage_sql(model: StageModel) -> str:
    """Distinct persons per stage today ($1 = today's start, $2 = now, $3 = the order event).

    An order is Action when it is the person's first ever, Retention when it is a repeat (with
    ``repeat_order_is_retention``); every other event takes the model's stage.
    """
    order_stage = model.stage_of(ORDER_EVENT)
    first = int(order_stage) if order_stage is not None else "NULL"
    repeat = int(Stage.RETENTION) if model.repeat_order_is_retention else first
    return (
        "WITH today AS (SELECT m.canonical_id AS person, e.event, "
        f"{model.sql_case('e.event')} AS stage "
        "FROM events e JOIN person_map m USING (person_id) "
        'WHERE e."timestamp" >= $1 AND e."timestamp" <= $2), '
        'orders AS (SELECT m.canonical_id AS person, e."timestamp" AS ts, row_number() OVER '
        '(PARTITION BY m.canonical_id ORDER BY e."timestamp", e.event_id) AS n '
        "FROM events e JOIN person_map m USING (person_id) "
        'WHERE e.event = $3 AND e."timestamp" <= $2 '
        "AND m.canonical_id IN (SELECT person FROM today WHERE event = $3)) "
        "SELECT stage, count(DISTINCT person) FROM ("
        "SELECT person, stage FROM today WHERE stage IS NOT NULL AND event <> $3 "
        f"UNION ALL SELECT person, CASE WHEN n = 1 THEN {first} ELSE {repeat} END "
        "FROM orders WHERE ts >= $1"
        ") WHERE stage IS NOT NULL GROUP BY stage"
    )


async def _snapshot(request: Request) -> LiveResult:
    state = request.app.state
    return await run_in_threadpool(
        live_snapshot,
        state.workspace.store,
        now=datetime.now(UTC),
        timezone=state.settings.timezone,
    )


@router.get("/live", summary="Live numbers: events per minute, visitors, orders, today's stages")
async def live(request: Request) -> dict[str, Any]:
    return (await _snapshot(request)).to_dict()


@router.get(
    "/live/stream",
    summary="The live numbers as server-sent events, one per interval",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def live_stream(request: Request) -> StreamingResponse:
    """``event: live`` frames with the JSON of ``GET /api/v1/live``; ``?key=`` for EventSource."""
    interval: float = request.app.state.settings.live_interval_seconds

    async def frames() -> Any:
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            snapshot = await _snapshot(request)
            yield f"event: live\ndata: {json.dumps(snapshot.to_dict())}\n\n"
            await asyncio.sleep(interval)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
