"""Rule segments: every operator (golden), bad definitions, refresh, sizes, webhook sync, export."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import funnelscope
from funnelscope.analysis.segments import (
    SegmentSpec,
    all_of,
    any_of,
    delete_segment,
    did,
    evaluate,
    export_segment,
    list_segments,
    load_segment,
    members,
    no_event_since,
    not_,
    parse_segment,
    prop,
    refresh_all,
    refresh_segment,
    save_segment,
    segment_sizes,
    subscribe,
    where,
)
from funnelscope.errors import InvalidSpecError
from funnelscope.webhooks import deliver_pending, verify_signature
from funnelscope.workspace import Workspace
from tests.conftest import NOW, T0, load_journeys

DAY = 24 * 60


def ago(days: float) -> float:
    """Minutes after T0 of the instant ``days`` before NOW."""
    return (NOW - T0).total_seconds() / 60 - days * DAY


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """Read-only for the tests that use it, so one store serves them all."""
    workspace = funnelscope.open(tmp_path_factory.mktemp("people") / "store.duckdb")
    load_journeys(
        workspace,
        {
            "ann": [
                (
                    0,
                    "page_viewed",
                    {
                        "page_path": "/blog/shoes",
                        "utm_source": "google",
                        "utm_medium": "cpc",
                        "country": "FR",
                    },
                ),
                (1, "product_viewed", {"properties": '{"category": "running", "price": 80}'}),
                (2, "order_completed", {"order_id": "a1", "revenue": "10"}),
                (3, "order_completed", {"order_id": "a2", "revenue": "20"}),
                (4, "nps_answered", {"properties": '{"score": 9}'}),
            ],
            "bob": [
                (0, "page_viewed", {"page_path": "/home", "country": "DE"}),
                (1, "product_viewed", {"properties": '{"price": 20}'}),
                (2, "order_completed", {"order_id": "b1", "revenue": "100"}),
                (4, "nps_answered", {"properties": '{"score": 3}'}),
            ],
            "cy": [
                (
                    0,
                    "page_viewed",
                    {"page_path": "/blog/x", "referrer": "https://www.facebook.com/"},
                ),
            ],
            "dee": [
                (0, "page_viewed", {"country": "FR"}),
                (1, "order_completed", {"order_id": "d1", "revenue": "5"}),
                (2, "order_completed", {"order_id": "d2", "revenue": "5"}),
                (3, "order_completed", {"order_id": "d3", "revenue": "5"}),
                (4, "nps_answered", {"properties": '{"score": 5}'}),
            ],
        },
    )
    yield workspace
    workspace.close()


def who(ws: Workspace, spec: SegmentSpec) -> set[str]:
    ids = evaluate(ws.store, spec, now=NOW)
    names = dict(
        ws.store.query(
            "SELECT m.canonical_id, i.distinct_id FROM identities i "
            "JOIN person_map m USING (person_id)"
        )
    )
    return {names[p] for p in ids}


OPERATOR_CASES = [
    ({"property": "country", "op": "eq", "value": "FR"}, {"ann", "dee"}),
    ({"property": "country", "op": "ne", "value": "FR"}, {"bob"}),  # missing never matches
    ({"not": {"property": "country", "op": "eq", "value": "FR"}}, {"bob", "cy"}),
    ({"property": "orders", "op": "gt", "value": 1}, {"ann", "dee"}),
    ({"property": "orders", "op": "gte", "value": 1}, {"ann", "bob", "dee"}),
    ({"property": "orders", "op": "lt", "value": 2}, {"bob", "cy"}),
    ({"property": "orders", "op": "lte", "value": 0}, {"cy"}),
    (
        {"property": "acquisition_channel", "op": "in", "value": ["paid_search", "organic_social"]},
        {"ann", "cy"},
    ),
    (
        {"property": "acquisition_channel", "op": "not_in", "value": ["paid_search"]},
        {"bob", "cy", "dee"},
    ),
    ({"property": "nps", "op": "exists", "value": True}, {"ann", "bob", "dee"}),
    ({"property": "nps", "op": "exists", "value": False}, {"cy"}),
    ({"property": "top_categories", "op": "contains", "value": "run"}, {"ann"}),
    ({"property": "top_categories", "op": "eq", "value": "running"}, {"ann"}),
    (
        {
            "property": "first_order_at",
            "op": "lt",
            "value": (T0 + timedelta(minutes=2)).isoformat(),
        },
        {"dee"},
    ),
    (
        {
            "event": "page_viewed",
            "where": [{"field": "page_path", "op": "contains", "value": "/blog"}],
        },
        {"ann", "cy"},
    ),
    ({"event": "order_completed", "count": {"op": "eq", "value": 0}}, {"cy"}),
    ({"event": "order_completed", "count": {"op": "ne", "value": 1}}, {"ann", "cy", "dee"}),
    ({"event": "order_completed", "count": {"op": "in", "value": [1, 3]}}, {"bob", "dee"}),
    ({"event": "order_completed", "count": {"op": "not_in", "value": [0, 1]}}, {"ann", "dee"}),
    (
        {
            "event": "product_viewed",
            "where": [{"field": "properties.price", "op": "gt", "value": 50}],
        },
        {"ann"},
    ),
    (
        {
            "event": "product_viewed",
            "where": [{"field": "properties.price", "op": "eq", "value": 20}],
        },
        {"bob"},
    ),
    (
        {
            "event": "product_viewed",
            "where": [{"field": "category", "op": "eq", "value": "running"}],
        },
        {"ann"},
    ),
    (
        {
            "event": "product_viewed",
            "where": [{"field": "category", "op": "exists", "value": False}],
        },
        {"bob"},
    ),
    (
        {"event": "order_completed", "where": [{"field": "revenue", "op": "gte", "value": 50}]},
        {"bob"},
    ),
    (
        {
            "event": "page_viewed",
            "where": [{"field": "channel", "op": "eq", "value": "organic_social"}],
        },
        {"cy"},
    ),
    (
        {
            "any": [
                {"property": "country", "op": "eq", "value": "DE"},
                {"property": "orders", "op": "gte", "value": 3},
            ]
        },
        {"bob", "dee"},
    ),
    (
        {
            "all": [
                {"property": "nps_group", "op": "eq", "value": "detractor"},
                {"property": "orders", "op": "gte", "value": 2},
            ]
        },
        {"dee"},
    ),
]


@pytest.mark.parametrize(
    ("rule", "expected"), OPERATOR_CASES, ids=[f"case{i}" for i in range(len(OPERATOR_CASES))]
)
def test_operators_golden(people: Workspace, rule: dict[str, Any], expected: set[str]) -> None:
    assert who(people, parse_segment({"name": "s", "rule": rule})) == expected


@pytest.fixture
def journeys(workspace: Workspace) -> Workspace:
    load_journeys(
        workspace,
        {
            "cart": [(ago(3), "product_added")],
            "cart_then_order": [(ago(3), "product_added"), (ago(2), "order_completed")],
            "old_cart": [(ago(10), "product_added")],
            "order_then_cart": [(ago(5), "order_completed"), (ago(1), "product_added")],
            "runner": [
                (ago(d), "product_viewed", {"properties": '{"category": "running"}'})
                for d in (1, 5, 20)
            ],
            "runner_old": [
                (ago(d), "product_viewed", {"properties": '{"category": "running"}'})
                for d in (1, 5, 40)
            ],
            "runner_catalog": [
                (ago(d), "product_viewed", {"product_id": "p-run"}) for d in (2, 3, 4)
            ],
            "hiker": [
                (ago(d), "product_viewed", {"properties": '{"category": "hiking"}'})
                for d in (1, 2, 3)
            ],
        },
    )
    with workspace.store.write() as cur:
        cur.execute("INSERT INTO products (product_id, category) VALUES ('p-run', 'running')")
    return workspace


ABANDONERS_YAML = """
name: abandoners
description: added to cart in the last 7 days and no order since
rule:
  all:
    - event: Add To Cart        # any vocabulary: normalised to product_added
      within: 7d
    - no_event_since: {event: order_completed, since: product_added}
"""


def test_the_three_brief_examples(journeys: Workspace, people: Workspace) -> None:
    abandoners = load_segment(ABANDONERS_YAML)
    assert who(journeys, abandoners) == {"cart", "order_then_cart"}
    built = SegmentSpec(
        "abandoners",
        all_of(
            did("product_added", within="7d"),
            no_event_since("order_completed", since="product_added"),
        ),
        "added to cart in the last 7 days and no order since",
    )
    assert built.to_dict() == abandoners.to_dict()
    runners = load_segment(
        json.dumps(
            {
                "name": "runners",
                "rule": {
                    "event": "product_viewed",
                    "within": "30d",
                    "count": {"op": "gte", "value": 3},
                    "where": [{"field": "category", "op": "eq", "value": "running"}],
                },
            }
        )
    )
    assert who(journeys, runners) == {"runner", "runner_catalog"}
    assert runners == SegmentSpec(
        "runners",
        did(
            "product_viewed",
            within=timedelta(days=30),
            count=("gte", 3),
            where=[where("category", "eq", "running")],
        ),
    )
    detractors = SegmentSpec(
        "repeat_detractors", all_of(prop("nps_group", "eq", "detractor"), prop("orders", "gte", 2))
    )
    assert who(people, detractors) == {"dee"}


def test_builders_compose(people: Workspace) -> None:
    spec = SegmentSpec("x", any_of(not_(prop("orders", "gte", 1)), prop("country", "eq", "DE")))
    assert who(people, spec) == {"bob", "cy"}


BAD = [
    pytest.param({"rule": {"event": "x"}}, [("segment.bad_name", "name")], id="no-name"),
    pytest.param(
        {"name": "Bad Name!", "rule": {"event": "x"}}, [("segment.bad_name", "name")], id="bad-name"
    ),
    pytest.param({"name": "s"}, [("segment.missing_rule", "rule")], id="no-rule"),
    pytest.param(
        {"name": "s", "rule": {"event": "x"}, "colour": 1},
        [("segment.unknown_key", "colour")],
        id="unknown-top-key",
    ),
    pytest.param({"name": "s", "rule": {"foo": 1}}, [("segment.bad_node", "rule")], id="no-kind"),
    pytest.param(
        {"name": "s", "rule": {"event": "x", "property": "orders"}},
        [("segment.bad_node", "rule")],
        id="two-kinds",
    ),
    pytest.param(
        {"name": "s", "rule": {"all": []}}, [("segment.empty_group", "rule.all")], id="empty-all"
    ),
    pytest.param(
        {"name": "s", "rule": {"event": ""}},
        [("segment.bad_event", "rule.event")],
        id="empty-event",
    ),
    pytest.param(
        {"name": "s", "rule": {"event": "x", "within": "7 days"}},
        [("segment.bad_window", "rule.within")],
        id="bad-window",
    ),
    pytest.param(
        {"name": "s", "rule": {"event": "x", "within": "0d"}},
        [("segment.bad_window", "rule.within")],
        id="zero-window",
    ),
    pytest.param(
        {"name": "s", "rule": {"event": "x", "count": {"op": "gte", "value": -1}}},
        [("segment.bad_count", "rule.count.value")],
        id="negative-count",
    ),
    pytest.param(
        {"name": "s", "rule": {"event": "x", "count": {"op": "like", "value": 1}}},
        [("segment.unknown_operator", "rule.count.op")],
        id="count-op",
    ),
    pytest.param(
        {"name": "s", "rule": {"event": "x", "timeframe": "7d"}},
        [("segment.unknown_key", "rule.timeframe")],
        id="unknown-event-key",
    ),
    pytest.param(
        {
            "name": "s",
            "rule": {"event": "x", "where": [{"field": "colour", "op": "eq", "value": "red"}]},
        },
        [("segment.unknown_field", "rule.where[0].field")],
        id="unknown-field",
    ),
    pytest.param(
        {
            "name": "s",
            "rule": {
                "event": "x",
                "where": [{"field": "properties.a b", "op": "eq", "value": "red"}],
            },
        },
        [("segment.bad_field", "rule.where[0].field")],
        id="bad-json-key",
    ),
    pytest.param(
        {
            "name": "s",
            "rule": {"event": "x", "where": [{"field": "channel", "op": "gt", "value": "a"}]},
        },
        [("segment.bad_operator", "rule.where[0].op")],
        id="order-op-on-text",
    ),
    pytest.param(
        {"name": "s", "rule": {"property": "nps", "op": "eq", "value": "high"}},
        [("segment.bad_value", "rule.value")],
        id="text-for-number",
    ),
    pytest.param(
        {"name": "s", "rule": {"property": "orders", "op": "eq", "value": True}},
        [("segment.bad_value", "rule.value")],
        id="bool-for-number",
    ),
    pytest.param(
        {"name": "s", "rule": {"property": "country", "op": "in", "value": "FR"}},
        [("segment.bad_value", "rule.value")],
        id="in-needs-list",
    ),
    pytest.param(
        {"name": "s", "rule": {"property": "nps", "op": "exists", "value": "yes"}},
        [("segment.bad_value", "rule.value")],
        id="exists-needs-bool",
    ),
    pytest.param(
        {
            "name": "s",
            "rule": {"property": "first_order_at", "op": "lt", "value": "2024-01-01T00:00:00"},
        },
        [("segment.bad_value", "rule.value")],
        id="naive-time",
    ),
    pytest.param(
        {"name": "s", "rule": {"property": "shoe_size", "op": "eq", "value": 1}},
        [("segment.unknown_property", "rule.property")],
        id="unknown-property",
    ),
    pytest.param(
        {"name": "s", "rule": {"property": "orders", "op": "~", "value": 1}},
        [("segment.unknown_operator", "rule.op")],
        id="unknown-operator",
    ),
    pytest.param(
        {"name": "s", "rule": {"no_event_since": {"event": "x"}}},
        [("segment.bad_node", "rule.no_event_since")],
        id="since-missing",
    ),
    pytest.param(
        {
            "name": "s",
            "rule": {
                "all": [
                    {"event": 3, "within": "7x"},
                    {"not": {"property": "orders", "op": "gte", "value": "2"}},
                ]
            },
        },
        [
            ("segment.bad_event", "rule.all[0].event"),
            ("segment.bad_window", "rule.all[0].within"),
            ("segment.bad_value", "rule.all[1].not.value"),
        ],
        id="every-problem-reported",
    ),
]


@pytest.mark.parametrize(("data", "problems"), BAD)
def test_bad_definitions_name_the_field(
    data: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidSpecError) as err:
        parse_segment(data)
    assert [(p.code, p.location) for p in err.value.problems] == problems


def test_too_deep_and_bad_yaml_are_rejected() -> None:
    rule: dict[str, Any] = {"event": "x"}
    for _ in range(20):
        rule = {"not": rule}
    with pytest.raises(InvalidSpecError) as err:
        parse_segment({"name": "s", "rule": rule})
    assert err.value.code == "segment.too_deep"
    with pytest.raises(InvalidSpecError) as err:
        load_segment("name: [unclosed")
    assert err.value.code == "segment.bad_yaml"
    with pytest.raises(InvalidSpecError):
        did("x", within="7 days")
    with pytest.raises(InvalidSpecError):
        SegmentSpec("s", prop("orders", "gte", "two"))


def test_values_are_bound_never_spliced(people: Workspace) -> None:
    nasty = "FR'; DROP TABLE events; --"
    spec = parse_segment({"name": "s", "rule": {"property": "country", "op": "eq", "value": nasty}})
    assert who(people, spec) == set()
    assert people.info()["events"] > 0


class Hook:
    """A local webhook receiver that records what it gets."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers["Funnelscope-Timestamp"]
                assert verify_signature(
                    "k",
                    body,
                    ts,
                    self.headers["Funnelscope-Signature"],
                    now=NOW + timedelta(seconds=int(ts) - NOW.timestamp()),
                )
                hook.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/segments"


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


def test_refresh_keeps_sizes_and_syncs_joins_and_leaves(journeys: Workspace, hook: Hook) -> None:
    store = journeys.store
    save_segment(store, load_segment(ABANDONERS_YAML), now=NOW)
    subscribe(store, "abandoners", hook.url, "k", now=NOW)
    first = refresh_all(journeys, NOW)
    assert [(r.segment, r.size, len(r.joined), len(r.left), r.deliveries) for r in first] == [
        ("abandoners", 2, 2, 0, 1)
    ]
    assert {m["user_id"] for m in members(store, "abandoners")} == {"cart", "order_then_cart"}
    # "cart" orders; an hour later the refresh sees one leave
    load_journeys(
        journeys,
        {"cart-later": [(ago(0) - 1, "order_completed", {"user_id": "cart", "order_id": "x"})]},
    )
    later = NOW + timedelta(hours=1)
    second = refresh_segment(store, "abandoners", now=later)
    assert (second.size, second.joined, len(second.left)) == (1, (), 1)
    unchanged = refresh_segment(store, "abandoners", now=later + timedelta(hours=1))
    assert (unchanged.joined, unchanged.left, unchanged.deliveries) == ((), (), 0)
    assert [(s["size"], s["joins"], s["leaves"]) for s in segment_sizes(store, "abandoners")] == [
        (2, 2, 0),
        (1, 0, 1),
        (1, 0, 0),
    ]
    with httpx.Client(timeout=5) as client:
        report = deliver_pending(store, later, client)
    assert report.delivered == 2
    joined = {p["user_id"] for p in hook.bodies[0]["data"]["joined"]}
    left = {p["user_id"] for p in hook.bodies[1]["data"]["left"]}
    assert (joined, left) == ({"cart", "order_then_cart"}, {"cart"})
    assert hook.bodies[1]["type"] == "segment.changed"
    assert list_segments(store)[0]["size"] == 1
    delete_segment(store, "abandoners")
    assert list_segments(store) == []


def test_export_csv_and_parquet(people: Workspace, tmp_path: Path) -> None:
    save_segment(people.store, SegmentSpec("frenchies", prop("country", "eq", "FR")), now=NOW)
    n = export_segment(people.store, "frenchies", tmp_path / "fr.csv", now=NOW)
    csv = pd.read_csv(tmp_path / "fr.csv")
    assert n == 2 and sorted(csv["user_id"]) == ["ann", "dee"]
    assert csv.loc[csv["user_id"] == "ann", "top_categories"].item() == "running"
    n = export_segment(people.store, "rfm:Champions", tmp_path / "c.parquet", now=NOW)
    parquet = pd.read_parquet(tmp_path / "c.parquet")
    assert n == len(parquet)
    with pytest.raises(InvalidSpecError) as err:
        export_segment(people.store, "frenchies", tmp_path / "fr.xlsx", now=NOW)
    assert err.value.code == "segment.bad_format"
    with pytest.raises(InvalidSpecError) as err:
        export_segment(people.store, "nobody", tmp_path / "x.csv", now=NOW)
    assert err.value.code == "segment.not_found"


def test_http_api_defines_refreshes_and_exports(journeys: Workspace) -> None:
    from funnelscope.api import ApiSettings, create_app
    from funnelscope.api.server import BackgroundServer

    app = create_app(journeys, ApiSettings(require_auth=False))
    now = NOW.isoformat().replace("+00:00", "Z")
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        bad = client.post(
            "/api/v1/segments", json={"name": "x", "rule": {"event": "a", "within": "7x"}}
        )
        assert bad.status_code == 422
        assert bad.json()["detail"] == [
            {
                "type": "segment.bad_window",
                "loc": ["body", "rule", "within"],
                "msg": bad.json()["detail"][0]["msg"],
            }
        ]
        ok = client.post(
            f"/api/v1/segments?now={now}",
            json=parse_segment(
                {"name": "abandoners", "rule": load_segment(ABANDONERS_YAML).to_dict()["rule"]}
            ).to_dict(),
        )
        assert ok.status_code == 200 and ok.json()["size"] == 2
        refreshed = client.post(f"/api/v1/segments/refresh?now={now}").json()["refreshed"]
        assert [(r["segment"], r["size"]) for r in refreshed] == [("abandoners", 2)]
        sizes = client.get("/api/v1/segments/abandoners").json()["sizes"]
        assert [s["size"] for s in sizes] == [2, 2]
        csv = client.get(f"/api/v1/segments/abandoners/export?format=csv&now={now}")
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.count("\n") == 3  # header + 2 members
        assert client.get("/api/v1/segments/nope").status_code == 422
        rfm = client.get(f"/api/v1/customers/rfm?now={now}").json()
        assert sum(rfm["sizes"].values()) == rfm["total"] == 2  # two buyers


def test_cli_define_and_bad_file(journeys: Workspace, tmp_path: Path) -> None:
    import subprocess
    import sys

    journeys.close()
    good = tmp_path / "seg.yaml"
    good.write_text(ABANDONERS_YAML)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nrule: {event: x, within: soon}\n")
    cmd = [
        sys.executable,
        "-c",
        "from funnelscope.cli.main import main; main()",
        "segments",
        "define",
        "--store",
        str(journeys.path),
        "--now",
        NOW.isoformat(),
    ]
    run = subprocess.run([*cmd, str(good)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "abandoners: 2 members" in run.stdout
    run = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, check=False)
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: rule.within:")
    assert "Traceback" not in run.stderr
