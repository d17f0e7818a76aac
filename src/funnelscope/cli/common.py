"""Options and output helpers shared by every command."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from funnelscope.store.store import DEFAULT_STORE_PATH

__all__ = ["StoreOption", "console", "err_console", "print_json", "to_jsonable"]

console = Console()
err_console = Console(stderr=True)

StoreOption = Annotated[
    Path,
    typer.Option("--store", "-s", help="The store file (DuckDB).", envvar="FUNNELSCOPE_STORE"),
]
DEFAULT_STORE = DEFAULT_STORE_PATH


def to_jsonable(value: Any) -> Any:
    """Values as plain JSON: datetimes in ISO 8601, decimals as strings, paths as text."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, default=str) + "\n")
