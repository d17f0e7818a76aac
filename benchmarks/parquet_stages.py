"""Where a Parquet segment import spends its time: wall and CPU seconds per stage.

Writes the simulator's events (1M; 10M without ``--quick``) as the simulator writes Parquet,
imports the file once into a scratch store to warm the process (allocator, thread pools), then
into a fresh store with each stage of ``ingest/bulk.py`` timed. CPU seconds are those of the
whole process during the stage, so a stage that runs work on another thread (the text check
during the scan; names and channels during stitching) counts it; wall time is what to compare
on an idle machine, CPU time on a shared one. docs/import.md ("Parquet segments") has the
figures and what they mean.

    .venv/bin/python benchmarks/parquet_stages.py --quick
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

import funnelscope
from funnelscope.ingest import bulk, segment_side
from funnelscope.store import segments

RECEIVED_AT = datetime(2025, 1, 1, tzinfo=UTC)
#: (module, function, label) of each timed stage, in the order they run.
STAGES = (
    (bulk, "_register_event_names", "event names"),
    (bulk, "_scan_numbers", "validation scan (text check on a thread meanwhile)"),
    (bulk, "_scan_verdict", "  verdict in all (scan, text check, ids)"),
    (bulk, "_stage_identities", "distinct id triples"),
    (bulk, "assign_persons", "stitching (identity.assign_persons)"),
    (segment_side, "_persons", "persons of the rows"),
    (bulk, "build_side_table", "side table (waits for names/channels, writes)"),
    (segments, "register_segment", "register the segment, views"),
    (bulk, "_add_segment", "  stitching and side table in all"),
)


def _instrument(found: list[tuple[str, float, float]]) -> None:
    for module, name, label in STAGES:
        function = getattr(module, name)

        def timed(*args: Any, _f: Callable[..., Any] = function, _l: str = label, **kw: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return _f(*args, **kw)
            finally:
                found.append((_l, time.perf_counter() - wall, time.process_time() - cpu))

        setattr(module, name, timed)


def _events_file(n: int, folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from ingest import _events  # benchmarks/ingest.py: the simulator's events, plain text

    from funnelscope.simulate.files import write_events

    table, _ = _events(n)
    return write_events(table, folder / "events.parquet", ".parquet")


def main(quick: bool) -> None:
    n = 1_000_000 if quick else 10_000_000
    work = Path(tempfile.mkdtemp(prefix="funnelscope-bench-stages-"))
    try:
        path = _events_file(n, work)
        with funnelscope.open(work / "warm.duckdb") as ws:
            ws.ingest(path, received_at=RECEIVED_AT)
        found: list[tuple[str, float, float]] = []
        _instrument(found)
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        with funnelscope.open(work / "store.duckdb") as ws:
            found.append(("open the store", time.perf_counter() - wall, time.process_time() - cpu))
            report = ws.ingest(path, received_at=RECEIVED_AT)
        found.append(
            ("total (open, import, close)", time.perf_counter() - wall, time.process_time() - cpu)
        )
        assert report.inserted == n, report.to_dict()
        print(f"{n:,} simulator events, Parquet segment import, load average {load:.2f}\n")
        print(f"{'stage':<52} {'wall s':>8} {'cpu s':>8}")
        for label, seconds, cpu_s in found:
            print(f"{label:<52} {seconds:>8.3f} {cpu_s:>8.3f}")
        total = found[-1][1]
        print(f"\n{n / total:,.0f} events/s end to end (target 2,000,000)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1M events instead of 10M")
    main(quick=parser.parse_args().quick)
