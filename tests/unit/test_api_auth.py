"""Keys: the keys module, the CLI, and how the API checks write and read keys (401s, revocation,
rate limits with 429 + Retry-After)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import funnelscope
from funnelscope.api import ApiSettings, create_app
from funnelscope.api.limits import TokenBuckets
from funnelscope.api.server import BackgroundServer
from funnelscope.cli.main import app as cli
from funnelscope.errors import InvalidInputError
from funnelscope.keys import create_key, find_key, list_keys, revoke_key
from funnelscope.store.store import Store

NOW = datetime(2024, 5, 1, tzinfo=UTC)
TS = "2024-05-01T10:00:00Z"


# -- keys module ----------------------------------------------------------------------------------


def test_write_key_is_stored_read_key_only_hashed(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.duckdb")
    write = create_key(store, "write", "web", now=NOW)
    read = create_key(store, "read", "dashboard", now=NOW)
    assert write.token.startswith("fsw_") and read.token.startswith("fsr_")
    stored = store.query("SELECT kind, write_key, secret_hash FROM api_keys ORDER BY kind")
    assert stored[0][0] == "read" and stored[0][1] is None and read.token not in stored[0][2]
    assert stored[1] == ("write", write.token, None)
    assert find_key(store, write.token) == write.key
    assert find_key(store, read.token) == read.key
    assert find_key(store, "fsr_" + "x" * 43) is None
    assert find_key(store, "nonsense") is None
    assert {k.key_id for k in list_keys(store)} == {write.key.key_id, read.key.key_id}


def test_revoke(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.duckdb")
    key = create_key(store, "read", "dash", now=NOW)
    later = datetime(2024, 6, 1, tzinfo=UTC)
    revoked = revoke_key(store, key.key.key_id, now=later)
    assert revoked.revoked_at == later and not revoked.is_active
    assert revoke_key(store, key.key.key_id, now=NOW).revoked_at == later  # first time kept
    assert find_key(store, key.token) is None
    with pytest.raises(InvalidInputError) as info:
        revoke_key(store, "key_nope", now=NOW)
    assert info.value.code == "key.not_found"


@pytest.mark.parametrize(
    ("kind", "source", "codes"),
    [
        pytest.param("admin", "web", ["key.unknown_kind"], id="kind"),
        pytest.param("write", "", ["key.bad_source"], id="empty-source"),
        pytest.param("write", "has space", ["key.bad_source"], id="space"),
        pytest.param("root", "-x", ["key.unknown_kind", "key.bad_source"], id="both"),
    ],
)
def test_create_key_rejects(tmp_path: Path, kind: str, source: str, codes: list[str]) -> None:
    with pytest.raises(InvalidInputError) as info:
        create_key(Store(tmp_path / "k.duckdb"), kind, source, now=NOW)
    assert [p.code for p in info.value.problems] == codes


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    store = str(tmp_path / "cli.duckdb")
    out = runner.invoke(
        cli,
        ["keys", "create", "--kind", "write", "--source", "web", "--store", store, "-f", "json"],
    )
    assert out.exit_code == 0, out.output
    created = json.loads(out.output)
    assert created["token"].startswith("fsw_") and created["source"] == "web"
    listed = json.loads(runner.invoke(cli, ["keys", "list", "--store", store, "-f", "json"]).output)
    assert [(k["key_id"], k["is_active"]) for k in listed] == [(created["key_id"], True)]
    out = runner.invoke(cli, ["keys", "revoke", created["key_id"], "--store", store])
    assert out.exit_code == 0
    listed = json.loads(runner.invoke(cli, ["keys", "list", "--store", store, "-f", "json"]).output)
    assert listed[0]["is_active"] is False


# -- the API --------------------------------------------------------------------------------------


class Server:
    def __init__(self, tmp_path: Path, settings: ApiSettings) -> None:
        self.ws = funnelscope.open(tmp_path / "store.duckdb")
        self.write = create_key(self.ws.store, "write", "web", now=NOW)
        self.read = create_key(self.ws.store, "read", "dash", now=NOW)
        self.server = BackgroundServer(create_app(self.ws, settings)).start()
        self.http = httpx.Client(base_url=self.server.url, timeout=30)

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.ws.close()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path, ApiSettings(key_refresh_seconds=0.0))
    yield server
    server.close()


def batch(i: int = 1) -> dict[str, object]:
    return {
        "batch": [
            {"type": "track", "event": "x", "userId": "u", "messageId": f"m{i}", "timestamp": TS}
        ]
    }


def basic(token: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()}


@pytest.mark.parametrize(
    ("headers", "body_key", "status", "code"),
    [
        pytest.param({}, None, 401, "auth.missing_key", id="no-key"),
        pytest.param(basic("fsw_unknown"), None, 401, "auth.unknown_key", id="unknown"),
        pytest.param(
            {"authorization": "Basic %%%"}, None, 401, "auth.missing_key", id="garbled-basic"
        ),
        pytest.param({}, "fsw_unknown", 401, "auth.unknown_key", id="unknown-in-body"),
    ],
)
def test_write_key_required(
    srv: Server, headers: dict[str, str], body_key: str | None, status: int, code: str
) -> None:
    body = batch() | ({"writeKey": body_key} if body_key else {})
    r = srv.http.post("/v1/batch", json=body, headers=headers)
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert "www-authenticate" in r.headers


@pytest.mark.parametrize("where", ["basic", "bearer", "body", "query"])
def test_write_key_places(srv: Server, where: str) -> None:
    token = srv.write.token
    body = batch()
    headers: dict[str, str] = {}
    url = "/v1/batch"
    if where == "basic":
        headers = basic(token)
    elif where == "bearer":
        headers = {"authorization": f"Bearer {token}"}
    elif where == "body":
        body["writeKey"] = token
    else:
        url += f"?writeKey={token}"
    assert srv.http.post(url, json=body, headers=headers).status_code == 200


def test_revoked_write_key_is_refused(srv: Server) -> None:
    assert (
        srv.http.post("/v1/batch", json=batch(1), headers=basic(srv.write.token)).status_code == 200
    )
    revoke_key(srv.ws.store, srv.write.key.key_id, now=NOW)
    r = srv.http.post("/v1/batch", json=batch(2), headers=basic(srv.write.token))
    assert r.status_code == 401


def test_read_key_for_live(srv: Server) -> None:
    assert srv.http.get("/api/v1/live").status_code == 401
    r = srv.http.get("/api/v1/live", headers={"authorization": f"Bearer {srv.write.token}"})
    assert r.status_code == 401  # a public write key never reads
    r = srv.http.get("/api/v1/live", headers={"authorization": f"Bearer {srv.read.token}"})
    assert r.status_code == 200
    assert srv.http.get("/api/v1/live", params={"key": srv.read.token}).status_code == 200


def test_read_key_cannot_write(srv: Server) -> None:
    r = srv.http.post("/v1/batch", json=batch(), headers=basic(srv.read.token))
    assert r.status_code == 401


def test_rate_limit_429_with_retry_after(tmp_path: Path) -> None:
    server = Server(
        tmp_path,
        ApiSettings(rate_limit_per_second=0.5, rate_limit_burst=2, key_refresh_seconds=0.0),
    )
    try:
        codes = [
            server.http.post("/v1/batch", json=batch(i), headers=basic(server.write.token))
            for i in range(3)
        ]
        assert [r.status_code for r in codes] == [200, 200, 429]
        limited = codes[2]
        assert limited.json()["code"] == "rate.limited"
        assert limited.headers["retry-after"] == "2"  # 1 token at 0.5/s
        assert limited.headers["x-ratelimit-reset"] == "2"
        other = create_key(server.ws.store, "write", "app", now=NOW).token
        r = server.http.post("/v1/batch", json=batch(9), headers=basic(other))
        assert r.status_code == 200  # each key has its own bucket
    finally:
        server.close()


def test_auth_off_accepts_everything_as_default_source(tmp_path: Path) -> None:
    server = Server(tmp_path, ApiSettings(require_auth=False))
    try:
        assert server.http.post("/v1/batch", json=batch()).status_code == 200
        assert server.http.get("/api/v1/live").status_code == 200
        assert server.ws.store.query("SELECT source FROM events")[0][0] == "segment:default"
    finally:
        server.close()


# -- token buckets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("takes", "expected"),
    [
        pytest.param([0.0, 0.0, 0.0], [0.0, 0.0, 0.5], id="burst-then-wait"),
        pytest.param([0.0, 0.0, 0.5], [0.0, 0.0, 0.0], id="refilled"),
        pytest.param([0.0, 0.0, 0.25, 0.5], [0.0, 0.0, 0.25, 0.0], id="partial-refill"),
        pytest.param([0.0, 100.0, 100.0, 100.0], [0.0, 0.0, 0.0, 0.5], id="capped-at-burst"),
    ],
)
def test_token_bucket(takes: list[float], expected: list[float]) -> None:
    buckets = TokenBuckets(rate=2.0, burst=2.0)
    assert [buckets.take("k", now=t) for t in takes] == pytest.approx(expected)


def test_token_buckets_are_per_key() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1.0)
    assert [buckets.take(k, now=0.0) for k in ("a", "b", "a")] == [0.0, 0.0, 1.0]
    assert TokenBuckets.retry_after_header(0.01) == "1"
    assert TokenBuckets.retry_after_header(2.2) == "3"


def test_serve_demo_keys_are_created_once_and_reused(tmp_path: Path) -> None:
    from funnelscope.cli.serve import _demo_keys

    with funnelscope.open(tmp_path / "demo.duckdb") as ws:
        write, read = _demo_keys(ws)
        assert (write, read) == _demo_keys(ws)
        assert find_key(ws.store, write) is not None and find_key(ws.store, read) is not None
        revoke_key(ws.store, find_key(ws.store, read).key_id, now=NOW)  # type: ignore[union-attr]
        new_write, new_read = _demo_keys(ws)
        assert new_write == write and new_read != read  # a revoked read key is replaced
        assert len(list_keys(ws.store, include_revoked=False)) == 2


def test_key_ring_reloads_off_the_request_and_drops_a_revoked_key(tmp_path: Path) -> None:
    """A stale ring answers from memory at once and reloads on a thread: a key revoked in the
    store stops working within the refresh interval plus one reload."""
    import time

    from funnelscope.api.auth import KeyRing

    store = Store(tmp_path / "ring.duckdb")
    created = create_key(store, "write", "web", now=NOW)
    ring = KeyRing(store, refresh_seconds=0.05)
    assert ring.write_key(created.token) == created.key  # first look: loaded synchronously
    revoke_key(store, created.key.key_id, now=NOW)
    deadline = time.monotonic() + 5.0
    while ring.write_key(created.token) is not None:
        assert time.monotonic() < deadline, "the revoked key was never dropped"
        time.sleep(0.01)
    ring.reload()  # the keys API's immediate path still works
    assert ring.write_key(created.token) is None
    store.close()


def test_key_from_basic_and_bearer_headers() -> None:
    from starlette.requests import Request

    from funnelscope.api.auth import key_from_headers

    def request(header: str) -> Request:
        return Request({"type": "http", "headers": [(b"authorization", header.encode())]})

    basic = "Basic " + base64.b64encode(b"fsw_abc:").decode()
    assert [key_from_headers(request(basic)) for _ in range(2)] == ["fsw_abc", "fsw_abc"]
    assert key_from_headers(request("Bearer  fsw_x ")) == "fsw_x"
    assert key_from_headers(request("Basic not*base64")) is None
    assert key_from_headers(request("Digest x")) is None


def test_metrics_labels_are_cached_and_exposed_once() -> None:
    from prometheus_client import generate_latest

    from funnelscope.api.metrics import Metrics

    metrics = Metrics()
    assert metrics.requests.labels("/v1/batch", "200") is metrics.requests.labels(
        "/v1/batch", "200"
    )
    metrics.requests.labels("/v1/batch", "200").inc()
    metrics.requests.labels("/v1/batch", "200").inc(2)
    metrics.rejected.labels(family="segment", reason="event.bad_timestamp").inc()
    metrics.latency.labels("/v1/batch").observe(0.004)
    text = generate_latest(metrics.registry).decode()
    assert 'funnelscope_requests_total{route="/v1/batch",status="200"} 3.0' in text
    assert (
        'funnelscope_events_rejected_total{family="segment",reason="event.bad_timestamp"} 1.0'
        in text
    )
    assert 'funnelscope_request_duration_seconds_bucket{le="0.005",route="/v1/batch"} 1.0' in text
    assert 'funnelscope_request_duration_seconds_bucket{le="0.0025",route="/v1/batch"} 0.0' in text
