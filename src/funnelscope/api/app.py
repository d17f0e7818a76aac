"""The FastAPI app factory: one Workspace, one writer thread, the routers of :data:`ROUTERS`.

``create_app(workspace, settings)`` wires:

* ``app.state.workspace`` / ``settings`` / ``keys`` (:class:`~funnelscope.api.auth.KeyRing`) /
  ``writer`` (:class:`~funnelscope.api.writer.GroupWriter`: the ack stage, its journal and the
  journal's loader) / ``metrics`` / ``rate_limits``, which routers read from
  ``request.app.state``;
* the routers listed in :data:`ROUTERS` (module paths, each module exposes ``router``): adding
  a router is a one-line edit there;
* CORS for browser SDKs, request metrics and JSON access logs, and the collector's error shape
  (``{"code", "message", "detail"}``, see :mod:`funnelscope.api.problems`).

The writer's threads start and stop with the app's lifespan. Starting replays the journal a
crash left behind (``/readyz`` answers 503 and ingestion 503 + Retry-After until it is loaded);
stopping acknowledges what is queued and loads the whole journal into the store.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import Gauge, Histogram
from pydantic_core import to_json
from starlette.types import Receive, Scope, Send

from funnelscope.api.auth import KeyRing
from funnelscope.api.journal import JournalSettings
from funnelscope.api.limits import TokenBuckets
from funnelscope.api.metrics import Metrics
from funnelscope.api.ops import RequestMetricsMiddleware, record_request
from funnelscope.api.problems import ApiError, api_error_handler
from funnelscope.api.settings import ApiSettings
from funnelscope.api.writer import GroupWriter
from funnelscope.workspace import Workspace

__all__ = ["ROUTERS", "ApiSettings", "CollectorApp", "create_app"]

#: Router modules, included in this order (each exposes ``router``). Page routes go last: the
#: dashboard's catch-all paths must not shadow an API route.
ROUTERS: Final = (
    "funnelscope.api.ops",
    "funnelscope.api.collect",
    "funnelscope.api.live",
    "funnelscope.api.query",
    "funnelscope.api.overview",
    "funnelscope.api.customers",
    "funnelscope.api.goals",
    "funnelscope.api.keys",
    "funnelscope.web.routes",
)


#: A hot route's coroutine: the request in, a JSON-able dict or a Response out.
HotRoute = Callable[[Request], Awaitable[Any]]


class CollectorApp(FastAPI):
    """FastAPI with a short path for the collector's bulk ingestion routes.

    A POST to a path of :attr:`hot_routes` without an ``Origin`` header (what server SDKs
    send) runs that route's coroutine directly: the same key, limit and size checks, the same
    answers and errors (:func:`~funnelscope.api.problems.api_error_handler`), the same request
    metrics and access log as :class:`~funnelscope.api.ops.RequestMetricsMiddleware`, but
    without Starlette's middleware stack, routing over every route and FastAPI's dependency
    and response machinery: ~80-100 us less event-loop CPU per request in process, ~1 us per
    event of a 100-event batch (docs/collector.md, "Session 5: the request path"). Browser
    requests (``Origin``: CORS), other methods and every other route go through FastAPI as
    usual; the OpenAPI spec is FastAPI's. Empty :attr:`hot_routes`
    (``app.hot_routes = {}``) turns the short path off (tests compare the two).
    """

    hot_routes: Mapping[str, HotRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not self.root_path:
            route = self.hot_routes.get(scope["path"])
            if route is not None and not scope.get("root_path") and not _from_browser(scope):
                await self._hot(route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _hot(self, route: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        scope["app"] = self  # what Starlette sets: request.app, and the routes' app.state
        request = Request(scope, receive)
        status = 500
        try:
            try:
                result = await route(request)
            except ApiError as exc:
                response: Response = await api_error_handler(request, exc)
            else:  # anything else propagates: uvicorn logs it and answers a plain 500
                response = (
                    result
                    if isinstance(result, Response)
                    else Response(to_json(result), media_type="application/json")
                )
            status = response.status_code
            await response(scope, receive, send)
        finally:
            record_request(scope, scope["path"], status, time.perf_counter() - started)


def _from_browser(scope: Scope) -> bool:
    """Whether the request has an ``Origin`` header (CORS applies: FastAPI's stack answers)."""
    return any(name == b"origin" for name, _ in scope["headers"])


def create_app(
    workspace: Workspace,
    settings: ApiSettings | None = None,
    *,
    journal: JournalSettings | None = None,
) -> CollectorApp:
    """The HTTP app over ``workspace`` (``journal``: the collector's journal and loader).

    Examples
    --------
    >>> import funnelscope
    >>> app = create_app(funnelscope.open(":memory:"), ApiSettings(require_auth=False))
    >>> "/v1/batch" in app.openapi()["paths"]
    True
    """
    settings = settings or ApiSettings()
    metrics = Metrics()

    ack_events, ack_seconds = _journal_metrics(metrics)

    def on_ack(events: int, seconds: float) -> None:
        ack_events.observe(events)
        ack_seconds.observe(seconds)

    def on_load(events: int, seconds: float) -> None:
        # the store's commits are now the loader's: funnelscope_commit_* describe them
        metrics.commit_events.observe(events)
        metrics.commit_seconds.observe(seconds)

    writer = GroupWriter(
        workspace.store,
        max_queue_events=settings.max_queue_events,
        max_group_events=settings.max_group_events,
        journal_settings=journal,
        on_ack=on_ack,
        on_load=on_load,
    )
    Gauge(
        "funnelscope_journal_backlog_events",
        "Events acknowledged (in the journal) and not yet loaded into the store.",
        registry=metrics.registry,
    ).set_function(lambda: writer.backlog_events)
    Gauge(
        "funnelscope_journal_replaying",
        "1 while the journal left by a crash is loaded at startup.",
        registry=metrics.registry,
    ).set_function(lambda: float(writer.is_replaying))
    Gauge(
        "funnelscope_journal_last_load_seconds",
        "Seconds the loader's last load into the store took.",
        registry=metrics.registry,
    ).set_function(lambda: writer.loader.last_seconds)

    from funnelscope.api.schedule import Scheduler, default_jobs

    jobs = default_jobs(
        workspace,
        webhooks_seconds=settings.webhooks_every_seconds,
        segments_seconds=settings.segments_every_seconds,
        goals_seconds=settings.goals_every_seconds,
    )
    scheduler = Scheduler([job for job in jobs if job.every_seconds > 0])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        writer.start()
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()
            writer.stop()

    from funnelscope import __version__

    app = CollectorApp(
        title="funnelscope",
        version=__version__,
        description="Collector (Segment, RudderStack, PostHog, Snowplow and native ingestion), "
        "live view and query API. See docs/collector.md.",
        lifespan=lifespan,
    )
    app.state.workspace = workspace
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.writer = writer
    app.state.scheduler = scheduler
    app.state.keys = KeyRing(workspace.store, refresh_seconds=settings.key_refresh_seconds)
    app.state.rate_limits = TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
    app.add_exception_handler(ApiError, api_error_handler)

    for module in ROUTERS:
        app.include_router(importlib.import_module(module).router)
    from funnelscope.api.collect import HOT_ROUTES

    app.hot_routes = HOT_ROUTES

    allow_all = settings.cors_origins == ("*",)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[] if allow_all else list(settings.cors_origins),
        allow_origin_regex=".*" if allow_all else None,
        allow_credentials=True,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["Retry-After", "X-RateLimit-Reset"],
        max_age=600,
    )
    app.add_middleware(RequestMetricsMiddleware)
    return app


def _journal_metrics(metrics: Metrics) -> tuple[Histogram, Histogram]:
    """The ack stage's histograms, in the app's registry (events and seconds per group)."""
    events = Histogram(
        "funnelscope_ack_events",
        "Events per acknowledged group (one journal append and fsync).",
        buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
        registry=metrics.registry,
    )
    seconds = Histogram(
        "funnelscope_ack_seconds",
        "Seconds per acknowledged group: validation, journal append, fsync.",
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        registry=metrics.registry,
    )
    return events, seconds
