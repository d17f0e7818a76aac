"""``funnelscope simulate``: generate the demo shop into a store or a file.

A thin wrapper over :func:`funnelscope.simulate.simulate` (docs/simulator.md). Without
``--start`` the period ends today (UTC): the CLI is the edge that reads the clock.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from funnelscope.cli.common import console, err_console, print_json
from funnelscope.errors import InvalidInputError, Problem

__all__ = ["register", "resolve_start"]


def resolve_start(start: str | None, days: int, today: date) -> date:
    """The first simulated day: ``start`` (ISO date) or ``today - days``; the period may not
    end after tomorrow, because the store rejects events more than a day in the future."""
    if start is None:
        return today - timedelta(days=days)
    try:
        first = date.fromisoformat(start.strip())
    except ValueError:
        raise InvalidInputError(
            [Problem("simulate.bad_start", "--start", f"not a date: {start!r}; use YYYY-MM-DD")]
        ) from None
    if first + timedelta(days=days) > today + timedelta(days=1):
        raise InvalidInputError(
            [
                Problem(
                    "simulate.future_period",
                    "--start",
                    f"the period {first} + {days} days ends after today ({today}); "
                    f"use a --start on or before {today + timedelta(days=1 - days)}",
                )
            ]
        )
    return first


def _check(customers: int, days: int, seed: int, out: Path | None, store: Path | None) -> None:
    from funnelscope.simulate.shop import validate

    problems: list[Problem] = []
    try:
        validate(customers, days, seed)
    except InvalidInputError as exc:
        problems.extend(Problem(p.code, "--" + p.location, p.message) for p in exc.problems)
    if (out is None) == (store is None):
        problems.append(
            Problem(
                "simulate.target", "--out/--store", "give exactly one of --out FILE or --store PATH"
            )
        )
    if problems:
        raise InvalidInputError(problems)


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_command(
        customers: Annotated[
            int, typer.Option("--customers", "-n", help="Persons visiting the shop (>= 1).")
        ],
        days: Annotated[int, typer.Option("--days", "-d", help="Days to simulate, 1..3650.")],
        seed: Annotated[int, typer.Option("--seed", help="Random seed (>= 0).")] = 0,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                "-o",
                help="Write events to FILE (.parquet, .csv, .jsonl) and the facts "
                "to sibling <stem>.<kind>.csv files.",
            ),
        ] = None,
        store: Annotated[
            Path | None,
            typer.Option("--store", "-s", help="Append to this store (created if missing)."),
        ] = None,
        start: Annotated[
            str | None,
            typer.Option("--start", help="First day, YYYY-MM-DD (default: the period ends today)."),
        ] = None,
        format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
    ) -> None:
        """Simulate a believable online shop (docs/simulator.md) into a store or a file."""
        from funnelscope.simulate import simulate

        _check(customers, days, seed, out, store)
        if format not in ("table", "json"):
            raise InvalidInputError([Problem("cli.bad_format", "--format", "use table or json")])
        now = datetime.now(UTC)
        first = resolve_start(start, days, now.date())
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TimeElapsedColumn(),
        )
        result: dict[str, Any] = {}
        with Progress(
            *columns, console=err_console, transient=True, disable=not err_console.is_terminal
        ) as bar:
            task = bar.add_task(f"simulating {customers:,} customers x {days} days", total=None)
            began = time.perf_counter()
            shop = simulate(customers, days, seed, start=first)
            generated_in = time.perf_counter() - began
            n_events = shop.events.num_rows
            bar.update(task, total=n_events, completed=n_events)
            result.update(shop.summary())
            result["generation_seconds"] = round(generated_in, 3)
            result["events_per_second"] = round(n_events / max(generated_in, 1e-9))
            write = bar.add_task(f"writing {out or store}", total=None)
            began = time.perf_counter()
            if out is not None:
                result["files"] = {k: str(v) for k, v in shop.write_files(out).items()}
            else:
                import funnelscope

                def progress(done: int, total: int) -> None:
                    bar.update(write, completed=done, total=total)

                assert store is not None
                with funnelscope.open(store) as ws:
                    report = shop.write_store(ws.store, received_at=now, progress=progress)
                result["store"] = str(store)
                result["ingest"] = {k: v for k, v in report.to_dict().items() if k != "rejections"}
            written_in = time.perf_counter() - began
            result["write_seconds"] = round(written_in, 3)
            result["rows_written_per_second"] = round(
                (n_events + sum(t.num_rows for t in shop.facts.values())) / max(written_in, 1e-9)
            )
        if format == "json":
            print_json(result)
            return
        console.print(
            f"simulated [bold]{n_events:,}[/bold] events ({result['sessions']:,} sessions, "
            f"{result['orders']:,} orders) for {customers:,} customers, {first} .. "
            f"{shop.end - timedelta(days=1)}, in {generated_in:.2f} s "
            f"([bold]{result['events_per_second']:,}[/bold] events/s)"
        )
        facts = ", ".join(f"{name} {table.num_rows:,}" for name, table in shop.facts.items())
        console.print(f"facts: {facts}")
        if "ingest" in result:
            ing = result["ingest"]
            console.print(
                f"stored in {store}: {ing['inserted']:,} new of {ing['rows']:,} rows, "
                f"{ing['rejected']:,} rejected, in {written_in:.2f} s "
                f"({result['rows_written_per_second']:,} rows/s)"
            )
        else:
            console.print(f"wrote {out} and {len(shop.facts)} fact files in {written_in:.2f} s")
