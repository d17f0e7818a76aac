"""Running the app on uvicorn: in the foreground (``funnelscope serve``), in a background
thread (notebooks, tests and benchmarks that want a real server on a free port), or as a child
process (:func:`start_serve_process`: a server that holds the store, or that may be killed).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

__all__ = ["BackgroundServer", "free_port", "serve", "start_serve_process"]


def _config(app: Any, *, log_level: str, **kwargs: Any) -> uvicorn.Config:
    # one worker: DuckDB allows one writing process, and the journal's loader batches for it
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        **kwargs,
    )


def serve(app: Any, *, host: str, port: int, log_level: str = "info") -> None:
    """Run ``app`` until interrupted (SIGINT/SIGTERM: queued events are committed first)."""
    uvicorn.Server(_config(app, host=host, port=port, log_level=log_level)).run()


class BackgroundServer:
    """``app`` served by uvicorn in a thread, on ``host`` and a free port.

    Examples
    --------
    >>> import funnelscope, httpx
    >>> from funnelscope.api import ApiSettings, create_app
    >>> app = create_app(funnelscope.open(":memory:"), ApiSettings(require_auth=False))
    >>> with BackgroundServer(app) as server:
    ...     httpx.get(server.url + "/healthz").json()
    {'status': 'ok'}
    """

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_config(app, log_level=log_level))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="funnelscope-server",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_serve_process(
    store: Path, port: int, *options: str, log: Path | None = None, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """``funnelscope serve --store STORE --port PORT [OPTIONS]`` as a child process, returned
    once ``/readyz`` answers 200 (a journal left by a crash is replayed by then).

    Its output goes to ``log`` (appended) or is discarded. Raises RuntimeError, with the log,
    when the process exits or is not ready within ``timeout`` seconds (it is killed then).
    """
    command = [sys.executable, "-c", "from funnelscope.cli.main import main; main()", "serve"]
    command += ["--store", str(store), "--port", str(port), "--log-level", "warning", *options]
    if log is None:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    else:
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    shown = log.read_text(errors="replace")[-4000:] if log is not None else "(no log kept)"
    raise RuntimeError(f"funnelscope serve did not become ready on port {port}:\n{shown}")
