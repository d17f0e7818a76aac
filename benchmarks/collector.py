"""Collector benchmark: sustained ingestion, latency at a fixed rate, memory over a soak.

The server runs as its own process (``funnelscope serve`` on a fresh store); this script is the
load generator, a separate process on loopback speaking HTTP/1.1 over asyncio sockets (a few
microseconds of client CPU per request, so the client does not starve the server on 2 cores).
Every request is a Segment ``/v1/batch`` of 100 events (``--route native`` for
``/api/v1/events``), each event with a unique messageId, so everything is inserted.

1. **Sustained throughput**: 32 connections in a closed loop; events acknowledged per second.
2. **Latency at a fixed rate**: 20,000 events/s (200 requests/s) scheduled open-loop; latency
   from the scheduled send time (no coordinated omission), p50 / p99 of the answered requests;
   non-200 answers, and requests not answered within 10 s after the phase, are counted.
   Before this phase and before the soak the script waits until the ack stage's queue is empty
   and the journal is loaded into the store (``funnelscope_journal_backlog_events`` = 0), so
   each is measured in steady state, not while the previous phase's overload is digested.
3. **Soak**: a fixed 2,500 events/s for 5 minutes (20 s with ``--quick``); the server's RSS
   sampled every second: start, end, peak and the slope over the second half (a line through
   10-second medians: checkpoints make spikes of 100-200 MB for a few seconds), and the same
   without DuckDB's buffer cache (``funnelscope_store_memory_bytes`` from ``/metrics``), which
   grows with the data by design.

Also printed: the server's CPU per 1,000 events in the sustained phase (all its threads, from
``/proc``), the cores the server and the load generator kept busy (a load generator near 1.0
would be the limit), and the mean size and time of an acknowledged group and of a load into the
store (from ``/metrics``).

Targets (issue 5): >= 50,000 events/s sustained; p99 <= 100 ms at 20,000 events/s; flat memory.

``--latency-seconds N`` runs only the 20,000 events/s phase, for N seconds, after a 5-second
closed-loop warm-up and the wait for the backlog, and prints p50 / p99 / max per second and the
requests over 100 ms (the long-phase p99 is what DuckDB's checkpoints move: docs/collector.md).

Usage: ``python benchmarks/collector.py [--quick] [--route segment|native]
[--latency-seconds N [--server-log FILE]]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from funnelscope.api.server import free_port, start_serve_process

BATCH = 100
#: How long an open-loop phase waits for its last answers before counting them as not served.
GRACE_S = 10.0
#: The soak's rate: steady traffic the server keeps up with, so memory is measured at rest.
SOAK_RATE = 2_500
TS = "2026-01-01T12:00:00.000Z"
TARGETS = {"throughput": 50_000, "p99_ms": 100.0}


def segment_message(i: int, message_id: str, ts: str = TS) -> dict[str, Any]:
    """The ``i``-th event of the benchmark's Segment batch (37 users, 53 anonymous ids)."""
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": f"user_{i % 37}",
        "anonymousId": f"anon_{i % 53}",
        "messageId": message_id,
        "timestamp": ts,
        "properties": {
            "product_id": f"p_{i % 20}",
            "price": 19.0,
            "currency": "EUR",
            "name": "Mug",
            "category": "Kitchen",
        },
        "context": {
            "page": {
                "url": "https://shop.example.com/p/1?utm_source=google&utm_medium=cpc",
                "referrer": "https://www.google.com/",
            },
            "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36",
            "locale": "de-DE",
        },
    }


def _template(route: str) -> tuple[str, bytes]:
    """(path, body template) with ``@@@@@@@@@@`` where each request puts its unique number."""
    ts = TS
    if route == "native":
        events = [
            {
                "event_id": f"@@@@@@@@@@-{i:03d}",
                "event": "Product Viewed",
                "user_id": f"user_{i % 37}",
                "timestamp": ts,
                "page_url": "https://shop.example.com/p/1?utm_source=google&utm_medium=cpc",
                "properties": {"price": 19.0, "name": "Mug"},
            }
            for i in range(BATCH)
        ]
        return "/api/v1/events", json.dumps({"events": events}).encode()
    events = [segment_message(i, f"@@@@@@@@@@-{i:03d}") for i in range(BATCH)]
    return "/v1/batch", json.dumps({"batch": events, "sentAt": ts}).encode()


class Loader:
    """Requests with unique ids from a template, over keep-alive asyncio connections."""

    def __init__(self, port: int, key: str, route: str) -> None:
        self.port = port
        self.path, self.body = _template(route)
        self.auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        self.counter = 0

    def request(self) -> bytes:
        self.counter += 1
        body = self.body.replace(b"@@@@@@@@@@", b"%010d" % self.counter)
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nAuthorization: {self.auth}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    @staticmethod
    async def exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> int:
        writer.write(data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        return status


@dataclass
class Phase:
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    unserved: int = 0
    latencies: list[float] | None = None
    #: when each answered request was scheduled, seconds after the phase's start
    scheduled: list[float] | None = None
    #: the phase's start on ``time.perf_counter()`` (CLOCK_MONOTONIC: comparable with the
    #: server's clock, for lining slow seconds up with a server-side log)
    started: float = 0.0


async def closed_loop(loader: Loader, connections: int, seconds: float) -> Phase:
    phase = Phase()
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await loader.connect()
        while time.perf_counter() < stop:
            status = await loader.exchange(reader, writer, loader.request())
            if status == 200:
                phase.ok += 1
            else:
                phase.failed += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    phase.seconds = time.perf_counter() - started
    return phase


async def open_loop(loader: Loader, rate_per_s: float, seconds: float, sample: Any = None) -> Phase:
    """Requests scheduled at a fixed rate; latency measured from each scheduled time.

    ``sample`` (if given) is called once a second while the phase runs.
    """
    phase = Phase(latencies=[], scheduled=[])
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(64):
        pool.put_nowait(await loader.connect())
    start = phase.started = time.perf_counter()
    total = int(rate_per_s * seconds)
    tasks = []
    done = asyncio.Event()

    async def sampler() -> None:
        while not done.is_set():
            sample()
            await asyncio.sleep(1.0)

    async def one(scheduled: float) -> None:
        conn = await pool.get()
        try:
            status = await loader.exchange(*conn, loader.request())
        except (ConnectionError, asyncio.IncompleteReadError):
            phase.failed += 1
            conn = await loader.connect()
        else:
            assert phase.latencies is not None and phase.scheduled is not None
            if status == 200:
                phase.ok += 1
                phase.latencies.append(time.perf_counter() - scheduled)
                phase.scheduled.append(scheduled - start)
            else:
                phase.failed += 1
        pool.put_nowait(conn)

    sampling = asyncio.create_task(sampler()) if sample is not None else None
    for i in range(total):
        scheduled = start + i / rate_per_s
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    # requests still unanswered GRACE seconds after the phase are counted as not served:
    # an overloaded server would otherwise stretch the phase without end
    _, late = await asyncio.wait(tasks, timeout=GRACE_S) if tasks else (set(), set())
    for task in late:
        task.cancel()
    phase.unserved = len(late)
    phase.seconds = time.perf_counter() - start
    done.set()
    if sampling is not None:
        await sampling
    while not pool.empty():
        pool.get_nowait()[1].close()
    return phase


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stage_means(port: int) -> dict[str, float]:
    """Mean events and milliseconds per ack group and per load into the store, from /metrics."""
    out = {}
    for stage, prefix in (("ack", "funnelscope_ack"), ("load", "funnelscope_commit")):
        count = metric(port, f"{prefix}_seconds_count")
        out[f"{stage}_ms"] = metric(port, f"{prefix}_seconds_sum") / count * 1000
        out[f"{stage}_events"] = metric(port, f"{prefix}_events_sum") / count
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def store_mb(port: int) -> float:
    """DuckDB's buffer-manager memory in the server, from its /metrics."""
    return metric(port, "funnelscope_store_memory_bytes") / 2**20


def metric(port: int, name: str) -> float:
    """One gauge of the server's /metrics."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def wait_for_drain(port: int, timeout: float = 120.0) -> float:
    """Wait until the ack stage's queue is empty and the journal is loaded into the store (the
    overload phase leaves a backlog that would otherwise land in the soak); the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        queued = metric(port, "funnelscope_queue_events")
        backlog = metric(port, "funnelscope_journal_backlog_events")  # NaN: a server without one
        if queued == 0 and (backlog == 0 or math.isnan(backlog)):
            break
        time.sleep(0.2)
    return time.perf_counter() - started


def _slope_per_minute(points: list[tuple[float, float]], bin_seconds: float = 10.0) -> float:
    """Slope of (seconds, MB) samples in MB per minute: the least-squares line through the
    medians of ``bin_seconds`` bins. A checkpoint lifts RSS by 100-200 MB for a few seconds;
    medians keep such spikes from deciding the slope, as they would between two end points."""
    if len(points) < 3:
        return float("nan")
    seconds, mb = np.array(points).T
    bins = ((seconds - seconds[0]) // bin_seconds).astype(int)
    ids = np.unique(bins)
    if len(ids) < 2:
        return float("nan")
    centers = np.array([np.median(seconds[bins == i]) for i in ids])
    medians = np.array([np.median(mb[bins == i]) for i in ids])
    return float(np.polyfit(centers, medians, 1)[0] * 60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(quick: bool, route: str) -> dict[str, Any]:
    import funnelscope
    from funnelscope.keys import create_key

    throughput_s, latency_s, soak_s = (5.0, 5.0, 20.0) if quick else (30.0, 30.0, 300.0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.duckdb"
        with funnelscope.open(store) as ws:
            from datetime import UTC, datetime

            key = create_key(ws.store, "write", "bench", now=datetime.now(UTC)).token
        port = free_port()
        server = start_serve_process(store, port, "--rate-limit", "0")
        try:
            loader = Loader(port, key, route)
            cpu_server, cpu_client = cpu_seconds(server.pid), time.process_time()
            sustained = asyncio.run(closed_loop(loader, 32, throughput_s))
            cpu_server = cpu_seconds(server.pid) - cpu_server
            cpu_client = time.process_time() - cpu_client
            stages = stage_means(port)
            # the fixed rate is measured in steady state, not while the overload is digested
            settled_s = wait_for_drain(port)
            fixed = asyncio.run(open_loop(loader, 20_000 / BATCH, latency_s))
            drained_s = wait_for_drain(port)
            samples: list[tuple[float, float, float]] = []
            t0 = time.perf_counter()

            def sample() -> None:
                samples.append((time.perf_counter() - t0, rss_mb(server.pid), store_mb(port)))

            soak = asyncio.run(open_loop(loader, SOAK_RATE / BATCH, soak_s, sample=sample))
            sample()
        finally:
            server.terminate()
            server.wait(timeout=60)
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    slope = _slope_per_minute([(t, rss) for t, rss, _ in half])
    # the collector's own memory: RSS minus what DuckDB caches (which grows with the data)
    own_slope = _slope_per_minute([(t, rss - cache) for t, rss, cache in half])
    lat = fixed.latencies or []
    return {
        "route": route,
        "sustained_events_per_s": sustained.ok * BATCH / sustained.seconds,
        "sustained_failed_requests": sustained.failed,
        "server_cpu_ms_per_1k_events": cpu_server / max(sustained.ok * BATCH, 1) * 1e6,
        "server_cores_busy": cpu_server / sustained.seconds,
        "client_cores_busy": cpu_client / sustained.seconds,
        **{f"sustained_{k}": v for k, v in stages.items()},
        "fixed_rate_events_per_s": 20_000,
        "fixed_achieved_events_per_s": fixed.ok * BATCH / fixed.seconds,
        "fixed_failed_requests": fixed.failed,
        "fixed_unserved_requests": fixed.unserved,
        "fixed_seconds": fixed.seconds,
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "drain_seconds": drained_s,
        "settle_seconds": settled_s,
        "soak_seconds": soak_s,
        "soak_failed_requests": soak.failed,
        "soak_unserved_requests": soak.unserved,
        "soak_p99_ms": percentile(soak.latencies or [], 0.99) * 1000,
        "load_average": os.getloadavg()[0],
        "rss_start_mb": samples[0][1],
        "rss_end_mb": samples[-1][1],
        "rss_peak_mb": max(s[1] for s in samples),
        "rss_slope_mb_per_min_second_half": slope,
        "store_mb_start": samples[0][2],
        "store_mb_end": samples[-1][2],
        "rss_minus_store_slope_mb_per_min": own_slope,
    }


def per_second(phase: Phase, slow_ms: float = 100.0) -> list[dict[str, float]]:
    """Per second of the phase (by scheduled send time): requests, p50, p99, max and how many
    took longer than ``slow_ms``."""
    buckets: dict[int, list[float]] = {}
    for at, latency in zip(phase.scheduled or [], phase.latencies or [], strict=True):
        buckets.setdefault(int(at), []).append(latency * 1000)
    return [
        {
            "second": second,
            "requests": len(values),
            "p50_ms": percentile(values, 0.50),
            "p99_ms": percentile(values, 0.99),
            "max_ms": max(values),
            "slow": sum(v > slow_ms for v in values),
        }
        for second, values in sorted(buckets.items())
    ]


def run_latency(
    seconds: float, route: str, *, warmup_s: float = 5.0, server_log: Path | None = None
) -> dict[str, Any]:
    """Only the 20,000 events/s phase, for ``seconds``, after the same warm-up as ``--quick``
    (``warmup_s`` of the closed loop, then waiting for the backlog to be loaded).

    ``server_log``: where the server's output goes (for lining its log up with slow seconds).
    """
    import funnelscope
    from funnelscope.keys import create_key

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.duckdb"
        with funnelscope.open(store) as ws:
            from datetime import UTC, datetime

            key = create_key(ws.store, "write", "bench", now=datetime.now(UTC)).token
        port = free_port()
        server = start_serve_process(store, port, "--rate-limit", "0", log=server_log)
        try:
            loader = Loader(port, key, route)
            warm = asyncio.run(closed_loop(loader, 32, warmup_s))
            settled_s = wait_for_drain(port)
            cpu_server = cpu_seconds(server.pid)
            fixed = asyncio.run(open_loop(loader, 20_000 / BATCH, seconds))
            cpu_server = cpu_seconds(server.pid) - cpu_server
            stages = stage_means(port)
        finally:
            server.terminate()
            server.wait(timeout=60)
    lat = fixed.latencies or []
    return {
        "route": route,
        "seconds": seconds,
        "warmup_events": warm.ok * BATCH,
        "settle_seconds": settled_s,
        "phase_started_perf_counter": fixed.started,
        "fixed_achieved_events_per_s": fixed.ok * BATCH / fixed.seconds,
        "fixed_failed_requests": fixed.failed,
        "fixed_unserved_requests": fixed.unserved,
        "server_cores_busy": cpu_server / fixed.seconds,
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "max_ms": max(lat, default=float("nan")) * 1000,
        "slow_requests": sum(v > 0.1 for v in lat),
        "requests": len(lat),
        **{f"run_{k}": v for k, v in stages.items()},
        "per_second": per_second(fixed),
        "load_average": os.getloadavg()[0],
    }


def report_latency(result: dict[str, Any]) -> None:
    print(
        f"collector latency at 20,000 events/s for {result['seconds']:.0f} s, route "
        f"{result['route']}, {os.cpu_count()} cores, load average {result['load_average']:.1f}"
        f" at the end (phase started at perf_counter {result['phase_started_perf_counter']:.3f})"
    )
    print(f"{'second':>6} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'>100 ms':>7}")
    for row in result["per_second"]:
        print(
            f"{row['second']:>6} {row['requests']:>8} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}"
            f" {row['max_ms']:>8.1f} {row['slow']:>7}"
        )
    print(
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms (target <= "
        f"{TARGETS['p99_ms']:.0f}), max {result['max_ms']:.1f} ms; "
        f"{result['slow_requests']} of {result['requests']} requests over 100 ms; served "
        f"{result['fixed_achieved_events_per_s']:,.0f} events/s (non-200 "
        f"{result['fixed_failed_requests']}, not served {result['fixed_unserved_requests']}); "
        f"server cores busy {result['server_cores_busy']:.2f}; mean load "
        f"{result['run_load_events']:,.0f} events in {result['run_load_ms']:.0f} ms"
    )


def report(result: dict[str, Any]) -> None:
    rows = [
        (
            "sustained events/s (100-event batches, 32 conns)",
            f"{result['sustained_events_per_s']:,.0f}",
            f">= {TARGETS['throughput']:,}",
        ),
        ("  failed requests", str(result["sustained_failed_requests"]), "0"),
        (
            "  server CPU per 1,000 events (cores busy: server / load generator)",
            f"{result['server_cpu_ms_per_1k_events']:.0f} ms ({result['server_cores_busy']:.2f}"
            f" / {result['client_cores_busy']:.2f})",
            "",
        ),
        (
            "  ack group: events, ms (validation + journal fsync)",
            f"{result['sustained_ack_events']:,.0f}, {result['sustained_ack_ms']:.1f} ms",
            "",
        ),
        (
            "  load into the store: events, ms (one append_events)",
            f"{result['sustained_load_events']:,.0f}, {result['sustained_load_ms']:.1f} ms",
            "",
        ),
        ("latency p50 at 20,000 events/s", f"{result['p50_ms']:.1f} ms", ""),
        (
            "latency p99 at 20,000 events/s",
            f"{result['p99_ms']:.1f} ms",
            f"<= {TARGETS['p99_ms']:.0f} ms",
        ),
        (
            "  served events/s (non-200 / not served in time)",
            f"{result['fixed_achieved_events_per_s']:,.0f} ({result['fixed_failed_requests']} / "
            f"{result['fixed_unserved_requests']})",
            "20,000",
        ),
        (
            "  backlog drained before the 20,000/s phase (seconds)",
            f"{result['settle_seconds']:.1f}",
            "",
        ),
        (
            "  backlog drained before the soak (seconds)",
            f"{result['drain_seconds']:.1f}",
            "",
        ),
        (
            f"soak RSS start -> end (peak), {result['soak_seconds']:.0f} s "
            f"at {SOAK_RATE:,} events/s",
            f"{result['rss_start_mb']:.0f} -> {result['rss_end_mb']:.0f} MB "
            f"({result['rss_peak_mb']:.0f})",
            "flat",
        ),
        (
            "  soak p99 latency (non-200 / not served in time)",
            f"{result['soak_p99_ms']:.1f} ms ({result['soak_failed_requests']} / "
            f"{result['soak_unserved_requests']})",
            "",
        ),
        (
            "  RSS slope over the second half",
            f"{result['rss_slope_mb_per_min_second_half']:+.1f} MB/min",
            "",
        ),
        (
            "  of which DuckDB's cache, start -> end",
            f"{result['store_mb_start']:.0f} -> {result['store_mb_end']:.0f} MB",
            "",
        ),
        (
            "  RSS minus DuckDB's cache, slope (second half)",
            f"{result['rss_minus_store_slope_mb_per_min']:+.1f} MB/min",
            "~0",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"collector benchmark, route {result['route']}, {os.cpu_count()} cores, "
        f"load average {result['load_average']:.1f} at the end"
    )
    print(f"{'measure':<{width}}  {'value':>24}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>24}  {target}")


def main(quick: bool = False, route: str = "segment") -> None:
    """Run the three phases and print the table (``benchmarks/run.py`` calls this)."""
    report(run(quick, route))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases, 20 s soak")
    parser.add_argument("--route", choices=("segment", "native"), default="segment")
    parser.add_argument(
        "--latency-seconds",
        type=float,
        metavar="N",
        help="only the 20,000 events/s phase, for N seconds (after a 5 s warm-up), per second",
    )
    parser.add_argument("--server-log", type=Path, help="append the server's output here")
    args = parser.parse_args()
    if args.latency_seconds:
        report_latency(run_latency(args.latency_seconds, args.route, server_log=args.server_log))
    else:
        main(args.quick, args.route)
