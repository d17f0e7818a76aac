"""The collector's durable journal, and the loader that moves it into the store.

The ack stage (:mod:`funnelscope.api.writer`) appends each group of requests to the journal as
one Arrow IPC record batch, flushes and fsyncs it, and only then answers the requests. The
:class:`JournalLoader` thread then loads the journal into the store in the background, with one
:func:`~funnelscope.ingest.pipeline.append_events` transaction per load, and deletes what it
loaded. So an acknowledgement costs an fsync (well under a millisecond) instead of a DuckDB
commit (tens of milliseconds), and a commit carries thousands of events.

On disk the journal is a folder next to the store, ``<store path>.journal/``, of *segments*:
files named ``000000000001.arrows``, each an Arrow IPC stream (the schema, then one record
batch per group, no end marker) with the columns of :data:`JOURNAL_SCHEMA`. The ack stage
appends to one open segment; the loader asks it to switch to a new one (:meth:`Journal.rotate`),
loads the closed ones, commits, then deletes them. A ``:memory:`` store keeps its segments in
memory.

Crash safety: a segment is only ever appended to, and every batch is fsynced before its
requests are answered, so after a crash every acknowledged batch is complete on disk; only the
last batch of a segment can be torn (written partly, never acknowledged), and reading stops
there. At startup every segment left behind is loaded again (:meth:`JournalLoader.replay`);
``append_events`` drops event ids already stored, so a segment that was loaded but not yet
deleted is harmless (its quarantined rows are quarantined a second time).

Checkpoints: by default DuckDB checkpoints on its own, inside the commit that takes its WAL past
16 MiB. With ``JournalSettings.checkpoint_threshold`` set, the loader sets DuckDB's threshold
while it runs (a low one makes each large load skip the WAL and write its rows straight into the
database file), checkpoints itself should the WAL pass ``max_wal_bytes`` anyway, and at stop
checkpoints and gives DuckDB its setting back, so a clean stop leaves no WAL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.errors import StoreError
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.pipeline import IngestReport, Rejection, append_events
from funnelscope.store.store import Store

__all__ = [
    "JOURNAL_SCHEMA",
    "QUARANTINE_SOURCE",
    "Journal",
    "JournalLoader",
    "JournalSettings",
    "load_journal_table",
]

log = logging.getLogger("funnelscope.api.journal")

#: Quarantine rows written by the collector carry this source (each event row keeps its own).
QUARANTINE_SOURCE: Final = "collector"

#: One journal row per message of a request: the staging columns as text, then
#: ``_index`` (the message's position in its request), ``_received_at`` (when the ack stage
#: took it) and, for a rejected message, its reason ``_code``, ``_message`` and ``_payload``
#: (the message or staged row, as the quarantine keeps it).
JOURNAL_SCHEMA: Final = pa.schema(
    [
        *((c, pa.string()) for c in STAGING_COLUMNS),
        ("_index", pa.int32()),
        ("_received_at", pa.timestamp("us", tz="UTC")),
        ("_code", pa.string()),
        ("_message", pa.string()),
        ("_payload", pa.binary()),
    ]
)
_SUFFIX: Final = ".arrows"
#: Journal folders claimed by a running writer of this process (two would interleave segments;
#: other processes are kept out by DuckDB's lock on the store itself).
_CLAIMED: set[Path] = set()
_CLAIMED_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class JournalSettings:
    """How the journal is loaded and how far it may fall behind.

    Examples
    --------
    >>> JournalSettings().max_backlog_events
    1000000
    """

    #: Events acknowledged but not loaded yet; beyond this, requests get 503 + Retry-After
    #: (bounds the journal on disk, ~0.5 KB per event, when the store cannot keep up).
    max_backlog_events: int = 1_000_000
    #: The loader loads at most this often while events keep arriving (a read of the store loads
    #: at once)... Each load has a fixed cost of tens of milliseconds: loading every second
    #: instead of every 200 ms cut the server's CPU per event by ~18% (docs/collector.md).
    load_interval_seconds: float = 1.0
    #: ...or sooner, once this many events are waiting (fewer, larger loads: each has a fixed
    #: cost and ~50 GIL hand-offs whatever its size).
    load_at_events: int = 50_000
    #: Most events loaded in one transaction (a large backlog is loaded in several).
    max_load_events: int = 100_000
    #: While the loader runs, DuckDB's ``checkpoint_threshold`` is set to this (a DuckDB size;
    #: ``None``, the default: DuckDB's 16 MiB is left alone). A low one (``"4MiB"``) makes every
    #: load of more than a few hundred events skip the WAL and write its rows once, compressed,
    #: straight into the database file, instead of into the WAL and again at a checkpoint every
    #: other load: 3x fewer bytes written at 20,000 events/s, but each load then carries a
    #: checkpoint and no p99 gain was shown on a busy machine (docs/collector.md, session 5),
    #: so it is not the default. Given back when the loader stops, which also checkpoints.
    checkpoint_threshold: str | None = None
    #: DuckDB skips its automatic checkpoint while another transaction is open (a read of the
    #: store), so the WAL could still grow; past this many bytes after a load the loader runs a
    #: ``CHECKPOINT`` itself (postponed to the next load while a reader's snapshot predates the
    #: last commits). Only with ``checkpoint_threshold``.
    max_wal_bytes: int = 64 * 2**20


@dataclass(slots=True, eq=False)  # compared by identity
class Segment:
    """One journal segment: a file, or batches in memory."""

    number: int
    path: Path | None
    events: int = 0
    #: the journal's sequence number of the last batch appended to it (0: none, or a leftover)
    last_seq: int = 0
    batches: list[pa.RecordBatch] = field(default_factory=list)
    fd: int | None = None


class Journal:
    """Append-only segments in ``folder`` (``None``: in memory), written by one ack thread.

    Examples
    --------
    >>> journal = Journal(None)
    >>> batch = pa.RecordBatch.from_pylist([{"event_id": "e1"}], schema=JOURNAL_SCHEMA)
    >>> journal.append(batch)
    >>> [s.events for s in journal.rotate()], journal.backlog_events
    ([1], 1)
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._open: Segment | None = None
        self._closed: list[Segment] = []
        self._next_number = 1
        #: sequence number of the last appended batch (the loader's read barrier waits on it)
        self.appended_seq = 0
        self.backlog_events = 0

    def claim(self) -> None:
        """Make this the folder's only writer in the process (call before the first append)."""
        if self.folder is None:
            return
        folder = self.folder.resolve()
        with _CLAIMED_LOCK:
            if folder in _CLAIMED:
                raise StoreError(f"the journal {folder} is in use by another app of this process")
            _CLAIMED.add(folder)
        folder.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.stem) for p in self._files()]
        self._next_number = max(numbers, default=0) + 1

    def release(self) -> None:
        """Undo :meth:`claim` (after :meth:`close`)."""
        if self.folder is not None:
            with _CLAIMED_LOCK:
                _CLAIMED.discard(self.folder.resolve())

    @staticmethod
    def for_store(store: Store) -> Journal:
        """The journal of ``store``: ``<store path>.journal/``, or in memory for ``:memory:``."""
        if str(store.path) == ":memory:":
            return Journal(None)
        return Journal(store.path.with_name(store.path.name + ".journal"))

    def _files(self) -> list[Path]:
        assert self.folder is not None
        return sorted(p for p in self.folder.iterdir() if p.suffix == _SUFFIX and p.stem.isdigit())

    # -- the ack stage's side -----------------------------------------------------------------
    def append(self, batch: pa.RecordBatch) -> None:
        """Append one group's batch durably (written and fsynced when this returns)."""
        with self._lock:
            segment = self._open or self._new_segment()
            if segment.path is None:
                segment.batches.append(batch)
            else:
                try:
                    _write_all(segment, batch.serialize())
                    _sync(segment)
                except BaseException:
                    # a partly written batch must not be followed by acknowledged ones: they
                    # would be unreadable behind it. Close the segment (its tail is torn) and
                    # start a new one for the next group.
                    self._close_open()
                    raise
            self.appended_seq += 1
            segment.last_seq = self.appended_seq
            segment.events += batch.num_rows
            self.backlog_events += batch.num_rows

    def _new_segment(self) -> Segment:
        number = self._next_number
        self._next_number += 1
        if self.folder is None:
            segment = Segment(number, None)
        else:
            path = self.folder / f"{number:012d}{_SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            segment = Segment(number, path, fd=fd)
            _write_all(segment, JOURNAL_SCHEMA.serialize())
            os.fsync(fd)
            _fsync_dir(self.folder)  # the new file's name must survive a crash too
        self._open = segment
        return segment

    def _close_open(self) -> None:
        segment, self._open = self._open, None
        if segment is None:
            return
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None
        self._closed.append(segment)

    # -- the loader's side --------------------------------------------------------------------
    def rotate(self) -> list[Segment]:
        """Close the open segment (the next append starts a new one); all closed segments not
        loaded yet, oldest first."""
        with self._lock:
            if self._open is not None and self._open.events:
                self._close_open()
            return list(self._closed)

    def has_leftover(self) -> bool:
        """Whether segments from an earlier run are on disk (before the first append)."""
        return self.folder is not None and not self._open and bool(self._files())

    def leftover(self) -> list[Segment]:
        """Segments found on disk at startup (a crash left them), oldest first, as closed.

        Call before the first append.
        """
        if self.folder is None:
            return []
        with self._lock:
            found = [Segment(int(p.stem), p) for p in self._files()]
            for segment in found:
                segment.events = read_segment(segment).num_rows
            self._closed = found + self._closed
            self.backlog_events += sum(s.events for s in found)
            return list(found)

    def remove(self, segments: Iterable[Segment]) -> None:
        """Forget (delete) segments whose events are committed to the store."""
        with self._lock:
            for segment in segments:
                self._closed.remove(segment)
                self.backlog_events -= segment.events
                if segment.path is not None:
                    segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the open segment's file; an empty one is deleted."""
        with self._lock:
            segment = self._open
            if segment is not None and not segment.events:
                self._open = None
                if segment.fd is not None:
                    os.close(segment.fd)
                if segment.path is not None:
                    segment.path.unlink(missing_ok=True)
            else:
                self._close_open()


def _write_all(segment: Segment, data: pa.Buffer) -> None:
    assert segment.fd is not None
    view = memoryview(data)
    while view:
        written = os.write(segment.fd, view)
        view = view[written:]


def _sync(segment: Segment) -> None:
    assert segment.fd is not None
    # fdatasync: the data and the file's size, not its times (cheaper than fsync)
    sync = getattr(os, "fdatasync", os.fsync)
    sync(segment.fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_segment(segment: Segment) -> pa.Table:
    """The batches of a segment; a torn last batch (a crash mid-write) is left out."""
    if segment.path is None:
        return pa.Table.from_batches(segment.batches, schema=JOURNAL_SCHEMA)
    batches: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(segment.path)))
        while True:
            batches.append(reader.read_next_batch())
    except StopIteration:
        pass
    except (pa.ArrowInvalid, OSError) as exc:
        # only the tail can be torn: batches are appended, and acknowledged after their fsync
        log.warning("journal segment ends in a torn batch", extra={"segment": str(segment.path)})
        del exc
    return pa.Table.from_batches(batches, schema=JOURNAL_SCHEMA)


def load_journal_table(store: Store, table: pa.Table, *, now: datetime) -> IngestReport:
    """Load journal rows into ``store`` in one :func:`append_events` transaction.

    Rows the ack stage rejected (``_code`` set) are quarantined with their code, message and
    payload; the others passed the same validation at the ack (against an earlier
    ``received_at``, so they still pass) and are inserted without it, each keeping its
    ``_received_at``. Quarantine row numbers are positions in ``table``. ``now`` is
    the load's time (the quarantine time; the validation's reference time when later than
    every row's ``_received_at``).
    """
    n = table.num_rows
    table = table.append_column("_row", pa.array(range(n), pa.int64()))
    is_rejected = pc.is_valid(table["_code"])
    rejected = table.filter(is_rejected)
    pre_rejected = [
        Rejection(int(row), str(code), str(message or ""), payload)
        for row, code, message, payload in zip(
            rejected["_row"].to_pylist(),
            rejected["_code"].to_pylist(),
            rejected["_message"].to_pylist(),
            rejected["_payload"].to_pylist(),
            strict=True,
        )
    ]
    accepted = table.filter(pc.invert(is_rejected))
    # columns no row uses are left out: the pipeline types them as NULL without checking them
    used = [c for c in STAGING_COLUMNS if accepted[c].null_count < accepted.num_rows]
    staging = accepted.select([*used, "_row", "_received_at"])
    latest = pc.max(table["_received_at"]).as_py() if n else None
    received_at = max(now, latest) if latest is not None else now
    return append_events(
        store,
        staging,
        source=QUARANTINE_SOURCE,
        received_at=received_at,
        pre_rejected=pre_rejected,
        known_valid=True,  # the ack validated them; only a later received_at differs
    )


class JournalLoader:
    """The thread that loads the journal into the store.

    Parameters
    ----------
    store, journal
        Where from, where to.
    settings
        Load interval, size thresholds.
    on_load
        Called after each committed load with (events, seconds), for metrics.
    """

    def __init__(
        self,
        store: Store,
        journal: Journal,
        settings: JournalSettings,
        *,
        on_load: Callable[[int, float], None] | None = None,
    ) -> None:
        self._store = store
        self._journal = journal
        self.settings = settings
        self._on_load = on_load
        self._cond = threading.Condition()
        self._stopping = False
        self._urgent = False
        self._last_load = 0.0
        self.loaded_seq = 0
        self.loads = 0
        self.is_replaying = False
        self.last_error: BaseException | None = None
        self.last_seconds = 0.0
        #: CHECKPOINTs the loader ran itself, and how long the last one took (DuckDB's own, in
        #: the loads' commits, are not counted)
        self.checkpoints = 0
        self.last_checkpoint_seconds = 0.0
        #: DuckDB's checkpoint_threshold before :meth:`start` set it (restored by stop)
        self._saved_threshold: str | None = None
        #: threads whose reads never wait for a load (the ack thread: it must not stall)
        self.exempt: set[threading.Thread] = set()
        self._thread = threading.Thread(target=self._run, name="funnelscope-loader", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Replay what a crash left (in the thread; :attr:`is_replaying` until done), then load
        every ~``load_interval_seconds``."""
        self.is_replaying = self._journal.has_leftover()
        self._last_load = time.monotonic()
        threshold = self.settings.checkpoint_threshold
        if threshold is not None and str(self._store.path) != ":memory:":
            self._saved_threshold = self._store.set_checkpoint_threshold(threshold)
        self._thread.start()

    def wait_replayed(self, timeout: float = 60.0) -> bool:
        """Wait until the startup replay is done; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.is_replaying and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return not self.is_replaying

    def stop(self, timeout: float = 60.0) -> None:
        """Load everything journaled so far, then stop the thread; checkpoint the store and
        give DuckDB its automatic checkpoints back."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._saved_threshold is not None and not self._thread.is_alive():
            try:
                self._checkpoint()  # a clean stop leaves no WAL behind
            except Exception:  # nothing is lost: the WAL keeps it, DuckDB replays it on open
                log.exception("checkpointing the store at shutdown failed")
            finally:
                self._store.set_checkpoint_threshold(self._saved_threshold)
                self._saved_threshold = None

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # -- producers and readers ------------------------------------------------------------------
    def notify_appended(self) -> None:
        """The ack stage appended a batch: wake the loader if the backlog is large."""
        if self._journal.backlog_events >= self.settings.load_at_events:
            with self._cond:
                self._urgent = True
                self._cond.notify_all()
        elif self._journal.backlog_events:
            with self._cond:
                self._cond.notify_all()

    def sync(self, timeout: float = 2.0) -> bool:
        """Wait until every batch appended so far is loaded (read-your-writes); False on timeout.

        Returns at once on the loader's own thread, on a thread running an event loop (a read
        there must not stall the acknowledgements) and when nothing is waiting.
        """
        target = self._journal.appended_seq
        current = threading.current_thread()
        if self.loaded_seq >= target or current is self._thread or current in self.exempt:
            return True
        if _on_event_loop():
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            while self.loaded_seq < target and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return self.loaded_seq >= target

    # -- the thread -----------------------------------------------------------------------------
    def replay(self) -> IngestReport:
        """Load the segments a crash left behind; delete them once committed."""
        report = IngestReport(source=QUARANTINE_SOURCE)
        leftover = self._journal.leftover()
        if leftover:
            log.warning(
                "replaying the journal",
                extra={"segments": len(leftover), "events": sum(s.events for s in leftover)},
            )
            while leftover:
                done, count = self._load_some(leftover)
                report.merge(done)
                leftover = leftover[count:]
                self._maybe_checkpoint()
        return report

    def _maybe_checkpoint(self) -> None:
        """Checkpoint after a load if the WAL passed ``max_wal_bytes`` anyway (DuckDB skipped
        its own, at the low threshold, because a reader was open)."""
        if self._saved_threshold is None or self._store.wal_bytes <= self.settings.max_wal_bytes:
            return
        try:
            self._checkpoint()
        except duckdb.TransactionException as exc:
            # a reader that began before the last commits still holds their old versions: the
            # WAL keeps everything, and the next load tries again
            log.warning("checkpoint postponed: %s", exc)

    def _checkpoint(self) -> None:
        started = time.perf_counter()
        self._store.checkpoint()
        self.checkpoints += 1
        self.last_checkpoint_seconds = time.perf_counter() - started

    def _run(self) -> None:
        while True:
            try:
                if self.is_replaying:
                    self.replay()
                    self.is_replaying = False
                    with self._cond:
                        self._cond.notify_all()
                    self.last_error = None
                if not self._wait():
                    return
                segments = self._journal.rotate()
                if segments:
                    self._load_some(segments)
                    self._maybe_checkpoint()
                self.last_error = None
            except Exception as exc:  # keep the journal; try again a little later
                log.exception("loading the journal failed")
                self.last_error = exc
                with self._cond:
                    if self._stopping and not self.is_replaying:
                        return  # the files stay on disk: the next start replays them
                    self._cond.wait(1.0)

    def _wait(self) -> bool:
        """Wait until a load is due; False once stopping and nothing is left."""
        settings = self.settings
        with self._cond:
            while True:
                backlog = self._journal.backlog_events
                if self._stopping:
                    return backlog > 0
                due = self._last_load + settings.load_interval_seconds - time.monotonic()
                if backlog and (self._urgent or due <= 0):
                    self._urgent = False
                    return True
                self._cond.wait(due if backlog else None)

    def _load_some(self, segments: list[Segment]) -> tuple[IngestReport, int]:
        """Load the oldest segments (up to ``max_load_events``) in one transaction; the report
        and how many segments it loaded."""
        chosen: list[Segment] = []
        events = 0
        for segment in segments:
            if chosen and events + segment.events > self.settings.max_load_events:
                break
            chosen.append(segment)
            events += segment.events
        started = time.perf_counter()
        self._last_load = time.monotonic()
        tables = [read_segment(s) for s in chosen]
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        report = load_journal_table(self._store, table, now=datetime.now(UTC))
        self._journal.remove(chosen)
        seconds = time.perf_counter() - started
        self.loads += 1
        self.last_seconds = seconds
        with self._cond:
            self.loaded_seq = max(self.loaded_seq, *(s.last_seq for s in chosen))
            self._cond.notify_all()
        if self._on_load is not None:
            self._on_load(table.num_rows, seconds)
        return report, len(chosen)


def _on_event_loop() -> bool:
    import asyncio

    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        return True
    return False
