"""Running the app on uvicorn: in the foreground (``funnelscope serve``) or in a background
thread (notebooks, tests and benchmarks that want a real server on a free port).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

__all__ = ["BackgroundServer", "serve"]


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


#: How long a thread may hold the GIL before another waiting thread gets it. The ack and loader
#: threads release the GIL inside every DuckDB statement and must win it back from the event loop
#: after each one; at CPython's default (5 ms) those hand-offs made a commit 3x slower under load.
#: Measured with benchmarks/collector.py --quick (before the journal): ~+24% sustained events/s
#: and half the latency.
GIL_SWITCH_INTERVAL_S = 0.0005


def serve(app: Any, *, host: str, port: int, log_level: str = "info") -> None:
    """Run ``app`` until interrupted (SIGINT/SIGTERM: queued events are committed first)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # this process is the server: set it here
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
