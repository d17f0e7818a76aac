"""`start_serve_process`: `funnelscope serve` as a child process, for tests, benchmarks and
scripts that need a server holding the store (or one they can kill)."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

import funnelscope
from funnelscope.api.server import free_port, start_serve_process
from funnelscope.errors import StoreError


def test_the_process_is_ready_when_returned(tmp_path: Path) -> None:
    port, store = free_port(), tmp_path / "shop.duckdb"
    proc = start_serve_process(store, port, log=tmp_path / "serve.log")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/readyz")
        assert conn.getresponse().status == 200
        with pytest.raises(StoreError, match="another funnelscope process"):
            funnelscope.open(store)  # the server holds the store
    finally:
        proc.terminate()  # graceful: uvicorn re-raises SIGTERM once shut down
        proc.wait(30)
    with funnelscope.open(store) as ws:  # released on shutdown
        assert ws.store.query("SELECT count(*) FROM events") == [(0,)]


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-file.duckdb"
    folder.mkdir()  # a folder where the store should be: serve exits with an error
    with pytest.raises(RuntimeError, match="did not become ready") as failure:
        start_serve_process(folder, free_port(), log=tmp_path / "serve.log", timeout=30)
    assert "not-a-file.duckdb" in str(failure.value)  # the server's own message is shown
