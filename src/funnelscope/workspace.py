"""The Workspace: one store and everything you can ask of it. The facade over the library.

The CLI, the HTTP API and notebooks all go through a Workspace, so every interface gives the
same answers. Methods are thin: each delegates to the module that owns the concept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

    def ingest(
        self,
        source: Any,
        *,
        kind: str | None = None,
        format: str | None = None,
        received_at: datetime | None = None,
        progress: Any = None,
    ) -> Any:
        """Import a file, several files, or a pandas / polars / pyarrow frame.

        Returns an ``IngestReport`` (``rows == accepted + rejected``) for one file or frame, a
        list of them for several files. Formats, column names and reason codes:
        docs/import.md; the code is :mod:`funnelscope.ingest.files`.

        Examples
        --------
        >>> import funnelscope, pandas as pd
        >>> df = pd.DataFrame({"event_id": ["e1"], "timestamp": ["2024-05-01T10:00:00Z"],
        ...                    "event": ["Order Completed"], "user_id": ["u1"]})
        >>> with funnelscope.open(":memory:") as ws:
        ...     ws.ingest(df).inserted
        1
        """
        from funnelscope.ingest.files import ingest_file, ingest_frame

        at = received_at or datetime.now(UTC)
        if isinstance(source, str | Path):
            return ingest_file(
                self.store, source, kind=kind, format=format, received_at=at, progress=progress
            )
        if isinstance(source, list | tuple):
            return [
                ingest_file(
                    self.store, p, kind=kind, format=format, received_at=at, progress=progress
                )
                for p in source
            ]
        return ingest_frame(self.store, source, source="frame", received_at=at, kind=kind)

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

    def kpis(
        self,
        names: str | Sequence[str],
        start: datetime,
        end: datetime,
        *,
        breakdown: str | Sequence[str] = (),
        granularity: str | None = None,
        compare: str | None = None,
        filters: Mapping[str, str | Sequence[str]] | None = None,
        engine: Any = None,
    ) -> Any:
        """Stage KPIs (docs/kpis.md) in ``[start, end)`` as a tidy pandas DataFrame.

        Columns: kpi, stage, unit, period, one per breakdown, value, numerator, denominator,
        previous_value, change, note. ``engine`` defaults to the embedded engine.

        Examples
        --------
        >>> import funnelscope
        >>> from datetime import UTC, datetime
        >>> with funnelscope.open(":memory:") as ws:
        ...     df = ws.kpis(["sessions"], datetime(2024, 5, 1, tzinfo=UTC),
        ...                  datetime(2024, 6, 1, tzinfo=UTC))
        >>> df["value"].tolist()
        [0.0]
        """
        from funnelscope.analysis.kpis import KpiSpec, compute_kpis

        spec = KpiSpec.create(
            names,
            start,
            end,
            breakdown=breakdown,
            granularity=granularity,
            compare=compare,
            filters=filters,
        )
        return compute_kpis(engine or self.engine, spec).to_pandas()

    # -- funnels (analysis/funnel.py, docs/funnels.md) ---------------------------------------
    def funnel(
        self,
        spec_or_steps: Any,
        *,
        engine: Any = None,
        data: str | Path | None = None,
        **options: Any,
    ) -> Any:
        """Run a funnel: a FunnelSpec, or a list of steps plus FunnelSpec options.

        ``engine="spark"`` (with ``data``, a folder of Parquet from :meth:`export`, default a
        fresh export) or a ``SparkEngine`` runs the same spec on Spark.

        Examples
        --------
        >>> import funnelscope
        >>> with funnelscope.open(":memory:") as ws:
        ...     ws.funnel(["page_viewed", "order_completed"], window="1d").counts
        (0, 0)
        """
        from funnelscope.analysis.funnel import FunnelSpec, run

        spec = (
            spec_or_steps
            if isinstance(spec_or_steps, FunnelSpec)
            else FunnelSpec.of(*spec_or_steps, **options)
        )
        return run(spec, self._funnel_engine(engine, data))

    def stage_funnel(
        self,
        *,
        stages: str | Path | None = None,
        engine: Any = None,
        data: str | Path | None = None,
        **options: Any,
    ) -> Any:
        """Awareness -> Interest -> Decision -> Action -> Retention as an ordered funnel."""
        from funnelscope.analysis.funnel import run, stage_funnel_spec
        from funnelscope.events.stages import DEFAULT_STAGE_MODEL, StageModel

        model = StageModel.from_toml(stages) if stages else DEFAULT_STAGE_MODEL
        return run(stage_funnel_spec(model, **options), self._funnel_engine(engine, data))

    def _funnel_engine(self, engine: Any, data: str | Path | None) -> Any:
        if engine is None or engine == "embedded":
            return self.engine
        if engine == "spark":
            import tempfile

            from funnelscope.engines.spark import SparkEngine

            folder = Path(data) if data else Path(tempfile.mkdtemp(prefix="funnelscope-"))
            if data is None:
                self.export(folder)
            return SparkEngine(folder)
        return engine

    # -- customers (docs/customers.md) -----------------------------------------------------
    def customers(self, *, now: datetime) -> Any:
        """The customer table as of ``now`` (:mod:`funnelscope.analysis.customers`)."""
        from funnelscope.analysis.customers import customer_table

        return customer_table(self.engine, now=now)

    def rfm(self, *, now: datetime) -> Any:
        """RFM scores and the 11 named segments as of ``now`` (:mod:`funnelscope.analysis.rfm`)."""
        from funnelscope.analysis.rfm import rfm

        return rfm(self.customers(now=now))

    def clv(self, *, now: datetime, horizon_weeks: float = 52.0) -> Any:
        """BG/NBD + Gamma-Gamma fitted on the orders up to ``now``, and every buyer's CLV."""
        from funnelscope.analysis.customers import customer_value

        return customer_value(self.engine, now=now, horizon_weeks=horizon_weeks)

    def segment(self, segment: Any, *, now: datetime) -> list[int]:
        """Person ids in ``segment`` (a stored name, a SegmentSpec or its JSON form) at ``now``."""
        from funnelscope.analysis import segments

        if isinstance(segment, str):
            spec = segments.get_segment(self.store, segment)
        elif isinstance(segment, segments.SegmentSpec):
            spec = segment
        else:
            spec = segments.parse_segment(segment)
        return segments.evaluate(self.store, spec, now=now)

    def clusters(self, *, now: datetime, seed: int = 0) -> Any:
        """Behavioural clusters of the buyers at ``now`` (models/segmentation.py)."""
        from funnelscope.models.segmentation import BehaviourSegmentation

        return BehaviourSegmentation(seed=seed).fit(self.customers(now=now))

    def acquisition(self, *, now: datetime, margin: float = 1.0) -> Any:
        """CAC, CLV:CAC and payback by channel and cohort (analysis/acquisition.py)."""
        from funnelscope.analysis.acquisition import acquisition

        return acquisition(self.engine, self.customers(now=now), margin=margin)

    # -- goals (analysis/goals/, docs/goals.md) ----------------------------------------------
    def add_goal(self, goal: Any, *, now: datetime, replace: bool = False) -> Any:
        """Validate a GoalSpec (or its dict form) against the store's data and store it."""
        from funnelscope.analysis.goals import GoalSpec, save_goal, validate_goal

        spec = goal if isinstance(goal, GoalSpec) else GoalSpec.from_dict(goal)
        validate_goal(self, spec, now=now)
        save_goal(self.store, spec, now=now, replace=replace)
        return spec

    def goals(self) -> list[Any]:
        """The stored GoalSpecs, by name."""
        from funnelscope.analysis.goals import list_goals

        return [g["goal"] for g in list_goals(self.store)]

    def goal_progress(self, name: str, *, now: datetime) -> Any:
        """A stored goal's GoalProgress as of ``now``: value, pacing, forecast, status."""
        from funnelscope.analysis.goals import get_goal, goal_progress

        return goal_progress(self, get_goal(self.store, name), now=now)

    def check_goals(self, *, now: datetime) -> list[Any]:
        """Re-evaluate every goal; record status changes and queue their webhooks."""
        from funnelscope.analysis.goals import check_goals

        return check_goals(self, now=now)

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
