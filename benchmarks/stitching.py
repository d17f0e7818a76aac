"""Identity stitching per import chunk: merges, new persons, wall and CPU seconds.

Writes the simulator's events (3M; ``--quick``: 1M) as CSV, imports the file into a fresh store
(1M-row chunks, as ``funnelscope ingest`` does) and times every call of
``store.identity.assign_persons``: its rows, the persons it created, the merges it applied
(anonymous persons joined to a user's) and its wall and CPU seconds. The merge and person
counts are read after the timed call (docs/data-model.md, "Identity").

    .venv/bin/python benchmarks/stitching.py --quick
    .venv/bin/python benchmarks/stitching.py --rows 10000000
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

import duckdb

import funnelscope
from funnelscope.ingest import bulk, csv_segment, pipeline

RECEIVED_AT = datetime(2025, 1, 1, tzinfo=UTC)
#: the modules that call assign_persons (each imported the name itself)
CALLERS = (pipeline, bulk, csv_segment)


def _counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(persons, canonical persons) of the store."""
    row = con.execute("SELECT count(*), count(DISTINCT canonical_id) FROM person_map").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _instrument(found: list[tuple[int, int, int, float, float]]) -> None:
    for module in CALLERS:
        function = module.assign_persons

        def timed(
            con: duckdb.DuckDBPyConnection,
            table: str,
            _f: Callable[..., Any] = function,
        ) -> Any:
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            persons, canonical = _counts(con)
            wall, cpu = time.perf_counter(), time.process_time()
            result = _f(con, table)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            after, canonical_after = _counts(con)
            new = after - persons
            merges = new - (canonical_after - canonical)
            found.append((int(rows), new, merges, wall, cpu))
            return result

        module.assign_persons = timed  # type: ignore[attr-defined]


def main(quick: bool, rows: int | None = None) -> None:
    n = rows or (1_000_000 if quick else 3_000_000)
    sys.path.insert(0, str(Path(__file__).parent))
    from ingest import _events, _write  # benchmarks/ingest.py: the simulator's events

    work = Path(tempfile.mkdtemp(prefix="funnelscope-bench-stitching-"))
    try:
        table, origin = _events(n)
        path = _write(table, work, ("csv",))["csv"]
        del table
        found: list[tuple[int, int, int, float, float]] = []
        _instrument(found)
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        with funnelscope.open(work / "store.duckdb") as ws:
            ws.ingest(path, received_at=RECEIVED_AT)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{n:,} {origin} events as CSV, fresh store, load average {load:.2f}\n")
        print(
            f"{'call':>4} {'rows':>10} {'new persons':>12} {'merges':>7} {'wall s':>8} {'cpu s':>7}"
        )
        for i, (rows, new, merges, w, c) in enumerate(found):
            print(f"{i:>4} {rows:>10,} {new:>12,} {merges:>7,} {w:>8.3f} {c:>7.3f}")
        print(
            f"{'all':>4} {'':>10} {sum(f[1] for f in found):>12,} "
            f"{sum(f[2] for f in found):>7,} {sum(f[3] for f in found):>8.3f} "
            f"{sum(f[4] for f in found):>7.3f}"
        )
        print(f"\nimport in all: {wall:.2f} s wall, {cpu:.2f} CPU-s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M events instead of 3M")
    parser.add_argument("--rows", type=int, help="this many events (e.g. 10000000)")
    args = parser.parse_args()
    main(quick=args.quick, rows=args.rows)
