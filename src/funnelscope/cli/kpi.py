"""KPI commands: ``funnelscope kpi NAME...`` (values) and ``funnelscope kpis`` (the catalogue).

Thin wrappers over :meth:`Workspace.kpis`; definitions in docs/kpis.md. Without ``--start`` and
``--end`` the window is the 28 days up to the end of the store's last event day.
"""

from __future__ import annotations

import csv
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Final

import typer
from rich.table import Table

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console, print_json
from funnelscope.errors import InvalidInputError, Problem

__all__ = ["DEFAULT_WINDOW", "format_value", "parse_instant", "register", "resolve_window"]

#: The window of ``kpi`` and ``report`` when no dates are given: four whole weeks.
DEFAULT_WINDOW: Final = timedelta(days=28)

StartOption = Annotated[
    str | None, typer.Option("--start", help="Window start, ISO date or datetime (UTC).")
]
EndOption = Annotated[
    str | None, typer.Option("--end", help="Window end, exclusive, ISO date or datetime (UTC).")
]


def parse_instant(text: str, option: str) -> datetime:
    """An ISO date (midnight UTC) or datetime (UTC when it has no offset)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            [Problem("cli.bad_datetime", option, f"{text!r} is not an ISO date or datetime")]
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def resolve_window(ws: Any, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """The window from the options; missing ends default around the store's last event."""
    end_at = parse_instant(end, "--end") if end else None
    start_at = parse_instant(start, "--start") if start else None
    if end_at is None:
        last = ws.store.query('SELECT max("timestamp") FROM events')[0][0]
        if last is None:
            end_at = (start_at or datetime(2000, 1, 1, tzinfo=UTC)) + DEFAULT_WINDOW
        else:
            end_at = datetime.combine(last.astimezone(UTC).date(), time(), tzinfo=UTC)
            end_at += timedelta(days=1)
    if start_at is None:
        start_at = end_at - DEFAULT_WINDOW
    return start_at, end_at


def format_value(value: Any, unit: str, currency: str = "") -> str:
    """A KPI value for people: percentages for ratios, currency codes for money."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    v = float(value)
    if unit == "ratio":
        return f"{v * 100:.1f}%"
    if unit == "percent":
        return f"{v:.1f}%"
    if unit == "currency":
        return f"{v:,.2f} {currency}".strip()
    if unit == "seconds":
        return f"{v:,.1f} s"
    if unit == "days":
        return f"{v:,.1f} d"
    if unit == "multiple":
        return f"{v:,.2f}x"
    if unit == "score":
        return f"{v:+.1f}"
    return f"{v:,.0f}" if v == int(v) else f"{v:,.2f}"


def format_change(change: Any) -> str:
    if change is None or (isinstance(change, float) and change != change):
        return "-"
    return f"{float(change) * 100:+.1f}%"


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def register(app: typer.Typer) -> None:
    @app.command("kpi")
    def kpi_command(
        names: Annotated[
            list[str] | None, typer.Argument(help="KPI names (see `funnelscope kpis`).")
        ] = None,
        store: StoreOption = DEFAULT_STORE,
        start: StartOption = None,
        end: EndOption = None,
        breakdown: Annotated[
            list[str] | None,
            typer.Option(
                "--breakdown",
                "-b",
                help="channel, campaign, device, country, new_vs_returning, "
                "product or page; repeat or comma-separate",
            ),
        ] = None,
        granularity: Annotated[
            str | None,
            typer.Option(
                "--granularity", "-g", help="day, week or month (default: the whole window)"
            ),
        ] = None,
        compare: Annotated[
            str | None,
            typer.Option("--compare", help="previous_period: add the previous window's value"),
        ] = None,
        format: Annotated[str, typer.Option("--format", "-f", help="table, json or csv")] = "table",
        list_: Annotated[bool, typer.Option("--list", help="List the catalogue instead.")] = False,
    ) -> None:
        """KPI values for a window, by breakdown and period (docs/kpis.md)."""
        import funnelscope

        if list_:
            _print_catalogue("json" if format == "json" else "table")
            return
        if not names:
            raise InvalidInputError(
                [
                    Problem(
                        "cli.no_kpis",
                        "NAMES",
                        "name at least one KPI (`funnelscope kpis` lists them)",
                    )
                ]
            )
        if format not in ("table", "json", "csv"):
            raise InvalidInputError(
                [Problem("cli.bad_format", "--format", "use table, json or csv")]
            )
        with funnelscope.open(store) as ws:
            start_at, end_at = resolve_window(ws, start, end)
            from funnelscope.analysis.kpis import KpiSpec, compute_kpis

            spec = KpiSpec.create(
                _split(names),
                start_at,
                end_at,
                breakdown=_split(breakdown or []),
                granularity=granularity,
                compare=compare,
            )
            result = compute_kpis(ws.engine, spec)
        if format == "json":
            print_json(result.to_dict())
            return
        rows = [r.to_dict() for r in result.rows]
        if format == "csv":
            writer = csv.DictWriter(sys.stdout, fieldnames=result.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            return
        table = Table(title=f"KPIs {start_at:%Y-%m-%d} .. {end_at:%Y-%m-%d} (end exclusive)")
        for column in ("kpi", "period", *spec.breakdown, "value", "previous", "change", "note"):
            table.add_column(
                column, justify="right" if column in ("value", "previous", "change") else "left"
            )
        for r in result.rows:
            table.add_row(
                r.kpi,
                f"{r.period:%Y-%m-%d}",
                *(str(v) if v is not None else "(none)" for _, v in r.breakdown),
                format_value(r.value, r.unit, result.currency),
                format_value(r.previous_value, r.unit, result.currency),
                format_change(r.change),
                r.note or "",
            )
        console.print(table)

    @app.command("kpis")
    def kpis_command(
        format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
    ) -> None:
        """List the KPI catalogue: name, stage, unit, breakdowns, definition."""
        if format not in ("table", "json"):
            raise InvalidInputError([Problem("cli.bad_format", "--format", "use table or json")])
        _print_catalogue(format)


def _print_catalogue(format: str) -> None:
    from funnelscope.analysis.kpi_catalogue import CATALOGUE

    entries: list[dict[str, Any]] = [
        {
            "name": k.name,
            "stage": k.stage.name.lower(),
            "unit": k.unit,
            "higher_is_better": k.higher_is_better,
            "additive": k.additive,
            "breakdowns": list(k.breakdowns),
            "description": k.description,
        }
        for k in CATALOGUE
    ]
    if format == "json":
        print_json(entries)
        return
    table = Table(title="KPI catalogue (docs/kpis.md)")
    for column in ("name", "stage", "unit", "breakdowns", "description"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e["name"], e["stage"], e["unit"], ", ".join(e["breakdowns"]), e["description"]
        )
    console.print(table)
