"""The dashboard in a real browser: Debian's Chromium driven by playwright, against a real
uvicorn server over a simulated shop (2,000 customers x 30 days) in a DuckDB file.

Every page must load with no console error and no failed request, and the numbers it shows
(read through ``data-testid`` attributes, raw values in ``data-value``) must equal the query
API's. Screenshots of each page land in test-artifacts/screenshots/ (1280x800).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

import funnelscope
from funnelscope.api.app import create_app
from funnelscope.api.server import BackgroundServer
from funnelscope.api.settings import ApiSettings
from funnelscope.keys import create_key
from funnelscope.workspace import Workspace
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, needs_chromium


def _wait_js(page: Any, expression: str, arg: Any = None, timeout: float = 30_000) -> None:
    """Poll ``expression`` from Python until it is truthy.

    Not ``page.wait_for_function``: that polls by evaluating a string inside the page, which the
    dashboard's Content-Security-Policy (no 'unsafe-eval') rightly refuses. ``page.evaluate``
    goes through the DevTools protocol, which the policy does not cover.
    """
    deadline = time.monotonic() + timeout / 1000
    while not (page.evaluate(expression, arg) if arg is not None else page.evaluate(expression)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} ms waiting for: {expression}")
        time.sleep(0.02)


playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.e2e, needs_chromium]

VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
RECEIVED_AT = datetime(2024, 2, 1, tzinfo=UTC)
KEY_STORAGE = "funnelscope.read_key"
#: The period most tests open: the shop runs 2024-01-01 .. 2024-01-30.
PERIOD = {"range": "custom", "start": "2024-01-08", "end": "2024-01-28"}
API_PERIOD = {"start": "2024-01-08", "end": "2024-01-29"}  # the API's end is exclusive
BAD_CSV = (
    "event_id,timestamp,event,user_id\n"
    "imp-1,2024-01-10T10:00:00Z,Product Viewed,imported-1\n"
    "imp-2,not a time,Product Viewed,imported-2\n"
    "imp-3,2024-01-10T11:00:00Z,,imported-3\n"
)


@dataclass
class Shop:
    ws: Workspace
    url: str
    read_key: str
    write_key: str

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            self.url + path,
            params=params,
            headers={"Authorization": f"Bearer {self.read_key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    from funnelscope.simulate import simulate

    folder = tmp_path_factory.mktemp("dashboard")
    ws = funnelscope.open(folder / "shop.duckdb")
    simulate(customers=2000, days=30, seed=11).write_store(ws.store, received_at=RECEIVED_AT)
    bad = folder / "events.csv"
    bad.write_text(BAD_CSV, encoding="utf-8")
    ws.ingest(bad, received_at=RECEIVED_AT)
    ws.add_goal(
        {
            "name": "january-revenue",
            "kpi": "revenue",
            "target": 60000,
            "start": "2024-01-01",
            "deadline": "2024-02-15",
            "owner": "ana",
        },
        now=RECEIVED_AT,
    )
    read_key = create_key(ws.store, "read", "dashboard", now=RECEIVED_AT).token
    write_key = create_key(ws.store, "write", "web-shop", now=RECEIVED_AT).token
    app = create_app(ws, ApiSettings(live_interval_seconds=0.5))
    with BackgroundServer(app) as server:
        yield Shop(ws, server.url, read_key, write_key)
    ws.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Watched:
    """A page whose console errors, page errors and failed requests are recorded."""

    page: Any
    problems: list[str] = field(default_factory=list)

    def goto(self, shop: Shop, path: str, **params: str) -> None:
        query = f"?{urlencode(params)}" if params else ""
        self.page.goto(shop.url + path + query)
        self.ready()

    def ready(self, timeout: float = 90_000) -> None:
        self.page.wait_for_selector("main[data-ready=true]", timeout=timeout)

    def value(self, testid: str) -> str:
        return str(self.page.get_attribute(f'[data-testid="{testid}"]', "data-value"))

    def text(self, testid: str) -> str:
        return str(self.page.inner_text(f'[data-testid="{testid}"]'))

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.wait_for_timeout(300)  # let plotly finish its transitions
        self.page.screenshot(path=str(path))
        return path

    def assert_clean(self) -> None:
        assert self.problems == [], "\n".join(self.problems)


def _watch(page: Any) -> Watched:
    watched = Watched(page)
    page.on(
        "console", lambda m: m.type == "error" and watched.problems.append(f"console: {m.text}")
    )
    page.on("pageerror", lambda e: watched.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: watched.problems.append(f"failed: {r.url} {r.failure}"))
    page.on(
        "response",
        lambda r: r.status >= 400 and watched.problems.append(f"HTTP {r.status}: {r.url}"),
    )
    return watched


@pytest.fixture
def signed_in(browser: Any, shop: Shop) -> Iterator[Watched]:
    """A tab that already holds the read key (the sign-in form is tested on its own)."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.add_init_script(
        f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(shop.read_key)})"
    )
    watched = _watch(context.new_page())
    yield watched
    context.close()


def _float(text: str) -> float | None:
    return None if text in ("", "null") else float(text)


# -- sign-in -------------------------------------------------------------------------------------


def test_sign_in_refuses_a_write_key_and_accepts_a_read_key(browser: Any, shop: Shop) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watched = _watch(page)
    page.goto(shop.url + "/")
    page.wait_for_selector("dialog#login[open]")
    page.fill("[data-testid=login-key]", shop.write_key)
    page.click("[data-testid=login-submit]")
    _wait_js(
        page,
        "document.querySelector('[data-testid=login-error]').textContent.includes('cannot read')",
    )
    assert page.evaluate(f"sessionStorage.getItem({json.dumps(KEY_STORAGE)})") is None
    # The refusal is the server's 401, seen by the browser as a failed resource load.
    assert watched.problems and all("401" in p for p in watched.problems), watched.problems
    watched.problems.clear()
    page.fill("[data-testid=login-key]", shop.read_key)
    page.click("[data-testid=login-submit]")
    watched.ready()
    assert not page.is_visible("dialog#login")
    assert page.evaluate(f"sessionStorage.getItem({json.dumps(KEY_STORAGE)})") == shop.read_key
    watched.assert_clean()
    context.close()


# -- overview ------------------------------------------------------------------------------------


def test_overview_shows_the_numbers_of_the_api(signed_in: Watched, shop: Shop) -> None:
    signed_in.goto(shop, "/", **PERIOD)
    report = shop.api("/api/v1/report", **API_PERIOD)
    for stage in report["stages"]:
        assert int(signed_in.value(f"stage-count-{stage['stage']}")) == stage["persons"]
        conv = _float(signed_in.value(f"stage-conv-{stage['stage']}"))
        assert conv == pytest.approx(stage["conversion_from_previous"])
    assert report["stages"][0]["persons"] > 0
    shown = 0
    for kpi in report["kpis"]:
        if kpi["value"] is None:
            continue
        assert _float(signed_in.value(f"kpi-value-{kpi['name']}")) == pytest.approx(kpi["value"])
        assert _float(signed_in.value(f"kpi-change-{kpi['name']}")) == pytest.approx(kpi["change"])
        shown += 1
    assert shown >= 10
    channels = shop.api("/api/v1/channels", **API_PERIOD)["channels"]
    assert channels
    for row in channels:
        for column in ("spend", "ctr", "cac", "roas", "revenue"):
            dom = _float(signed_in.value(f"channel-{column}-{row['channel']}"))
            assert dom == pytest.approx(row[column]), (row["channel"], column)
    signed_in.page.wait_for_selector("[data-testid=chart-revenue-orders][data-rendered=true]")
    signed_in.page.wait_for_selector("[data-testid=chart-stage-funnel][data-rendered=true]")
    signed_in.shot("overview")
    signed_in.assert_clean()


def test_the_url_holds_dates_and_filters(signed_in: Watched, shop: Shop) -> None:
    signed_in.goto(shop, "/", **PERIOD, channel="email")
    page = signed_in.page
    assert page.input_value("[data-testid=filter-channel]") == "email"
    assert page.input_value("[data-testid=range-start]") == PERIOD["start"]
    assert page.input_value("[data-testid=range-end]") == PERIOD["end"]
    report = shop.api("/api/v1/report", **API_PERIOD, channel="email")
    sessions = next(k for k in report["kpis"] if k["name"] == "sessions")
    assert _float(signed_in.value("kpi-value-sessions")) == pytest.approx(sessions["value"])
    unfiltered = shop.api("/api/v1/report", **API_PERIOD)
    assert sessions["value"] < next(
        k["value"] for k in unfiltered["kpis"] if k["name"] == "sessions"
    )
    # A change of filter rewrites the URL, so the link can be shared, and reloads the numbers.
    page.select_option("[data-testid=filter-device]", "mobile")
    _wait_js(page, "location.search.includes('device=mobile')")
    signed_in.ready()
    assert "channel=email" in page.url
    mobile = shop.api("/api/v1/report", **API_PERIOD, channel="email", device="mobile")
    sessions = next(k for k in mobile["kpis"] if k["name"] == "sessions")
    assert _float(signed_in.value("kpi-value-sessions")) == pytest.approx(sessions["value"])
    # Navigating keeps the global state in the links.
    assert "device=mobile" in str(page.get_attribute("#nav a[data-page=kpis]", "href"))
    signed_in.assert_clean()


def test_overview_fits_a_phone_screen(browser: Any, shop: Shop) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.add_init_script(
        f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(shop.read_key)})"
    )
    watched = _watch(context.new_page())
    watched.goto(shop, "/", **PERIOD)
    overflow = watched.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    watched.assert_clean()
    context.close()


# -- KPIs ----------------------------------------------------------------------------------------


def test_kpis_page_shows_any_kpi_by_breakdown(signed_in: Watched, shop: Shop) -> None:
    signed_in.goto(shop, "/kpis", **PERIOD, kpi="aov", breakdown="channel", granularity="week")
    api = shop.api(
        "/api/v1/kpis",
        **API_PERIOD,
        names="aov",
        breakdown="channel",
        granularity="total",
        compare="previous_period",
    )
    assert len(api["rows"]) >= 3
    for i, row in enumerate(api["rows"]):
        assert _float(signed_in.value(f"kpi-row-value-{i}")) == pytest.approx(row["value"])
    signed_in.page.wait_for_selector("[data-testid=chart-kpi][data-rendered=true]")
    # Changing the KPI in the form changes the URL and the numbers.
    signed_in.page.select_option("[data-testid=kpi-breakdown]", "")
    _wait_js(signed_in.page, "!location.search.includes('breakdown=channel')")
    signed_in.ready()
    total = shop.api(
        "/api/v1/kpis", **API_PERIOD, names="aov", granularity="total", compare="previous_period"
    )["rows"][0]
    assert _float(signed_in.value("kpi-total-value-0")) == pytest.approx(total["value"])
    assert _float(signed_in.value("kpi-total-change-0")) == pytest.approx(total["change"])
    signed_in.page.wait_for_selector("[data-testid=chart-kpi][data-rendered=true]")
    signed_in.page.select_option("[data-testid=kpi-breakdown]", "device")
    _wait_js(signed_in.page, "location.search.includes('breakdown=device')")
    signed_in.ready()
    signed_in.page.wait_for_selector("[data-testid=chart-kpi][data-rendered=true]")
    signed_in.shot("kpis")
    signed_in.assert_clean()


# -- live ----------------------------------------------------------------------------------------


def test_live_page_shows_an_event_within_two_seconds(signed_in: Watched, shop: Shop) -> None:
    signed_in.goto(shop, "/live")
    page = signed_in.page
    page.wait_for_selector("[data-testid=live-status][data-connected=true]")
    before = int(signed_in.value("live-events-last-minute"))
    newest = page.evaluate(
        "Math.max(-1, ...[...document.querySelectorAll("
        "'[data-testid=live-event]')].map(e => Number(e.dataset.seq)))"
    )
    now = datetime.now(UTC)
    event = {
        "event_id": f"live-{time.time_ns()}",
        "timestamp": now.isoformat(),
        "event": "Order Completed",
        "user_id": "live-shopper",
        "revenue": "42.50",
        "currency": "USD",
        "order_id": "live-order-1",
        "utm_source": "newsletter",
        "utm_medium": "email",
    }
    sent = time.monotonic()
    response = httpx.post(
        shop.url + "/api/v1/events",
        json={"events": [event]},
        headers={"Authorization": f"Bearer {shop.write_key}"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
    _wait_js(
        page,
        "n => Number(document.querySelector('[data-testid=live-events-last-minute]')"
        ".dataset.value) > n",
        arg=before,
        timeout=2000,
    )
    _wait_js(
        page,
        "n => [...document.querySelectorAll('[data-testid=live-event]')].some("
        "e => Number(e.dataset.seq) > n && e.dataset.event === 'order_completed')",
        arg=newest,
        timeout=max(1, 2000 - (time.monotonic() - sent) * 1000),
    )
    elapsed = time.monotonic() - sent
    assert elapsed <= 2.0
    assert int(signed_in.value("live-orders")) >= 1
    assert "42.5" in signed_in.value("live-revenue")
    signed_in.shot("live")
    signed_in.assert_clean()


# -- data ----------------------------------------------------------------------------------------


def test_data_page_lists_imports_quarantine_and_sources(signed_in: Watched, shop: Shop) -> None:
    signed_in.goto(shop, "/data")
    page = signed_in.page
    quarantine = shop.api("/api/v1/quarantine", limit=25)
    assert quarantine["total"] == 2
    assert int(signed_in.value("quarantine-total")) == 2
    codes = {page.inner_text(f"[data-testid=quarantine-reason-{i}]") for i in range(2)}
    assert codes == {r["reason_code"] for r in quarantine["rows"]}
    imports = shop.api("/api/v1/imports")["imports"]
    assert int(signed_in.value("import-rejected-0")) == imports[0]["rejected"] == 2
    sources = shop.api("/api/v1/sources")["sources"]
    for i, source in enumerate(sources):
        assert signed_in.text(f"source-name-{i}") == source["source"]
        assert int(signed_in.value(f"source-events-{i}")) == source["events"]
    content = page.content()
    assert shop.read_key not in content and shop.write_key not in content
    assert shop.read_key[:12] in content  # the prefix identifies the key
    # Filter the quarantine by reason: the URL holds it.
    reason = quarantine["rows"][0]["reason_code"]
    page.select_option("[data-testid=quarantine-reason]", reason)
    _wait_js(page, f"location.search.includes('q_reason={reason}')")
    signed_in.ready()
    assert int(signed_in.value("quarantine-total")) == 1
    signed_in.shot("data")
    signed_in.assert_clean()


# -- customers and goals ------------------------------------------------------------------------


def test_customers_page_shows_segments_and_clusters(signed_in: Watched, shop: Shop) -> None:
    signed_in.goto(shop, "/customers", **PERIOD)
    rfm = shop.api("/api/v1/customers/rfm", now=API_PERIOD["end"], limit=1)
    assert int(signed_in.value("rfm-total")) == rfm["total"] > 0
    for segment, size in rfm["sizes"].items():
        testid = "rfm-size-" + "-".join(
            w for w in "".join(c if c.isalpha() else " " for c in segment).lower().split()
        )
        assert int(signed_in.value(testid)) == size
    clusters = shop.api("/api/v1/customers/clusters", now=API_PERIOD["end"])
    for cluster in clusters["clusters"]:
        assert int(signed_in.value(f"cluster-size-{cluster['cluster']}")) == cluster["size"]
    signed_in.page.wait_for_selector("[data-testid=chart-rfm][data-rendered=true]")
    signed_in.shot("customers")
    signed_in.assert_clean()


def test_goals_page_shows_progress_and_forecast(signed_in: Watched, shop: Shop) -> None:
    signed_in.goto(shop, "/goals", **PERIOD)
    progress = shop.api("/api/v1/goals/january-revenue", now=f"{API_PERIOD['end']}T00:00:00Z")
    name = "january-revenue"
    assert _float(signed_in.value(f"goal-current-{name}")) == pytest.approx(
        progress["current_value"]
    )
    assert signed_in.value(f"goal-status-{name}") == progress["status"]
    assert _float(signed_in.value(f"goal-probability-{name}")) == pytest.approx(
        progress["probability"]
    )
    signed_in.page.wait_for_selector("[data-testid=chart-goal][data-rendered=true]")
    signed_in.shot("goals")
    signed_in.assert_clean()


# -- funnels ------------------------------------------------------------------------------------

#: A golden case written out by hand (minutes after T0 = 2024-05-06 09:00 UTC).
GOLDEN = {
    "alice": [(0, "product_viewed"), (10, "product_added"), (30, "order_completed")],
    "bob": [(0, "product_viewed"), (5, "product_added")],
    "carol": [(0, "product_viewed"), (20, "order_completed")],  # never added: stops at 1
    "dave": [(0, "product_added"), (5, "product_viewed"), (10, "order_completed")],  # add first
    "erin": [(0, "product_viewed"), (8 * 24 * 60, "product_added")],  # 8 days later
    "frank": [(0, "page_viewed")],
}
#: ordered, window 14 days: step 1 = alice bob carol dave erin; step 2 = alice bob erin
#: (erin's add is 8 days later, inside 14 days); step 3 = alice.
GOLDEN_COUNTS_14D = [5, 3, 1]
GOLDEN_PERIOD = {"range": "custom", "start": "2024-05-01", "end": "2024-05-31"}


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    from tests.conftest import load_journeys

    ws = funnelscope.open(tmp_path_factory.mktemp("golden") / "golden.duckdb")
    load_journeys(ws, GOLDEN)
    read_key = create_key(ws.store, "read", "dashboard", now=RECEIVED_AT).token
    with BackgroundServer(create_app(ws, ApiSettings())) as server:
        yield Shop(ws, server.url, read_key, "")
    ws.close()


@pytest.fixture
def golden_page(browser: Any, golden: Shop) -> Iterator[Watched]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.add_init_script(
        f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(golden.read_key)})"
    )
    watched = _watch(context.new_page())
    yield watched
    context.close()


def _counts(watched: Watched, steps: int) -> list[int]:
    return [int(watched.value(f"funnel-count-{i}")) for i in range(1, steps + 1)]


def test_funnel_builder_gives_the_golden_counts(golden_page: Watched, golden: Shop) -> None:
    from funnelscope.analysis.funnel import FunnelSpec

    page = golden_page.page
    golden_page.goto(golden, "/funnels", **GOLDEN_PERIOD)
    # Build product_viewed -> product_added -> order_completed with the form, window 14 days.
    while page.locator("[data-testid=funnel-step]").count() > 0:
        page.locator("[data-testid=funnel-step-remove]").first.click()
    for event in ("product_viewed", "product_added", "order_completed"):
        page.click("[data-testid=funnel-add-step]")
        page.locator("[data-testid=funnel-step-event]").last.select_option(event)
    page.select_option("[data-testid=funnel-window]", "14d")
    page.click("[data-testid=funnel-run]")
    _wait_js(page, "location.search.includes('window=14d')")
    golden_page.ready()
    assert _counts(golden_page, 3) == GOLDEN_COUNTS_14D
    assert _float(golden_page.value("funnel-conversion")) == pytest.approx(1 / 5)
    python = golden.ws.funnel(
        FunnelSpec.from_dict(
            {
                "steps": ["product_viewed", "product_added", "order_completed"],
                "window": "14d",
                "start_at": "2024-05-01",
                "end_at": "2024-06-01",
            }
        )
    )
    assert list(python.counts) == GOLDEN_COUNTS_14D
    # The 7-day window loses erin at step 2: the URL carries the change.
    page.select_option("[data-testid=funnel-window]", "7d")
    page.click("[data-testid=funnel-run]")
    _wait_js(page, "location.search.includes('window=7d')")
    golden_page.ready()
    assert _counts(golden_page, 3) == [5, 2, 1]
    golden_page.assert_clean()


def test_funnel_persons_download_and_explanation(golden_page: Watched, golden: Shop) -> None:
    from funnelscope.analysis.funnel import FunnelSpec

    golden_page.goto(
        golden,
        "/funnels",
        **GOLDEN_PERIOD,
        steps="product_viewed,product_added,order_completed",
        window="14d",
    )
    page = golden_page.page
    assert _counts(golden_page, 3) == GOLDEN_COUNTS_14D
    result = golden.ws.funnel(
        FunnelSpec.from_dict(
            {
                "steps": ["product_viewed", "product_added", "order_completed"],
                "window": "14d",
                "start_at": "2024-05-01",
                "end_at": "2024-06-01",
            }
        )
    )
    with page.expect_download() as download:
        page.click("[data-testid=funnel-download-dropped-2]")
    rows = _read_csv(Path(download.value.path()))
    expected = result.persons(2, dropped=True)
    assert sorted(int(r["person_id"]) for r in rows) == sorted(expected["person_id"].tolist())
    assert len(rows) == 2  # carol and dave reached step 1 but not step 2
    # The explanation of one of them, picked from the drop-off list.
    person = int(rows[0]["person_id"])
    page.click(f"[data-testid=explain-pick-{person}]")
    _wait_js(page, f"location.search.includes('person={person}')")
    golden_page.ready()
    assert golden_page.text("explain-text").strip() == result.explain(person).strip()
    assert int(golden_page.value("explain-furthest")) == 1
    golden_page.assert_clean()


def test_funnels_page_on_the_shop(signed_in: Watched, shop: Shop) -> None:
    steps = "product_viewed,product_added,checkout_started,order_completed"
    signed_in.goto(shop, "/funnels", **PERIOD, steps=steps, fbreakdown="channel", trend="day")
    spec = {
        "steps": steps.split(","),
        "window": "7d",
        "breakdowns": ["channel"],
        "trend_period": "day",
        "start_at": API_PERIOD["start"],
        "end_at": API_PERIOD["end"],
        "mode": "ordered",
        "counting": "uniques",
        "filters": [],
    }
    response = httpx.post(
        shop.url + "/api/v1/funnels",
        json=spec,
        timeout=60,
        headers={"Authorization": f"Bearer {shop.read_key}"},
    )
    api = response.json()
    assert _counts(signed_in, 4) == [s["count"] for s in api["steps"]]
    assert api["steps"][0]["count"] > api["steps"][3]["count"] > 0
    for i, bd in enumerate(api["breakdowns"]):
        assert int(signed_in.value(f"breakdown-entered-{i}")) == bd["steps"][0]["count"]
    for testid in (
        "chart-funnel",
        "chart-time-to-convert",
        "chart-funnel-trend",
        "chart-funnel-breakdown",
    ):
        signed_in.page.wait_for_selector(f"[data-testid={testid}][data-rendered=true]")
    signed_in.shot("funnels")
    signed_in.assert_clean()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
