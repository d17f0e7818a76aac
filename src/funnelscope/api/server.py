"""Running the app on uvicorn: in the foreground (``funnelscope serve``), in a background
thread (notebooks, tests and benchmarks that want a real server on a free port), or as a child
process (:func:`start_serve_process`: a server that holds the store, or that may be killed).
"""

from __future__ import annotations

import gc
import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import uvicorn

__all__ = [
    "BackgroundServer",
    "free_port",
    "serve",
    "start_serve_process",
    "tune_gc_for_serving",
]


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


#: CPython's young-generation threshold while serving (its default is 700).
SERVING_GC_THRESHOLD: Final = 20_000


def tune_gc_for_serving(threshold0: int = SERVING_GC_THRESHOLD) -> Callable[[], None]:
    """Keep CPython's cyclic garbage collector off the request path; returns the undo.

    A 100-event request allocates thousands of containers (the parsed JSON, the mapped
    values), acyclic and freed by reference counting. With the default thresholds they still
    trigger a young collection every 700 net allocations, the in-flight requests' objects get
    promoted, and about once a second under load a full collection walks the whole heap (the
    app and its libraries, ~150,000 objects): ~80-110 ms with the GIL held, every thread
    stalled. Measured on the Segment benchmark: 11 full collections in 12 s, 1.2 s in all.
    This collects once, freezes the startup heap (``gc.freeze``: it lives as long as the
    process and is never scanned again) and raises the young threshold, which counts
    allocations minus deallocations, so what reference counting frees does not add up, and
    cycles are still collected. Call it once the app is built; call the undo at shutdown (it
    unfreezes, so the interpreter's exit can free the heap, and restores the thresholds).

    Examples
    --------
    >>> import gc
    >>> undo = tune_gc_for_serving()
    >>> gc.get_threshold()[0], gc.get_freeze_count() > 0
    (20000, True)
    >>> undo()
    >>> gc.get_freeze_count()
    0
    """
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold0, before[1], before[2])

    def undo() -> None:
        gc.unfreeze()
        gc.set_threshold(*before)

    return undo


def serve(app: Any, *, host: str, port: int, log_level: str = "info") -> None:
    """Run ``app`` until interrupted (SIGINT/SIGTERM: queued events are committed first)."""
    undo_gc = tune_gc_for_serving()
    try:
        uvicorn.Server(_config(app, host=host, port=port, log_level=log_level)).run()
    finally:
        undo_gc()


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
