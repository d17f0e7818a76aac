"""``funnelscope goals add|list|show|check|remove|subscribe``: SMART goals (docs/goals.md).

``add`` takes flags, or ``--file goal.yaml`` holding one goal (a mapping with the fields of
:class:`~funnelscope.analysis.goals.GoalSpec`) or a list of them. ``--now`` (ISO datetime, UTC
when no offset) evaluates as of another moment; by default, the clock's now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console, print_json
from funnelscope.errors import InvalidInputError, InvalidSpecError, Problem

__all__ = ["register"]

goals_app = typer.Typer(
    help="SMART goals on any KPI: progress, pacing, forecast, status.", no_args_is_help=True
)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table or json")]
NowOption = Annotated[
    str | None,
    typer.Option("--now", help="Evaluate as of this ISO datetime (UTC unless an offset is given)."),
]
_STATUS_STYLE = {
    "on_track": "green",
    "achieved": "green",
    "at_risk": "yellow",
    "off_track": "red",
    "missed": "red",
}


def _now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)  # the edge: library code never reads the clock
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            [Problem("goal.bad_now", "--now", f"{text!r} is not an ISO date or datetime")]
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _scope(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidSpecError(
                [
                    Problem(
                        "goal.bad_scope",
                        "--scope",
                        f"{pair!r}: write property=value, e.g. product=X",
                    )
                ]
            )
        out[key.strip()] = value.strip()
    return out


def _read_file(path: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInputError(
            [Problem("goal.bad_file", str(path), f"cannot read {path}: {exc}")]
        ) from None
    if isinstance(data, dict) and isinstance(data.get("goals"), list):
        data = data["goals"]
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, dict) for i in items):
        raise InvalidInputError(
            [
                Problem(
                    "goal.bad_file",
                    str(path),
                    "the file holds a goal (a mapping) or a list of goals",
                )
            ]
        )
    return items


def _fmt(value: float | None, unit: str, currency: str | None) -> str:
    from funnelscope.analysis.goals import format_value

    return format_value(value, unit, currency)


@goals_app.command("add")
def add(
    name: Annotated[str | None, typer.Argument(help="The goal's name.")] = None,
    kpi: Annotated[str | None, typer.Option("--kpi", help="A KPI of the catalogue.")] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target", help="1200, 0.03, 2.5%, 50000 USD, or a change vs the baseline: +15%"
        ),
    ] = None,
    start: Annotated[str | None, typer.Option("--start", help="First day (YYYY-MM-DD).")] = None,
    deadline: Annotated[
        str | None, typer.Option("--deadline", help="Last day, included (YYYY-MM-DD).")
    ] = None,
    baseline_start: Annotated[str | None, typer.Option("--baseline-start")] = None,
    baseline_end: Annotated[str | None, typer.Option("--baseline-end")] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="property=value (repeatable): product, category, channel, campaign, "
            "segment, device, country, new_vs_returning, page",
        ),
    ] = None,
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    initiative: Annotated[
        str | None,
        typer.Option("--initiative", help="The campaign or project meant to move the KPI."),
    ] = None,
    aggregation: Annotated[
        str | None, typer.Option("--aggregation", help="sum, ratio or mean (default: from the KPI)")
    ] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    file: Annotated[
        Path | None, typer.Option("--file", help="A YAML file with a goal or a list of goals.")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a goal of that name.")
    ] = False,
    now: NowOption = None,
    store: StoreOption = DEFAULT_STORE,
    format: FormatOption = "table",
) -> None:
    """Add a goal: validated (SMART rules, and measurable on the store's data) then stored."""
    import funnelscope
    from funnelscope.analysis.goals import GoalSpec

    if file is not None:
        specs = [GoalSpec.from_dict(item) for item in _read_file(file)]
    else:
        missing = [
            flag
            for flag, value in (
                ("NAME", name),
                ("--kpi", kpi),
                ("--target", target),
                ("--start", start),
            )
            if value is None
        ]
        if missing:
            raise InvalidSpecError(
                [
                    Problem("goal.missing_field", m, f"{m} is required (or give --file)")
                    for m in missing
                ]
            )
        assert name is not None and kpi is not None and target is not None and start is not None
        specs = [
            GoalSpec.create(
                name,
                kpi=kpi,
                target=target,
                start=start,
                deadline=deadline,
                baseline_start=baseline_start,
                baseline_end=baseline_end,
                scope=_scope(scope or []),
                owner=owner,
                initiative=initiative,
                aggregation=aggregation,
                description=description,
            )
        ]
    at = _now(now)
    with funnelscope.open(store) as ws:
        for spec in specs:
            ws.add_goal(spec, now=at, replace=replace)
    if format == "json":
        print_json([s.to_dict() for s in specs])
        return
    for spec in specs:
        console.print(
            f"goal {spec.name!r} added: {spec.kpi}, {spec.start}..{spec.deadline}", highlight=False
        )


@goals_app.command("list")
def list_(store: StoreOption = DEFAULT_STORE, format: FormatOption = "table") -> None:
    """Every goal with its status at the last check (``goals check`` refreshes it)."""
    import funnelscope
    from funnelscope.analysis.goals import list_goals

    with funnelscope.open(store) as ws:
        goals = list_goals(ws.store)
    if format == "json":
        print_json(
            [
                {
                    **g["goal"].to_dict(),
                    "status": g["status"],
                    "probability": g["probability"],
                    "checked_at": g["checked_at"],
                }
                for g in goals
            ]
        )
        return
    from rich.table import Table

    table = Table("goal", "kpi", "target", "period", "owner", "status", "P(target)")
    for g in goals:
        spec = g["goal"]
        target = f"{spec.target:+g}%" if spec.target_kind == "change" else f"{spec.target:g}"
        prob = "" if g["probability"] is None else f"{g['probability']:.0%}"
        status = g["status"] or "not checked"
        table.add_row(
            spec.name,
            spec.kpi,
            target,
            f"{spec.start}..{spec.deadline}",
            spec.owner or "",
            f"[{_STATUS_STYLE.get(status, '')}]{status}[/]" if status in _STATUS_STYLE else status,
            prob,
        )
    console.print(table)


@goals_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The goal's name.")],
    now: NowOption = None,
    daily: Annotated[bool, typer.Option("--daily", help="Also print the daily series.")] = False,
    store: StoreOption = DEFAULT_STORE,
    format: FormatOption = "table",
) -> None:
    """A goal's progress: value so far, pacing, forecast, probability, status, SMART checks."""
    import funnelscope

    with funnelscope.open(store) as ws:
        progress = ws.goal_progress(name, now=_now(now))
    if format == "json":
        out = progress.to_dict()
        if not daily:
            out.pop("daily")
        print_json(out)
        return
    p, unit, cur = progress, progress.unit, progress.currency
    style = _STATUS_STYLE.get(p.status, "")
    console.print(
        f"[bold]{p.goal.name}[/bold]  [{style}]{p.status}[/]"
        if style
        else f"[bold]{p.goal.name}[/bold]  {p.status}",
        highlight=False,
    )
    rows = [
        ("target", _fmt(p.target_value, unit, cur)),
        (
            "so far",
            f"{_fmt(p.current_value, unit, cur)}"
            + (
                f" ({p.percent_of_target:.1f}% of target)"
                if p.percent_of_target is not None
                else ""
            ),
        ),
        ("pacing says", _fmt(p.expected_to_date, unit, cur)),
        ("days", f"{p.days_elapsed} of {p.days_total} ({p.days_left} left)"),
    ]
    if p.forecast is not None:
        f = p.forecast
        low, high = (_fmt(x, unit, cur) for x in f.interval80)
        rows.append(("forecast", f"{_fmt(f.mean, unit, cur)} (80%: {low} to {high})"))
    if p.probability is not None:
        rows.append(("P(target)", f"{p.probability:.0%}"))
    for label, value in rows:
        console.print(f"{label:>12}  {value}", highlight=False)
    for check in p.checks:
        mark = {True: "[green]ok[/]", False: "[red]no[/]", None: "[yellow]?[/]"}[check.passed]
        console.print(
            f"{check.property:>12}  {mark}  {check.message}", highlight=False, soft_wrap=True
        )
    if daily:
        console.print(p.daily.to_string())


@goals_app.command("check")
def check(
    now: NowOption = None,
    store: StoreOption = DEFAULT_STORE,
    format: FormatOption = "table",
) -> None:
    """Re-evaluate every goal; record status changes and queue their webhooks."""
    import funnelscope

    with funnelscope.open(store) as ws:
        checks = ws.check_goals(now=_now(now))
    if format == "json":
        print_json([c.to_dict() for c in checks])
        return
    for c in checks:
        prob = "" if c.probability is None else f"  P={c.probability:.0%}"
        change = f"  (was {c.previous_status})" if c.changed and c.previous_status else ""
        console.print(
            f"{c.goal:>24}  {c.status}{prob}{change}" + (f"  error: {c.error}" if c.error else ""),
            highlight=False,
        )


@goals_app.command("remove")
def remove(name: Annotated[str, typer.Argument()], store: StoreOption = DEFAULT_STORE) -> None:
    """Forget a goal, its status history and its webhook subscriptions."""
    import funnelscope
    from funnelscope.analysis.goals import delete_goal

    with funnelscope.open(store) as ws:
        delete_goal(ws.store, name)
    console.print(f"goal {name!r} removed", highlight=False)


@goals_app.command("subscribe")
def subscribe(
    url: Annotated[str, typer.Argument(help="Where to POST goal.status_changed.")],
    secret: Annotated[str, typer.Option("--secret", help="HMAC signing secret.")],
    goal: Annotated[str | None, typer.Option("--goal", help="One goal (default: all).")] = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """POST a signed webhook whenever a goal (or any goal) changes status."""
    import funnelscope
    from funnelscope.analysis.goals import subscribe_goal_webhook

    with funnelscope.open(store) as ws:
        subscribe_goal_webhook(ws.store, url, secret, now=datetime.now(UTC), goal=goal)
    console.print(f"subscribed {url} to {goal or 'every goal'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(goals_app, name="goals")
