"""The FastAPI app factory: one Workspace, one writer thread, the routers of :data:`ROUTERS`.

``create_app(workspace, settings)`` wires:

* ``app.state.workspace`` / ``settings`` / ``keys`` (:class:`~funnelscope.api.auth.KeyRing`) /
  ``writer`` (:class:`~funnelscope.api.writer.GroupWriter`) / ``metrics`` / ``rate_limits``,
  which routers read from ``request.app.state``;
* the routers listed in :data:`ROUTERS` (module paths, each module exposes ``router``): adding
  a router is a one-line edit there;
* CORS for browser SDKs, request metrics and JSON access logs, and the collector's error shape
  (``{"code", "message", "detail"}``, see :mod:`funnelscope.api.problems`).

The writer thread starts and stops with the app's lifespan; stopping commits what is queued.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from funnelscope.api.auth import KeyRing
from funnelscope.api.limits import TokenBuckets
from funnelscope.api.metrics import Metrics
from funnelscope.api.ops import RequestMetricsMiddleware
from funnelscope.api.problems import ApiError, api_error_handler
from funnelscope.api.settings import ApiSettings
from funnelscope.api.writer import GroupWriter
from funnelscope.workspace import Workspace

__all__ = ["ROUTERS", "ApiSettings", "create_app"]

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


def create_app(workspace: Workspace, settings: ApiSettings | None = None) -> FastAPI:
    """The HTTP app over ``workspace``.

    Examples
    --------
    >>> import funnelscope
    >>> app = create_app(funnelscope.open(":memory:"), ApiSettings(require_auth=False))
    >>> "/v1/batch" in app.openapi()["paths"]
    True
    """
    settings = settings or ApiSettings()
    metrics = Metrics()

    def on_commit(events: int, seconds: float) -> None:
        metrics.commit_events.observe(events)
        metrics.commit_seconds.observe(seconds)

    writer = GroupWriter(
        workspace.store,
        max_queue_events=settings.max_queue_events,
        max_group_events=settings.max_group_events,
        on_commit=on_commit,
    )

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

    app = FastAPI(
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
