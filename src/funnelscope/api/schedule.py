"""Jobs ``serve`` runs on a schedule: webhook delivery, segment refresh, goal evaluation.

One daemon thread runs each due job in turn, with ``now`` read from the clock here (the server
is an edge; library code takes ``now`` as an argument). A failing job is logged and retried at
its next turn: it never stops the server or the other jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Job", "Scheduler", "default_jobs"]

log = logging.getLogger("funnelscope.schedule")


@dataclass
class Job:
    """``run(now)`` every ``every_seconds``; the first run is ``every_seconds`` after start."""

    name: str
    every_seconds: float
    run: Callable[[datetime], Any]
    runs: int = 0
    failures: int = 0
    last_error: str | None = None
    _due: float = field(default=0.0, repr=False)


class Scheduler:
    """Runs jobs on a daemon thread until :meth:`stop`."""

    def __init__(self, jobs: list[Job], *, tick_seconds: float = 0.25) -> None:
        self.jobs = jobs
        self._tick = tick_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        started = time.monotonic()
        for job in self.jobs:
            job._due = started + job.every_seconds
        self._thread = threading.Thread(target=self._loop, name="funnelscope-schedule", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self._tick):
            for job in self.jobs:
                if self._stop.is_set() or time.monotonic() < job._due:
                    continue
                try:
                    job.run(datetime.now(UTC))
                    job.last_error = None
                except Exception as exc:  # a job's failure must not end the schedule
                    job.failures += 1
                    job.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("scheduled job %s failed: %s", job.name, job.last_error)
                job.runs += 1
                job._due = time.monotonic() + job.every_seconds


def default_jobs(
    workspace: Any,
    *,
    webhooks_seconds: float = 60.0,
    segments_seconds: float = 900.0,
    goals_seconds: float = 900.0,
) -> list[Job]:
    """The jobs of ``serve``: deliver queued webhooks, refresh segments, evaluate goals."""
    import httpx

    from funnelscope.analysis.goals import evaluate_goals
    from funnelscope.analysis.segments import refresh_all
    from funnelscope.webhooks import deliver_pending

    client = httpx.Client(timeout=10.0)

    def deliver(now: datetime) -> None:
        deliver_pending(workspace.store, now, client)

    def goals(now: datetime) -> None:
        evaluate_goals(workspace, now)
        deliver(now)  # status-change webhooks go out at once, not a minute later

    def segments(now: datetime) -> None:
        refresh_all(workspace, now)
        deliver(now)

    return [
        Job("webhooks", webhooks_seconds, deliver),
        Job("segments", segments_seconds, segments),
        Job("goals", goals_seconds, goals),
    ]
