"""Where a CSV import spends its time: wall and CPU seconds per stage, per thread.

Writes the simulator's events (1M; 10M without ``--quick``) as the simulator writes CSV,
imports the file once into a scratch store to warm the process (allocators, thread pools, the
first plans), then into a fresh store with each stage of ``ingest/csv_read.py`` and
``ingest/csv_segment.py`` timed. Three clocks per stage: wall, the CPU of the thread that ran it
(``thread_time``: what the stage itself cost) and the CPU of the whole process meanwhile
(``process_time``: includes DuckDB's worker threads and whatever ran on the other threads).
Stages on the reading threads (parse, UTF-8 check) and on the writer thread overlap the
importing thread's; their rows are sums over every call. docs/import.md ("CSV segments") has
the figures and what they mean.

    .venv/bin/python benchmarks/csv_stages.py --quick
    .venv/bin/python benchmarks/csv_stages.py --quick --file events.csv   # an existing file
    .venv/bin/python benchmarks/csv_stages.py --file e10m.csv --warm e1m.csv --chunks

``--warm`` warms the process with another (smaller) file; ``--chunks`` adds each chunk's
figures for the stages run once per chunk (what grows as the store grows).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv

import funnelscope
from funnelscope.ingest import csv_read, csv_segment, files
from funnelscope.store import segments

RECEIVED_AT = datetime(2025, 1, 1, tzinfo=UTC)
#: (owner, function, label) of each timed stage.
STAGES = (
    (csv_read, "as_text", "UTF-8 check (reading threads)"),
    (csv_read, "block_suspects", "text suspects (reading threads)"),
    (csv_read, "_stage_block", "stage a block, scan it (importing thread)"),
    (csv_segment.ChunkScan, "_derive", "  names, channels, person keys per group"),
    (csv_segment, "all_trimmed", "clean text: exact trim() of suspects"),
    (csv_segment.ChunkScan, "derived", "names and channels of the last group"),
    (csv_segment, "_typed_items", "  items typed once per distinct text"),
    (csv_segment, "_checked", "typing and validation (DuckDB scan)"),
    (csv_segment, "_first_stored", "first id stored?"),
    (csv_segment, "_segment_table", "segment table (Arrow)"),
    (csv_segment, "_increasing", "ids increasing? (proves them distinct)"),
    (csv_segment, "_verdict", "verdict (counts, distinct, stored ids)"),
    (csv_segment, "assign_persons", "stitching (identity.assign_persons)"),
    (csv_segment, "_persons", "persons of the rows"),
    (csv_segment._Writer, "run", "Parquet file (writer thread)"),
    (csv_segment._Writer, "finish", "wait for the writer"),
    (segments, "register_segment", "register the segment, views"),
    (files, "import_csv_segment", "a chunk once read, in all"),
)

Found = dict[str, list[float]]
#: each call's (wall, thread CPU, process CPU) per stage
Calls = dict[str, list[tuple[float, float, float]]]


def _instrument(found: Found, calls: Calls) -> list[tuple[Any, str, Any]]:
    undo = []
    for owner, name, label in STAGES:
        function = getattr(owner, name)
        undo.append((owner, name, function))

        def timed(*args: Any, _f: Callable[..., Any] = function, _l: str = label, **kw: Any) -> Any:
            wall, own, cpu = time.perf_counter(), time.thread_time(), time.process_time()
            try:
                return _f(*args, **kw)
            finally:
                took = (
                    time.perf_counter() - wall,
                    time.thread_time() - own,
                    time.process_time() - cpu,
                )
                row = found[_l]
                row[0] += took[0]
                row[1] += took[1]
                row[2] += took[2]
                row[3] += 1
                calls[_l].append(took)

        setattr(owner, name, timed)
    return undo


class _TimedReader:
    """pyarrow's streaming CSV reader with each block's parse timed on the thread parsing it."""

    def __init__(self, reader: Any, found: Found) -> None:
        self.reader, self.found = reader, found
        self.lock = threading.Lock()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        wall, own = time.perf_counter(), time.thread_time()
        try:
            return next(self.reader)
        finally:
            with self.lock:
                row = self.found["parse (reading threads)"]
                row[0] += time.perf_counter() - wall
                row[1] += time.thread_time() - own
                row[3] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


def _events_file(n: int, folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from ingest import _events  # benchmarks/ingest.py: the simulator's events, plain text

    from funnelscope.simulate.files import write_events

    table, _ = _events(n)
    return write_events(table, folder / "events.csv", ".csv")


def main(
    quick: bool, path: Path | None = None, warm: Path | None = None, chunks: bool = False
) -> None:
    n = 1_000_000 if quick else 10_000_000
    work = Path(tempfile.mkdtemp(prefix="funnelscope-bench-csv-stages-"))
    try:
        path = path or _events_file(n, work)
        with funnelscope.open(work / "warm.duckdb") as ws:
            wall, cpu = time.perf_counter(), time.process_time()
            ws.ingest(warm or path, received_at=RECEIVED_AT)
            cold = (time.perf_counter() - wall, 0.0, time.process_time() - cpu, 1)
        found: Found = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
        per_call: Calls = defaultdict(list)
        undo = _instrument(found, per_call)
        open_csv = pacsv.open_csv
        pacsv.open_csv = lambda *a, **k: _TimedReader(open_csv(*a, **k), found)
        load = os.getloadavg()[0]
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            with funnelscope.open(work / "store.duckdb") as ws:
                report = ws.ingest(path, received_at=RECEIVED_AT)
            whole = (time.perf_counter() - wall, 0.0, time.process_time() - cpu, 1)
        finally:
            pacsv.open_csv = open_csv
            for owner, name, function in undo:
                setattr(owner, name, function)
        print(
            f"{report.rows:,} events, CSV import ({path.stat().st_size / 1e6:,.0f} MB), "
            f"load average {load:.2f}; {report.inserted:,} inserted, {report.rejected} rejected\n"
        )
        print(f"{'stage':<48} {'calls':>6} {'wall s':>8} {'thread s':>9} {'process s':>9}")
        rows = [
            *(
                (label, found[label])
                for label in ["parse (reading threads)", *(s[2] for s in STAGES)]
                if label in found
            ),
            ("first import of the process (cold)", list(cold)),
            ("open, import, close", list(whole)),
        ]
        for label, (seconds, own, cpu_s, calls) in rows:
            print(f"{label:<48} {calls:>6} {seconds:>8.3f} {own:>9.3f} {cpu_s:>9.3f}")
        print(f"\n{report.rows / whole[0]:,.0f} events/s end to end (target 500,000)")
        if chunks:
            _print_chunks(per_call)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _print_chunks(calls: Calls) -> None:
    """Thread CPU seconds (process CPU in brackets) of each chunk, for the per-chunk stages:
    a stage whose figures grow chunk by chunk grows with the store."""
    per_chunk = [
        label
        for _, _, label in STAGES
        if 1 < len(calls.get(label, ())) <= 64 and not label.startswith(" ")
    ]
    print("\nper chunk: thread CPU s (process CPU s)")
    for label in per_chunk:
        cells = " ".join(f"{own:.2f}({cpu:.2f})" for _, own, cpu in calls[label])
        print(f"{label[:40]:<40} {cells}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1M events instead of 10M")
    parser.add_argument("--file", type=Path, help="an existing CSV file of events")
    parser.add_argument("--warm", type=Path, help="warm the process with this file instead")
    parser.add_argument("--chunks", action="store_true", help="each chunk's figures too")
    args = parser.parse_args()
    main(quick=args.quick, path=args.file, warm=args.warm, chunks=args.chunks)
