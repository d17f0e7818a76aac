"""Where a Parquet segment import spends its time: wall and CPU seconds per stage.

Writes the simulator's events (1M; 10M without ``--quick``) as the simulator writes Parquet,
imports the file once into a scratch store to warm the process (allocator, thread pools; that
first import is timed too: benchmarks/ingest.py times a first one), then into a fresh store
with each stage of ``ingest/bulk.py`` timed. CPU seconds are those of the whole process during
the stage, so a stage that runs work on another thread (the id triples, names and channels
during the proof and stitching) counts it; wall time is what to compare on an idle machine,
CPU time on a shared one. docs/import.md ("Parquet segments") has the
figures and what they mean.

    .venv/bin/python benchmarks/parquet_stages.py --quick
    .venv/bin/python benchmarks/parquet_stages.py --file /tmp/e10m.parquet  # 10M, file kept
    .venv/bin/python benchmarks/parquet_stages.py --events 3000000

``--file`` keeps the events file (written on the first run, reused after: A/B runs of a
change need not simulate again; the row count is then the file's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import funnelscope
from funnelscope.ingest import bulk, clean_text, segment_side
from funnelscope.store import segments

RECEIVED_AT = datetime(2025, 1, 1, tzinfo=UTC)
#: (owner, function, label) of each timed stage, in the order they run.
STAGES = (
    (bulk, "_register_event_names", "event names"),
    (clean_text.TextScan, "result", "text check (read on a thread, edge bytes, id order)"),
    (bulk, "_proven_numbers", "rows proven valid from the text read"),
    (bulk, "_scan_numbers", "validation scan (only when the proof declines)"),
    (bulk, "_scan_verdict", "  verdict in all"),
    (segment_side.SideInputs, "triples", "wait for the id triples (thread)"),
    (bulk, "assign_persons", "stitching (identity.assign_persons)"),
    (segment_side, "_persons", "persons of the rows"),
    (bulk, "build_side_table", "side table (waits for names/channels, writes)"),
    (segments, "register_segment", "register the segment, views"),
    (bulk, "_add_segment", "  stitching and side table in all"),
)


def _instrument(found: list[tuple[str, float, float]]) -> None:
    for owner, name, label in STAGES:
        function = getattr(owner, name)

        def timed(*args: Any, _f: Callable[..., Any] = function, _l: str = label, **kw: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return _f(*args, **kw)
            finally:
                found.append((_l, time.perf_counter() - wall, time.process_time() - cpu))

        setattr(owner, name, timed)


def _events_file(n: int, folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from ingest import _events  # benchmarks/ingest.py: the simulator's events, plain text

    from funnelscope.simulate.files import write_events

    table, _ = _events(n)
    return write_events(table, folder / "events.parquet", ".parquet")


def main(quick: bool, events: int | None = None, file: Path | None = None) -> None:
    n = events or (1_000_000 if quick else 10_000_000)
    work = Path(tempfile.mkdtemp(prefix="funnelscope-bench-stages-"))
    try:
        if file is not None and file.exists():  # reused between runs: A/B without simulating
            path = file
        else:
            path = _events_file(n, work)
            if file is not None:
                shutil.copyfile(path, file)
        n = pq.ParquetFile(path).metadata.num_rows
        # the process's first import pays for first use (pyarrow's and numpy's allocators and
        # thread pools, DuckDB's first plans): timed apart, as benchmarks/ingest.py times it
        with funnelscope.open(work / "warm.duckdb") as ws:
            wall, cpu = time.perf_counter(), time.process_time()
            ws.ingest(path, received_at=RECEIVED_AT)
            cold = (time.perf_counter() - wall, time.process_time() - cpu)
        found: list[tuple[str, float, float]] = []
        _instrument(found)
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        with funnelscope.open(work / "store.duckdb") as ws:
            found.append(("open the store", time.perf_counter() - wall, time.process_time() - cpu))
            started, cpu_started = time.perf_counter(), time.process_time()
            report = ws.ingest(path, received_at=RECEIVED_AT)
            ingest = (time.perf_counter() - started, time.process_time() - cpu_started)
        found.append(("Workspace.ingest alone", *ingest))
        found.append(("first import of the process (cold), ingest alone", *cold))
        found.append(
            ("total (open, import, close)", time.perf_counter() - wall, time.process_time() - cpu)
        )
        assert report.inserted == n, report.to_dict()
        print(f"{n:,} simulator events, Parquet segment import, load average {load:.2f}\n")
        print(f"{'stage':<52} {'wall s':>8} {'cpu s':>8}")
        for label, seconds, cpu_s in found:
            print(f"{label:<52} {seconds:>8.3f} {cpu_s:>8.3f}")
        total = found[-1][1]
        print(
            f"\n{n / total:,.0f} events/s end to end, {n / ingest[0]:,.0f} ingest alone, "
            f"{n / cold[0]:,.0f} cold (target 2,000,000)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1M events instead of 10M")
    parser.add_argument("--events", type=int, help="this many events (default 10M, --quick 1M)")
    parser.add_argument(
        "--file", type=Path, help="the events file: written there if missing, else reused"
    )
    args = parser.parse_args()
    main(quick=args.quick, events=args.events, file=args.file)
