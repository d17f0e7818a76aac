"""`funnelscope serve` as its own process, for the end-to-end tests that need one (a server
that holds the store, or one killed with SIGKILL)."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    store: Path, port: int, log: Path, *options: str, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """Start ``funnelscope serve`` (its output appended to ``log``) and wait for ``/readyz``."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from funnelscope.cli.main import main; main()",
            "serve",
            "--store",
            str(store),
            "--port",
            str(port),
            "--log-level",
            "warning",
            *options,
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not become ready:\n" + log.read_text())
