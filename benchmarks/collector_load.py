"""The collector's loader in isolation: one journal load into stores of growing size.

What one load of the journal costs (``api/journal.load_journal_table``: ``append_events`` with
``known_valid=True``), on Segment-shaped events as ``benchmarks/collector.py`` sends them
(mapped by ``ingest/records.py``, 37 users and 53 anonymous ids, every id new), into stores that
already hold 0, 1M and 5M events whose times all fall inside the old 7-day dedup window (the
worst case for a lookup bounded by time: the collector benchmark's events all carry about the
same time). Printed per store size: wall time, process CPU seconds and CPU per loaded event
(median of the loads), each statement's CPU and wall time (a separate load, timed through a
wrapped write cursor), and the load's GIL hand-offs: the load is run beside a pure-Python busy
thread with a 20 ms switch interval, so each time it needs the GIL back it waits up to 20 ms, and
(wall beside the thread - wall alone) / 20 ms counts those waits (in the server, where the event
loop holds the GIL, each costs up to the default 5 ms).

``--pipeline FILE`` loads with another copy of ``ingest/pipeline.py`` (A/B against the code
before a change); ``--duckdb-threads N`` sets DuckDB's threads on the store.

Usage: ``python benchmarks/collector_load.py [--quick]`` (quick: 0 and 1M stored, 2 loads each).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from collector import TS, segment_message  # the load generator's Segment events

from funnelscope.api.journal import JOURNAL_SCHEMA, load_journal_table
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.records import from_segment
from funnelscope.store.store import Store

BATCH_ROWS = 20_000
#: The switch interval while counting the load's GIL hand-offs (see measure()).
GIL_PROBE_INTERVAL = 0.02
THREADS: int | None = None  # DuckDB threads of the store (None: DuckDB's default, the cores)
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _uuid(n: int) -> str:
    # SDKs send random UUIDs: ids spread over the whole key range, as in a real store
    return str(uuid.UUID(bytes=hashlib.md5(n.to_bytes(8, "little")).digest()))


def _message(n: int) -> dict[str, object]:
    return {**segment_message(n % 100, _uuid(n)), "sentAt": TS}


def journal_table(first: int, rows: int) -> pa.Table:
    """``rows`` journal rows (as the ack stage writes them) with ids ``first`` .. ."""
    mapped = [from_segment(_message(n), received_at=NOW) for n in range(first, first + rows)]
    data = {c: pa.array([r.get(c) for r in mapped], pa.string()) for c in STAGING_COLUMNS}
    received = [NOW + timedelta(microseconds=n // 100) for n in range(rows)]
    data["_index"] = pa.array([n % 100 for n in range(rows)], pa.int32())
    data["_received_at"] = pa.array(received, JOURNAL_SCHEMA.field("_received_at").type)
    for c in ("_code", "_message"):
        data[c] = pa.nulls(rows, pa.string())
    data["_payload"] = pa.nulls(rows, pa.binary())
    return pa.table(data, schema=JOURNAL_SCHEMA)


def prefill(store: Store, events: int) -> None:
    """``events`` stored events (copies of one loaded row with fresh ids and seq numbers)."""
    load_journal_table(store, journal_table(10**9, 100), now=NOW)  # the ids, the template
    if events <= 100:
        return
    with store.write() as con:
        cols = [r[0] for r in con.execute("DESCRIBE event_log").fetchall()]
        select = [
            "CAST(uuid() AS VARCHAR)"
            if c == "event_id"
            else "t.seq + 1000 + r.range"
            if c == "seq"
            else f't."{c}"'
            for c in cols
        ]
        con.execute(
            f"INSERT INTO event_log SELECT {', '.join(select)} "
            f"FROM (SELECT * FROM event_log LIMIT 1) t CROSS JOIN range({events - 100}) r"
        )
    # a load after the direct insert: anything a load does once for the store (hashing the ids
    # stored by other writers) is done before the measured loads
    load_journal_table(store, journal_table(2 * 10**9, 100), now=NOW)


def _busy(stop: threading.Event, counter: list[int]) -> None:
    n = 0
    while not stop.is_set():
        for _ in range(1000):
            n += 1
        counter[0] = n


class _Timed:
    """A write cursor that books each call's CPU and wall time under its calling function."""

    def __init__(self, con: object, book: dict[str, list[float]]) -> None:
        self._con = con
        self._book = book

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._con, name)
        if name not in ("execute", "executemany", "sql", "register"):
            return attr

        def timed(*args: object, **kwargs: object) -> object:
            caller = sys._getframe(1).f_code.co_name
            c0, w0 = time.process_time(), time.perf_counter()
            out = attr(*args, **kwargs)
            if name == "execute":
                text = str(args[0]).lstrip()
                key = f"{caller}: {' '.join(text.split()[:3])[:40]}"
            else:
                key = f"{caller}: {name}"
            entry = self._book.setdefault(key, [0.0, 0.0, 0])
            entry[0] += time.process_time() - c0
            entry[1] += time.perf_counter() - w0
            entry[2] += 1
            return out

        return timed


@contextlib.contextmanager
def _timed_writes(store: Store, book: dict[str, list[float]]) -> Iterator[None]:
    """While active, ``store.write()`` yields cursors that book their statements in ``book``."""
    original = store.write

    @contextlib.contextmanager
    def write() -> Iterator[object]:
        with original() as con:
            yield _Timed(con, book)

    store.write = write  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        del store.write


def measure(events: int, repeats: int, folder: Path) -> dict[str, object]:
    store = Store(folder / f"s{events}.duckdb")
    if THREADS:
        store.query(f"SET threads = {int(THREADS)}")
    try:
        prefill(store, events)
        walls, cpus, steps = [], [], []
        first = 0
        for _ in range(repeats):
            table = journal_table(first, BATCH_ROWS)
            first += BATCH_ROWS
            c0, w0 = time.process_time(), time.perf_counter()
            report = load_journal_table(store, table, now=NOW)
            cpus.append(time.process_time() - c0)
            walls.append(time.perf_counter() - w0)
            book: dict[str, list[float]] = {}
            with _timed_writes(store, book):  # a second, timed load: the statements
                table = journal_table(first, BATCH_ROWS)
                first += BATCH_ROWS
                load_journal_table(store, table, now=NOW)
            steps.append(book)
            assert report.inserted == BATCH_ROWS, report.to_dict()
        # GIL: a pure-Python thread beside a load (the event loop's place in the server), with
        # a long switch interval: each time the load needs the GIL back (after a statement,
        # and inside one after each execution task, to check for Ctrl-C) it waits up to a
        # whole interval, so the extra wall time / the interval counts those hand-offs
        walls_beside: list[float] = []
        interval = sys.getswitchinterval()
        for _ in range(repeats):
            stop = threading.Event()
            counter = [0]
            t = threading.Thread(target=_busy, args=(stop, counter))
            table = journal_table(first, BATCH_ROWS)
            first += BATCH_ROWS
            sys.setswitchinterval(GIL_PROBE_INTERVAL)
            t.start()
            try:
                w0 = time.perf_counter()
                load_journal_table(store, table, now=NOW)
                walls_beside.append(time.perf_counter() - w0)
            finally:
                stop.set()
                t.join()
                sys.setswitchinterval(interval)
        waits = (statistics.median(walls_beside) - statistics.median(walls)) / GIL_PROBE_INTERVAL
        mid = sorted(range(repeats), key=lambda i: cpus[i])[repeats // 2]
        return {
            "stored": events,
            "wall": statistics.median(walls),
            "cpu": statistics.median(cpus),
            "steps": steps[mid],
            "gil_waits": waits,
            "wall_beside_busy": statistics.median(walls_beside),
        }
    finally:
        store.close()


def main(quick: bool) -> None:
    sizes = (0, 1_000_000) if quick else (0, 1_000_000, 5_000_000)
    repeats = 2 if quick else 3
    with open("/proc/loadavg") as f:
        print(f"load average before: {f.read().split()[:3]}")
    print(f"one load = {BATCH_ROWS:,} Segment events, known valid, all ids new")
    print(
        f"{'stored':>10} {'wall s':>7} {'CPU s':>7} {'CPU us/event':>13} "
        f"{'wall beside busy thread':>24} {'GIL hand-offs':>14}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            r = measure(n, repeats, Path(tmp))
            rows.append(r)
            print(
                f"{n:>10,} {r['wall']:>7.3f} {r['cpu']:>7.3f} "
                f"{1e6 * float(r['cpu']) / BATCH_ROWS:>13.1f} "  # type: ignore[arg-type]
                f"{r['wall_beside_busy']:>24.3f} {r['gil_waits']:>14.0f}"
            )
    print("\nBy statement (a separate, timed load): CPU ms / wall ms / calls")
    for r in rows:
        steps = r["steps"]
        assert isinstance(steps, dict)
        calls = sum(int(v[2]) for v in steps.values())
        print(f"  stored {r['stored']:,}: {calls} calls")
        for k, v in sorted(steps.items(), key=lambda kv: -kv[1][0]):
            print(f"    {1e3 * v[0]:7.1f} {1e3 * v[1]:7.1f} {int(v[2]):3d}  {k}")
    with open("/proc/loadavg") as f:
        print(f"load average after: {f.read().split()[:3]}")


def _use_pipeline(path: Path) -> None:
    """Load with the ``append_events`` of another copy of ``ingest/pipeline.py`` (an A/B
    against the code before a change: ``git show HEAD:src/funnelscope/ingest/pipeline.py``)."""
    import importlib.util

    from funnelscope.api import journal

    spec = importlib.util.spec_from_file_location("pipeline_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    journal.append_events = module.append_events  # type: ignore[attr-defined]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pipeline", type=Path, help="another pipeline.py to load with (A/B)")
    parser.add_argument("--duckdb-threads", type=int, help="SET threads on the store")
    args = parser.parse_args()
    if args.pipeline:
        _use_pipeline(args.pipeline)
    THREADS = args.duckdb_threads
    main(args.quick)
