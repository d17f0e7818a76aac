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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from funnelscope.engines.base import Engine
from funnelscope.events.stages import DEFAULT_STAGE_MODEL, ORDER_EVENT, STAGES, Stage, StageModel

if TYPE_CHECKING:
    from funnelscope.store.layout import PersonLayout

__all__ = [
    "StageReport",
    "StageRow",
    "stage_counts",
    "stage_kpis",
    "stage_report",
    "wilson_interval",
]

Z95: Final = 1.959963984540054
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


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


#: Per stage: (events, persons with one or more of its events); per top stage: persons.
StageCounts = tuple[dict[int, tuple[int, int]], dict[int, int]]


def _stage_counts_sql(
    engine: Engine, model: StageModel, start: datetime, end: datetime
) -> StageCounts:
    """One query: each person's events per stage and top stage, then summed per top stage."""
    # Plain CASE sums (no FILTER clause): the same SQL runs transpiled on Spark.
    per_person = ", ".join(
        f"sum(CASE WHEN stage = {int(s)} THEN 1 ELSE 0 END) AS e{int(s)}" for s in STAGES
    )
    totals = ", ".join(
        f"sum(e{int(s)}) AS events{int(s)}, "
        f"sum(CASE WHEN e{int(s)} > 0 THEN 1 ELSE 0 END) AS persons{int(s)}"
        for s in STAGES
    )
    rows = engine.sql(
        _staged_events_sql(model)
        + f"""
        SELECT top, count(*) AS persons, {totals} FROM (
            SELECT person_id, max(stage) AS top, {per_person}
            FROM staged WHERE stage IS NOT NULL GROUP BY person_id
        ) GROUP BY top
        """,
        {"start": start, "end": end},
    ).to_pylist()
    active = {
        int(s): (
            sum(int(r[f"events{int(s)}"] or 0) for r in rows),
            sum(int(r[f"persons{int(s)}"] or 0) for r in rows),
        )
        for s in STAGES
    }
    return active, {int(r["top"]): int(r["persons"]) for r in rows}


def _stage_counts_layout(
    layout: PersonLayout, model: StageModel, start: datetime, end: datetime
) -> StageCounts:
    """The same counts from the in-memory person layout, in one pass (no SQL).

    Rows are grouped by (canonical) person and time-ordered inside each person, so an order's
    rank is a running count of the person's orders. Orders at the same instant may be ranked
    either way round, which changes no count: both are inside or both outside the period.
    """
    from funnelscope.kernels.stages import stage_counts_kernel

    stage_of_code = np.zeros(max(len(layout.event_names), 1), np.int8)
    for code, name in enumerate(layout.event_names):
        stage_of_code[code] = int(model.events.get(name, 0))
    order_code = layout.code_of(ORDER_EVENT)
    events, persons, tops = stage_counts_kernel(
        layout.offsets,
        layout.ts,
        layout.codes,
        stage_of_code,
        order_code=-1 if order_code is None else order_code,
        retention=int(Stage.RETENTION) if model.repeat_order_is_retention else 0,
        start_us=_micros(start),
        end_us=_micros(end),
        n_stages=len(STAGES),
    )
    active = {int(s): (int(events[int(s)]), int(persons[int(s)])) for s in STAGES}
    return active, {int(s): int(tops[int(s)]) for s in STAGES if tops[int(s)]}


def _micros(at: datetime) -> int:
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def stage_counts(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    model: StageModel = DEFAULT_STAGE_MODEL,
    use_layout: bool = True,
) -> StageCounts:
    """Per stage ``(events, active persons)`` and per top stage the persons, in ``[start, end)``.

    The embedded engine counts from its person layout (kept in memory and refreshed with each
    commit) unless ``use_layout`` is False (the server's choice while the layout is first being
    built); other engines run one SQL query. Both give the same numbers.
    """
    from funnelscope.engines.embedded import EmbeddedEngine

    if use_layout and isinstance(engine, EmbeddedEngine):
        return _stage_counts_layout(engine.person_layout(), model, start, end)
    return _stage_counts_sql(engine, model, start, end)


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
    use_layout: bool = True,
) -> StageReport:
    """Persons reaching each stage in ``[start, end)``, with conversion between stages.

    With ``with_kpis`` (the default) each row also carries its stage's main KPIs and their change
    vs the previous period of the same length (:func:`stage_kpis`). ``use_layout``: see
    :func:`stage_counts`.
    """
    active, at_top = stage_counts(engine, start=start, end=end, model=model, use_layout=use_layout)
    kpis = stage_kpis(engine, start=start, end=end) if with_kpis else {}
    rows: list[StageRow] = []
    previous: int | None = None
    for stage in STAGES:
        reached = sum(n for top, n in at_top.items() if top >= stage)
        events, active_persons = active.get(int(stage), (0, 0))
        conv = reached / previous if previous else None
        interval = None if previous is None else wilson_interval(reached, previous)
        rows.append(
            StageRow(
                stage, reached, active_persons, events, conv, interval, kpis=kpis.get(stage, {})
            )
        )
        previous = reached
    return StageReport(start, end, tuple(rows))
