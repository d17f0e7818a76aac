"""The read API (api/query.py) on a real uvicorn server over a small hand-written store:
auth, the 422 shapes, and the numbers of each route against hand-computed values."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import funnelscope
from funnelscope.api.app import create_app
from funnelscope.api.server import BackgroundServer
from funnelscope.api.settings import ApiSettings
from funnelscope.keys import create_key
from tests.conftest import NOW, load_journeys, staging_table

# Minutes after T0 = 2024-05-06 09:00 UTC (a Monday).
JOURNEYS = {
    "ann": [
        (0, "product_viewed", {"utm_source": "google", "utm_medium": "cpc"}),
        (10, "product_added"),
        (20, "order_completed", {"revenue": "100", "currency": "USD", "order_id": "o1"}),
    ],
    "ben": [(0, "product_viewed"), (5, "product_added")],
    "cat": [
        (60, "product_viewed", {"country": "DE"}),
        (
            24 * 60,
            "order_completed",
            {"revenue": "50", "currency": "USD", "order_id": "o2", "country": "DE"},
        ),
    ],
}
PERIOD = {"start": "2024-05-06", "end": "2024-05-13"}


@dataclass
class Api:
    url: str
    read: str
    write: str

    def get(self, path: str, key: str | None = "read", **params: Any) -> httpx.Response:
        token = {"read": self.read, "write": self.write}.get(key or "", key)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, params=params, headers=headers, timeout=30)

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(
            self.url + path,
            json=body,
            timeout=120,  # numba compiles once
            headers={"Authorization": f"Bearer {self.read}"},
        )


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    ws = funnelscope.open(tmp_path_factory.mktemp("query") / "store.duckdb")
    load_journeys(ws, JOURNEYS)
    bad = staging_table(
        [{"event_id": "x1", "timestamp": "yesterday", "event": "page_viewed", "user_id": "zed"}]
    )
    ws.append_staging(bad, source="import:bad.csv", received_at=NOW)
    read = create_key(ws.store, "read", "dashboard", now=NOW).token
    write = create_key(ws.store, "write", "web", now=NOW).token
    with BackgroundServer(create_app(ws, ApiSettings())) as server:
        yield Api(server.url, read, write)
    ws.close()


# -- auth ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "write", "fsr_not-a-key"], ids=["none", "write", "unknown"])
def test_reading_needs_a_read_key(api: Api, key: str | None) -> None:
    response = api.get("/api/v1/info", key=key)
    assert response.status_code == 401


def test_a_read_key_reads(api: Api) -> None:
    info = api.get("/api/v1/info").json()
    assert info["events"] == 7 and info["persons"] == 3
    assert info["dimensions"]["channel"][0] == "direct"  # 5 of 7 events
    assert {"event": "product_viewed", "count": 3} in info["event_names"]


# -- 422 shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        pytest.param(
            "/api/v1/report",
            {"start": "May 1st"},
            [("query.bad_datetime", ["query", "start"])],
            id="bad-date",
        ),
        pytest.param(
            "/api/v1/report",
            {"start": "2024-05-10", "end": "2024-05-01", "customer": "vip"},
            [
                ("query.empty_period", ["query", "end"]),
                ("query.bad_customer_type", ["query", "customer"]),
            ],
            id="all-problems-at-once",
        ),
        pytest.param(
            "/api/v1/kpis",
            {"names": "revenue", "granularity": "hour"},
            [("query.bad_granularity", ["query", "granularity"])],
            id="granularity",
        ),
        pytest.param(
            "/api/v1/kpis",
            {"names": "happiness"},
            [("kpi.unknown", ["query", "names"])],
            id="unknown-kpi",
        ),
        pytest.param(
            "/api/v1/kpis",
            {"names": "ctr", "breakdown": "device"},
            [("kpi.unsupported_breakdown", ["query", "breakdown", "ctr"])],
            id="unsupported-breakdown",
        ),
        pytest.param(
            "/api/v1/funnels/explain",
            {"spec": "{", "person": "1"},
            [("funnel.bad_json", ["query", "spec"])],
            id="explain-bad-json",
        ),
    ],
)
def test_invalid_input_is_422_with_every_problem(
    api: Api, path: str, params: dict[str, str], expected: list[tuple[str, list[str]]]
) -> None:
    response = api.get(path, **params)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(d["type"], d["loc"]) for d in detail] == expected
    assert all(d["msg"] for d in detail)


def test_a_bad_funnel_spec_is_422_naming_the_field(api: Api) -> None:
    response = api.post("/api/v1/funnels", {"steps": ["product_viewed"], "window": "forever"})
    assert response.status_code == 422
    types = {(d["type"], tuple(d["loc"])) for d in response.json()["detail"]}
    assert types == {("funnel.bad_window", ("body", "window"))}
    response = api.post("/api/v1/funnels", {"steps": ["product_viewed"]})
    assert [(d["type"], d["loc"]) for d in response.json()["detail"]] == [
        ("funnel.too_few_steps", ["body", "steps"])
    ]


# -- numbers -------------------------------------------------------------------------------------


def test_report_counts_stages_and_cards(api: Api) -> None:
    report = api.get("/api/v1/report", **PERIOD).json()
    persons = {s["stage"]: s["persons"] for s in report["stages"]}
    # interest: all three viewed; decision: ann and ben added; action: ann and cat ordered.
    assert persons == {"awareness": 3, "interest": 3, "decision": 3, "action": 2, "retention": 0}
    cards = {k["name"]: k for k in report["kpis"]}
    assert cards["orders"]["value"] == 2
    assert cards["revenue"]["value"] == 150
    assert cards["aov"]["value"] == 75
    assert cards["revenue"]["previous_value"] == 0 and cards["revenue"]["change"] is None
    assert sum(p["value"] for p in cards["orders"]["series"]) == 2
    assert len(cards["orders"]["series"]) == 7  # one point per day of the period


def test_filters_reach_the_kpis_and_say_what_cannot_be_filtered(api: Api) -> None:
    report = api.get("/api/v1/report", **PERIOD, country="DE").json()
    cards = {k["name"]: k for k in report["kpis"]}
    # cat's order is in a session of its own (a day later) whose first event is in DE
    assert cards["revenue"]["value"] == 50
    assert cards["ctr"]["value"] is None
    assert cards["ctr"]["unavailable"] == "cannot be filtered by country"
    assert report["stage_filters_applied"] is False


def test_kpis_by_channel(api: Api) -> None:
    data = api.get(
        "/api/v1/kpis", **PERIOD, names="revenue", breakdown="channel", granularity="total"
    ).json()
    by_channel = {r["channel"]: r["value"] for r in data["rows"]}
    assert by_channel == {"paid_search": 100, "direct": 50}


def test_channels_table(api: Api) -> None:
    rows = {r["channel"]: r for r in api.get("/api/v1/channels", **PERIOD).json()["channels"]}
    assert rows["paid_search"]["revenue"] == 100 and rows["paid_search"]["orders"] == 1
    assert rows["direct"]["revenue"] == 50
    assert rows["direct"]["spend"] == 0  # no ad spend imported: spend is zero, CTR unknown
    assert rows["direct"]["ctr"] is None


def test_catalogue_lists_units_and_breakdowns(api: Api) -> None:
    kpis = {k["name"]: k for k in api.get("/api/v1/kpis/catalogue").json()["kpis"]}
    assert kpis["ctr"]["unit"] == "ratio" and kpis["ctr"]["label"] == "CTR"
    assert kpis["ctr"]["breakdowns"] == ["channel", "campaign"]
    assert kpis["cac"]["higher_is_better"] is False


def test_funnel_and_its_persons(api: Api) -> None:
    spec = {
        "steps": ["product_viewed", "product_added", "order_completed"],
        "window": "7d",
        "start_at": PERIOD["start"],
        "end_at": PERIOD["end"],
    }
    result = api.post("/api/v1/funnels", spec).json()
    assert [s["count"] for s in result["steps"]] == [3, 2, 1]
    assert result["steps"][2]["conversion_from_first"] == pytest.approx(1 / 3)
    response = api.post("/api/v1/funnels/persons", {"spec": spec, "step": 2, "dropped": True})
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1 and rows[0]["furthest_step"] == "1"  # cat: viewed, never added
    cat = int(rows[0]["person_id"])
    preview = api.post(
        "/api/v1/funnels/persons", {"spec": spec, "step": 3, "format": "json", "limit": 5}
    ).json()
    assert preview["total"] == 1
    explained = api.get("/api/v1/funnels/explain", spec=json.dumps(spec), person=str(cat)).json()
    assert explained["furthest_step"] == 1
    assert explained["explanation"]


def test_quarantine_imports_and_sources(api: Api) -> None:
    quarantine = api.get("/api/v1/quarantine", limit=10).json()
    assert quarantine["total"] == 1
    assert quarantine["rows"][0]["reason_code"] == "event.bad_timestamp"
    assert json.loads(quarantine["rows"][0]["payload"])["timestamp"] == "yesterday"
    assert quarantine["reasons"] == [
        {
            "reason_code": "event.bad_timestamp",
            "count": 1,
            "example": quarantine["rows"][0]["message"],
        }
    ]
    assert api.get("/api/v1/quarantine", reason="nope").json()["total"] == 0
    assert api.get("/api/v1/imports").json() == {"imports": []}
    sources = {s["source"]: s for s in api.get("/api/v1/sources").json()["sources"]}
    assert sources["test"]["events"] == 7
    keys = {k["kind"]: k for s in sources.values() for k in s["keys"]}
    assert set(keys) == {"read", "write"}
    text = json.dumps(sources)
    assert api.read not in text and api.write not in text
    assert keys["read"]["prefix"] == api.read[:12]
    assert keys["read"]["is_admin"] is False and keys["write"]["is_admin"] is False


def test_recent_events_are_newest_first_after_a_sequence(api: Api) -> None:
    events = api.get("/api/v1/events/recent", limit=3).json()["events"]
    assert [e["event"] for e in events] == ["order_completed", "product_viewed", "product_added"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs, reverse=True)
    after = api.get("/api/v1/events/recent", after=seqs[0]).json()["events"]
    assert after == []


def test_the_dashboard_shell_and_assets_are_served(api: Api) -> None:
    for path in ("/", "/funnels", "/kpis", "/live", "/data", "/customers", "/goals"):
        page = httpx.get(api.url + path, timeout=10)
        assert page.status_code == 200 and '<main id="page"' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
    js = httpx.get(api.url + "/static/js/app.js", timeout=10)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    plotly = httpx.get(api.url + "/static/vendor/plotly.min.js", timeout=10)
    assert plotly.status_code == 200 and plotly.text.startswith("/**\n* plotly.js")
    escaped = httpx.get(api.url + "/static/..%2F..%2Fapi%2Fquery.py", timeout=10)
    assert escaped.status_code == 404
    assert Path(__file__).name  # the test module itself is not reachable either
