"""The stage report: how many people reached each stage of the journey in a period.

Semantics (docs/data-model.md, "Stage report"):

* each event in ``[start, end)`` has the stage of the stage model; an ``order_completed`` that is
  not the person's first order ever is a Retention event when ``repeat_order_is_retention``;
* a person's stage is the highest stage of their events in the period; a person *reached* a
  stage when their stage is at or beyond it (someone who orders without a recorded ad
  impression was still aware): so the counts never increase along the stages;
* conversion from the previous stage = reached(s) / reached(s - 1); Wilson 95% intervals;
* each stage's main KPIs (:data:`~funnelscope.analysis.kpi_catalogue.MAIN_KPIS`, docs/kpis.md)
  over the same window, with their value in the window of the same length just before and the
  relative change (``StageRow.kpis``: name -> value, previous_value, change, unit, note).

Persons are stitched (canonical) persons, so anonymous browsing before a sign-up counts once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from funnelscope.engines.base import Engine
from funnelscope.events.stages import DEFAULT_STAGE_MODEL, ORDER_EVENT, STAGES, Stage, StageModel

__all__ = ["StageReport", "StageRow", "stage_kpis", "stage_report", "wilson_interval"]

Z95: Final = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a proportion; None when there are no trials."""
    if trials <= 0:
        return None
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class StageRow:
    stage: Stage
    persons: int  # reached this stage or beyond
    active_persons: int  # had at least one event of this stage
    events: int
    conversion_from_previous: float | None
    conversion_interval: tuple[float, float] | None
    kpis: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage.name.lower(),
            "persons": self.persons,
            "active_persons": self.active_persons,
            "events": self.events,
            "conversion_from_previous": self.conversion_from_previous,
            "conversion_interval": list(self.conversion_interval)
            if self.conversion_interval
            else None,
            "kpis": self.kpis,
        }


@dataclass(frozen=True)
class StageReport:
    start: datetime | None
    end: datetime | None
    rows: tuple[StageRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "stages": [r.to_dict() for r in self.rows],
        }

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self.rows])

    def row(self, stage: Stage) -> StageRow:
        return next(r for r in self.rows if r.stage == stage)


def _staged_events_sql(model: StageModel) -> str:
    repeat = "TRUE" if model.repeat_order_is_retention else "FALSE"
    return f"""
        WITH orders AS (
            SELECT event_id, row_number() OVER (
                PARTITION BY person_id ORDER BY "timestamp", event_id) AS order_rank
            FROM events WHERE event = '{ORDER_EVENT}'
        ), staged AS (
            SELECT e.person_id,
                   CASE WHEN o.order_rank >= 2 AND {repeat} THEN {int(Stage.RETENTION)}
                        ELSE {model.sql_case("e.event")} END AS stage
            FROM events e LEFT JOIN orders o ON o.event_id = e.event_id
            WHERE e."timestamp" >= $start AND e."timestamp" < $end
        )
    """


def stage_kpis(engine: Engine, *, start: datetime, end: datetime) -> dict[Stage, dict[str, Any]]:
    """Each stage's main KPIs over ``[start, end)`` with the change vs the previous period."""
    from funnelscope.analysis.kpi_catalogue import MAIN_KPIS
    from funnelscope.analysis.kpis import KpiSpec, compute_kpis

    names = [n for stage in STAGES for n in MAIN_KPIS.get(stage, ())]
    spec = KpiSpec.create(names, start, end, compare="previous_period")
    by_stage: dict[Stage, dict[str, Any]] = {stage: {} for stage in STAGES}
    for row in compute_kpis(engine, spec).rows:
        by_stage[Stage[row.stage.upper()]][row.kpi] = {
            "value": row.value,
            "previous_value": row.previous_value,
            "change": row.change,
            "unit": row.unit,
            "note": row.note,
        }
    return by_stage


def stage_report(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    model: StageModel = DEFAULT_STAGE_MODEL,
    with_kpis: bool = True,
) -> StageReport:
    """Persons reaching each stage in ``[start, end)``, with conversion between stages.

    With ``with_kpis`` (the default) each row also carries its stage's main KPIs and their change
    vs the previous period of the same length (:func:`stage_kpis`).
    """
    params = {"start": start, "end": end}
    base = _staged_events_sql(model)
    per_stage = engine.sql(
        base
        + """
        SELECT stage, count(*) AS events, count(DISTINCT person_id) AS persons
        FROM staged WHERE stage IS NOT NULL GROUP BY stage
        """,
        params,
    ).to_pylist()
    furthest = engine.sql(
        base
        + """
        SELECT top, count(*) AS persons FROM (
            SELECT person_id, max(stage) AS top FROM staged WHERE stage IS NOT NULL
            GROUP BY person_id
        ) GROUP BY top
        """,
        params,
    ).to_pylist()
    active = {int(r["stage"]): (int(r["events"]), int(r["persons"])) for r in per_stage}
    at_top = {int(r["top"]): int(r["persons"]) for r in furthest}
    kpis = stage_kpis(engine, start=start, end=end) if with_kpis else {}
    rows: list[StageRow] = []
    previous: int | None = None
    for stage in STAGES:
        reached = sum(n for top, n in at_top.items() if top >= stage)
        events, active_persons = active.get(int(stage), (0, 0))
        conv = reached / previous if previous else None
        interval = None if previous is None else wilson_interval(reached, previous)
        rows.append(StageRow(stage, reached, active_persons, events, conv, interval,
                             kpis=kpis.get(stage, {})))
        previous = reached
    return StageReport(start, end, tuple(rows))
