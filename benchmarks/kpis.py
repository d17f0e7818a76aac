"""Every KPI of the catalogue over 90 days with a channel breakdown, on 10M events (quick: 1M).

Setup (not timed): the demo simulator's shop (``funnelscope.simulate``) with enough customers for
the event count, written into a fresh store through the ingest pipeline. Timed, embedded engine:

1. building the session cache once after ingest (sessions, attributed orders, cart sessions,
   email touches, site facts; one-off); the ``sessions`` rows come from the numba kernel, and
   the SQL definition (``session_ctes``) is timed on the same store as the peer, its rows
   checked equal;
2. each stage's KPIs (with ``--breakdown channel`` where the KPI supports it, else the total);
3. all KPIs at once, as ``make demo``'s report and the dashboard ask for them: the target is
   <= 2 s once ingested;
4. the incremental refresh after a late batch: page views re-sent for existing persons at
   random times in the window (0.1% of the events), so sessions re-open and merge.

Run: ``python benchmarks/kpis.py [--quick]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

import funnelscope
import funnelscope.ingest.pipeline
from funnelscope.analysis.kpi_catalogue import CATALOGUE
from funnelscope.analysis.kpis import KpiSpec, compute_kpis
from funnelscope.analysis.sessions import refresh_sessions, session_ctes
from funnelscope.events.stages import Stage

#: events per simulated customer over 90 days (measured on the simulator, seed 7)
EVENTS_PER_CUSTOMER = 13.0
DAYS = 90
TARGET_S = 2.0


def _specs(names: list[str], start: datetime, end: datetime) -> list[KpiSpec]:
    by_channel = [
        n for n in names if "channel" in next(k for k in CATALOGUE if k.name == n).breakdowns
    ]
    total = [n for n in names if n not in by_channel]
    specs = [KpiSpec.create(by_channel, start, end, breakdown=["channel"])] if by_channel else []
    if total:
        specs.append(KpiSpec.create(total, start, end))
    return specs


def _time(ws: funnelscope.Workspace, specs: list[KpiSpec]) -> tuple[float, int]:
    started = time.perf_counter()
    rows = sum(len(compute_kpis(ws.engine, s).rows) for s in specs)
    return time.perf_counter() - started, rows


def _late_batch(ws: funnelscope.Workspace, rows: int) -> pa.Table:
    """Page views of existing persons at random (seeded) times in the store's range."""
    return (
        ws.store.reader()
        .sql(
            """SELECT 'late-' || i AS event_id,
                  strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS "timestamp",
                  'page_viewed' AS event, user_id, anonymous_id, '/late' AS page_path
           FROM (SELECT row_number() OVER () AS i, user_id, anonymous_id,
                        "timestamp" + to_microseconds(CAST(hash(event_id) % 600_000_000 AS BIGINT))
                          AS ts
                 FROM events WHERE event = 'page_viewed' ORDER BY hash(event_id) LIMIT $n)""",
            params={"n": rows},
        )
        .to_arrow_table()
    )


def _sql_sessions(ws: funnelscope.Workspace) -> tuple[float, bool]:
    """Seconds to materialise ``sessions`` by its SQL definition; whether its rows equal the
    kernel-built cache's."""
    stitched = (
        "(SELECT e.* REPLACE (m.canonical_id AS person_id) FROM main.events e "
        "JOIN main.person_map m ON m.person_id = e.person_id)"
    )
    query = (
        "WITH "
        + ",\n".join(f"{n} AS ({b})" for n, b in session_ctes(source=stitched))
        + "\nSELECT * FROM sessions"
    )
    with ws.store.write() as cur:
        started = time.perf_counter()
        cur.execute("CREATE OR REPLACE TEMP TABLE _sql_sessions AS " + query)
        seconds = time.perf_counter() - started
        differ = cur.execute(
            "SELECT (SELECT count(*) FROM (SELECT * FROM _sql_sessions EXCEPT ALL "
            "SELECT * FROM main.sessions)) + (SELECT count(*) FROM (SELECT * FROM main.sessions "
            "EXCEPT ALL SELECT * FROM _sql_sessions))"
        ).fetchall()[0][0]
        cur.execute("DROP TABLE _sql_sessions")
    return seconds, differ == 0


def main(quick: bool = False) -> None:
    from funnelscope.simulate import simulate

    events_wanted = 1_000_000 if quick else 10_000_000
    customers = int(events_wanted / EVENTS_PER_CUSTOMER)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        shop = simulate(customers=customers, days=DAYS, seed=7)
        ws = funnelscope.open(Path(tmp) / "shop.duckdb")
        shop.write_store(ws.store, received_at=datetime(2030, 1, 1, tzinfo=UTC))
        events = ws.info()["events"]
        print(
            f"setup: {customers:,} customers, {events:,} events, "
            f"{time.perf_counter() - t:.1f} s (not timed)"
        )
        first = ws.store.query('SELECT min("timestamp") FROM events')[0][0]
        start = datetime.combine(first.date(), datetime.min.time(), tzinfo=UTC)
        end = start + timedelta(days=DAYS)

        t = time.perf_counter()
        refresh_sessions(ws.store)
        sessions_s = time.perf_counter() - t
        n_sessions = ws.store.query("SELECT count(*) FROM sessions")[0][0]
        sql_s, same = _sql_sessions(ws)

        print(f"\n{'step':<34}{'KPIs':>6}{'rows':>8}{'seconds':>10}")
        print(f"{'session cache (once, cold)':<34}{'':>6}{n_sessions:>8,}{sessions_s:>10.3f}")
        print(
            f"{'  peer: sessions by the SQL alone':<34}{'':>6}{'':>8}{sql_s:>10.3f}"
            f"  (rows {'equal' if same else 'DIFFER'})"
        )
        for stage in Stage:
            names = [k.name for k in CATALOGUE if k.stage == stage]
            seconds, rows = _time(ws, _specs(names, start, end))
            print(f"{stage.label + ' KPIs':<34}{len(names):>6}{rows:>8}{seconds:>10.3f}")
        names = [k.name for k in CATALOGUE]
        runs = [_time(ws, _specs(names, start, end)) for _ in range(3)]
        best = min(s for s, _ in runs)
        print(
            f"{'all KPIs, by channel (best of 3)':<34}{len(names):>6}{runs[0][1]:>8}{best:>10.3f}"
        )
        with_compare = [
            KpiSpec.create(
                s.names, s.start, s.end, breakdown=s.breakdown, compare="previous_period"
            )
            for s in _specs(names, start + timedelta(days=45), end)
        ]
        seconds, rows = _time(ws, with_compare)
        print(f"{'all KPIs, 45 days vs the 45 before':<34}{len(names):>6}{rows:>8}{seconds:>10.3f}")
        late = _late_batch(ws, max(events // 1000, 100))
        funnelscope.ingest.pipeline.append_events(
            ws.store, late, source="late", received_at=datetime(2030, 1, 2, tzinfo=UTC)
        )
        t = time.perf_counter()
        refresh_sessions(ws.store)
        incremental_s = time.perf_counter() - t
        print(
            f"{'refresh after ' + format(late.num_rows, ',') + ' late events':<34}{'':>6}"
            f"{'':>8}{incremental_s:>10.3f}"
        )
        verdict = "meets" if best <= TARGET_S else "misses"
        print(
            f"\n{events:,} events: all KPIs in {best:.2f} s once ingested and sessionised "
            f"({verdict} the {TARGET_S:.0f} s target); the session cache costs "
            f"{sessions_s:.1f} s once (the SQL alone: {sql_s:.1f} s for sessions); after a "
            f"late batch of {late.num_rows:,} events the "
            f"refresh takes {incremental_s:.2f} s."
        )
        ws.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1M events instead of 10M")
    main(parser.parse_args().quick)
