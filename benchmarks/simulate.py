"""Simulator throughput: events generated per second, and store write throughput.

``main(quick)`` simulates 100,000 customers x 90 days (quick: 10,000 x 90), best of a few runs
for generation (wall and process CPU time: on a shared machine CPU time is the steadier figure),
then writes the shop into a fresh store once. Target (issue 2): >= 1M events/s generated.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

SIZES = {False: (100_000, 90), True: (10_000, 90)}
RUNS = {False: 3, True: 2}
SEED = 7


def main(quick: bool = False) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import funnelscope
    from funnelscope.simulate import simulate

    customers, days = SIZES[quick]
    simulate(500, 7, SEED)  # warm up imports and numpy
    walls, cpus = [], []
    shop = None
    for _ in range(RUNS[quick]):
        began, cpu = time.perf_counter(), time.process_time()
        shop = simulate(customers, days, SEED)
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
    assert shop is not None
    events = shop.events.num_rows
    facts = sum(t.num_rows for t in shop.facts.values())
    with tempfile.TemporaryDirectory() as tmp:
        ws = funnelscope.open(Path(tmp) / "shop.duckdb")
        began, cpu = time.perf_counter(), time.process_time()
        report = shop.write_store(ws.store, received_at=datetime.now(UTC))
        write_wall, write_cpu = time.perf_counter() - began, time.process_time() - cpu
        ws.close()
    rows = [
        ("generate (best wall)", events, min(walls), events / min(walls)),
        ("generate (best CPU)", events, min(cpus), events / min(cpus)),
        ("write store (wall)", events + facts, write_wall, (events + facts) / write_wall),
        ("write store (CPU, all threads)", events + facts, write_cpu, (events + facts) / write_cpu),
    ]
    print(
        f"simulate {customers:,} customers x {days} days, seed {SEED}: {events:,} events, "
        f"{shop.sessions:,} sessions, {facts:,} fact rows; rejected {report.rejected}"
    )
    print(f"{'step':<32}{'rows':>12}{'seconds':>10}{'rows/s':>14}")
    for name, n, seconds, rate in rows:
        print(f"{name:<32}{n:>12,}{seconds:>10.2f}{rate:>14,.0f}")
    print(
        f"target: generate >= 1,000,000 events/s -> "
        f"{'met' if events / min(walls) >= 1e6 else 'NOT met'} (wall)"
    )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
