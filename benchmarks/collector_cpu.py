"""Collector CPU per request, by stage, in process (no network): where the 2 ms budget goes.

At 50,000 events/s with 100-event requests the whole server has about 2 ms of CPU per request
(issue 5), on a machine whose second core also runs DuckDB and the load generator. This script
measures, for 100-event requests of each wire format:

1. **parse**: the body's JSON (:func:`funnelscope.ingest.wire.decode_body` + ``parse_json``);
2. **map**: every message to a staging row (:mod:`funnelscope.ingest.records`), per format:
   Segment batch, RudderStack batch, PostHog batch, Snowplow ``tp2``, native;
3. **app**: the whole ASGI app (``create_app`` on a ``:memory:`` workspace, real write key,
   real middleware, real writer) driven by direct ``await app(scope, receive, send)`` calls.
   Only the CPU of the event-loop thread is counted (``time.thread_time``): the writer thread's
   commit runs elsewhere, so this is the cost of a request whose commit is instant. ``/healthz``
   is the floor every request pays (routing, middleware, metrics, response); the ingestion
   route minus parse and map is the route's own overhead (auth, rate limit, queueing, answer).
   The ingestion requests here carry no ``Origin`` header, so they take ``CollectorApp``'s
   short path (api/app.py) past FastAPI's stack, as server SDKs' requests do;
4. **ack**: the ack thread's work per event (:class:`funnelscope.api.writer.GroupWriter`), on
   groups of 32 mapped Segment requests (3,200 events, what 32 connections in flight queue):
   rows to columns, proving them valid (:mod:`funnelscope.ingest.fastcheck`), the Arrow
   arrays, the journal batch, and its write + fsync to a journal on disk (the whole ``_ack``).

Prints microseconds per request and per event. ``--quick`` runs fewer repetitions.

Usage: ``python benchmarks/collector_cpu.py [--quick] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import os
import pstats
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from collector import _template  # the same Segment body as the load generator

from funnelscope.api.server import SERVING_GC_THRESHOLD

BATCH = 100
TS = "2026-01-01T12:00:00.000Z"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36"
URL = "https://shop.example.com/p/1?utm_source=google&utm_medium=cpc"


# -- request bodies: 100 events each, shaped as each SDK sends them ------------------------------


def segment_body(i0: int = 0) -> dict[str, Any]:
    """The body benchmarks/collector.py sends: 100 ``Product Viewed`` tracks."""
    _, template = _template("segment")
    body: dict[str, Any] = json.loads(template.replace(b"@@@@@@@@@@", b"%010d" % i0))
    return body


def rudder_body(i0: int = 0) -> dict[str, Any]:
    """rudder-sdk-python's shape: per-message sentAt, context.traits and library, channel."""
    return {
        "batch": [
            {
                "type": "track" if i % 4 else "page",
                "event": "Order Completed" if i % 4 else None,
                "name": None if i % 4 else "Checkout",
                "userId": f"user_{i % 37}",
                "anonymousId": f"anon_{i % 53}",
                "messageId": f"{i0:010d}-{i:03d}",
                "originalTimestamp": f"2026-01-01T12:00:{i % 60:02d}.{i:03d}Z",
                "sentAt": "2026-01-01T12:01:00.000Z",
                "channel": "server",
                "rudderId": f"r-{i}",
                "properties": {
                    "order_id": f"o{i}",
                    "revenue": 42.5,
                    "currency": "EUR",
                    "products": [
                        {"product_id": "p1", "price": 20.0, "quantity": 1, "name": "Mug"},
                        {"product_id": "p2", "price": 22.5, "quantity": 1, "name": "Cup"},
                    ],
                },
                "context": {
                    "traits": {"email": f"u{i}@example.com"},
                    "library": {"name": "analytics-python", "version": "2.3.0"},
                    "page": {"url": URL},
                },
                "integrations": {"All": True},
            }
            for i in range(BATCH)
        ],
    }


def posthog_body(i0: int = 0) -> dict[str, Any]:
    """posthog-js's batch: ``$pageview`` and custom events with its $-properties."""
    return {
        "api_key": "k",
        "sent_at": "2026-01-01T12:01:00.000Z",
        "batch": [
            {
                "event": "$pageview" if i % 2 else "added_to_cart",
                "uuid": f"{i0:010d}-{i:03d}",
                "timestamp": f"2026-01-01T12:00:{i % 60:02d}.{i:03d}Z",
                "distinct_id": f"user_{i % 37}",
                "properties": {
                    "$current_url": URL,
                    "$pathname": "/p/1",
                    "$referrer": "$direct",
                    "$device_id": f"anon_{i % 53}",
                    "$session_id": f"s{i % 11}",
                    "$raw_user_agent": UA,
                    "$browser": "Chrome",
                    "$os": "Windows",
                    "$device_type": "Desktop",
                    "$lib": "web",
                    "$lib_version": "1.200.0",
                    "$screen_height": 1080,
                    "$screen_width": 1920,
                    "$insert_id": f"ins{i}",
                    "title": "Mug",
                    "product_id": f"p_{i % 20}",
                    "price": 19.0,
                },
            }
            for i in range(BATCH)
        ],
    }


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def snowplow_body(i0: int = 0) -> dict[str, Any]:
    """snowplow-tracker's ``tp2`` POST: page views with a web_page and a product entity."""
    contexts = {
        "schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1",
        "data": [
            {
                "schema": "iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0",
                "data": {"id": "9f1c"},
            },
            {
                "schema": "iglu:com.snowplowanalytics.snowplow.ecommerce/product/jsonschema/1-0-0",
                "data": {"id": "p1", "price": 19.0, "currency": "EUR", "category": "Kitchen"},
            },
        ],
    }
    cx = _b64(contexts)
    return {
        "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
        "data": [
            {
                "e": "pv",
                "eid": f"{i0:010d}-{i:03d}",
                "aid": "web-shop",
                "p": "web",
                "tv": "py-1.0.0",
                "tna": "sp",
                "duid": f"anon_{i % 53}",
                "uid": f"user_{i % 37}",
                "sid": f"s{i % 11}",
                "url": URL,
                "page": "Mug",
                "refr": "https://www.google.com/",
                "ua": UA,
                "lang": "de-DE",
                "dtm": str(1767268800000 + i),
                "stm": str(1767268801000 + i),
                "cx": cx,
            }
            for i in range(BATCH)
        ],
    }


def native_body(i0: int = 0) -> dict[str, Any]:
    """The body benchmarks/collector.py sends with ``--route native``."""
    return {
        "events": [
            {
                "event_id": f"{i0:010d}-{i:03d}",
                "event": "Product Viewed",
                "user_id": f"user_{i % 37}",
                "timestamp": TS,
                "page_url": URL,
                "properties": {"price": 19.0, "name": "Mug"},
            }
            for i in range(BATCH)
        ]
    }


# -- timing helpers --------------------------------------------------------------------------------


def _per_call(fn: Callable[[], Any], repeat: int) -> float:
    """Best-of-3 CPU seconds per call of ``fn`` (best: the least disturbed by other processes)."""
    fn()  # warm caches the way a running server has them warm
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        for _ in range(repeat):
            fn()
        best = min(best, (time.thread_time() - started) / repeat)
    return best


def _mappers(
    now: datetime, records: Any
) -> dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]]:
    """Per format: (a 100-event body, a function mapping it the way the collector does)."""
    from funnelscope.api import collect

    def segment(body: dict[str, Any]) -> Any:
        env: dict[str, Any] = {
            k: body[k] for k in ("context", "integrations", "sentAt") if k in body
        }
        if hasattr(records, "segment_row"):  # as the route calls it (session 5)
            return collect._map_all(body["batch"], partial(records.segment_row, env, now, None))
        return collect._map_all(  # an older tree (A/B runs)
            body["batch"], partial(records.segment_values, envelope=env, received_at=now)
        )

    def posthog(body: dict[str, Any]) -> Any:
        sent = body.get("sent_at")
        if hasattr(records, "posthog_row"):
            return collect._map_all(body["batch"], partial(records.posthog_row, sent, now))
        return collect._map_all(
            body["batch"], partial(records.posthog_values, sent_at=sent, now=now)
        )

    def snowplow(body: dict[str, Any]) -> Any:
        return collect._map_all(
            body["data"], lambda p: records.row_values(records.from_snowplow(p, received_at=now))
        )

    def native(body: dict[str, Any]) -> Any:
        return collect._map_all(body["events"], collect._native_values)

    return {
        "segment": (segment_body(), segment),
        "rudderstack": (rudder_body(), segment),
        "posthog": (posthog_body(), posthog),
        "snowplow": (snowplow_body(), snowplow),
        "native": (native_body(), native),
    }


def bench_stages(repeat: int) -> list[tuple[str, float, float]]:
    """(format, parse, map) seconds per 100-event request."""
    from funnelscope.ingest import records
    from funnelscope.ingest.wire import decode_body, parse_json

    now = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    out: list[tuple[str, float, float]] = []
    for name, (body, mapper) in _mappers(now, records).items():
        raw = json.dumps(body).encode()
        parse = _per_call(
            lambda raw=raw: parse_json(  # type: ignore[misc]
                decode_body(raw, content_type="application/json").data
            ),
            repeat,
        )
        # the mappers must not change their input, so one body serves every repetition
        mapped = _per_call(lambda body=body, mapper=mapper: mapper(body), repeat)  # type: ignore[misc]
        out.append((name, parse, mapped))
    return out


# -- the ack thread ---------------------------------------------------------------------------


def bench_ack(groups: int) -> list[tuple[str, float]]:
    """(stage, CPU seconds per event) of the ack thread over ``groups`` 3,200-event groups."""
    import tempfile

    import funnelscope
    from funnelscope.api import collect, writer
    from funnelscope.events.schema import STAGING_COLUMNS
    from funnelscope.ingest import records
    from funnelscope.ingest.fastcheck import prove_valid

    now = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    per_group = 32

    def group(first: int) -> list[Any]:
        jobs = []
        for k in range(per_group):
            body = segment_body(first + k)
            values, indices, rejected = collect._map_all(
                body["batch"],
                partial(
                    records.segment_values, envelope={"sentAt": body["sentAt"]}, received_at=now
                ),
            )
            jobs.append(
                writer._Job(values, indices, rejected, BATCH, lambda o: None, source="segment:x")
            )
        return jobs

    out: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        ws = funnelscope.open(os.path.join(folder, "bench.duckdb"))
        ack = writer.GroupWriter(ws.store, max_queue_events=10**7, max_group_events=10**7)
        ack.journal.claim()
        try:
            ack._ack(group(0))  # the first group opens the journal's segment
            todo = [group((g + 1) * per_group) for g in range(groups)]
            events = groups * per_group * BATCH
            started = time.thread_time()
            for jobs in todo:
                ack._ack(jobs)
            out.append(("whole ack (journal fsynced)", (time.thread_time() - started) / events))
            values = [v for job in todo[0] for v in job.values]
            n = len(values)
            lists = [list(c) for c in zip(*values, strict=True)]
            columns = dict(zip(STAGING_COLUMNS, lists, strict=True))
            stages: list[tuple[str, Callable[[], Any]]] = [
                ("  rows -> columns", lambda: [list(c) for c in zip(*values, strict=True)]),
                (
                    "  prove_valid",
                    lambda: prove_valid(columns, received_at=now, currency="EUR"),
                ),
                ("  Arrow arrays", lambda: writer._arrays(columns, n)),
            ]
            for label, fn in stages:
                out.append((label, _per_call(fn, 5) / n))
        finally:
            ack.journal.close()
            ack.journal.release()
            ws.close()
    return out


# -- the whole app, in process -------------------------------------------------------------------


class _Client:
    """Direct ASGI calls: one request at a time, answered in full before the next."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def call(
        self, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"%d" % len(body)), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)  # a client that stays connected
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        await self.app(scope, receive, send)
        return status


async def _app_run(
    repeat: int, profile: bool, gc_threshold: int | None = SERVING_GC_THRESHOLD
) -> list[tuple[str, float, float]]:
    import funnelscope
    from funnelscope.api.app import ApiSettings, create_app
    from funnelscope.api.server import tune_gc_for_serving
    from funnelscope.keys import create_key

    ws = funnelscope.open(":memory:")
    token = create_key(ws.store, "write", "web-shop", now=datetime(2026, 1, 1, tzinfo=UTC)).token
    settings = ApiSettings(
        rate_limit_per_second=1e9,
        rate_limit_burst=1e9,
        webhooks_every_seconds=0,
        segments_every_seconds=0,
        goals_every_seconds=0,
        overview_warm_seconds=0,
    )
    app = create_app(ws, settings)
    # as `serve` does once the app is built (api/server.py): the server's GC, not the default
    undo_gc = tune_gc_for_serving(gc_threshold) if gc_threshold else None
    client = _Client(app)
    basic = b"Basic " + base64.b64encode(f"{token}:".encode())
    json_type = (b"content-type", b"application/json")
    counter = iter(range(1, 10**9))

    def segment() -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
        body = json.dumps(segment_body(next(counter))).encode()
        return "/v1/batch", body, [json_type, (b"authorization", basic)]

    def segment_one() -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
        body = segment_body(next(counter))
        body["batch"] = body["batch"][:1]
        return "/v1/batch", json.dumps(body).encode(), [json_type, (b"authorization", basic)]

    def native() -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
        body = json.dumps(native_body(next(counter))).encode()
        return "/api/v1/events", body, [json_type, (b"authorization", b"Bearer " + token.encode())]

    cases: list[tuple[str, str, Callable[[], tuple[str, bytes, list[tuple[bytes, bytes]]]]]] = [
        ("GET /healthz", "GET", lambda: ("/healthz", b"", [])),
        ("POST /v1/batch, 1 event", "POST", segment_one),
        ("POST /v1/batch", "POST", segment),
        ("POST /api/v1/events", "POST", native),
    ]
    results = []
    async with app.router.lifespan_context(app):
        for label, method, make in cases:
            requests = [make() for _ in range(repeat + 20)]
            for path, body, headers in requests[:20]:  # warm-up
                assert await client.call(method, path, body, headers) == 200, label
            profiler = cProfile.Profile() if profile else None
            cpu, wall = time.thread_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            for path, body, headers in requests[20:]:
                status = await client.call(method, path, body, headers)
                if status != 200:
                    raise RuntimeError(f"{label}: HTTP {status}")
            if profiler:
                profiler.disable()
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            results.append((label, cpu / repeat, wall / repeat))
            if profiler:
                print(f"\n-- profile of {label}")
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    if undo_gc is not None:
        undo_gc()
    ws.close()
    return results


def main(
    quick: bool, profile: bool = False, gc_threshold: int | None = SERVING_GC_THRESHOLD
) -> None:
    """Print the per-stage table, then the whole-app table."""
    repeat = 100 if quick else 1000
    load = os.getloadavg()
    print(f"collector CPU per request, {BATCH} events each, best of 3 (load {load[0]:.2f})")
    print(f"{'format':<12} {'parse us/req':>13} {'map us/req':>11} {'map us/event':>13}")
    for name, parse, mapped in bench_stages(repeat):
        print(
            f"{name:<12} {parse * 1e6:>13.0f} {mapped * 1e6:>11.0f} {mapped * 1e6 / BATCH:>13.2f}"
        )
    print(f"\nack thread, 3,200-event groups (load {os.getloadavg()[0]:.2f})")
    print(f"{'stage':<30} {'CPU us/event':>13}")
    for label, seconds in bench_ack(10 if quick else 50):
        print(f"{label:<30} {seconds * 1e6:>13.2f}")
    app_rows = asyncio.run(_app_run(repeat if quick else repeat // 2, profile, gc_threshold))
    print(
        f"\nwhole app in process (event-loop thread CPU, GC young threshold "
        f"{gc_threshold or 'default'}; load {os.getloadavg()[0]:.2f})"
    )
    print(f"{'request':<22} {'CPU us/req':>11} {'CPU us/event':>13} {'wall us/req':>12}")
    for label, cpu, wall in app_rows:
        one_or_none = "/v1/batch," in label or "healthz" in label
        per_event = "" if one_or_none else f"{cpu * 1e6 / BATCH:.2f}"
        print(f"{label:<22} {cpu * 1e6:>11.0f} {per_event:>13} {wall * 1e6:>12.0f}")
    print(
        "\nbudget at 50,000 events/s: 2,000 us of CPU per 100-event request for the whole "
        "server (event loop + writer + DuckDB)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--profile", action="store_true", help="cProfile the app requests")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=SERVING_GC_THRESHOLD,
        help="young-generation GC threshold for the app run, as serve sets it (0: default GC)",
    )
    args = parser.parse_args()
    main(args.quick, args.profile, args.gc_threshold or None)
