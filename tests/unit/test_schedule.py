"""The serve schedule: due jobs run with the current time; a failing job does not stop others."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from funnelscope.api.schedule import Job, Scheduler, default_jobs
from funnelscope.workspace import Workspace


def test_jobs_run_repeatedly_and_failures_are_contained() -> None:
    seen: list[datetime] = []

    def ok(now: datetime) -> None:
        seen.append(now)

    def broken(now: datetime) -> None:
        raise RuntimeError("receiver down")

    good, bad = Job("ok", 0.05, ok), Job("broken", 0.05, broken)
    scheduler = Scheduler([bad, good], tick_seconds=0.01)
    before = datetime.now(UTC)
    scheduler.start()
    deadline = time.monotonic() + 10
    while good.runs < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    scheduler.stop()
    assert good.runs >= 3 and good.failures == 0
    assert bad.failures == bad.runs >= 3
    assert bad.last_error == "RuntimeError: receiver down"
    assert all(t >= before and t.tzinfo is UTC for t in seen)
    runs = good.runs
    time.sleep(0.2)
    assert good.runs == runs  # stopped means stopped


def test_default_jobs_run_on_a_real_store(workspace: Workspace) -> None:
    jobs = default_jobs(workspace, webhooks_seconds=1, segments_seconds=2, goals_seconds=3)
    assert [(j.name, j.every_seconds) for j in jobs] == [
        ("webhooks", 1),
        ("segments", 2),
        ("goals", 3),
    ]
    now = datetime(2024, 7, 1, tzinfo=UTC)
    for job in jobs:  # on an empty store each job has nothing to do, and says so by not failing
        job.run(now)
