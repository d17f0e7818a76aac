"""The text check of a Parquet segment import, with and without the dictionary pages.

``clean_text.TextScan`` proves every text column of a file clean. The old way reads every text
column with pyarrow as dictionaries; the new one (``pages=True``, the default) reads only the
columns the import keeps per row, and checks the others from their dictionary pages
(``ingest/parquet_pages.py``) on a second thread. Both run here on the same file, alternated,
with the columns ``ingest/bulk.py`` passes for the simulator's file; the verdicts and kept
columns are compared. Wall and CPU seconds (all threads of the process) per run, and the load
average: docs/import.md ("Text check from dictionary pages") has the figures.

    .venv/bin/python benchmarks/text_check.py --quick                       # 1M events
    .venv/bin/python benchmarks/text_check.py --file /tmp/pq6/e10m.parquet  # a kept file
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from funnelscope.ingest.clean_text import TextScan
from funnelscope.ingest.segment_side import SIDE_INPUTS

#: The columns bulk's proof of validity reads per row besides the side table's inputs.
PROOF_INPUTS = ("event", "user_id", "anonymous_id", "properties", "currency")


def _columns(path: Path) -> tuple[list[str], list[str]]:
    """The text columns and the kept ones, as ``bulk._scan_verdict`` asks for them."""
    schema = pq.read_schema(path)
    text = [f.name for f in schema if pa.types.is_string(f.type) and f.name != "event_id"]
    keep = [c for c in dict.fromkeys((*SIDE_INPUTS, *PROOF_INPUTS)) if c in text]
    return text, keep


def _time(path: Path, text: list[str], keep: list[str], pages: bool) -> tuple[float, float, bool]:
    con = duckdb.connect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = TextScan(path, text, keep, ids="event_id", pages=pages).result(con)
    return time.perf_counter() - wall, time.process_time() - cpu, result.clean


def main(quick: bool, file: Path | None = None, runs: int = 5) -> None:
    work = Path(tempfile.mkdtemp(prefix="funnelscope-bench-text-"))
    try:
        if file is not None and file.exists():
            path = file
        else:
            sys.path.insert(0, str(Path(__file__).parent))
            from parquet_stages import _events_file

            path = _events_file(1_000_000 if quick else 10_000_000, work)
            if file is not None:
                shutil.copyfile(path, file)
        rows = pq.read_metadata(path).num_rows
        text, keep = _columns(path)
        old = TextScan(path, text, keep, ids="event_id", pages=False).result(duckdb.connect())
        new = TextScan(path, text, keep, ids="event_id", pages=True).result(duckdb.connect())
        assert new.clean == old.clean
        assert new.kept is not None and old.kept is not None and new.kept.equals(old.kept)
        found: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        load = os.getloadavg()[0]
        for _ in range(runs):
            for pages in (False, True):
                wall, cpu, clean = _time(path, text, keep, pages)
                assert clean == old.clean
                found[pages].append((wall, cpu))
        print(
            f"{rows:,} events, {len(text)} text columns ({len(keep)} kept) + event_id, "
            f"clean={old.clean}, {runs} runs each alternated, load average "
            f"{load:.2f} -> {os.getloadavg()[0]:.2f}\n"
        )
        print(f"{'TextScan':<34} {'wall s (median, min)':>22} {'cpu s (median, min)':>22}")
        for pages, label in ((False, "every text column read"), (True, "others from dict pages")):
            walls = [w for w, _ in found[pages]]
            cpus = [c for _, c in found[pages]]
            print(
                f"{label:<34} {statistics.median(walls):>12.3f} {min(walls):>8.3f} "
                f"{statistics.median(cpus):>13.3f} {min(cpus):>8.3f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1M events instead of 10M")
    parser.add_argument("--file", type=Path, help="the events file: written if missing")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each way")
    args = parser.parse_args()
    main(quick=args.quick, file=args.file, runs=args.runs)
