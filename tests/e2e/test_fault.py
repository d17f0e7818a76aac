"""Durability under kill -9: a load generator keeps sending (retrying like an SDK) while the
server process is SIGKILLed and restarted three times. Afterwards every acknowledged event is in
the store exactly once.

An acknowledgement means "fsynced to the journal"; the store is loaded from it in the background.
So each kill leaves acknowledged events that are only in the journal, and each restart has to
replay it before it answers ready (the server log says so, which the test checks).

The load generator is this file run as a module (``python -m tests.e2e.test_fault loadgen ...``): a
separate process, so the kills cannot touch it.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from funnelscope.api.server import free_port, start_serve_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BATCH = 50
KILLS = 3


def loadgen(port: int, key: str, acked_path: Path, stop_path: Path) -> None:
    """Send batches of BATCH events until ``stop_path`` exists; retry each until it is 200.

    Each acknowledged batch number is appended (and flushed) to ``acked_path`` right after its
    200, as an SDK would drop it from its queue.
    """
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    number = 0
    with acked_path.open("a") as acked:
        while not stop_path.exists():
            number += 1
            ts = datetime.now(UTC).isoformat()
            body = json.dumps(
                {
                    "batch": [
                        {
                            "type": "track",
                            "event": "Product Viewed",
                            "userId": f"u{i % 7}",
                            "messageId": f"b{number}-{i}",
                            "timestamp": ts,
                        }
                        for i in range(BATCH)
                    ]
                }
            )
            while True:  # retry the same batch (same ids) until acknowledged
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request(
                        "POST",
                        "/v1/batch",
                        body=body,
                        headers={"content-type": "application/json", "authorization": auth},
                    )
                    status = conn.getresponse().status
                    conn.close()
                except OSError:
                    status = 0
                if status == 200:
                    acked.write(f"{number}\n")
                    acked.flush()
                    break
                time.sleep(0.05)


def test_kill_9_loses_no_acknowledged_event(tmp_path: Path) -> None:
    import funnelscope
    from funnelscope.keys import create_key

    store = tmp_path / "store.duckdb"
    with funnelscope.open(store) as ws:
        key = create_key(ws.store, "write", "load", now=datetime.now(UTC)).token
    port = free_port()
    acked_path, stop_path, log = tmp_path / "acked.txt", tmp_path / "stop", tmp_path / "srv.log"
    server = start_serve_process(store, port, log=log)
    paths = (str(acked_path), str(stop_path))
    generator = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.test_fault", "loadgen", str(port), key, *paths],
        cwd=Path(__file__).parents[2],  # the repository root, where `tests` is a package
    )
    try:
        for _ in range(KILLS):
            time.sleep(1.5)
            os.kill(server.pid, signal.SIGKILL)  # no shutdown, no checkpoint
            server.wait()
            time.sleep(0.3)  # the generator sees refused connections and retries
            server = start_serve_process(store, port, log=log)
        time.sleep(1.0)
        stop_path.touch()
        assert generator.wait(timeout=60) == 0
    finally:
        if generator.poll() is None:
            generator.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    replays = log.read_text().count("replaying the journal")
    assert replays >= 1, "no kill left a journal to replay: the test did not test the replay"
    assert not list((tmp_path / "store.duckdb.journal").iterdir()), "shutdown leaves no journal"
    acked = [int(n) for n in acked_path.read_text().split()]
    assert len(acked) > 10, "the load generator barely ran"
    with funnelscope.open(store, read_only=True) as ws:
        rows = ws.store.query("SELECT event_id, count(*) FROM events GROUP BY 1")
    counts = dict(rows)
    assert all(n == 1 for n in counts.values()), "an event is stored twice"
    missing = [f"b{b}-{i}" for b in acked for i in range(BATCH) if f"b{b}-{i}" not in counts]
    assert missing == [], f"{len(missing)} acknowledged events are missing"
    # anything stored beyond the acknowledged batches is the in-flight batch of a kill
    assert len(counts) <= (max(acked) + 1) * BATCH


if __name__ == "__main__" and sys.argv[1:2] == ["loadgen"]:
    loadgen(int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]))
