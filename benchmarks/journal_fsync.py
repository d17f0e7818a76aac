"""The journal's fsync beside the loader: what DuckDB's checkpoints do to an acknowledgement.

Every acknowledgement of the collector waits for the journal's ``fdatasync``
(``api/journal.Journal.append``). This script runs the real :class:`Journal` and
:class:`JournalLoader` on a fresh store without the HTTP server: a feeder thread appends a
200-event journal batch every 10 ms (20,000 events/s, the latency phase of
``benchmarks/collector.py``) and times each append (write + ``fdatasync``), while the loader loads
the journal into the store once a second, as in the server. Modes, each on its own store:

* ``journal-only``: no loader (the segments are deleted unloaded): the fsync's floor on this disk;
* ``auto``: checkpoints left to DuckDB (``checkpoint_threshold=None``, the default): one runs
  inside the commit that takes the WAL past 16 MiB, every other load at 20,000 events/s;
* ``threshold-4mib``: DuckDB's threshold lowered to 4 MiB, so each load's commit skips the WAL
  and writes its rows straight into the database file;
* ``every-load``: the WAL kept (threshold 64 GiB) and the loader runs ``CHECKPOINT`` after every
  load (``max_wal_bytes=0``);
* ``no-checkpoint``: no checkpoint at all during the run (the WAL grows: only to compare).

Printed per mode: appends, p50 / p99 / p99.9 / max of an append, appends over 50 and 100 ms and
how many of those overlapped a checkpoint (taken by the loader, or by DuckDB inside a commit:
seen as the WAL shrinking or staying empty), the loads' and the loader's checkpoints' mean wall
time, the wake-up lag of a pure-Python thread standing in for the event loop, the process's CPU
(cores) and what it wrote to disk per second (``/proc/self/io``: journal, WAL and database).
Every mode runs the same number of seconds; run it twice, the disk is shared with the rest of
the machine.

Usage: ``python benchmarks/journal_fsync.py [--quick] [--seconds N] [--modes a,b]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from collector_load import journal_table

from funnelscope.api.journal import Journal, JournalLoader, JournalSettings
from funnelscope.store.store import Store

GROUP = 200  # events per journal append (the ack's group at 20,000 events/s)
INTERVAL = 0.01  # seconds between appends

#: mode -> (DuckDB's checkpoint_threshold while the loader runs, the loader's max_wal_bytes)
MODES: dict[str, tuple[str | None, int]] = {
    "auto": (None, 0),
    "threshold-4mib": ("4MiB", 64 * 2**20),
    "every-load": ("64GiB", 0),
    "no-checkpoint": ("64GiB", 2**50),
}


class TimedStore(Store):
    """A store that notes when each explicit checkpoint ran (perf_counter start, end)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.windows: list[tuple[float, float]] = []

    def checkpoint(self) -> None:
        started = time.perf_counter()
        super().checkpoint()
        self.windows.append((started, time.perf_counter()))


@dataclass
class Run:
    mode: str
    appends: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    loads: list[tuple[float, float, bool]] = field(default_factory=list)  # (start, end, ckpt)
    checkpoints: list[tuple[float, float]] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # the stand-in event loop's wake-up lags
    cores: float = 0.0  # process CPU / wall over the mode, stop included
    written_mb_per_s: float = 0.0  # bytes the process had written to disk (/proc/self/io)


def _written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _event_loop_stand_in(stop: float, lags: list[float]) -> None:
    """Pure Python work, 2 ms out of every 4 (the server's event loop mapping requests at
    20,000 events/s keeps about half a core busy); notes how late each 2 ms sleep wakes up."""
    while time.perf_counter() < stop:
        until = time.perf_counter() + 0.002
        x = 0
        while time.perf_counter() < until:
            x += 1
        asleep = time.perf_counter()
        time.sleep(0.002)
        lags.append(time.perf_counter() - asleep - 0.002)


def run_mode(mode: str, seconds: float, folder: Path) -> Run:
    store = TimedStore(folder / f"{mode}.duckdb")
    journal = Journal(folder / f"{mode}.duckdb.journal")
    journal.claim()
    run = Run(mode)
    template = journal_table(0, GROUP).to_batches()[0]
    id_column = template.schema.get_field_index("event_id")
    loader: JournalLoader | None = None
    wal_before = [0]
    if mode != "journal-only":
        threshold, max_wal = MODES[mode]
        settings = JournalSettings(checkpoint_threshold=threshold, max_wal_bytes=max_wal)

        def on_load(events: int, took: float) -> None:
            end = time.perf_counter()
            # DuckDB checkpointed inside the load's commit: the WAL shrank, or (a commit that
            # skipped the WAL) stayed empty
            wal = store.wal_bytes
            shrank = mode in ("auto", "threshold-4mib") and (wal < wal_before[0] or wal == 0)
            run.loads.append((end - took, end, shrank))
            wal_before[0] = wal

        loader = JournalLoader(store, journal, settings, on_load=on_load)
        loader.start()
    cpu, written, started_at = time.process_time(), _written_bytes(), time.perf_counter()
    stop = time.perf_counter() + seconds
    busy = threading.Thread(target=_event_loop_stand_in, args=(stop, run.lags), daemon=True)
    busy.start()
    n = 0
    next_at = time.perf_counter()
    last_rotate = next_at
    while next_at < stop:
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        ids = pa.array([f"{n:09d}-{i:03d}" for i in range(GROUP)], pa.string())
        batch = template.set_column(id_column, "event_id", ids)
        started = time.perf_counter()
        journal.append(batch)
        run.appends.append((started, time.perf_counter() - started))
        if loader is not None:
            loader.notify_appended()
        elif started - last_rotate >= 1.0:  # journal-only: drop closed segments unloaded
            journal.remove(journal.rotate())
            last_rotate = started
        n += 1
        next_at += INTERVAL
    busy.join()
    if loader is not None:
        loader.stop()
    journal.close()
    journal.release()
    run.cores = (time.process_time() - cpu) / (time.perf_counter() - started_at)
    run.written_mb_per_s = (_written_bytes() - written) / 2**20 / (time.perf_counter() - started_at)
    run.checkpoints = list(store.windows)
    store.close()
    return run


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(run: Run) -> dict[str, Any]:
    ms = [s * 1000 for _, s in run.appends]
    windows = [(a, b) for a, b in run.checkpoints]
    windows += [(a, b) for a, b, shrank in run.loads if shrank]

    def overlaps(start: float, took: float) -> bool:
        return any(a < start + took and start < b for a, b in windows)

    slow50 = [(a, s) for a, s in run.appends if s > 0.05]
    slow100 = [(a, s) for a, s in run.appends if s > 0.1]
    return {
        "mode": run.mode,
        "appends": len(ms),
        "p50_ms": _pct(ms, 0.5),
        "p99_ms": _pct(ms, 0.99),
        "p999_ms": _pct(ms, 0.999),
        "max_ms": max(ms, default=float("nan")),
        "over_50": len(slow50),
        "over_50_in_checkpoint": sum(overlaps(a, s) for a, s in slow50),
        "over_100": len(slow100),
        "cores": run.cores,
        "written_mb_per_s": run.written_mb_per_s,
        "lag_p99_ms": _pct(run.lags, 0.99) * 1000,
        "lag_max_ms": max(run.lags, default=float("nan")) * 1000,
        "loads": len(run.loads),
        "load_ms": sum(b - a for a, b, _ in run.loads) / max(len(run.loads), 1) * 1000,
        "checkpoints": len(windows),
        "checkpoint_ms": sum(b - a for a, b in run.checkpoints)
        / max(len(run.checkpoints), 1)
        * 1000
        if run.checkpoints
        else float("nan"),
    }


def main(quick: bool = False, seconds: float | None = None, modes: list[str] | None = None) -> None:
    """Run each mode for ``seconds`` (20; 8 with ``quick``) and print the table."""
    seconds = seconds or (8.0 if quick else 20.0)
    modes = modes or ["journal-only", "auto", "threshold-4mib", "every-load"]
    print(
        f"journal append (write + fdatasync) of {GROUP}-event batches every {INTERVAL * 1000:.0f}"
        f" ms for {seconds:.0f} s per mode, load average {os.getloadavg()[0]:.1f} at the start"
    )
    header = (
        f"{'mode':<14} {'appends':>7} {'p50':>6} {'p99':>7} {'p99.9':>7} {'max':>7} "
        f"{'>50ms':>6} {'in ckpt':>7} {'>100ms':>6} {'loads':>5} {'load ms':>7} "
        f"{'ckpts':>5} {'ckpt ms':>7} {'lag p99':>7} {'lag max':>7} {'cores':>5} {'MB/s':>5}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            r = summary(run_mode(mode, seconds, Path(tmp)))
            print(
                f"{r['mode']:<14} {r['appends']:>7} {r['p50_ms']:>6.1f} {r['p99_ms']:>7.1f} "
                f"{r['p999_ms']:>7.1f} {r['max_ms']:>7.1f} {r['over_50']:>6} "
                f"{r['over_50_in_checkpoint']:>7} {r['over_100']:>6} {r['loads']:>5} "
                f"{r['load_ms']:>7.0f} {r['checkpoints']:>5} {r['checkpoint_ms']:>7.0f} "
                f"{r['lag_p99_ms']:>7.1f} {r['lag_max_ms']:>7.1f} {r['cores']:>5.2f} "
                f"{r['written_mb_per_s']:>5.1f}"
            )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 s per mode")
    parser.add_argument("--seconds", type=float, help="seconds per mode")
    parser.add_argument("--modes", help="comma-separated: journal-only, " + ", ".join(MODES))
    args = parser.parse_args()
    main(args.quick, args.seconds, args.modes.split(",") if args.modes else None)
