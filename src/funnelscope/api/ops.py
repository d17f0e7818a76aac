"""Operations: ``/healthz``, ``/readyz``, Prometheus ``/metrics``, request metrics and JSON logs.

* ``/healthz``: the process answers (liveness);
* ``/readyz``: the writer thread runs, the store answers a query and the queue has room
  (readiness; 503 otherwise, so a load balancer stops sending);
* ``/metrics``: the app's registry (see :class:`funnelscope.api.metrics.Metrics`).

Logs are one JSON object per line (``ts``, ``level``, ``logger``, ``msg`` and any ``extra``
fields); every request is logged at DEBUG, errors (status >= 400) at INFO or WARNING.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "JsonFormatter",
    "RequestMetricsMiddleware",
    "configure_logging",
    "record_request",
    "router",
]

router = APIRouter(tags=["ops"])
access_log = logging.getLogger("funnelscope.api.access")

_RECORD_FIELDS: Final = frozenset(
    vars(logging.LogRecord("x", 0, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of msg
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for funnelscope's and uvicorn's loggers (called by ``serve``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("funnelscope", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs requests


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route template, and logs it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            record_request(scope, label, status, time.perf_counter() - started)


def record_request(scope: Scope, route: str, status: int, elapsed: float) -> None:
    """Count, time and log one answered request (``route``: its template, the metrics label);
    the middleware and the collector's short path (:class:`funnelscope.api.app.CollectorApp`)
    both record through here."""
    metrics = scope["app"].state.metrics if "app" in scope else None
    if metrics is not None:
        metrics.requests.labels(route, str(status)).inc()
        metrics.latency.labels(route).observe(elapsed)
    level = logging.DEBUG if status < 400 else logging.WARNING if status >= 500 else logging.INFO
    if access_log.isEnabledFor(level):
        state = scope.get("state") or {}
        access_log.log(
            level,
            "request",
            extra={
                "method": scope.get("method"),
                "path": scope.get("path"),
                "route": route,
                "status": status,
                "ms": round(elapsed * 1000, 2),
                "code": state.get("error_code"),
            },
        )


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: writer running, store answering, queue with room")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    writer = state.writer
    checks = {"writer": writer.is_alive, "queue": writer.queued_events < writer.max_queue_events}
    try:
        state.workspace.store.query("SELECT 1")
        checks["store"] = True
    except Exception:  # any store failure means not ready
        checks["store"] = False
    ready = all(checks.values())
    return JSONResponse(
        {
            "status": "ready" if ready else "not_ready",
            "checks": checks,
            "queued_events": writer.queued_events,
        },
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.queue_events.set(state.writer.queued_events)
    rows = state.workspace.store.query("SELECT sum(memory_usage_bytes) FROM duckdb_memory()")
    state.metrics.store_memory.set(float(rows[0][0] or 0))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
