"""Data commands: ``import`` (files into the store) and ``quarantine`` (the rejected rows).

``simulate`` lives in cli/simulate.py. Semantics of imports: docs/import.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console, err_console, print_json
from funnelscope.errors import InvalidInputError

__all__ = ["register"]

#: Files at least this big get a progress bar (on stderr, so --format-out json stays clean).
PROGRESS_MIN_BYTES: Final = 8 << 20
#: Reasons shown per file in the table.
TOP_REASONS: Final = 3
#: Characters of a payload shown in the quarantine table.
PAYLOAD_PREVIEW: Final = 80


class Kind(StrEnum):
    events = "events"
    ad_spend = "ad_spend"
    email_campaigns = "email_campaigns"
    survey_responses = "survey_responses"
    products = "products"
    currency_rates = "currency_rates"


class InputFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


@contextmanager
def _progress_for(path: Path) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback drawing a bar for big files, None for small ones."""
    try:
        big = path.stat().st_size >= PROGRESS_MIN_BYTES
    except OSError:
        big = False
    if not big or not err_console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    with bar:
        task = bar.add_task(path.name, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _reasons(reasons: dict[str, int]) -> str:
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
    text = ", ".join(f"{code} {n:,}" for code, n in top)
    more = len(reasons) - len(top)
    return text + (f" (+{more} more)" if more > 0 else "")


def _print_reports(reports: list[dict[str, Any]], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        print_json([{k: v for k, v in r.items() if k != "rejections"} for r in reports])
        return
    table = Table(title=None, show_edge=False)
    for name in ("file", "rows", "accepted", "rejected", "inserted", "duplicates", "reasons"):
        table.add_column(name, justify="left" if name in ("file", "reasons") else "right")
    for r in reports:
        table.add_row(
            str(r["file"]),
            f"{r['rows']:,}",
            f"{r['accepted']:,}",
            f"{r['rejected']:,}",
            f"{r['inserted']:,}",
            f"{r['duplicates']:,}",
            _reasons(r["reasons"]),
        )
    console.print(table)
    if any(r["rejected"] for r in reports):
        console.print("rejected rows: funnelscope quarantine --reason CODE", style="dim")


def import_files(
    files: Annotated[list[Path], typer.Argument(help="CSV, JSON Lines or Parquet files.")],
    kind: Annotated[
        Kind | None,
        typer.Option(
            "--kind", "-k", help="What the files hold (default: guessed from the columns)."
        ),
    ] = None,
    format: Annotated[
        InputFormat | None,
        typer.Option("--format", help="Input format (default: from the extension)."),
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    format_out: Annotated[
        OutputFormat, typer.Option("--format-out", "-f", help="table or json")
    ] = OutputFormat.table,
) -> None:
    """Import event files (or ad spend, email, survey, product, currency-rate files).

    Bad rows go to quarantine with a reason; a file that cannot be read at all stops the
    import with exit code 2.
    """
    import funnelscope

    received_at = datetime.now(UTC)  # the edge: library code never reads the clock
    done: list[dict[str, Any]] = []
    with funnelscope.open(store) as ws:
        try:
            for path in files:
                with _progress_for(path) as progress:
                    report = ws.ingest(
                        path,
                        kind=kind.value if kind else None,
                        format=format.value if format else None,
                        received_at=received_at,
                        progress=progress,
                    )
                done.append({"file": str(path), **report.to_dict()})
        except InvalidInputError:
            if done:
                _print_reports(done, format_out)
            raise
    _print_reports(done, format_out)


def quarantine(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Rows to show.")] = 20,
    reason: Annotated[
        str | None, typer.Option("--reason", "-r", help="Only this reason code.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="Only rows of this source (import:<file>, segment, ...)."),
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json")
    ] = OutputFormat.table,
) -> None:
    """Browse rejected rows: newest first, with their reason codes and the row as received."""
    import funnelscope

    with funnelscope.open(store) as ws:
        where = (
            "WHERE ($reason IS NULL OR reason_code = $reason) "
            "AND ($source IS NULL OR source = $source)"
        )
        params: dict[str, Any] = {"reason": reason, "source": source}
        cur = ws.store.reader()
        try:
            by_reason = cur.execute(
                f"SELECT reason_code, count(*) FROM quarantine {where} GROUP BY 1 "
                "ORDER BY 2 DESC, 1",
                params,
            ).fetchall()
            rows = cur.execute(
                "SELECT quarantined_at, source, row_number, reason_code, message, payload "
                f"FROM quarantine {where} "
                "ORDER BY quarantined_at DESC, source, row_number LIMIT $limit",
                {**params, "limit": limit},
            ).fetchall()
        finally:
            cur.close()
    total = sum(int(n) for _, n in by_reason)
    records = [
        {
            "quarantined_at": at,
            "source": src,
            "row": row,
            "reason": code,
            "message": msg,
            "payload": bytes(payload).decode("utf-8", "backslashreplace") if payload else None,
        }
        for at, src, row, code, msg, payload in rows
    ]
    if format is OutputFormat.json:
        print_json(
            {"total": total, "by_reason": {str(c): int(n) for c, n in by_reason}, "rows": records}
        )
        return
    if not total:
        console.print(
            "quarantine is empty" if reason is None and source is None else "no rejected rows match"
        )
        return
    console.print(f"{total:,} rejected rows: " + ", ".join(f"{c} {n:,}" for c, n in by_reason))
    table = Table(show_edge=False)
    for name in ("source", "row", "reason", "message", "payload"):
        table.add_column(name, justify="right" if name == "row" else "left", overflow="fold")
    for r in records:
        payload = r["payload"] or ""
        if len(payload) > PAYLOAD_PREVIEW:
            payload = payload[: PAYLOAD_PREVIEW - 1] + "…"
        table.add_row(
            r["source"],
            "" if r["row"] is None else str(r["row"]),
            r["reason"],
            r["message"],
            payload,
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``import`` and ``quarantine`` to the CLI."""
    app.command("import")(import_files)
    app.command("quarantine")(quarantine)
