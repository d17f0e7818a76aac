"""Group commit: one writer thread commits the events of many concurrent requests at once.

A request's events are mapped to staging rows in the event loop and handed to
:meth:`GroupWriter.submit`; the request then waits until the writer thread has *committed* them
(one :func:`~funnelscope.ingest.pipeline.append_events` transaction for everything queued since
the previous commit) and only then answers. So an acknowledged event is durable, and under load
a commit carries thousands of events instead of a hundred: the per-transaction cost is paid once
per group, not once per request.

The queue is bounded in events (``max_queue_events``): when a request would overflow it, it is
refused at once (the route answers 503 + Retry-After) instead of growing memory. A request that
waits longer than its timeout also gets 503; its events may still commit, and the SDK's retry is
then deduplicated by event id.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import pyarrow as pa

from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.pipeline import IngestReport, Rejection, append_events
from funnelscope.store.store import Store

__all__ = ["BatchOutcome", "GroupWriter", "QueueFullError"]

log = logging.getLogger("funnelscope.api.writer")

#: Quarantine rows written by the collector carry this source (each event row keeps its own).
QUARANTINE_SOURCE: Final = "collector"


class QueueFullError(Exception):
    """The writer's queue cannot take this batch now: answer 503 and let the SDK retry."""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What happened to one request's events: how many were accepted, which were rejected."""

    events: int
    rejected: tuple[Rejection, ...]

    @property
    def accepted(self) -> int:
        return self.events - len(self.rejected)


@dataclass(slots=True)
class _Job:
    rows: list[dict[str, str | None]]
    indices: list[int]
    rejected: list[Rejection]
    size: int
    done: Callable[[BatchOutcome | BaseException], None]
    base: int = 0
    outcome_rejections: list[Rejection] = field(default_factory=list)


class GroupWriter:
    """The single writer thread of an app, with its bounded queue.

    Parameters
    ----------
    store
        The store to append to.
    max_queue_events
        Events that may wait; a batch that would exceed it is refused (QueueFullError).
    max_group_events
        Most events committed in one transaction.
    on_commit
        Called after each commit with (events, seconds), for metrics.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_queue_events: int,
        max_group_events: int,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self._store = store
        self.max_queue_events = max_queue_events
        self.max_group_events = max_group_events
        self._on_commit = on_commit
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._last_received: datetime | None = None
        self._thread = threading.Thread(target=self._run, name="funnelscope-writer", daemon=True)
        self.commits = 0
        self.last_error: BaseException | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    @property
    def queued_events(self) -> int:
        return self._queued

    # -- producers ------------------------------------------------------------------------------
    def has_room(self, size: int) -> bool:
        """Whether ``size`` more events would fit now (checked again, atomically, on submit)."""
        return not self._queued or self._queued + size <= self.max_queue_events

    def submit(
        self,
        rows: list[dict[str, str | None]],
        indices: list[int],
        rejected: list[Rejection],
        size: int,
        done: Callable[[BatchOutcome | BaseException], None],
    ) -> None:
        """Queue one request's rows (``indices[i]`` = position of ``rows[i]`` in the request)."""
        job = _Job(rows, indices, rejected, size, done)
        with self._cond:
            if self._stopping:
                raise QueueFullError("the server is shutting down")
            if self._queued and self._queued + size > self.max_queue_events:
                raise QueueFullError(f"{self._queued} events are waiting to be written")
            self._jobs.append(job)
            self._queued += size
            self._cond.notify()

    async def write(
        self,
        rows: list[dict[str, str | None]],
        indices: list[int],
        rejected: list[Rejection],
        size: int,
        *,
        timeout: float,
    ) -> BatchOutcome:
        """Queue the rows, wait for their commit (raises QueueFullError or TimeoutError)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchOutcome] = loop.create_future()

        def done(result: BatchOutcome | BaseException) -> None:
            def settle() -> None:
                if future.done():
                    return
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

            loop.call_soon_threadsafe(settle)

        # a request that timed out no longer awaits its future: retrieve a late error quietly
        future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self.submit(rows, indices, rejected, size, done)
        return await asyncio.wait_for(asyncio.shield(future), timeout)

    # -- the writer thread ----------------------------------------------------------------------
    def _take(self) -> list[_Job]:
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            group: list[_Job] = []
            events = 0
            while self._jobs and (
                not group or events + self._jobs[0].size <= self.max_group_events
            ):
                job = self._jobs.popleft()
                group.append(job)
                events += job.size
            return group

    def _release(self, group: list[_Job]) -> None:
        with self._cond:
            self._queued -= sum(j.size for j in group)

    def _run(self) -> None:
        while True:
            group = self._take()
            if not group:
                return  # stopping and drained
            started = time.perf_counter()
            try:
                outcomes = self._commit(group)
            except BaseException as exc:  # every waiter must hear about it
                log.exception("group commit failed", extra={"jobs": len(group)})
                self.last_error = exc
                self._release(group)
                for job in group:
                    job.done(exc)
                continue
            self._release(group)
            self.commits += 1
            self.last_error = None
            events = sum(j.size for j in group)
            if self._on_commit is not None:
                self._on_commit(events, time.perf_counter() - started)
            for job, outcome in zip(group, outcomes, strict=True):
                job.done(outcome)

    def _received_at(self) -> datetime:
        # unique per commit, so a commit's quarantine rows can be found again by this time
        now = datetime.now(UTC)
        if self._last_received is not None and now <= self._last_received:
            now = self._last_received + timedelta(microseconds=1)
        self._last_received = now
        return now

    def _commit(self, group: list[_Job]) -> list[BatchOutcome]:
        rows: list[dict[str, str | None]] = []
        row_ids: list[int] = []
        pre_rejected: list[Rejection] = []
        base = 0
        for job in group:
            job.base = base
            rows.extend(job.rows)
            row_ids.extend([base + i for i in job.indices])
            pre_rejected.extend(
                Rejection(base + r.row, r.code, r.message, r.payload) for r in job.rejected
            )
            base += job.size
        # column by column: one comprehension per column beats one loop per row
        columns = {c: [row.get(c) for row in rows] for c in STAGING_COLUMNS}
        # columns no event of the group uses are left out: the pipeline then types them as
        # NULL without validating them, which makes a commit of a few hundred events ~3x faster
        used = [c for c in STAGING_COLUMNS if columns[c].count(None) != len(rows)]
        arrays = [pa.array(columns[c], pa.string()) for c in used]
        arrays.append(pa.array(row_ids, pa.int64()))
        table = pa.Table.from_arrays(arrays, names=[*used, "_row"])
        received_at = self._received_at()
        report = append_events(
            self._store,
            table,
            source=QUARANTINE_SOURCE,
            received_at=received_at,
            pre_rejected=pre_rejected,
        )
        rejections = self._all_rejections(report, received_at)
        bases = [j.base for j in group]
        for rejection in rejections:
            job = group[bisect.bisect_right(bases, rejection.row) - 1]
            job.outcome_rejections.append(
                Rejection(rejection.row - job.base, rejection.code, rejection.message)
            )
        return [
            BatchOutcome(j.size, tuple(sorted(j.outcome_rejections, key=lambda r: r.row)))
            for j in group
        ]

    def _all_rejections(self, report: IngestReport, received_at: datetime) -> list[Rejection]:
        if report.rejected <= len(report.rejections):
            return report.rejections
        # the report keeps the first rejections only; the quarantine has all of this commit's
        rows = self._store.query(
            "SELECT row_number, reason_code, message FROM quarantine "
            "WHERE quarantined_at = ? AND source = ? ORDER BY row_number",
            [received_at, QUARANTINE_SOURCE],
        )
        return [Rejection(int(r[0]), str(r[1]), str(r[2])) for r in rows]
