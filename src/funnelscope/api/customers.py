"""Customers, segments and CLV over HTTP (read key required; semantics in docs/customers.md).

Routes::

    GET    /api/v1/customers                    the customer table (paged)
    GET    /api/v1/customers/rfm                RFM segment sizes and scores (paged)
    GET    /api/v1/customers/clv                BG/NBD + Gamma-Gamma parameters, per-buyer CLV
    GET    /api/v1/customers/clusters           behavioural clusters, described in words
    GET    /api/v1/customers/acquisition        CAC, CLV:CAC, payback by channel and cohort
    GET    /api/v1/segments                     stored segments with sizes
    POST   /api/v1/segments                     define (or replace) a segment; refreshes it
    POST   /api/v1/segments/refresh             refresh every segment now (what serve schedules)
    GET    /api/v1/segments/{name}              definition and sizes over time
    DELETE /api/v1/segments/{name}
    GET    /api/v1/segments/{name}/members      members at the last refresh (paged)
    GET    /api/v1/segments/{name}/export       CSV or Parquet download (``format=csv|parquet``)
    POST   /api/v1/segments/{name}/webhooks     subscribe a URL to joins and leaves

``now`` (ISO date or datetime, UTC) defaults to the server clock. Invalid input answers 422 with
``{"detail": [{"type", "loc", "msg"}]}``, one entry per problem.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response

from funnelscope.api.auth import require_read_key
from funnelscope.api.problems import as_http
from funnelscope.errors import InvalidInputError, Problem
from funnelscope.workspace import Workspace

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["customers"], dependencies=[Depends(require_read_key)])

MAX_PAGE: Final = 1000
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0)]


def _workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


WorkspaceDep = Annotated[Workspace, Depends(_workspace)]


def _now(text: str | None) -> datetime:
    """The API is an edge: it may read the clock when ``now`` is not given."""
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            [Problem("query.bad_datetime", "now", f"{text!r} is not an ISO date or datetime")]
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _plain(value: Any) -> dict[str, Any]:
    from funnelscope.api.query import jsonable

    out: dict[str, Any] = jsonable(value)
    return out


@router.get("/customers")
def customers(
    ws: WorkspaceDep, now: str | None = None, limit: Limit = 100, offset: Offset = 0
) -> dict[str, Any]:
    with as_http():
        table = ws.customers(now=_now(now))
    data = table.to_dict()
    rows = data["customers"]
    return _plain({**data, "total": len(rows), "customers": rows[offset : offset + limit]})


@router.get("/customers/rfm")
def rfm(
    ws: WorkspaceDep, now: str | None = None, limit: Limit = 100, offset: Offset = 0
) -> dict[str, Any]:
    with as_http():
        data = ws.rfm(now=_now(now)).to_dict()
    rows = data["customers"]
    return _plain({**data, "total": len(rows), "customers": rows[offset : offset + limit]})


@router.get("/customers/clv")
def clv(
    ws: WorkspaceDep,
    now: str | None = None,
    horizon_weeks: Annotated[float, Query(gt=0, le=520)] = 52.0,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    with as_http():
        data = ws.clv(now=_now(now), horizon_weeks=horizon_weeks).to_dict()
    rows = data["customers"]
    return _plain({**data, "total": len(rows), "customers": rows[offset : offset + limit]})


@router.get("/customers/clusters")
def clusters(ws: WorkspaceDep, now: str | None = None, seed: int = 0) -> dict[str, Any]:
    with as_http():
        return _plain(ws.clusters(now=_now(now), seed=seed).to_dict())


@router.get("/customers/acquisition")
def acquisition(
    ws: WorkspaceDep, now: str | None = None, margin: Annotated[float, Query(gt=0, le=1)] = 1.0
) -> dict[str, Any]:
    with as_http():
        return _plain(ws.acquisition(now=_now(now), margin=margin).to_dict())


@router.get("/segments")
def list_segments(ws: WorkspaceDep) -> dict[str, Any]:
    from funnelscope.analysis import segments

    return _plain({"segments": segments.list_segments(ws.store)})


@router.post("/segments")
def define_segment(
    ws: WorkspaceDep, definition: Annotated[dict[str, Any], Body()], now: str | None = None
) -> dict[str, Any]:
    from funnelscope.analysis import segments

    with as_http("body"):
        spec = segments.parse_segment(definition)
        at = _now(now)
        segments.save_segment(ws.store, spec, now=at)
        result = segments.refresh_segment(ws.store, spec.name, now=at)
    return _plain({**spec.to_dict(), "size": result.size})


@router.post("/segments/refresh")
def refresh(ws: WorkspaceDep, now: str | None = None) -> dict[str, Any]:
    from funnelscope.analysis import segments

    with as_http():
        results = segments.refresh_all(ws, _now(now))
    return {"refreshed": [r.to_dict() for r in results]}


@router.get("/segments/{name}")
def get_segment(ws: WorkspaceDep, name: str) -> dict[str, Any]:
    from funnelscope.analysis import segments

    with as_http():
        spec = segments.get_segment(ws.store, name)
        sizes = segments.segment_sizes(ws.store, name)
    return _plain({**spec.to_dict(), "sizes": sizes})


@router.delete("/segments/{name}")
def delete_segment(ws: WorkspaceDep, name: str) -> dict[str, Any]:
    from funnelscope.analysis import segments

    with as_http():
        segments.delete_segment(ws.store, name)
    return {"deleted": name}


@router.get("/segments/{name}/members")
def members(ws: WorkspaceDep, name: str, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    from funnelscope.analysis import segments

    with as_http():
        rows = segments.members(ws.store, name)
    return _plain({"segment": name, "total": len(rows), "members": rows[offset : offset + limit]})


@router.get("/segments/{name}/export")
def export(ws: WorkspaceDep, name: str, format: str = "csv", now: str | None = None) -> Response:
    from funnelscope.analysis import segments

    with as_http(), tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"segment.{format}"
        segments.export_segment(ws.store, name, path, now=_now(now), format=format)
        content = path.read_bytes()
    media = "text/csv" if format == "csv" else "application/vnd.apache.parquet"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return Response(
        content,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{safe}.{format}"'},
    )


@router.post("/segments/{name}/webhooks")
def subscribe(
    ws: WorkspaceDep,
    name: str,
    url: Annotated[str, Body()],
    secret: Annotated[str, Body()],
) -> dict[str, Any]:
    from funnelscope.analysis import segments

    with as_http("body"):
        segments.subscribe(ws.store, name, url, secret, now=datetime.now(UTC))
    return {"segment": name, "url": url}
