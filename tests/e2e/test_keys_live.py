"""Managing keys while the collector runs: the CLI against a real `funnelscope serve` process
(which holds the store file), and the dashboard's Keys page in a real Chromium.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import funnelscope
from funnelscope.api import ApiSettings, create_app
from funnelscope.api.server import BackgroundServer, free_port, start_serve_process
from funnelscope.cli.main import main
from funnelscope.keys import create_key
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, needs_chromium

pytestmark = pytest.mark.e2e

NOW = datetime(2024, 5, 1, tzinfo=UTC)
TS = "2024-05-01T10:00:00Z"


def _send(url: str, token: str, message_id: str) -> int:
    body = {
        "batch": [
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u1",
                "messageId": message_id,
                "timestamp": TS,
            }
        ]
    }
    return httpx.post(f"{url}/v1/batch", json=body, auth=(token, ""), timeout=30).status_code


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real entry point (error mapping included) and return (exit code, out, err)."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """`funnelscope serve` in its own process, holding the store; (store, url, admin key)."""
    folder = tmp_path_factory.mktemp("keys-live")
    store = folder / "shop.duckdb"
    # the bootstrap a user does once, with the server stopped
    with funnelscope.open(store) as ws:
        admin = create_key(ws.store, "read", "ops", now=NOW, is_admin=True).token
    port = free_port()
    options = ("--webhooks-every", "0", "--segments-every", "0", "--goals-every", "0")
    proc = start_serve_process(store, port, *options, log=folder / "serve.log")
    try:
        yield store, f"http://127.0.0.1:{port}", admin
    finally:
        proc.terminate()
        proc.wait(30)


def test_cli_on_a_held_store_says_how_to_go_through_the_server(
    served: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, _ = served
    code, out, err = _cli(capsys, "keys", "list", "--store", str(store))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "held by a running process" in err and "--server" in err


def test_cli_through_the_server_creates_and_revokes_a_write_key(
    served: tuple[Path, str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url, admin = served
    code, out, err = _cli(
        capsys,
        "keys",
        "create",
        "--kind",
        "write",
        "--source",
        "pos",
        "--server",
        url,
        "--key",
        admin,
        "-f",
        "json",
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["token"].startswith("fsw_") and created["source"] == "pos"
    assert _send(url, created["token"], "pos-1") == 200

    # the key may come from the environment instead of the command line
    monkeypatch.setenv("FUNNELSCOPE_ADMIN_KEY", admin)
    code, out, err = _cli(capsys, "keys", "list", "--server", url, "-f", "json")
    assert code == 0, err
    listed = {k["key_id"]: k for k in json.loads(out)}
    assert listed[created["key_id"]]["is_active"] is True
    assert admin not in out  # an admin key's secret is never listed

    code, out, err = _cli(capsys, "keys", "revoke", created["key_id"], "--server", url)
    assert code == 0, err
    assert f"revoked write key {created['key_id']} (pos)" in out
    started = time.monotonic()
    assert _send(url, created["token"], "pos-2") == 401
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        pytest.param(["keys", "list"], 2, "--server needs an admin key", id="no-key"),
        pytest.param(["keys", "list", "--key", "fsr_wrong"], 2, "auth.unknown_key", id="bad-key"),
        pytest.param(
            ["keys", "revoke", "key_nope", "--key", "ADMIN"], 2, "key.not_found", id="unknown-id"
        ),
        pytest.param(
            ["keys", "create", "--kind", "root", "--source", "x", "--key", "ADMIN"],
            2,
            "key.unknown_kind",
            id="bad-kind",
        ),
    ],
)
def test_cli_through_the_server_bad_input(
    served: tuple[Path, str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    says: str,
) -> None:
    _, url, admin = served
    monkeypatch.delenv("FUNNELSCOPE_ADMIN_KEY", raising=False)
    got, out, err = _cli(capsys, *[admin if a == "ADMIN" else a for a in args], "--server", url)
    assert (got, out) == (code, "")
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_unreachable_server_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, _, err = _cli(capsys, "keys", "list", "--server", url, "--key", "fsa_x")
    assert code == 1 and "cannot reach the funnelscope server" in err


# -- the Keys page in Chromium -------------------------------------------------------------------

KEY_STORAGE = "funnelscope.read_key"


@dataclass
class Live:
    url: str
    admin: str
    read: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    ws = funnelscope.open(tmp_path_factory.mktemp("keys-page") / "shop.duckdb")
    admin = create_key(ws.store, "read", "ops", now=NOW, is_admin=True).token
    read = create_key(ws.store, "read", "dashboard", now=NOW).token
    settings = ApiSettings(key_refresh_seconds=3600.0, overview_warm_seconds=0.0)
    with BackgroundServer(create_app(ws, settings)) as server:
        yield Live(server.url, admin, read)
    ws.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _page(browser: Any, key: str) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(key)})")
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
    return context, page, problems


@needs_chromium
def test_keys_page_creates_and_revokes_a_write_key(browser: Any, live: Live) -> None:
    context, page, problems = _page(browser, live.admin)
    page.goto(live.url + "/keys")
    page.wait_for_selector("main[data-ready=true]", timeout=60_000)
    assert "admin key fsa_" in page.inner_text("[data-testid=key-me]")
    page.select_option("[data-testid=key-kind]", "write")
    page.fill("[data-testid=key-source]", "android-app")
    page.click("[data-testid=key-create]")
    page.wait_for_selector("[data-testid=key-created]")
    token = page.inner_text("[data-testid=key-created-token]").strip()
    key_id = page.get_attribute("[data-testid=key-created]", "data-value")
    assert token.startswith("fsw_") and key_id
    page.wait_for_selector(f"[data-testid=key-row-{key_id}]")
    assert page.inner_text(f"[data-testid=key-source-{key_id}]") == "android-app"
    assert _send(live.url, token, "android-1") == 200

    revoke = f"[data-testid=key-revoke-{key_id}]"
    page.click(revoke)
    assert page.inner_text(revoke) == "Click again to revoke"  # one click does nothing yet
    assert _send(live.url, token, "android-2") == 200
    page.click(revoke)
    # polled from Python: the page's CSP forbids the eval behind page.wait_for_function
    deadline = time.monotonic() + 10
    while "revoked" not in page.inner_text(f"[data-testid=key-status-{key_id}]"):
        assert time.monotonic() < deadline, "the row never showed the revocation"
        time.sleep(0.05)
    assert _send(live.url, token, "android-3") == 401
    assert problems == [], problems
    context.close()


@needs_chromium
def test_keys_page_with_a_plain_read_key_explains_instead_of_failing(
    browser: Any, live: Live
) -> None:
    context, page, problems = _page(browser, live.read)
    page.goto(live.url + "/keys")
    page.wait_for_selector("main[data-ready=true]", timeout=60_000)
    assert "needs an admin key" in page.inner_text("[data-testid=state-empty]")
    assert not page.is_visible("[data-testid=key-form]")
    assert not page.is_visible("dialog#login")  # still signed in: the key reads fine
    assert problems == [], problems  # no 403 was provoked
    context.close()
