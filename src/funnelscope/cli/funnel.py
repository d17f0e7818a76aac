"""``funnelscope funnel STEP...``: a funnel from flags or a spec file, on either engine.

Examples::

    funnelscope funnel product_viewed product_added order_completed --window 7d
    funnelscope funnel page_viewed order_completed --mode strict --breakdown channel -f json
    funnelscope funnel --spec checkout.yaml --per-person dropped.csv --persons-step 3 --dropped
    funnelscope funnel --stages --explain 42
    funnelscope funnel product_viewed order_completed --engine spark --data export/
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console, print_json
from funnelscope.errors import InvalidSpecError, Problem

__all__ = ["register"]


def _pairs(values: list[str], option: str) -> list[tuple[int, str]]:
    """``N=value`` / ``N:value`` pairs of per-step options (N is 1-based)."""
    out = []
    for raw in values:
        sep = "=" if "=" in raw else ":"
        head, _, tail = raw.partition(sep)
        if not head.strip().isdigit() or not tail:
            raise InvalidSpecError(
                [
                    Problem(
                        "cli.bad_step_option",
                        option,
                        f"expected STEP{sep}VALUE with a step number, got {raw!r}",
                    )
                ]
            )
        out.append((int(head), tail.strip()))
    return out


def _instant(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidSpecError(
            [Problem("cli.bad_date", option, f"not an ISO 8601 date or time: {text!r}")]
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build_spec(
    steps: list[str],
    *,
    spec_file: Path | None,
    stages: bool,
    stage_model: Path | None,
    options: dict[str, Any],
    step_options: dict[str, list[tuple[int, str]]],
) -> Any:
    """The FunnelSpec the flags describe (a spec file first, flags on top)."""
    from dataclasses import replace

    from funnelscope.analysis.funnel import (
        FunnelSpec,
        PropertyFilter,
        Step,
        parse_duration,
        stage_funnel_spec,
    )
    from funnelscope.events.stages import DEFAULT_STAGE_MODEL, StageModel

    given = {k: v for k, v in options.items() if v not in (None, (), False)}
    model = StageModel.from_toml(stage_model) if stage_model else DEFAULT_STAGE_MODEL
    if spec_file is not None:
        base = FunnelSpec.from_file(str(spec_file))
        spec_steps = list(base.steps)
    elif stages:
        base = stage_funnel_spec(model)
        spec_steps = list(base.steps)
    else:
        base = None
        spec_steps = [Step.from_value(s) for s in steps]
    n = len(spec_steps)
    for kind, pairs in step_options.items():
        for number, value in pairs:
            if not 1 <= number <= n:
                raise InvalidSpecError(
                    [
                        Problem(
                            "cli.step_out_of_range", f"--{kind}", f"step {number} is not in 1..{n}"
                        )
                    ]
                )
            step = spec_steps[number - 1]
            if kind == "optional":
                step = replace(step, is_optional=True)
            elif kind == "first-time":
                step = replace(step, first_time=True)
            elif kind == "within":
                try:
                    step = replace(step, within=parse_duration(value))
                except ValueError as exc:
                    raise InvalidSpecError(
                        [Problem("cli.bad_duration", "--within", str(exc))]
                    ) from exc
            elif kind == "step-filter":
                step = replace(step, filters=(*step.filters, PropertyFilter.parse(value)))
            spec_steps[number - 1] = step
    if base is not None:
        return replace(base, steps=tuple(spec_steps), **given)
    return FunnelSpec(steps=tuple(spec_steps), stage_model=model, **given)


def register(app: typer.Typer) -> None:
    @app.command()
    def funnel(
        steps: Annotated[
            list[str] | None,
            typer.Argument(
                help="Steps in order: event names, or stage:<name> for a journey stage."
            ),
        ] = None,
        window: Annotated[
            str | None,
            typer.Option(
                "--window", "-w", help="Conversion window from step 1, e.g. 7d, 12h (default 7d)."
            ),
        ] = None,
        mode: Annotated[
            str | None, typer.Option("--mode", "-m", help="ordered (default), strict or any.")
        ] = None,
        count_by: Annotated[
            str | None,
            typer.Option(
                "--count-by", help="persons (default), sessions, or a key such as cart_id."
            ),
        ] = None,
        totals: Annotated[
            bool,
            typer.Option(
                "--totals", help="Count every attempt (re-entry) instead of unique units."
            ),
        ] = False,
        hold: Annotated[
            list[str] | None,
            typer.Option("--hold", help="Property every step must share (repeatable)."),
        ] = None,
        is_open: Annotated[
            bool, typer.Option("--open", help="Open funnel: units may enter at any step.")
        ] = False,
        exclude: Annotated[
            list[str] | None,
            typer.Option("--exclude", help="EVENT or EVENT:FROM-TO (steps, 1-based); repeatable."),
        ] = None,
        optional: Annotated[
            list[int] | None,
            typer.Option("--optional", help="Step number that may be skipped (repeatable)."),
        ] = None,
        within: Annotated[
            list[str] | None,
            typer.Option("--within", help="STEP=DURATION: time limit from the previous step."),
        ] = None,
        first_time: Annotated[
            list[int] | None,
            typer.Option(
                "--first-time", help="Step number matched only by the unit's first such event."
            ),
        ] = None,
        step_filter: Annotated[
            list[str] | None,
            typer.Option("--step-filter", help='STEP:FILTER, e.g. "3:revenue>=50" (repeatable).'),
        ] = None,
        breakdown: Annotated[
            list[str] | None,
            typer.Option("--breakdown", "-b", help="Property to break down by (up to 3)."),
        ] = None,
        attribution: Annotated[
            str | None,
            typer.Option("--attribution", help="first_touch (default), last_touch or step:N."),
        ] = None,
        start: Annotated[
            str | None,
            typer.Option("--start", help="Entry range start (ISO 8601, UTC if no offset)."),
        ] = None,
        end: Annotated[
            str | None, typer.Option("--end", help="Entry range end, exclusive.")
        ] = None,
        where: Annotated[
            list[str] | None,
            typer.Option("--filter", help='Global filter, e.g. "country=US" (repeatable).'),
        ] = None,
        trend: Annotated[
            str | None, typer.Option("--trend", help="Trend period: day, week (default) or month.")
        ] = None,
        spec_file: Annotated[
            Path | None,
            typer.Option("--spec", help="A YAML/JSON spec file (flags override its fields)."),
        ] = None,
        stages: Annotated[
            bool, typer.Option("--stages", help="The stage funnel: Awareness -> ... -> Retention.")
        ] = False,
        stage_model: Annotated[
            Path | None,
            typer.Option("--stage-model", help="A TOML stage model (default: the built-in one)."),
        ] = None,
        per_person: Annotated[
            Path | None,
            typer.Option("--per-person", help="Write the units to this CSV or Parquet file."),
        ] = None,
        persons_step: Annotated[
            int | None,
            typer.Option("--persons-step", help="With --per-person: only units at this step."),
        ] = None,
        dropped: Annotated[
            bool,
            typer.Option(
                "--dropped", help="With --persons-step: the units that dropped at that step."
            ),
        ] = False,
        explain: Annotated[
            int | None,
            typer.Option("--explain", help="Explain why this person id is counted where they are."),
        ] = None,
        engine: Annotated[
            str, typer.Option("--engine", help="embedded (default) or spark.")
        ] = "embedded",
        data: Annotated[
            Path | None,
            typer.Option(
                "--data", help="Spark: folder with events.parquet (default: export the store)."
            ),
        ] = None,
        store: StoreOption = DEFAULT_STORE,
        format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
    ) -> None:
        """Count who goes through the steps, and who drops off where (docs/funnels.md)."""
        import funnelscope
        from funnelscope.analysis.funnel import Exclusion, PropertyFilter, parse_duration, run

        if not steps and spec_file is None and not stages:
            raise InvalidSpecError(
                [
                    Problem(
                        "funnel.too_few_steps",
                        "steps",
                        "give 2 to 32 steps, --spec FILE or --stages",
                    )
                ]
            )
        attribution_step = None
        if attribution and attribution.startswith("step:"):
            attribution, _, number = attribution.partition(":")
            attribution_step = int(number) if number.isdigit() else -1
        try:
            window_value = parse_duration(window) if window else None
        except ValueError as exc:
            raise InvalidSpecError([Problem("funnel.bad_window", "--window", str(exc))]) from exc
        options: dict[str, Any] = {
            "window": window_value,
            "mode": mode,
            "count_by": count_by,
            "counting": "totals" if totals else None,
            "hold_constant": tuple(hold or ()),
            "is_open": is_open,
            "exclusions": tuple(Exclusion.from_value(x) for x in exclude or ()),
            "breakdowns": tuple(breakdown or ()),
            "attribution": attribution,
            "attribution_step": attribution_step,
            "start_at": _instant(start, "--start"),
            "end_at": _instant(end, "--end"),
            "filters": tuple(PropertyFilter.parse(f) for f in where or ()),
            "trend_period": trend,
        }
        step_options = {
            "optional": [(n, "") for n in optional or ()],
            "first-time": [(n, "") for n in first_time or ()],
            "within": _pairs(within or [], "--within"),
            "step-filter": _pairs(step_filter or [], "--step-filter"),
        }
        spec = build_spec(
            list(steps or []),
            spec_file=spec_file,
            stages=stages,
            stage_model=stage_model,
            options=options,
            step_options=step_options,
        )
        with funnelscope.open(store, read_only=engine == "spark" and data is not None) as ws:
            if engine not in ("embedded", "spark"):
                raise InvalidSpecError(
                    [Problem("cli.unknown_engine", "--engine", "engine must be embedded or spark")]
                )
            result = run(spec, ws._funnel_engine(engine, data))
            if per_person is not None:
                result.export_persons(per_person, persons_step, dropped=dropped)
            trace = result.explain(explain) if explain is not None else None
        if trace is not None:
            console.print(trace, highlight=False, markup=False)
            return
        if format == "json":
            print_json(result.to_dict())
            return
        _print_table(result)


def _print_table(result: Any) -> None:
    from rich.table import Table

    spec = result.spec
    title = (
        f"{spec.mode} funnel, window {timedelta(seconds=spec.window.total_seconds())}, "
        f"{spec.counting} of {spec.count_by}"
    )
    table = Table(title=title)
    for name in (
        "step",
        "name",
        "count",
        "from first",
        "from previous (95% CI)",
        "drop-off",
        "median time",
    ):
        table.add_column(name, justify="right" if name != "name" else "left")
    ttc = {t.step: t for t in result.time_to_convert}

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    for s in result.steps:
        ci = s.conversion_from_previous_interval
        prev = pct(s.conversion_from_previous) + (f" ({pct(ci[0])}-{pct(ci[1])})" if ci else "")
        t = ttc.get(s.step)
        median = (
            "-"
            if t is None or t.median_seconds is None
            else str(timedelta(seconds=round(t.median_seconds)))
        )
        table.add_row(
            str(s.step),
            s.name + (" (optional)" if s.is_optional else ""),
            f"{s.count:,}",
            pct(s.conversion_from_first),
            prev,
            f"{s.dropoff:,}",
            median,
        )
    console.print(table)
