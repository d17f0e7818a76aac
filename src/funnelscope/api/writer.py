"""The ack stage: requests are answered once their events are fsynced to the journal.

A request's events are mapped to staging rows in the event loop (tuples of values in
``STAGING_COLUMNS`` order) and handed to :meth:`GroupWriter.submit_values`. One thread takes
everything queued (group commit), turns the group's rows into columns (one transposition) and
its Arrow arrays, finds the exact rejections by running the ingest pipeline's own validation
SQL (:func:`~funnelscope.ingest.pipeline._validation_sql`) on an in-memory DuckDB connection (no
store, no transaction: a few milliseconds) over the rows that
:func:`~funnelscope.ingest.fastcheck.prove_valid` cannot prove valid (usually none), appends
the group to the journal as one record batch (flushed and fsynced) and then answers every
request of the group with its accepted count and its rejected indices. The
:class:`~funnelscope.api.journal.JournalLoader` loads the journal into the store in the
background, a few times a second (see :mod:`funnelscope.api.journal`).

The loader validates with the same SQL and a later reference time, so a row the ack accepted is
accepted by the store too (the only time-dependent check, "not more than a day in the future",
only gets looser), and a row the ack rejected is quarantined with the ack's code and message.

Backpressure, two bounds: the in-memory queue (``max_queue_events``: a request that would
overflow it is refused at once, 503 + Retry-After) and the journal's backlog of events not yet
loaded (``JournalSettings.max_backlog_events``: refused the same way when the store falls
behind). While the journal left by a crash is replayed at startup, requests are refused too.
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

import duckdb
import pyarrow as pa

from funnelscope.api.journal import (
    JOURNAL_SCHEMA,
    QUARANTINE_SOURCE,
    Journal,
    JournalLoader,
    JournalSettings,
)
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.fastcheck import prove_valid
from funnelscope.ingest.pipeline import Rejection, _event_names, _validation_sql
from funnelscope.ingest.records import StagingValues
from funnelscope.store.store import Store

__all__ = [
    "QUARANTINE_SOURCE",
    "BatchOutcome",
    "GroupWriter",
    "QueueFullError",
    "Verdict",
    "validate_staging",
]

log = logging.getLogger("funnelscope.api.writer")

#: How often the ack stage's currency (the default for revenue rows) is re-read from the store.
_CURRENCY_REFRESH_SECONDS: Final = 5.0


class QueueFullError(Exception):
    """The collector cannot take this batch now: answer 503 and let the SDK retry."""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What happened to one request's events: how many were accepted, which were rejected."""

    events: int
    rejected: tuple[Rejection, ...]

    @property
    def accepted(self) -> int:
        return self.events - len(self.rejected)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One row the validation rejects: its ``_row``, reason code, message and payload."""

    row: int
    code: str
    message: str
    payload: bytes


def validate_staging(
    con: duckdb.DuckDBPyConnection, staging: pa.Table, *, received_at: datetime, currency: str
) -> list[Verdict]:
    """The rows of ``staging`` (staging columns + ``_row``) the ingest pipeline would reject.

    Runs the pipeline's own validation SQL on ``con`` (an in-memory connection will do: the
    checks read only the batch), with the quarantine's payload (the staged row as JSON).

    Examples
    --------
    >>> import duckdb, pyarrow as pa
    >>> from datetime import UTC, datetime
    >>> rows = pa.table({"event_id": ["e1", None], "event": ["Order Completed"] * 2,
    ...                  "user_id": ["u1", "u2"], "timestamp": ["2024-05-01T10:00:00Z"] * 2,
    ...                  "_row": [0, 1]})
    >>> [(v.row, v.code) for v in validate_staging(
    ...     duckdb.connect(), rows, received_at=datetime(2024, 5, 1, tzinfo=UTC), currency="EUR")]
    [(1, 'event.missing_id')]
    """
    con.register("stg", staging)
    con.register("_evmap", _event_names(con, staging))
    try:
        sql = _validation_sql(staging.schema, currency).replace("$received_at", "$1")
        # every row's verdict, filtered here: a WHERE on the reason would be pushed down into
        # the checks and cost ~3x more per row than computing the verdict once. execute() plans
        # once; a relation (con.sql) would bind the query twice, doubling the fixed cost
        checked = con.execute(
            f"SELECT _row, _reason, _message FROM ({sql})", [received_at]
        ).fetchall()
        rejected = [r for r in checked if r[1] is not None]
        if not rejected:
            return []
        con.register(
            "_rejected",
            pa.table(
                {
                    "_row": pa.array([r[0] for r in rejected], pa.int64()),
                    "_reason": pa.array([r[1] for r in rejected], pa.string()),
                    "_message": pa.array([r[2] for r in rejected], pa.string()),
                }
            ),
        )
        rows = con.execute(
            "SELECT v._row, v._reason, v._message, encode(CAST(to_json(s) AS VARCHAR)) "
            "FROM _rejected v JOIN stg s USING (_row) ORDER BY 1"
        ).fetchall()
        con.unregister("_rejected")
    finally:
        con.unregister("stg")
        con.unregister("_evmap")
    return [Verdict(int(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]


_SOURCE: Final = STAGING_COLUMNS.index("source")


def _values(rows: list[dict[str, str | None]]) -> list[StagingValues]:
    """Dict rows (any key order, keys may be missing) as values in STAGING_COLUMNS order."""
    return [tuple([row.get(c) for c in STAGING_COLUMNS]) for row in rows]


def _settle(future: asyncio.Future[BatchOutcome], result: BatchOutcome | BaseException) -> None:
    """On the event loop: the ack thread's outcome (ignored when the request timed out)."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _expire(future: asyncio.Future[BatchOutcome]) -> None:
    """The request's timeout: its events may still be journaled (a retry is deduplicated)."""
    if not future.done():
        future.set_exception(TimeoutError())


@dataclass(slots=True)
class _Job:
    values: list[StagingValues]
    indices: list[int]
    rejected: list[Rejection]
    size: int
    done: Callable[[BatchOutcome | BaseException], None]
    source: str | None = None
    base: int = 0
    outcome_rejections: list[Rejection] = field(default_factory=list)


class GroupWriter:
    """The ack stage's thread with its bounded queue, the journal and its loader.

    Parameters
    ----------
    store
        The store the journal is loaded into.
    max_queue_events
        Events that may wait in memory; a batch that would exceed it is refused.
    max_group_events
        Most events acknowledged as one group (one journal batch).
    journal_settings
        The loader's pace and the journal's bound.
    on_ack
        Called after each group is journaled with (events, seconds), for metrics.
    on_load
        Called after each load into the store with (events, seconds), for metrics.
    currency_refresh_seconds
        How often the store's currency is re-read (on a thread of its own).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_queue_events: int,
        max_group_events: int,
        journal_settings: JournalSettings | None = None,
        on_ack: Callable[[int, float], None] | None = None,
        on_load: Callable[[int, float], None] | None = None,
        currency_refresh_seconds: float = _CURRENCY_REFRESH_SECONDS,
    ) -> None:
        self._store = store
        self._currency_refresh_seconds = currency_refresh_seconds
        self.max_queue_events = max_queue_events
        self.max_group_events = max_group_events
        self.journal_settings = journal_settings or JournalSettings()
        self.journal = Journal.for_store(store)
        self.loader = JournalLoader(store, self.journal, self.journal_settings, on_load=on_load)
        self._on_ack = on_ack
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._last_received: datetime | None = None
        self._validator = duckdb.connect(":memory:")
        self._validator.execute("SET TimeZone = 'UTC'")
        # one thread: batches are small, and waking DuckDB's workers costs more than it saves
        # when the cores are busy mapping requests and loading the store
        self._validator.execute("SET threads = 1")
        self._currency = "USD"
        self._thread = threading.Thread(target=self._run, name="funnelscope-ack", daemon=True)
        self._stopped = threading.Event()
        self._refresher = threading.Thread(
            target=self._refresh_currency, name="funnelscope-currency", daemon=True
        )
        self.groups = 0
        self.last_error: BaseException | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the loader (which first replays a crash's journal) and the ack thread."""
        self._currency = self._store.currency
        self.journal.claim()
        self.loader.start()
        self._thread.start()
        self._refresher.start()
        self.loader.exempt.add(self._refresher)  # a currency read needs no loaded events
        # a read of the store in this process waits until every acknowledged event is loaded
        self._store.read_barrier = self.loader.sync

    def stop(self, timeout: float = 60.0) -> None:
        """Stop taking requests, acknowledge what is queued, load everything, stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._stopped.set()
        if self._refresher.is_alive():
            self._refresher.join(timeout)
        self.loader.stop(timeout)
        self._store.read_barrier = None
        self.journal.close()
        self.journal.release()
        self._validator.close()

    @property
    def is_alive(self) -> bool:
        """Taking requests: both threads run, nothing is being replayed, not stopping."""
        return (
            self._thread.is_alive()
            and self.loader.is_alive
            and not self.loader.is_replaying
            and not self._stopping
        )

    @property
    def is_replaying(self) -> bool:
        return self.loader.is_replaying

    @property
    def queued_events(self) -> int:
        return self._queued

    @property
    def backlog_events(self) -> int:
        """Events journaled (acknowledged) and not yet loaded into the store."""
        return self.journal.backlog_events

    # -- producers ------------------------------------------------------------------------------
    def refusal(self, size: int) -> str | None:
        """Why ``size`` more events would be refused now (None: they would be taken)."""
        if self._stopping:
            return "the server is shutting down"
        if self.loader.is_replaying:
            return "the journal left by a restart is being loaded"
        if self._queued and self._queued + size > self.max_queue_events:
            return f"{self._queued} events are waiting to be journaled"
        backlog = self.journal.backlog_events + self._queued
        if backlog and backlog + size > self.journal_settings.max_backlog_events:
            return f"{backlog} acknowledged events are waiting to be loaded into the store"
        return None

    def has_room(self, size: int) -> bool:
        """Whether ``size`` more events would be taken now (checked again on submit)."""
        return self.refusal(size) is None

    def submit(
        self,
        rows: list[dict[str, str | None]],
        indices: list[int],
        rejected: list[Rejection],
        size: int,
        done: Callable[[BatchOutcome | BaseException], None],
    ) -> None:
        """Queue one request's rows (``indices[i]`` = position of ``rows[i]`` in the request).

        ``rejected`` are the request's messages that could not be mapped (with their index);
        ``done`` is called from the ack thread with the outcome once the group is journaled.
        """
        self.submit_values(_values(rows), indices, rejected, size, done)

    def submit_values(
        self,
        values: list[StagingValues],
        indices: list[int],
        rejected: list[Rejection],
        size: int,
        done: Callable[[BatchOutcome | BaseException], None],
        *,
        source: str | None = None,
    ) -> None:
        """:meth:`submit` for rows as :data:`~funnelscope.ingest.records.StagingValues` (the
        collector's shape); ``source`` fills the rows whose source is None."""
        job = _Job(values, indices, rejected, size, done, source)
        with self._cond:
            why = self.refusal(size)
            if why is not None:
                raise QueueFullError(why)
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
        """Queue the rows, wait until they are journaled (raises QueueFullError or TimeoutError)."""
        return await self.write_values(_values(rows), indices, rejected, size, timeout=timeout)

    async def write_values(
        self,
        values: list[StagingValues],
        indices: list[int],
        rejected: list[Rejection],
        size: int,
        *,
        timeout: float,
        source: str | None = None,
    ) -> BatchOutcome:
        """:meth:`write` for rows as values (see :meth:`submit_values`)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchOutcome] = loop.create_future()
        # the ack thread settles the future through the loop; a plain timer instead of
        # wait_for(shield(...)) spares two futures and their callbacks per request

        def done(result: BatchOutcome | BaseException) -> None:
            loop.call_soon_threadsafe(_settle, future, result)

        self.submit_values(values, indices, rejected, size, done, source=source)
        timer = loop.call_later(timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    # -- the ack thread ---------------------------------------------------------------------------
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
                outcomes = self._ack(group)
            except BaseException as exc:  # every waiter must hear about it
                log.exception("journaling a group failed", extra={"jobs": len(group)})
                self.last_error = exc
                self._release(group)
                for job in group:
                    job.done(exc)
                continue
            self._release(group)
            self.groups += 1
            self.last_error = None
            if self._on_ack is not None:
                self._on_ack(sum(j.size for j in group), time.perf_counter() - started)
            for job, outcome in zip(group, outcomes, strict=True):
                job.done(outcome)
            self.loader.notify_appended()

    def _received_at(self) -> datetime:
        # strictly increasing, so the journal's order is also the order of received_at
        now = datetime.now(UTC)
        if self._last_received is not None and now <= self._last_received:
            now = self._last_received + timedelta(microseconds=1)
        self._last_received = now
        return now

    @property
    def currency(self) -> str:
        """The store's currency as the ack stage last read it (revenue rows without one)."""
        return self._currency

    def _refresh_currency(self) -> None:
        """Re-read the store's currency every few seconds, on a thread of its own.

        Not on the ack thread: a read of the store can wait behind a load's commit and
        DuckDB's checkpoint in it (0.3-1 s), and every acknowledgement would wait with it (the
        slow seconds of the latency benchmark, docs/collector.md).
        """
        while not self._stopped.wait(self._currency_refresh_seconds):
            try:
                self._currency = self._store.currency
            except duckdb.Error:  # the store is closing: the last value stands
                log.debug("re-reading the store's currency failed", exc_info=True)

    def _ack(self, group: list[_Job]) -> list[BatchOutcome]:
        values: list[StagingValues] = []
        row_ids: list[int] = []
        indices: list[int] = []
        pre: list[Rejection] = []  # messages the routes could not map, with group-wide rows
        pre_indices: list[int] = []
        sources: list[tuple[int, int, str]] = []  # (first row, end, source) to fill in
        base = 0
        for job in group:
            job.base = base
            if job.source is not None and job.values:
                sources.append((len(values), len(values) + len(job.values), job.source))
            values += job.values
            row_ids.extend([base + i for i in job.indices])
            indices.extend(job.indices)
            if job.rejected:
                pre.extend(
                    Rejection(base + r.row, r.code, r.message, r.payload) for r in job.rejected
                )
                pre_indices.extend(r.row for r in job.rejected)
            base += job.size
        n = len(values)
        # rows to columns in one transposition in C (a comprehension per column over dicts
        # cost ~1 us per event); Arrow converts lists faster than tuples
        lists: list[list[str | None]] = (
            [list(c) for c in zip(*values, strict=True)] if n else [[] for _ in STAGING_COLUMNS]
        )
        column = lists[_SOURCE]
        for start, end, source in sources:
            column[start:end] = [source if s is None else s for s in column[start:end]]
        columns = dict(zip(STAGING_COLUMNS, lists, strict=True))
        arrays = _arrays(columns, n)
        received_at = self._received_at()
        verdicts: list[Verdict] = []
        if n:
            currency = self._currency
            # the SQL decides only the rows Python cannot prove valid: usually none
            proven = prove_valid(columns, received_at=received_at, currency=currency)
            doubtful = [i for i, ok in enumerate(proven) if not ok]
            if doubtful:
                # the group's columns, so a rejected row's payload is the same as if every
                # row had been validated in SQL
                staging = pa.Table.from_arrays(
                    [*arrays.values(), pa.array(row_ids, pa.int64())], names=[*arrays, "_row"]
                )
                if len(doubtful) < n:
                    staging = staging.take(pa.array(doubtful, pa.int64()))
                verdicts = validate_staging(
                    self._validator, staging, received_at=received_at, currency=currency
                )
        batch = _journal_batch(
            arrays, [*indices, *pre_indices], row_ids, pre, verdicts, received_at
        )
        self.journal.append(batch)
        rejections = sorted(
            [*pre, *(Rejection(v.row, v.code, v.message) for v in verdicts)],
            key=lambda r: r.row,
        )
        bases = [j.base for j in group]
        for rejection in rejections:
            job = group[bisect.bisect_right(bases, rejection.row) - 1]
            job.outcome_rejections.append(
                Rejection(rejection.row - job.base, rejection.code, rejection.message)
            )
        return [BatchOutcome(j.size, tuple(j.outcome_rejections)) for j in group]


def _arrays(columns: dict[str, list[str | None]], n: int) -> dict[str, pa.Array]:
    """The group's Arrow columns. Columns no event of the group uses are left out (the
    validation types them as NULL, the journal writes nulls); a column with one value in every
    row (the source, often the name, currency, browser...) is repeated in C++ instead of
    converting ``n`` Python strings (~30 ns each)."""
    arrays: dict[str, pa.Array] = {}
    if not n:
        return arrays
    for name, values in columns.items():
        first = values[0]
        if values[-1] == first and values.count(first) == n:
            if first is not None:
                arrays[name] = pa.repeat(pa.scalar(first, pa.string()), n)
            continue
        arrays[name] = pa.array(values, pa.string())
    return arrays


def _journal_batch(
    arrays: dict[str, pa.Array],
    indices: list[int],
    row_ids: list[int],
    pre: list[Rejection],
    verdicts: list[Verdict],
    received_at: datetime,
) -> pa.RecordBatch:
    """The group as journal rows: the staged rows, then the messages that were not mapped.

    ``indices``: each row's position in its request; ``row_ids``: the staged rows' ``_row``.
    """
    n = len(row_ids)
    total = n + len(pre)
    codes: list[str | None] = [None] * total
    messages: list[str | None] = [None] * total
    payloads: list[bytes | None] = [None] * total
    if verdicts:
        position = {row: i for i, row in enumerate(row_ids)}
        for v in verdicts:
            i = position[v.row]
            codes[i], messages[i], payloads[i] = v.code, v.message, v.payload
    for i, r in enumerate(pre, start=n):
        codes[i], messages[i], payloads[i] = r.code, r.message, r.payload
    pre_nulls = pa.nulls(len(pre), pa.string())
    data: list[pa.Array] = []
    for c in STAGING_COLUMNS:
        if c not in arrays:
            data.append(pa.nulls(total, pa.string()))
        elif pre:
            data.append(pa.concat_arrays([arrays[c], pre_nulls]))
        else:
            data.append(arrays[c])
    data += [
        pa.array(indices, pa.int32()),
        pa.repeat(pa.scalar(received_at, JOURNAL_SCHEMA.field("_received_at").type), total),
        pa.array(codes, pa.string()),
        pa.array(messages, pa.string()),
        pa.array(payloads, pa.binary()),
    ]
    batch = pa.RecordBatch.from_arrays(data, schema=JOURNAL_SCHEMA)
    if pre:  # in request order, so quarantine row numbers follow the requests' messages
        ids = [*row_ids, *(r.row for r in pre)]
        batch = batch.take(pa.array(sorted(range(total), key=ids.__getitem__), pa.int64()))
    return batch
