"""Entry point: builds the Typer app from the command modules and maps errors to exit codes.

Invalid input -> one line on stderr, exit 2. Engine or store failure -> one line, exit 1.
Tracebacks only with ``--debug``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Final

import typer

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console, err_console, print_json
from funnelscope.errors import FunnelscopeError, InvalidInputError

__all__ = ["app", "main"]

app = typer.Typer(
    name="funnelscope",
    help="Ecommerce customer-journey and sales-funnel analytics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Command modules; each defines ``register(app)``.
COMMAND_MODULES: Final = (
    "funnelscope.cli.data",
    "funnelscope.cli.keys",
    "funnelscope.cli.serve",
    "funnelscope.cli.goals",
    "funnelscope.cli.customers",
    "funnelscope.cli.kpi",
    "funnelscope.cli.report",
    "funnelscope.cli.simulate",
    "funnelscope.cli.funnel",
)

_state = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def info(
    store: StoreOption = DEFAULT_STORE,
    format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Summarise the store: events, persons, time span, facts and quarantine."""
    import funnelscope

    with funnelscope.open(store) as ws:
        summary = ws.info()
    if format == "json":
        print_json(summary)
        return
    for key, value in summary.items():
        console.print(f"[bold]{key:>18}[/bold]  {value}")


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the Parquet files.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Write every table as Parquet (for Spark or another engine)."""
    import funnelscope

    with funnelscope.open(store) as ws:
        written = ws.export(out)
    for table, path in written.items():
        console.print(f"{table:>18}  {path}")


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors become one line on stderr and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except InvalidInputError as exc:
        if debug:
            raise
        # markup=False: problem codes are written "[goal.unknown_kpi]", not rich markup
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(2)
    except FunnelscopeError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except typer.exceptions.TyperException as exc:  # usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {exc}")
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except Exception as exc:  # anything unexpected: one line, no traceback
        if debug:
            raise
        err_console.print(f"error: {type(exc).__name__}: {exc} (run with --debug for details)")
        sys.exit(1)
