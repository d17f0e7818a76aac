"""The Workspace: one store and everything you can ask of it. The facade over the library.

The CLI, the HTTP API and notebooks all go through a Workspace, so every interface gives the
same answers. Methods are thin: each delegates to the module that owns the concept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from funnelscope.engines.embedded import EmbeddedEngine
from funnelscope.store.store import DEFAULT_STORE_PATH, Store

__all__ = ["Workspace", "open"]


class Workspace:
    """A store and its analyses.

    Examples
    --------
    >>> import funnelscope
    >>> ws = funnelscope.open(":memory:")
    >>> ws.info()["events"]
    0
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = EmbeddedEngine(store)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self.store.path

    # -- data in ---------------------------------------------------------------------------
    def append_staging(
        self, staging: Any, *, source: str, received_at: datetime | None = None
    ) -> Any:
        """Append a staging Arrow table (see :mod:`funnelscope.ingest.pipeline`)."""
        from funnelscope.ingest.pipeline import append_events

        return append_events(
            self.store, staging, source=source, received_at=received_at or datetime.now(UTC)
        )

    # -- data out --------------------------------------------------------------------------
    def stage_report(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        stages: str | Path | None = None,
    ) -> Any:
        """Persons reaching each journey stage in ``[start, end)`` (default: all data).

        ``stages`` is an optional TOML stage-model file (see :mod:`funnelscope.events.stages`).
        """
        from funnelscope.analysis.report import stage_report
        from funnelscope.events.stages import DEFAULT_STAGE_MODEL, StageModel

        model = StageModel.from_toml(stages) if stages else DEFAULT_STAGE_MODEL
        first, last = self.store.query('SELECT min("timestamp"), max("timestamp") FROM events')[0]
        start = start or first or datetime(2000, 1, 1, tzinfo=UTC)
        end = end or (last + timedelta(microseconds=1) if last else start)
        return stage_report(self.engine, start=start, end=end, model=model)

    def info(self) -> dict[str, Any]:
        """A summary of the store: counts per table, persons, time span, schema version."""
        q = self.store.query
        (events, persons, first, last) = q(
            "SELECT count(*), count(DISTINCT m.canonical_id), min(e.timestamp), max(e.timestamp) "
            "FROM events e LEFT JOIN person_map m USING (person_id)"
        )[0]
        counts = {
            t: int(q(f"SELECT count(*) FROM {t}")[0][0])
            for t in ("ad_spend", "email_campaigns", "survey_responses", "products", "quarantine")
        }
        return {
            "path": str(self.store.path),
            "schema_version": self.store.schema_version,
            "currency": self.store.currency,
            "events": int(events),
            "persons": int(persons),
            "first_event_at": first,
            "last_event_at": last,
            **counts,
        }

    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """Write every table as Parquet into ``out_dir`` (for Spark or any engine)."""
        from funnelscope.store.export import export_parquet

        return export_parquet(self.store, out_dir)


def open(path: str | Path = DEFAULT_STORE_PATH, *, read_only: bool = False) -> Workspace:
    """Open (and create if missing) the store at ``path`` and return its Workspace.

    Examples
    --------
    >>> import funnelscope
    >>> with funnelscope.open(":memory:") as ws:
    ...     ws.info()["schema_version"] >= 1
    True
    """
    return Workspace(Store(path, read_only=read_only))
