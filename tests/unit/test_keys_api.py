"""The keys API (api/keys.py) and admin keys (keys.py): managing keys while the server runs.

A real uvicorn server over a real DuckDB file. The key ring's periodic refresh is set to an
hour, so every "works at once" / "refused at once" below comes from the routes reloading the
ring, not from the refresh.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import funnelscope
from funnelscope.api import ApiSettings, create_app
from funnelscope.api.server import BackgroundServer
from funnelscope.errors import InvalidInputError
from funnelscope.keys import create_key, find_key, list_keys, revoke_key
from funnelscope.store.store import Store

NOW = datetime(2024, 5, 1, tzinfo=UTC)
TS = "2024-05-01T10:00:00Z"
NEVER_REFRESH = 3600.0


# -- admin keys in the keys module ---------------------------------------------------------------


def test_admin_key_is_a_hashed_read_key_with_its_own_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.duckdb")
    admin = create_key(store, "read", "ops", now=NOW, is_admin=True)
    plain = create_key(store, "read", "dash", now=NOW)
    assert admin.token.startswith("fsa_") and admin.key.prefix == admin.token[:12]
    assert admin.key.kind == "read" and admin.key.is_admin and not plain.key.is_admin
    row = store.query(
        "SELECT write_key, secret_hash FROM api_keys WHERE key_id = ?", [admin.key.key_id]
    )[0]
    assert row[0] is None and admin.token not in row[1]
    assert find_key(store, admin.token) == admin.key
    assert admin.to_dict()["is_admin"] is True and plain.key.to_dict()["is_admin"] is False


def test_write_key_cannot_be_admin(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        create_key(Store(tmp_path / "k.duckdb"), "write", "web", now=NOW, is_admin=True)
    assert [p.code for p in info.value.problems] == ["key.admin_needs_read"]


def test_last_admin_key_is_kept_only_when_asked(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.duckdb")
    first = create_key(store, "read", "ops", now=NOW, is_admin=True).key
    with pytest.raises(InvalidInputError) as info:
        revoke_key(store, first.key_id, now=NOW, keep_last_admin=True)
    assert info.value.code == "key.last_admin"
    second = create_key(store, "read", "ops2", now=NOW, is_admin=True).key
    assert not revoke_key(store, first.key_id, now=NOW, keep_last_admin=True).is_active
    # the offline CLI (keep_last_admin off) may revoke the last one: the store is at hand there
    assert not revoke_key(store, second.key_id, now=NOW).is_active


# -- the HTTP API ---------------------------------------------------------------------------------


class Shop:
    def __init__(self, tmp_path: Path) -> None:
        self.ws = funnelscope.open(tmp_path / "store.duckdb")
        self.admin = create_key(self.ws.store, "read", "ops", now=NOW, is_admin=True)
        self.read = create_key(self.ws.store, "read", "dashboard", now=NOW)
        self.write = create_key(self.ws.store, "write", "web", now=NOW)
        app = create_app(self.ws, ApiSettings(key_refresh_seconds=NEVER_REFRESH))
        self.server = BackgroundServer(app).start()
        self.http = httpx.Client(base_url=self.server.url, timeout=30)

    def as_(self, token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    def admin_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, headers=self.as_(self.admin.token), **kwargs)

    def send(self, token: str, message_id: str) -> httpx.Response:
        basic = base64.b64encode(f"{token}:".encode()).decode()
        body = {
            "batch": [
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "userId": "u1",
                    "messageId": message_id,
                    "timestamp": TS,
                }
            ]
        }
        return self.http.post("/v1/batch", json=body, headers={"authorization": f"Basic {basic}"})

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.ws.close()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = Shop(tmp_path)
    yield s
    s.close()


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        pytest.param(None, 401, "auth.missing_key", id="no-key"),
        pytest.param("write", 401, "auth.unknown_key", id="write-key"),
        pytest.param("read", 403, "auth.not_admin", id="plain-read-key"),
        pytest.param("admin", 200, None, id="admin-key"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", "/api/v1/keys", None, id="list"),
        pytest.param("POST", "/api/v1/keys", {"kind": "write", "source": "app"}, id="create"),
        pytest.param("DELETE", "/api/v1/keys/KEY", None, id="revoke"),
    ],
)
def test_only_admin_keys_manage_keys(
    shop: Shop,
    who: str | None,
    status: int,
    code: str | None,
    method: str,
    path: str,
    body: Any,
) -> None:
    token = {"write": shop.write.token, "read": shop.read.token, "admin": shop.admin.token}
    headers = shop.as_(token[who]) if who else {}
    path = path.replace("KEY", shop.write.key.key_id)
    r = shop.http.request(method, path, json=body, headers=headers)
    expected = 201 if (status == 200 and method == "POST") else status
    assert r.status_code == expected, r.text
    if code:
        assert r.json()["code"] == code
    # a refused call changed nothing: the write key still ingests
    if who != "admin":
        assert shop.send(shop.write.token, f"m-{who}-{method}").status_code == 200


def test_me_tells_any_read_key_what_it_may_do(shop: Shop) -> None:
    me = shop.http.get("/api/v1/keys/me", headers=shop.as_(shop.read.token)).json()
    assert (me["key_id"], me["is_admin"], me["can_manage_keys"]) == (
        shop.read.key.key_id,
        False,
        False,
    )
    me = shop.admin_call("GET", "/api/v1/keys/me").json()
    assert (me["kind"], me["is_admin"], me["can_manage_keys"]) == ("read", True, True)
    assert shop.http.get("/api/v1/keys/me", headers=shop.as_(shop.write.token)).status_code == 401


def test_list_never_holds_a_read_secret(shop: Shop) -> None:
    r = shop.admin_call("GET", "/api/v1/keys")
    assert r.status_code == 200
    assert shop.read.token not in r.text and shop.admin.token not in r.text
    by_id = {k["key_id"]: k for k in r.json()["keys"]}
    assert by_id[shop.write.key.key_id]["write_key"] == shop.write.token  # public: shown
    assert by_id[shop.read.key.key_id]["write_key"] is None
    assert by_id[shop.read.key.key_id]["prefix"] == shop.read.token[:12]
    assert [by_id[k.key_id]["is_admin"] for k in (shop.admin.key, shop.read.key)] == [True, False]


def test_write_key_created_and_revoked_live(shop: Shop) -> None:
    r = shop.admin_call("POST", "/api/v1/keys", json={"kind": "write", "source": "ios-app"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["token"].startswith("fsw_") and created["source"] == "ios-app"
    # the ring was reloaded: the new key ingests on the very next request
    assert shop.send(created["token"], "m1").status_code == 200
    assert shop.send(created["token"], "m2").status_code == 200
    r = shop.admin_call("DELETE", f"/api/v1/keys/{created['key_id']}")
    assert r.status_code == 200 and r.json()["key"]["is_active"] is False
    refused = shop.send(created["token"], "m3")
    assert (refused.status_code, refused.json()["code"]) == (401, "auth.unknown_key")
    # what was acknowledged before the revocation stays, once each; nothing after it. Polled:
    # an acknowledged event may reach the store after the answer (the collector's journal).
    deadline = time.monotonic() + 15
    while True:
        rows = shop.ws.store.query(
            "SELECT event_id FROM events WHERE source LIKE '%:ios-app' ORDER BY event_id"
        )
        if len(rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [r[0] for r in rows] == ["m1", "m2"]
    # the other write key was not touched
    assert shop.send(shop.write.token, "m4").status_code == 200


def test_read_key_created_is_shown_once_and_revoked_at_once(shop: Shop) -> None:
    created = shop.admin_call(
        "POST", "/api/v1/keys", json={"kind": "read", "source": "analyst"}
    ).json()
    assert created["token"].startswith("fsr_") and created["is_admin"] is False
    assert shop.http.get("/api/v1/live", headers=shop.as_(created["token"])).status_code == 200
    listed = shop.admin_call("GET", "/api/v1/keys").text
    assert created["token"] not in listed and created["key_id"] in listed
    shop.admin_call("DELETE", f"/api/v1/keys/{created['key_id']}")
    assert shop.http.get("/api/v1/live", headers=shop.as_(created["token"])).status_code == 401


@pytest.mark.parametrize(
    ("body", "codes"),
    [
        pytest.param({"kind": "root", "source": "x"}, ["key.unknown_kind"], id="kind"),
        pytest.param({"kind": "write", "source": ""}, ["key.bad_source"], id="empty-source"),
        pytest.param({"kind": "write", "source": "a b"}, ["key.bad_source"], id="space"),
        pytest.param(
            {"kind": "root", "source": "-x"}, ["key.unknown_kind", "key.bad_source"], id="both"
        ),
        pytest.param(
            {"kind": "write", "source": "w", "is_admin": True},
            ["key.admin_needs_read"],
            id="admin-write",
        ),
        pytest.param({"source": "w"}, ["missing"], id="no-kind"),
    ],
)
def test_create_rejects_bad_input_with_every_problem(
    shop: Shop, body: dict[str, Any], codes: list[str]
) -> None:
    r = shop.admin_call("POST", "/api/v1/keys", json=body)
    assert r.status_code == 422, r.text
    assert [d["type"] for d in r.json()["detail"]] == codes
    assert len(list_keys(shop.ws.store)) == 3  # nothing created


def test_revoke_unknown_and_last_admin(shop: Shop) -> None:
    r = shop.admin_call("DELETE", "/api/v1/keys/key_nope")
    assert (r.status_code, r.json()["detail"][0]["type"]) == (404, "key.not_found")
    r = shop.admin_call("DELETE", f"/api/v1/keys/{shop.admin.key.key_id}")
    assert (r.status_code, r.json()["detail"][0]["type"]) == (409, "key.last_admin")
    assert shop.admin_call("GET", "/api/v1/keys").status_code == 200  # still an admin
    second = shop.admin_call(
        "POST", "/api/v1/keys", json={"kind": "read", "source": "ops2", "is_admin": True}
    ).json()
    assert second["token"].startswith("fsa_")
    assert shop.admin_call("DELETE", f"/api/v1/keys/{shop.admin.key.key_id}").status_code == 200
    assert shop.admin_call("GET", "/api/v1/keys").status_code == 401  # revoked at once
    r = shop.http.get("/api/v1/keys", headers=shop.as_(second["token"]))
    assert r.status_code == 200 and len(r.json()["keys"]) == 4


def test_revoking_twice_keeps_the_first_time(shop: Shop) -> None:
    first = shop.admin_call("DELETE", f"/api/v1/keys/{shop.write.key.key_id}").json()["key"]
    again = shop.admin_call("DELETE", f"/api/v1/keys/{shop.write.key.key_id}").json()["key"]
    assert first["revoked_at"] == again["revoked_at"] is not None


def test_openapi_documents_the_keys_routes(shop: Shop) -> None:
    paths = shop.http.get("/openapi.json").json()["paths"]
    assert set(paths["/api/v1/keys"]) == {"get", "post"}
    assert set(paths["/api/v1/keys/{key_id}"]) == {"delete"}
    assert "get" in paths["/api/v1/keys/me"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/{key_id}"),
        ("GET", "/api/v1/keys/me"),
    ],
)
def test_schemathesis_finds_no_5xx(shop: Shop, method: str, path: str) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    operation = schemathesis.openapi.from_url(f"{shop.server.url}/openapi.json")[path][method]

    @settings(
        max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(headers=shop.as_(shop.admin.token), timeout=30)
        assert response.status_code < 500, response.text
        assert response.status_code in (200, 201, 404, 409, 422), response.text
        body = response.json()
        if response.status_code >= 400:
            assert all(d["type"] for d in body["detail"])  # every refusal has a code

    run()
    # whatever was created, the admin key still manages keys (the last admin is never revoked)
    assert shop.admin_call("GET", "/api/v1/keys").status_code == 200


def test_serve_demo_read_key_is_an_admin_key(tmp_path: Path) -> None:
    from funnelscope.cli.serve import _demo_keys

    with funnelscope.open(tmp_path / "demo.duckdb") as ws:
        _, read = _demo_keys(ws)
        key = find_key(ws.store, read)
        assert key is not None and key.is_admin and read.startswith("fsa_")


def test_cli_creates_an_admin_key_on_the_store(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from funnelscope.cli.main import app as cli

    store = str(tmp_path / "cli.duckdb")
    runner = CliRunner()
    out = runner.invoke(
        cli,
        [
            "keys",
            "create",
            "--kind",
            "read",
            "--admin",
            "--source",
            "ops",
            "--store",
            store,
            "-f",
            "json",
        ],
    )
    assert out.exit_code == 0, out.output
    created = json.loads(out.output)
    assert created["token"].startswith("fsa_") and created["is_admin"] is True
    table = runner.invoke(cli, ["keys", "list", "--store", store]).output
    assert "admin" in table and created["token"] not in table
