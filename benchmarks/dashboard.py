"""Dashboard: the Overview page's server time and its first paint in Chromium.

A simulated shop (10M events; ``--quick``: 1M) is served by the real app on a free port.

* **server time**: the sum of the API calls the Overview page makes on load (``/api/v1/info``,
  ``/api/v1/report``, ``/api/v1/channels``), each timed end to end over loopback: the first
  load after start (cold: includes materialising sessions), the median of 3 later loads with
  the answer cache emptied (warm), and with cached answers. Target <= 1 s.
* **first paint**: headless Chromium (Debian's, never downloaded) with an empty cache opens
  ``/``: first contentful paint, the moment the numbers are in the page (the mark
  ``fs:numbers:overview``: stage counts, KPI cards and the channel table filled), and the moment
  the charts are drawn. Target <= 2 s for the numbers. The browser runs after the server
  timings, so its API answers come from the result cache: it measures the page itself.

Run: ``python benchmarks/dashboard.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
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
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: (customers, days) giving about 1M and 10M events with the simulator's default behaviour.
SIZES = {True: (110_000, 30), False: (760_000, 90)}
RECEIVED_AT = datetime(2024, 6, 1, tzinfo=UTC)


def build_store(path: Path, quick: bool) -> tuple[int, float]:
    from funnelscope.simulate import simulate

    customers, days = SIZES[quick]
    started = time.perf_counter()
    with funnelscope.open(path) as ws:
        simulate(customers=customers, days=days, seed=7).write_store(
            ws.store, received_at=RECEIVED_AT)
        events = int(ws.info()["events"])
    return events, time.perf_counter() - started


def overview_calls(url: str, key: str) -> dict[str, float]:
    """Time the calls the Overview page makes, as it makes them (default period: 30 days)."""
    headers = {"Authorization": f"Bearer {key}"}
    times: dict[str, float] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        started = time.perf_counter()
        info = client.get("/api/v1/info").raise_for_status().json()
        times["info"] = time.perf_counter() - started
        last = datetime.fromisoformat(info["last_event_at"]).date()
        end = last.toordinal() + 1
        params = {"start": datetime.fromordinal(end - 30).date().isoformat(),
                  "end": datetime.fromordinal(end).date().isoformat()}
        for name in ("report", "channels"):
            started = time.perf_counter()
            client.get(f"/api/v1/{name}", params=params).raise_for_status()
            times[name] = time.perf_counter() - started
    times["total"] = sum(times.values())
    return times


def first_paint(url: str, key: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_init_script(
            f"sessionStorage.setItem('funnelscope.read_key', {json.dumps(key)})")
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("main[data-ready=true]", timeout=300_000)
        page.wait_for_selector("[data-testid=chart-revenue-orders][data-rendered=true]",
                               timeout=60_000)
        charts_at = page.evaluate("performance.now()")
        marks: dict[str, Any] = page.evaluate("""() => ({
            fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
            ready: performance.getEntriesByName('fs:numbers:overview')[0]?.startTime,
        })""")
        browser.close()
    return {"first_contentful_paint": marks["fcp"] / 1000, "numbers_shown": marks["ready"] / 1000,
            "charts_drawn": charts_at / 1000}


def main(quick: bool = False) -> None:
    folder = Path(tempfile.mkdtemp(prefix="funnelscope-bench-dashboard-"))
    store = folder / "shop.duckdb"
    events, build_seconds = build_store(store, quick)
    print(f"store: {events:,} simulated events, built in {build_seconds:.1f} s ({store})")
    ws = funnelscope.open(store)
    key = create_key(ws.store, "read", "bench", now=RECEIVED_AT).token
    app = create_app(ws, ApiSettings())
    with BackgroundServer(app) as server:
        cold = overview_calls(server.url, key)
        warm_runs = []
        for _ in range(3):
            app.state.query_cache = ResultCache()  # warm store, empty answer cache
            warm_runs.append(overview_calls(server.url, key))
        warm = {k: statistics.median(r[k] for r in warm_runs) for k in cold}
        cached = statistics.median(overview_calls(server.url, key)["total"] for _ in range(3))
        paint = first_paint(server.url, key)
    ws.close()
    print(f"\nOverview on {events:,} events (2 cores)")
    print(f"{'measure':<34}{'seconds':>10}{'target':>10}")
    for name in ("info", "report", "channels"):
        print(f"{'server: /api/v1/' + name + ' (cold)':<34}{cold[name]:>10.3f}{'':>10}")
        print(f"{'server: /api/v1/' + name + ' (warm)':<34}{warm[name]:>10.3f}{'':>10}")
    print(f"{'server time, cold (first load)':<34}{cold['total']:>10.3f}{'<= 1':>10}")
    print(f"{'server time, warm (median of 3)':<34}{warm['total']:>10.3f}{'<= 1':>10}")
    print(f"{'server time, answers cached':<34}{cached:>10.3f}{'':>10}")
    print(f"{'browser: first contentful paint':<34}{paint['first_contentful_paint']:>10.3f}"
          f"{'':>10}")
    print(f"{'browser: numbers shown':<34}{paint['numbers_shown']:>10.3f}{'<= 2':>10}")
    print(f"{'browser: charts drawn':<34}{paint['charts_drawn']:>10.3f}{'':>10}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M events instead of 10M")
    main(parser.parse_args().quick)
    sys.exit(0)
