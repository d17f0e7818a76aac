"""The key ring's periodic reload: off the event loop, on one kept thread, revocations seen."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import funnelscope
from funnelscope.api.auth import KeyRing
from funnelscope.keys import create_key, revoke_key

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _keyring_threads() -> int:
    return sum(t.name.startswith("funnelscope-keyring") for t in threading.enumerate())


def test_background_reloads_see_a_revocation_and_reuse_one_thread(tmp_path: Path) -> None:
    ws = funnelscope.open(tmp_path / "store.duckdb")
    try:
        token = create_key(ws.store, "write", "web", now=NOW)
        before = _keyring_threads()
        ring = KeyRing(ws.store, refresh_seconds=0.05)
        key = ring.write_key(token.token)
        assert key is not None and key.source == "web"  # first look loads synchronously
        revoke_key(ws.store, key.key_id, now=NOW)
        # stale now: each look starts a reload in the background and answers from memory
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.06)
            found = ring.write_key(token.token)
            seen.append(found is not None)
            if found is None:
                break
        assert seen[-1] is False, "the revocation was never picked up"
        for _ in range(5):  # more reloads: still one worker thread for this ring
            time.sleep(0.06)
            assert ring.write_key(token.token) is None
        assert _keyring_threads() - before <= 1
    finally:
        ws.close()
