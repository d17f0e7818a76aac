"""Dashboard: the Overview page's server time and its first paint in Chromium.

A simulated shop (about 10M events; ``--quick``: about 1M) is served by the real app on a free
port. Its sessions are materialised once before the server starts, as the first ``serve`` on a
store does and keeps in the store file (timed on its own line).

* **server time**: the sum of the API calls the Overview makes on load (``/api/v1/info``, then
  ``/api/v1/report`` and ``/api/v1/channels`` together, as the page does), for the page's
  default view (the 30 days up to the latest event, no filters), timed end to end over loopback:

  - *cold, right after start*: the first load while the server's background warm-up
    (api/overview.py) is still running: the requests wait for it;
  - *cold, after the warm-up*: a second fresh server, first load once its warm-up is done
    (the time from start to warmed up is shown too);
  - *warm, answer cache emptied*: the median of 3 loads after emptying the answer cache: the
    full computation, with the person layout and the sessions in memory and up to date;
  - *cached*: answers from the cache;
  - *after 1,000 new events*: the first load right after a commit (sessions and layout catch
    up, then the answers are computed); and, after another 1,000 with nobody asking, how long
    the server's background re-warm took.

  Target <= 1 s.
* **compute parts**: the same work in process, one part at a time, to see where the time goes.
* **first paint**: headless Chromium (Debian's, never downloaded) with an empty browser cache
  opens ``/``: first contentful paint, the moment the numbers are in the page (the mark
  ``fs:numbers:overview``: stage counts, KPI cards and the channel table filled) and the moment
  both charts are drawn, once with the answers computed on request (answer cache emptied) and
  once with the warmed answers. Target <= 2 s for the numbers.

Run: ``python benchmarks/dashboard.py [--quick] [--store PATH]``; ``--store`` reuses (or
builds once, then reuses) a store file, which saves the simulation (about 3 minutes at 10M).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import funnelscope
from funnelscope.api.app import create_app
from funnelscope.api.query import ResultCache
from funnelscope.api.server import BackgroundServer
from funnelscope.api.settings import ApiSettings
from funnelscope.keys import create_key

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: (customers, days) giving about 1M and 10M events with the simulator's default behaviour.
SIZES = {True: (110_000, 30), False: (760_000, 90)}
RECEIVED_AT = datetime(2024, 6, 1, tzinfo=UTC)
NEW_EVENTS = 1000
CHARTS = ("chart-stage-funnel", "chart-revenue-orders")


def build_store(path: Path, quick: bool) -> tuple[int, float]:
    from funnelscope.simulate import simulate

    customers, days = SIZES[quick]
    started = time.perf_counter()
    with funnelscope.open(path) as ws:
        simulate(customers=customers, days=days, seed=7).write_store(
            ws.store, received_at=RECEIVED_AT
        )
        events = int(ws.store.query("SELECT count(*) FROM events")[0][0])
    return events, time.perf_counter() - started


def materialise_sessions(path: Path) -> float:
    from funnelscope.analysis.sessions import refresh_sessions

    started = time.perf_counter()
    with funnelscope.open(path) as ws:
        refresh_sessions(ws.store)
    return time.perf_counter() - started


def overview_calls(url: str, key: str) -> dict[str, float]:
    """Time the calls the Overview page makes, as it makes them: info, then report and channels
    at once. ``total`` is the wall time of the whole load."""
    headers = {"Authorization": f"Bearer {key}"}
    times: dict[str, float] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
        started = time.perf_counter()
        info = client.get("/api/v1/info").raise_for_status().json()
        times["info"] = time.perf_counter() - started
        last = datetime.fromisoformat(info["last_event_at"]).date()
        end = last.toordinal() + 1
        params = {
            "start": datetime.fromordinal(end - 30).date().isoformat(),
            "end": datetime.fromordinal(end).date().isoformat(),
        }

        def call(name: str) -> None:
            began = time.perf_counter()
            client.get(f"/api/v1/{name}", params=params).raise_for_status()
            times[name] = time.perf_counter() - began

        threads = [threading.Thread(target=call, args=(n,)) for n in ("report", "channels")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        times["total"] = time.perf_counter() - started
    return times


def first_paint(url: str, key: str) -> dict[str, float]:
    import json

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_init_script(
            f"sessionStorage.setItem('funnelscope.read_key', {json.dumps(key)})"
        )
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("main[data-ready=true]", timeout=600_000)
        for chart in CHARTS:
            page.wait_for_selector(f"[data-testid={chart}][data-rendered=true]", timeout=120_000)
        charts_at = page.evaluate("performance.now()")
        marks: dict[str, Any] = page.evaluate("""() => ({
            fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
            ready: performance.getEntriesByName('fs:numbers:overview')[0]?.startTime,
        })""")
        browser.close()
    return {
        "fcp": marks["fcp"] / 1000,
        "numbers": marks["ready"] / 1000,
        "charts": charts_at / 1000,
    }


def append_new_events(ws: Any, n: int) -> None:
    """``n`` events at the instants of the latest ones (same persons, new ids): the default
    period does not move, so the Overview must recompute the same view with them in."""
    import pyarrow as pa

    rows = ws.store.query(
        """SELECT event_id || '-new', strftime("timestamp", '%Y-%m-%dT%H:%M:%S.%fZ'), event,
                  user_id, anonymous_id, page_path, device_type, country
           FROM events ORDER BY seq DESC LIMIT ?""",
        [n],
    )
    names = [
        "event_id",
        "timestamp",
        "event",
        "user_id",
        "anonymous_id",
        "page_path",
        "device_type",
        "country",
    ]
    staging = pa.table(
        {c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(names)}
    )
    ws.append_staging(staging, source="bench", received_at=RECEIVED_AT)


def compute_parts(ws: Any) -> list[tuple[str, float]]:
    """The Overview's work in process, one part at a time (the server runs them together)."""
    from funnelscope.analysis.kpi_catalogue import MAIN_KPIS
    from funnelscope.analysis.report import stage_counts
    from funnelscope.api import overview
    from funnelscope.api.query import _run_kpis

    start, end = overview.default_period(ws) or (RECEIVED_AT, RECEIVED_AT)
    names = [n for stage in MAIN_KPIS for n in MAIN_KPIS[stage]]
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("person layout (up to date)", ws.engine.person_layout),
        ("info: summary + filter values", lambda: overview.info_answer(ws)),
        ("report: stage counts", lambda: stage_counts(ws.engine, start=start, end=end)),
        (
            "report: KPI totals + previous",
            lambda: _run_kpis(ws, names, start, end, compare="previous_period"),
        ),
        ("report: KPI series (day)", lambda: _run_kpis(ws, names, start, end, granularity="day")),
        ("channels: KPIs by channel", lambda: overview.channels_answer(ws, start, end, {})),
    ]
    out = []
    for label, fn in parts:
        began = time.perf_counter()
        fn()
        out.append((label, time.perf_counter() - began))
    return out


def _row(label: str, seconds: float | None, target: str = "") -> str:
    shown = "-" if seconds is None else f"{seconds:.3f}"
    return f"{label:<54}{shown:>10}{target:>8}"


def main(quick: bool = False, store: Path | None = None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="funnelscope-bench-dashboard-"))
    path = store or folder / "shop.duckdb"
    lines: list[str] = []
    if not path.exists():
        events, build_seconds = build_store(path, quick)
        lines.append(_row(f"build: simulate {events:,} events", build_seconds))
        lines.append(
            _row("build: materialise sessions (once per store)", materialise_sessions(path))
        )
    else:
        lines.append(_row("build: sessions up to date (reused store)", materialise_sessions(path)))
    settings = ApiSettings()

    # 1. first load right after start: the requests meet the running warm-up
    ws = funnelscope.open(path)
    events = int(ws.store.query("SELECT count(*) FROM events")[0][0])
    key = create_key(ws.store, "read", "bench", now=RECEIVED_AT).token
    app = create_app(ws, settings)
    with BackgroundServer(app) as server:
        cold_now = overview_calls(server.url, key)
        app.state.overview_warmer.wait(600)
        warm_runs = []
        for _ in range(3):
            app.state.query_cache = ResultCache()  # up-to-date store, empty answer cache
            warm_runs.append(overview_calls(server.url, key))
        warm = {k: statistics.median(r[k] for r in warm_runs) for k in warm_runs[0]}
        cached = statistics.median(overview_calls(server.url, key)["total"] for _ in range(3))
        parts = compute_parts(ws)
        app.state.query_cache = ResultCache()
        paint_computed = first_paint(server.url, key)
        paint_cached = first_paint(server.url, key)
        append_new_events(ws, NEW_EVENTS)
        after_ingest = overview_calls(server.url, key)
        app.state.overview_warmer.wait(600)
        append_new_events(ws, NEW_EVENTS)  # now nobody asks: the warmer recomputes alone
        app.state.overview_warmer.wait(600)
        rewarm = app.state.overview_warmer.last_seconds
    ws.close()

    # 2. a fresh server: its warm-up, then the first load
    ws = funnelscope.open(path)
    app = create_app(ws, settings)
    began = time.perf_counter()
    with BackgroundServer(app) as server:
        app.state.overview_warmer.wait(600)
        warmed_after = time.perf_counter() - began
        cold_warmed = overview_calls(server.url, key)
    ws.close()

    load = os.getloadavg()[0]
    print(f"\nOverview on {events:,} events ({os.cpu_count()} cores, load average {load:.1f})")
    print(f"{'measure':<54}{'seconds':>10}{'target':>8}")
    print("\n".join(lines))
    print(_row("server: start -> Overview warmed up (background)", warmed_after))
    print(_row("server time, cold: first load once warmed up", cold_warmed["total"], "<= 1"))
    print(_row("server time, cold: first load right after start", cold_now["total"]))
    for name in ("info", "report", "channels"):
        print(_row(f"  /api/v1/{name} (warm, answer cache emptied)", warm[name]))
    print(_row("server time, warm: answer cache emptied (median)", warm["total"], "<= 1"))
    print(_row("server time, cached answers (median of 3)", cached))
    print(_row(f"server time, first load after {NEW_EVENTS:,} new events", after_ingest["total"]))
    print(_row(f"server: background re-warm after {NEW_EVENTS:,} new events", rewarm))
    for label, seconds in parts:
        print(_row(f"compute part: {label}", seconds))
    for label, paint in (("answers computed", paint_computed), ("answers warmed", paint_cached)):
        print(_row(f"browser ({label}): first contentful paint", paint["fcp"]))
        print(_row(f"browser ({label}): numbers shown", paint["numbers"], "<= 2"))
        print(_row(f"browser ({label}): both charts drawn", paint["charts"]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M events instead of 10M")
    parser.add_argument("--store", type=Path, help="reuse this store file (built if missing)")
    args = parser.parse_args()
    main(args.quick, args.store)
    sys.exit(0)
