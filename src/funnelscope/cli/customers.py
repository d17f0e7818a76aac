"""Customer commands: ``funnelscope segments ...`` and ``funnelscope clv ...``.

Thin wrappers over the Workspace and :mod:`funnelscope.analysis.segments`; semantics in
docs/customers.md. ``--now`` defaults to the current time (read here, at the edge).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console, print_json
from funnelscope.errors import InvalidInputError, Problem

__all__ = ["register"]

segments_app = typer.Typer(
    help="Rule segments, RFM and clusters: define, refresh, export, sync.", no_args_is_help=True
)
clv_app = typer.Typer(
    help="Customer lifetime value: BG/NBD + Gamma-Gamma, backtest, CAC.", no_args_is_help=True
)

NowOption = Annotated[
    str | None,
    typer.Option("--now", help="As of this ISO date/time (UTC); default: now."),
]
FormatOption = Annotated[str, typer.Option("--format", "-f", help="table or json")]
LimitOption = Annotated[int, typer.Option("--limit", help="Rows to show (0 = all).")]


def _instant(text: str | None, option: str = "--now") -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            [Problem("cli.bad_datetime", option, f"{text!r} is not an ISO date or datetime")]
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise InvalidInputError([Problem("cli.bad_format", "--format", "use table or json")])


def _show(rows: list[dict[str, Any]], title: str, limit: int = 0) -> None:
    shown = rows[:limit] if limit else rows
    table = Table(title=title)
    if not shown:
        console.print(f"{title}: nothing")
        return
    for column in shown[0]:
        table.add_column(str(column))
    for row in shown:
        table.add_row(*(_cell(v) for v in row.values()))
    console.print(table)
    if len(shown) < len(rows):
        console.print(f"... {len(rows) - len(shown)} more (use --limit 0 or --format json)")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return "" if value is None else str(value)


# -- segments -----------------------------------------------------------------------------------


@segments_app.command("define")
def define(
    file: Annotated[Path, typer.Argument(help="A segment in YAML or JSON.")],
    store: StoreOption = DEFAULT_STORE,
    now: NowOption = None,
) -> None:
    """Store (or replace) a rule segment and refresh it."""
    import funnelscope
    from funnelscope.analysis import segments

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError([Problem("cli.unreadable", str(file), str(exc))]) from exc
    spec = segments.load_segment(text)
    at = _instant(now)
    with funnelscope.open(store) as ws:
        segments.save_segment(ws.store, spec, now=at)
        result = segments.refresh_segment(ws.store, spec.name, now=at)
    console.print(f"segment {spec.name}: {result.size} members")


@segments_app.command("list")
def list_(store: StoreOption = DEFAULT_STORE, format: FormatOption = "table") -> None:
    """Every stored segment with its size and last refresh."""
    import funnelscope
    from funnelscope.analysis import segments

    _check_format(format)
    with funnelscope.open(store) as ws:
        rows = segments.list_segments(ws.store)
    if format == "json":
        print_json(rows)
        return
    _show([{k: v for k, v in r.items() if k != "rule"} for r in rows], "segments")


@segments_app.command("show")
def show(name: str, store: StoreOption = DEFAULT_STORE) -> None:
    """A segment's definition (JSON) and its sizes over time."""
    import funnelscope
    from funnelscope.analysis import segments

    with funnelscope.open(store) as ws:
        spec = segments.get_segment(ws.store, name)
        sizes = segments.segment_sizes(ws.store, name)
    print_json({**spec.to_dict(), "sizes": sizes})


@segments_app.command("refresh")
def refresh(
    name: Annotated[str | None, typer.Argument(help="One segment; default: all.")] = None,
    store: StoreOption = DEFAULT_STORE,
    now: NowOption = None,
) -> None:
    """Recompute memberships, record sizes and queue webhooks for joins and leaves."""
    import funnelscope
    from funnelscope.analysis import segments

    at = _instant(now)
    with funnelscope.open(store) as ws:
        results = (
            [segments.refresh_segment(ws.store, name, now=at)]
            if name
            else segments.refresh_all(ws, at)
        )
    _show(
        [
            {
                "segment": r.segment,
                "size": r.size,
                "joined": len(r.joined),
                "left": len(r.left),
                "webhooks": r.deliveries,
            }
            for r in results
        ],
        "refreshed",
    )


@segments_app.command("members")
def members(
    name: str,
    store: StoreOption = DEFAULT_STORE,
    format: FormatOption = "table",
    limit: LimitOption = 50,
) -> None:
    """The members at the last refresh."""
    import funnelscope
    from funnelscope.analysis import segments

    _check_format(format)
    with funnelscope.open(store) as ws:
        rows = segments.members(ws.store, name)
    if format == "json":
        print_json(rows)
    else:
        _show(rows, f"{name}: {len(rows)} members", limit)


@segments_app.command("export")
def export(
    name: Annotated[str, typer.Argument(help="A stored segment, or rfm:<Segment>.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="A .csv or .parquet file.")],
    store: StoreOption = DEFAULT_STORE,
    now: NowOption = None,
) -> None:
    """Write the members with their customer-table row to CSV or Parquet."""
    import funnelscope
    from funnelscope.analysis import segments

    with funnelscope.open(store) as ws:
        n = segments.export_segment(ws.store, name, out, now=_instant(now))
    console.print(f"{n} customers -> {out}")


@segments_app.command("delete")
def delete(name: str, store: StoreOption = DEFAULT_STORE) -> None:
    """Forget a segment, its members, sizes and subscriptions."""
    import funnelscope
    from funnelscope.analysis import segments

    with funnelscope.open(store) as ws:
        segments.delete_segment(ws.store, name)
    console.print(f"deleted {name}")


@segments_app.command("subscribe")
def subscribe(
    name: str,
    url: Annotated[str, typer.Option("--url", help="Where joins and leaves are POSTed.")],
    secret: Annotated[str, typer.Option("--secret", help="HMAC-SHA256 signing secret.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """POST the segment's joins and leaves to a URL after every refresh (signed, retried)."""
    import funnelscope
    from funnelscope.analysis import segments

    with funnelscope.open(store) as ws:
        segments.subscribe(ws.store, name, url, secret, now=datetime.now(UTC))
    console.print(f"{name} -> {url}")


@segments_app.command("deliver")
def deliver(store: StoreOption = DEFAULT_STORE) -> None:
    """Send the webhooks that are due now (``serve`` does this every minute)."""
    import httpx

    import funnelscope
    from funnelscope.webhooks import deliver_pending

    with funnelscope.open(store) as ws, httpx.Client(timeout=10.0) as client:
        report = deliver_pending(ws.store, datetime.now(UTC), client)
    print_json(report.to_dict())


@segments_app.command("rfm")
def rfm(
    store: StoreOption = DEFAULT_STORE,
    now: NowOption = None,
    format: FormatOption = "table",
) -> None:
    """RFM segment sizes (scores per customer with --format json)."""
    import funnelscope

    _check_format(format)
    with funnelscope.open(store) as ws:
        result = ws.rfm(now=_instant(now))
    if format == "json":
        print_json(result.to_dict())
        return
    _show([{"segment": k, "customers": v} for k, v in result.sizes().items()], "RFM segments")


@segments_app.command("clusters")
def clusters(
    store: StoreOption = DEFAULT_STORE,
    now: NowOption = None,
    seed: Annotated[int, typer.Option("--seed", help="k-means random seed.")] = 0,
    format: FormatOption = "table",
) -> None:
    """Behavioural clusters of the buyers (k by silhouette), described in words."""
    import funnelscope

    _check_format(format)
    with funnelscope.open(store) as ws:
        result = ws.clusters(now=_instant(now), seed=seed)
    if format == "json":
        print_json(result.to_dict())
        return
    _show(
        [
            {"cluster": c, "customers": result.sizes[c], "description": result.descriptions[c]}
            for c in sorted(result.sizes)
        ],
        f"k = {result.k} (max silhouette {result.silhouettes[result.k]:.3f})",
    )


# -- clv ----------------------------------------------------------------------------------------


@clv_app.command("fit")
def fit(
    store: StoreOption = DEFAULT_STORE,
    now: NowOption = None,
    horizon_weeks: Annotated[float, typer.Option("--horizon-weeks")] = 52.0,
    format: FormatOption = "table",
    limit: LimitOption = 20,
) -> None:
    """Fit BG/NBD + Gamma-Gamma on the orders and show each buyer's P(alive) and CLV."""
    import funnelscope

    _check_format(format)
    with funnelscope.open(store) as ws:
        result = ws.clv(now=_instant(now), horizon_weeks=horizon_weeks)
    if format == "json":
        print_json(result.to_dict())
        return
    console.print(
        f"BG/NBD: {result.purchases_model['params']}  "
        f"LL {result.purchases_model['log_likelihood']:.2f}"
    )
    if result.spend_model:
        console.print(f"Gamma-Gamma: {result.spend_model['params']}")
    top = result.customers.sort_values("clv", ascending=False, na_position="last")
    _show(top.round(4).to_dict(orient="records"), f"customers ({result.currency})", limit)


@clv_app.command("backtest")
def backtest(
    calibration_end: Annotated[str, typer.Option("--calibration-end", help="ISO date.")],
    observation_end: Annotated[str, typer.Option("--observation-end", help="ISO date.")],
    store: StoreOption = DEFAULT_STORE,
    format: FormatOption = "table",
) -> None:
    """Fit on the calibration period, compare weekly holdout purchases with a naive rule."""
    import funnelscope
    from funnelscope.analysis.customers import order_log
    from funnelscope.models.clv import backtest as run

    _check_format(format)
    cal = _instant(calibration_end, "--calibration-end")
    end = _instant(observation_end, "--observation-end")
    with funnelscope.open(store) as ws:
        log = order_log(ws.engine, now=end)
    result = run(log, calibration_end=cal, observation_end=end)
    if format == "json":
        print_json(result.to_dict())
    else:
        console.print(result.summary())


@clv_app.command("acquisition")
def acquisition(
    store: StoreOption = DEFAULT_STORE,
    now: NowOption = None,
    margin: Annotated[float, typer.Option("--margin", help="Gross margin in (0, 1].")] = 1.0,
    format: FormatOption = "table",
) -> None:
    """CAC, CLV:CAC and payback by acquisition channel and monthly cohort."""
    import funnelscope

    _check_format(format)
    with funnelscope.open(store) as ws:
        result = ws.acquisition(now=_instant(now), margin=margin)
    if format == "json":
        print_json(result.to_dict())
        return
    _show(result.to_dict()["channels"], f"by channel ({result.currency})")
    _show(result.to_dict()["cohorts"], "by cohort and channel")


def register(app: typer.Typer) -> None:
    """Add ``segments`` and ``clv`` to the CLI."""
    app.add_typer(segments_app, name="segments")
    app.add_typer(clv_app, name="clv")
