"""``funnelscope report``: every stage's people and main KPIs, with the change vs the period before.

A thin wrapper over :func:`funnelscope.analysis.report.stage_report`. Without dates the window is
the 28 days up to the end of the store's last event day (docs/kpis.md, docs/data-model.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console, print_json
from funnelscope.cli.kpi import EndOption, StartOption, format_change, format_value, resolve_window
from funnelscope.errors import InvalidInputError, Problem

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_command(
        store: StoreOption = DEFAULT_STORE,
        start: StartOption = None,
        end: EndOption = None,
        stages: Annotated[
            Path | None,
            typer.Option("--stages", help="A TOML stage model (docs/data-model.md, 'Stages')."),
        ] = None,
        format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
    ) -> None:
        """The stage report: people at each stage, conversion, and each stage's main KPIs."""
        import funnelscope
        from funnelscope.analysis.report import stage_report
        from funnelscope.events.stages import DEFAULT_STAGE_MODEL, StageModel

        if format not in ("table", "json"):
            raise InvalidInputError([Problem("cli.bad_format", "--format", "use table or json")])
        model = StageModel.from_toml(stages) if stages else DEFAULT_STAGE_MODEL
        with funnelscope.open(store) as ws:
            start_at, end_at = resolve_window(ws, start, end)
            report = stage_report(ws.engine, start=start_at, end=end_at, model=model)
            currency = ws.store.currency
        if format == "json":
            print_json({**report.to_dict(), "currency": currency})
            return
        console.print(
            f"[bold]Stage report[/bold] {start_at:%Y-%m-%d} .. {end_at:%Y-%m-%d} "
            f"(end exclusive), compared with the {(end_at - start_at).days} days before"
        )
        for row in report.rows:
            conv = (
                ""
                if row.conversion_from_previous is None
                else f", {row.conversion_from_previous * 100:.1f}% of the previous stage"
            )
            table = Table(
                title=f"{row.stage.label}: {row.persons:,} people{conv}", title_justify="left"
            )
            for column in ("KPI", "value", "previous", "change", "note"):
                table.add_column(
                    column, justify="right" if column in ("value", "previous", "change") else "left"
                )
            for name, k in row.kpis.items():
                table.add_row(
                    name,
                    format_value(k["value"], k["unit"], currency),
                    format_value(k["previous_value"], k["unit"], currency),
                    format_change(k["change"]),
                    k["note"] or "",
                )
            console.print(table)
