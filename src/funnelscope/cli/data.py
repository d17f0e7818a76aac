"""Data commands: import, quarantine. (simulate lives in cli/simulate.py.)"""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Commands are added by the ingest work (import)."""
