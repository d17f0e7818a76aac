"""The goals HTTP API on a real uvicorn server, and the status-change webhook end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

import funnelscope
from funnelscope.analysis.goals import subscribe_goal_webhook
from funnelscope.api import ApiSettings, create_app
from funnelscope.api.server import BackgroundServer
from funnelscope.keys import create_key
from funnelscope.webhooks import deliver_pending, verify_signature
from funnelscope.workspace import Workspace
from tests.unit.test_goals import AT, load_orders

GOAL = {
    "name": "orders-q",
    "kpi": "orders",
    "target": "+15%",
    "start": "2025-01-01",
    "deadline": "2025-01-30",
    "owner": "ana",
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Workspace, httpx.Client]]:
    ws = funnelscope.open(tmp_path / "store.duckdb")
    load_orders(ws, date(2024, 11, 1), date(2025, 1, 30))
    read = create_key(ws.store, "read", "dash", now=AT).token
    write = create_key(ws.store, "write", "web", now=AT).token
    app = create_app(ws, ApiSettings(key_refresh_seconds=0.0))
    with (
        BackgroundServer(app) as server,
        httpx.Client(
            base_url=server.url, timeout=30, headers={"authorization": f"Bearer {read}"}
        ) as client,
    ):
        client.headers["x-write-key"] = write
        yield ws, client
    ws.close()


def test_goals_are_added_listed_shown_and_checked(served: tuple[Workspace, httpx.Client]) -> None:
    _, http = served
    now = {"now": AT.isoformat()}
    created = http.post("/api/v1/goals", params=now, json=GOAL)
    assert created.status_code == 201 and created.json()["target_kind"] == "change"
    assert (
        http.post("/api/v1/goals", params=now, json=GOAL).json()["detail"][0]["type"]
        == "goal.exists"
    )
    listed = http.get("/api/v1/goals").json()
    assert [(g["name"], g["status"]) for g in listed] == [("orders-q", None)]

    shown = http.get("/api/v1/goals/orders-q", params=now).json()
    assert (shown["target_value"], shown["current_value"], shown["status"]) == (
        69.0,
        20.0,
        "off_track",
    )
    assert len(shown["daily"]) == 30
    assert shown["daily"][9] | {"lower80": None} == {
        "date": "2025-01-10",
        "actual": 2.0,
        "actual_to_date": 20.0,
        "pacing": 23.0,
        "forecast_mean": None,
        "lower80": None,
        "upper80": None,
        "lower95": None,
        "upper95": None,
        "target": 69.0,
    }
    assert shown["daily"][-1]["forecast_mean"] == 60.0

    checked = http.post("/api/v1/goals/check", params=now).json()
    assert [(c["goal"], c["status"], c["changed"]) for c in checked] == [
        ("orders-q", "off_track", True)
    ]
    assert http.get("/api/v1/goals").json()[0]["status"] == "off_track"
    assert http.delete("/api/v1/goals/orders-q").status_code == 204
    missing = http.get("/api/v1/goals/orders-q")
    assert missing.status_code == 404 and missing.json()["detail"][0]["type"] == "goal.not_found"


def test_a_bad_goal_answers_422_with_every_problem(served: tuple[Workspace, httpx.Client]) -> None:
    _, http = served
    bad = {**GOAL, "kpi": "conversion_rte", "deadline": "2024-12-01", "scope": {"colour": "red"}}
    answer = http.post("/api/v1/goals", params={"now": AT.isoformat()}, json=bad)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert {d["type"] for d in detail} == {
        "goal.unknown_kpi",
        "goal.deadline_before_start",
        "goal.unknown_scope",
    }
    assert next(d for d in detail if d["type"] == "goal.unknown_scope")["loc"] == [
        "body",
        "scope",
        "colour",
    ]


def test_write_keys_cannot_read_goals(served: tuple[Workspace, httpx.Client]) -> None:
    _, http = served
    answer = http.get(
        "/api/v1/goals", headers={"authorization": f"Bearer {http.headers['x-write-key']}"}
    )
    assert answer.status_code == 401


def test_a_status_change_posts_a_signed_webhook(tmp_path: Path) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(request: Request) -> dict[str, Any]:
        received.append((dict(request.headers), await request.body()))
        return {}

    with funnelscope.open(tmp_path / "store.duckdb") as ws, BackgroundServer(receiver) as srv:
        load_orders(ws, date(2024, 11, 1), date(2025, 1, 30))
        ws.add_goal(GOAL, now=AT)
        subscribe_goal_webhook(ws.store, f"{srv.url}/hook", "s3cret", now=AT, goal="orders-q")
        ws.check_goals(now=AT)
        ws.check_goals(now=datetime(2025, 1, 12, tzinfo=UTC))  # no change: nothing queued
        with httpx.Client(timeout=10) as client:
            report = deliver_pending(ws.store, AT, client)
        assert report.delivered == 1
    headers, body = received[0]
    assert headers["funnelscope-event"] == "goal.status_changed"
    assert verify_signature(
        "s3cret", body, headers["funnelscope-timestamp"], headers["funnelscope-signature"], now=AT
    )
    data = json.loads(body)["data"]
    assert (data["goal"], data["previous_status"], data["status"]) == (
        "orders-q",
        None,
        "off_track",
    )
    assert (data["current_value"], data["target_value"], data["forecast_mean"]) == (
        20.0,
        69.0,
        60.0,
    )
