"""Shared fixtures: a fresh store per test, and events written as readable journeys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import settings

import funnelscope
from funnelscope.workspace import Workspace

# Property tests draw the same examples on every run (derandomize): CI must not fail on a
# draw that no later run can reproduce. New counterexamples come from raising max_examples.
settings.register_profile("funnelscope", derandomize=True, print_blob=True)
settings.load_profile("funnelscope")

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)  # a Monday
NOW = datetime(2024, 7, 1, tzinfo=UTC)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace over a real DuckDB file in tmp_path."""
    ws = funnelscope.open(tmp_path / "store.duckdb")
    yield ws
    ws.close()


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local[2] Spark session for the whole test run (tests marked ``spark``)."""
    from funnelscope.engines.spark import spark_session

    session = spark_session("local[2]")
    yield session
    session.stop()


def journey_rows(journeys: dict[str, list[tuple[Any, ...]]]) -> list[dict[str, Any]]:
    """Rows from ``{person: [(minutes after T0, event, {column: value...}), ...]}``.

    The person key is used as ``user_id`` unless the extra columns set identities themselves.
    """
    rows: list[dict[str, Any]] = []
    for person, steps in journeys.items():
        for i, step in enumerate(steps):
            minutes, event = step[0], step[1]
            extra: dict[str, Any] = dict(step[2]) if len(step) > 2 else {}
            row: dict[str, Any] = {
                "event_id": f"{person}-{i}",
                "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
                "event": event,
            }
            if "anonymous_id" not in extra and "user_id" not in extra:
                row["user_id"] = person
            row.update(extra)
            rows.append(row)
    return rows


def staging_table(rows: list[dict[str, Any]]) -> pa.Table:
    """An all-text staging table from row dicts (missing keys are NULL)."""
    columns = sorted({k for r in rows for k in r})
    return pa.table(
        {
            c: pa.array([None if r.get(c) is None else str(r[c]) for r in rows], pa.string())
            for c in columns
        }
    )


def load_journeys(ws: Workspace, journeys: dict[str, list[tuple[Any, ...]]]) -> None:
    report = ws.append_staging(
        staging_table(journey_rows(journeys)), source="test", received_at=NOW
    )
    assert report.rejected == 0, report.rejections


# -- a real browser: Debian's chromium, driven by playwright (no browser download) -----------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (make system-deps installs it)",
)
