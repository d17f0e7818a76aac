"""The Overview's answers (api/overview.py) on a real uvicorn server: computed ahead by the
warmer and served from the cache, recomputed after new data, shared between concurrent askers,
and the persons count read from the person layout."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import funnelscope
from funnelscope.api.app import create_app
from funnelscope.api.overview import (
    default_period,
    event_counts,
    info_answer,
    report_answer,
    summary,
)
from funnelscope.api.query import ResultCache
from funnelscope.api.server import BackgroundServer
from funnelscope.api.settings import ApiSettings
from funnelscope.keys import create_key
from funnelscope.workspace import Workspace
from tests.conftest import NOW, load_journeys

# Minutes after T0 = 2024-05-06 09:00 UTC. The latest event is on 2024-05-07, so the default
# period is 2024-04-08 .. 2024-05-08.
JOURNEYS = {
    "ann": [
        (0, "product_viewed"),
        (10, "product_added"),
        (20, "order_completed", {"revenue": "100", "currency": "USD", "order_id": "o1"}),
    ],
    # anonymous browsing, then a login: one person
    "ben": [
        (0, "page_viewed", {"anonymous_id": "anon-b"}),
        (5, "identify", {"anonymous_id": "anon-b", "user_id": "ben"}),
        (24 * 60, "product_viewed", {"user_id": "ben"}),
    ],
}
DEFAULT = {"start": "2024-04-08", "end": "2024-05-08"}


@dataclass
class Served:
    ws: Workspace
    app: FastAPI
    url: str
    key: str

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(
            self.url + path,
            params=params,
            timeout=60,
            headers={"Authorization": f"Bearer {self.key}"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    @property
    def cache(self) -> ResultCache:
        cache: ResultCache = self.app.state.query_cache
        return cache


@pytest.fixture
def served(workspace: Workspace) -> Iterator[Served]:
    load_journeys(workspace, JOURNEYS)
    key = create_key(workspace.store, "read", "dashboard", now=NOW).token
    app = create_app(workspace, ApiSettings(overview_warm_seconds=0.1))
    with BackgroundServer(app) as server:
        yield Served(workspace, app, server.url, key)


def _persons(report: dict[str, Any]) -> list[int]:
    return [s["persons"] for s in report["stages"]]


def test_the_first_look_is_served_from_the_warm_up(served: Served) -> None:
    assert served.app.state.overview_warmer.wait(60)
    computed = served.cache.computed
    info = served.get("/api/v1/info")
    report = served.get("/api/v1/report", **DEFAULT)
    channels = served.get("/api/v1/channels", **DEFAULT)
    assert served.cache.computed == computed  # none of the three was computed on request
    status = served.get("/api/v1/overview/status")
    assert status["enabled"] and status["ready"] and status["runs"] >= 1
    assert info["events"] == 6 and info["persons"] == 2
    assert _persons(report) == [2, 2, 1, 1, 0]
    assert {r["channel"]: r["orders"] for r in channels["channels"]} == {"direct": 1}
    # the warmed answers are the ones a request computes
    served.app.state.query_cache = ResultCache()
    assert served.get("/api/v1/report", **DEFAULT) == report
    assert served.get("/api/v1/channels", **DEFAULT) == channels
    assert served.cache.computed == 2


def test_new_events_are_warmed_in(served: Served) -> None:
    warmer = served.app.state.overview_warmer
    assert warmer.wait(60)
    served.get("/api/v1/report", **DEFAULT)  # someone is looking: keep the Overview warm
    load_journeys(
        served.ws,
        {
            "cat": [
                (30, "product_viewed"),
                (40, "order_completed", {"revenue": "5", "order_id": "o2", "currency": "USD"}),
            ]
        },
    )
    assert warmer.wait(60)
    assert warmer.warmed_version == served.ws.store.version
    computed = served.cache.computed
    report = served.get("/api/v1/report", **DEFAULT)
    assert served.cache.computed == computed
    assert _persons(report) == [3, 3, 2, 2, 0]
    cards = {k["name"]: k["value"] for k in report["kpis"]}
    assert cards["orders"] == 2 and cards["revenue"] == 105


def test_report_stages_carry_the_cards_kpis(served: Served) -> None:
    report = served.get("/api/v1/report", **DEFAULT)
    cards = {k["name"]: k for k in report["kpis"]}
    action = next(s for s in report["stages"] if s["stage"] == "action")
    assert list(action["kpis"]) == ["orders", "revenue", "aov", "roas", "cac"]
    assert action["kpis"]["revenue"]["value"] == cards["revenue"]["value"] == 100


def test_a_key_is_computed_once_for_concurrent_askers() -> None:
    cache = ResultCache()
    calls: list[int] = []
    started, release = threading.Event(), threading.Event()
    answers: list[dict[str, Any]] = []

    def compute() -> dict[str, Any]:
        calls.append(1)
        started.set()
        release.wait(10)
        return {"calls": len(calls)}

    first = threading.Thread(target=lambda: answers.append(cache.get(("k",), compute)))
    first.start()
    assert started.wait(10)
    others = [
        threading.Thread(target=lambda: answers.append(cache.get(("k",), compute)))
        for _ in range(3)
    ]
    for t in others:
        t.start()
    release.set()
    for t in (first, *others):
        t.join(10)
    assert calls == [1] and answers == [{"calls": 1}] * 4 and cache.computed == 1


def test_a_failed_computation_lets_the_waiter_compute() -> None:
    cache = ResultCache()
    started, release = threading.Event(), threading.Event()
    errors: list[Exception] = []

    def failing() -> dict[str, Any]:
        started.set()
        release.wait(10)
        raise RuntimeError("boom")

    def run_failing() -> None:
        try:
            cache.get(("k",), failing)
        except RuntimeError as exc:
            errors.append(exc)

    first = threading.Thread(target=run_failing)
    first.start()
    assert started.wait(10)
    answers: list[dict[str, Any]] = []
    second = threading.Thread(target=lambda: answers.append(cache.get(("k",), lambda: {"ok": 1})))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert [str(e) for e in errors] == ["boom"] and answers == [{"ok": 1}]


def test_persons_are_counted_from_the_layout_as_sql_counts_them(workspace: Workspace) -> None:
    load_journeys(workspace, JOURNEYS)
    # a person_map entry without events (an alias merged away) must not count
    load_journeys(
        workspace, {"dan": [(60, "identify", {"anonymous_id": "anon-d", "user_id": "dan"})]}
    )
    assert summary(workspace)["persons"] == workspace.info()["persons"] == 3


def test_default_period_is_the_30_days_up_to_the_latest_event(workspace: Workspace) -> None:
    assert default_period(workspace) is None
    load_journeys(workspace, JOURNEYS)
    start, end = default_period(workspace) or (None, None)
    assert (str(start), str(end)) == ("2024-04-08 00:00:00+00:00", "2024-05-08 00:00:00+00:00")


def test_no_warm_up_when_turned_off(tmp_path: Any) -> None:
    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        app = create_app(ws, ApiSettings(overview_warm_seconds=0))
        with BackgroundServer(app):
            assert getattr(app.state, "overview_warmer", None) is None


def test_filter_values_are_counted_incrementally(workspace: Workspace) -> None:
    load_journeys(workspace, JOURNEYS)
    assert event_counts(workspace.store)["event"] == {
        "product_viewed": 2,
        "product_added": 1,
        "order_completed": 1,
        "page_viewed": 1,
        "identify": 1,
    }
    load_journeys(
        workspace,
        {
            "cat": [
                (30, "product_viewed", {"country": "DE"}),
                (31, "page_viewed", {"country": "FR"}),
            ]
        },
    )
    counts = event_counts(workspace.store)
    assert counts["event"]["product_viewed"] == 3 and counts["event"]["page_viewed"] == 2
    assert counts["country"] == {"DE": 1, "FR": 1}
    # the same as counting every row again
    fresh: dict[str, dict[str, int]] = {}
    for column, dim in (
        ("channel", "channel"),
        ("device_type", "device"),
        ("country", "country"),
        ("event", "event"),
    ):
        rows = workspace.store.query(
            f"SELECT {column}, count(*) FROM events WHERE {column} IS NOT NULL GROUP BY 1"
        )
        if rows:
            fresh[dim] = {value: int(n) for value, n in rows}
    assert counts == fresh


def test_before_the_layout_is_built_sql_gives_the_same_answers(workspace: Workspace) -> None:
    load_journeys(workspace, JOURNEYS)
    start, end = default_period(workspace) or (None, None)
    assert start is not None and end is not None
    for filters in ({}, {"country": ["DE"]}):
        by_sql = report_answer(workspace, start, end, filters, use_layout=False)
        assert by_sql == report_answer(workspace, start, end, filters, use_layout=True)
    assert info_answer(workspace, use_layout=False) == info_answer(workspace)
    assert summary(workspace, use_layout=False)["persons"] == 2
