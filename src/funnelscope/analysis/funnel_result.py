"""The result of a funnel: step counts, conversions with 95% Wilson intervals, drop-off, time
to convert, conversion trend, breakdowns, the units behind every number, and a per-person
explanation. Built from the engine's outcome table (one row per unit or attempt), so every
engine gives the same result from the same outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.analysis.funnel import FunnelSpec
from funnelscope.analysis.funnel_plan import NONE, Outcomes
from funnelscope.analysis.report import wilson_interval

__all__ = [
    "HISTOGRAM_EDGES",
    "BreakdownResult",
    "FunnelResult",
    "StepResult",
    "TimeToConvert",
    "TrendPoint",
    "build_result",
]

#: Upper edges (seconds) of the time-to-convert histogram bins, cut at the window.
HISTOGRAM_EDGES: Final = (
    60,
    300,
    900,
    3600,
    6 * 3600,
    86400,
    3 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
    90 * 86400,
    366 * 86400,
)

EventsOf = Callable[[int, tuple[str, ...]], pa.Table]


def _rate(successes: int, trials: int) -> tuple[float | None, tuple[float, float] | None]:
    if trials <= 0:
        return None, None
    return successes / trials, wilson_interval(successes, trials)


@dataclass(frozen=True)
class StepResult:
    """One step: how many units reached it and how many of the reference step went on.

    ``conversion_from_previous`` compares with the closest earlier *required* step (optional
    steps may be skipped); in open funnels it is the share of the previous step's units that
    went on to this step within the window.
    """

    step: int
    name: str
    count: int
    conversion_from_first: float | None
    conversion_from_first_interval: tuple[float, float] | None
    conversion_from_previous: float | None
    conversion_from_previous_interval: tuple[float, float] | None
    dropoff: int
    dropoff_rate: float | None
    is_optional: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "name": self.name,
            "count": self.count,
            "conversion_from_first": self.conversion_from_first,
            "conversion_from_first_interval": _pair(self.conversion_from_first_interval),
            "conversion_from_previous": self.conversion_from_previous,
            "conversion_from_previous_interval": _pair(self.conversion_from_previous_interval),
            "dropoff": self.dropoff,
            "dropoff_rate": self.dropoff_rate,
            "optional": self.is_optional,
        }


def _pair(value: tuple[float, float] | None) -> list[float] | None:
    return list(value) if value is not None else None


@dataclass(frozen=True)
class TimeToConvert:
    """Seconds from the chain's previous done step to ``step`` (or from step 1 to the last
    step when ``step`` is None), over the units that made it."""

    step: int | None
    count: int
    median_seconds: float | None
    p25_seconds: float | None
    p75_seconds: float | None
    p90_seconds: float | None
    mean_seconds: float | None
    histogram: tuple[tuple[float, int], ...]  # (upper edge in seconds, units in the bin)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "count": self.count,
            "median_seconds": self.median_seconds,
            "p25_seconds": self.p25_seconds,
            "p75_seconds": self.p75_seconds,
            "p90_seconds": self.p90_seconds,
            "mean_seconds": self.mean_seconds,
            "histogram": [{"upper_seconds": e, "count": c} for e, c in self.histogram],
        }


@dataclass(frozen=True)
class TrendPoint:
    """Units entering in one period, by the period of their counted chain's first step."""

    period_start: datetime
    entered: int
    converted: int
    conversion: float | None
    conversion_interval: tuple[float, float] | None
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "period_start": self.period_start.isoformat(),
            "entered": self.entered,
            "converted": self.converted,
            "conversion": self.conversion,
            "conversion_interval": _pair(self.conversion_interval),
            "counts": list(self.counts),
        }


@dataclass(frozen=True)
class BreakdownResult:
    """The steps for the units whose attributed event carries ``values``."""

    values: tuple[str | None, ...]
    steps: tuple[StepResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "steps": [s.to_dict() for s in self.steps]}


@dataclass(frozen=True)
class FunnelResult:
    """What a funnel found. ``outcomes`` holds one row per unit (or attempt, with totals).

    Examples
    --------
    >>> import funnelscope
    >>> ws = funnelscope.open(":memory:")
    >>> result = ws.funnel(["page_viewed", "order_completed"])
    >>> [s.count for s in result.steps], result.persons().shape[0]
    ([0, 0], 0)
    """

    spec: FunnelSpec
    engine: str
    units: int
    steps: tuple[StepResult, ...]
    time_to_convert: tuple[TimeToConvert, ...]
    total_time_to_convert: TimeToConvert | None
    trend: tuple[TrendPoint, ...]
    breakdowns: tuple[BreakdownResult, ...]
    outcomes: Outcomes = field(repr=False, compare=False)
    events_of: EventsOf | None = field(default=None, repr=False, compare=False)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(s.count for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "engine": self.engine,
            "units": self.units,
            "steps": [s.to_dict() for s in self.steps],
            "time_to_convert": [t.to_dict() for t in self.time_to_convert],
            "total_time_to_convert": self.total_time_to_convert.to_dict()
            if self.total_time_to_convert
            else None,
            "trend": [p.to_dict() for p in self.trend],
            "breakdowns": [b.to_dict() for b in self.breakdowns],
        }

    def to_pandas(self) -> Any:
        """One row per step (and per breakdown value when there are breakdowns)."""
        import pandas as pd

        rows: list[dict[str, Any]] = []
        if self.breakdowns:
            for b in self.breakdowns:
                for s in b.steps:
                    row = dict(zip(self.spec.breakdowns, b.values, strict=True))
                    row.update(s.to_dict())
                    rows.append(row)
        else:
            rows = [s.to_dict() for s in self.steps]
        return pd.DataFrame(rows)

    # -- who ---------------------------------------------------------------------------------
    def persons(self, step: int | None = None, *, dropped: bool = False) -> Any:
        """The units behind the numbers, as a DataFrame.

        Columns: ``person_id``, ``unit`` (sessions/keys), ``attempt`` (totals),
        ``furthest_step`` (0 = never entered), ``step_<k>_at`` and breakdown values.
        ``step=N`` keeps the units that reached step N; with ``dropped=True`` the units that
        reached the step before it (its reference step) but not step N.
        """
        out = self.outcomes
        reached = out.reached
        keep = np.ones(len(out), bool)
        if step is not None:
            n = len(self.spec.steps)
            if not 1 <= step <= n:
                from funnelscope.errors import InvalidInputError

                raise InvalidInputError(
                    f"step must be in 1..{n}, got {step}", code="funnel.step_out_of_range"
                )
            at = (reached >> (step - 1)) & 1 == 1
            if dropped:
                if step == 1:
                    keep = out.level == 0
                else:
                    ref = _reference_steps(self.spec)[step - 1]
                    keep = ((reached >> ref) & 1 == 1) & ~at
            else:
                keep = at
        frame = out.take(np.flatnonzero(keep)).to_arrow(self.spec).to_pandas()
        frame = frame.rename(columns={"level": "furthest_step"})
        drop = ["reached", "advanced"]
        if self.spec.count_by == "persons":
            drop.append("unit")
        if self.spec.counting == "uniques":
            drop.append("attempt")
        frame = frame.drop(columns=drop)
        return frame.rename(columns={f"breakdown.{b}": b for b in self.spec.breakdowns})

    def export_persons(
        self, path: str | Path, step: int | None = None, *, dropped: bool = False
    ) -> Path:
        """Write :meth:`persons` to CSV or Parquet (by the file suffix)."""
        target = Path(path)
        frame = self.persons(step, dropped=dropped)
        if target.suffix.lower() == ".parquet":
            frame.to_parquet(target, index=False)
        else:
            frame.to_csv(target, index=False)
        return target

    def explain(self, person: int) -> str:
        """A readable trace of why ``person`` is counted where they are."""
        from funnelscope.analysis.funnel_explain import explain_person

        if self.events_of is None:
            from funnelscope.errors import UnsupportedByEngineError

            raise UnsupportedByEngineError("this result cannot read events to explain persons")
        return explain_person(self.spec, self.events_of(person, self.spec.columns), person)


def _reference_steps(spec: FunnelSpec) -> list[int]:
    """For each step (0-based), the step whose units it is compared with."""
    refs = [0]
    last_required = 0
    for k in range(1, len(spec.steps)):
        refs.append(k - 1 if spec.mode == "any" or spec.is_open else last_required)
        if not spec.steps[k].is_optional:
            last_required = k
    return refs


def _bits(values: npt.NDArray[np.int64], n: int) -> list[int]:
    from funnelscope.kernels.outcomes import bit_counts

    return [int(c) for c in bit_counts(np.ascontiguousarray(values, np.int64), n)]


def _steps(
    spec: FunnelSpec, reached: npt.NDArray[np.int64], advanced: npt.NDArray[np.int64]
) -> tuple[StepResult, ...]:
    n = len(spec.steps)
    counts = _bits(reached, n)
    moved = _bits(advanced, n) if spec.is_open else counts
    refs = _reference_steps(spec)
    out = []
    for k, step in enumerate(spec.steps):
        first, first_ci = _rate(counts[k], counts[0])
        if k == 0:
            prev, prev_ci, drop = None, None, 0
        else:
            prev, prev_ci = _rate(moved[k], counts[refs[k]])
            drop = counts[refs[k]] - moved[k]
        drop_rate = None if prev is None else 1 - prev
        out.append(
            StepResult(
                k + 1,
                step.name,
                counts[k],
                first,
                first_ci,
                prev,
                prev_ci,
                drop,
                drop_rate,
                step.is_optional,
            )
        )
    return tuple(out)


def _distribution(
    step: int | None, seconds: npt.NDArray[np.float64], window: timedelta
) -> TimeToConvert:
    if seconds.shape[0] == 0:
        return TimeToConvert(step, 0, None, None, None, None, None, ())
    q = np.percentile(seconds, [50, 25, 75, 90])
    limit = window.total_seconds()
    edges = [float(e) for e in HISTOGRAM_EDGES if e < limit] + [limit]
    bins = np.searchsorted(np.asarray(edges), seconds, side="left")
    counts = np.bincount(np.minimum(bins, len(edges) - 1), minlength=len(edges))
    return TimeToConvert(
        step,
        int(seconds.shape[0]),
        float(q[0]),
        float(q[1]),
        float(q[2]),
        float(q[3]),
        float(seconds.mean()),
        tuple((e, int(c)) for e, c in zip(edges, counts, strict=True)),
    )


def _times_to_convert(
    spec: FunnelSpec, times: npt.NDArray[np.int64]
) -> tuple[tuple[TimeToConvert, ...], TimeToConvert | None]:
    if spec.mode == "any" or times.shape[1] == 0:
        return (), None
    from funnelscope.kernels.outcomes import step_gaps

    values, offsets, total = step_gaps(np.ascontiguousarray(times), NONE)
    out = [
        _distribution(k + 1, values[offsets[k] : offsets[k + 1]] / 1e6, spec.window)
        for k in range(1, times.shape[1])
    ]
    return tuple(out), _distribution(None, total / 1e6, spec.window)


_PERIODS: Final = {"day": 0, "week": 1, "month": 2}  # trend_counts' period codes


def _period_datetime(value: int, period: str) -> datetime:
    if period == "month":
        year, month = divmod(int(value), 12)
        return datetime(1970 + year, month + 1, 1, tzinfo=UTC)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=int(value))


def _trend(
    spec: FunnelSpec, times: npt.NDArray[np.int64], reached: npt.NDArray[np.int64]
) -> tuple[TrendPoint, ...]:
    n = len(spec.steps)
    if times.shape[0] == 0:
        return ()
    from funnelscope.kernels.outcomes import trend_counts

    first, entered_by, per_step = trend_counts(
        np.ascontiguousarray(times),
        np.ascontiguousarray(reached, np.int64),
        n,
        not (spec.is_open or spec.mode == "any"),
        _PERIODS[spec.trend_period],
        NONE,
    )
    points = []
    for offset in np.flatnonzero(entered_by):
        value = int(first) + int(offset)
        counts = tuple(int(c) for c in per_step[offset])
        entered = int(entered_by[offset])
        converted = counts[-1]
        rate, ci = _rate(converted, entered)
        points.append(
            TrendPoint(
                _period_datetime(int(value), spec.trend_period),
                entered,
                converted,
                rate,
                ci,
                counts,
            )
        )
    return tuple(points)


def _breakdowns(spec: FunnelSpec, out: Outcomes) -> tuple[BreakdownResult, ...]:
    if not spec.breakdowns:
        return ()
    import pandas as pd

    frame = pd.DataFrame(
        {b: col.to_pandas() for b, col in zip(spec.breakdowns, out.breakdowns, strict=True)}
    )
    entered = out.level > 0
    groups = frame[entered].groupby(list(spec.breakdowns), dropna=False, sort=False).indices
    index = np.flatnonzero(entered)
    result = []
    for key, positions in groups.items():
        values = key if isinstance(key, tuple) else (key,)
        clean = tuple(None if pd.isna(v) else str(v) for v in values)
        rows = index[positions]
        result.append(BreakdownResult(clean, _steps(spec, out.reached[rows], out.advanced[rows])))
    result.sort(key=lambda b: (-b.steps[0].count, tuple(str(v) for v in b.values)))
    return tuple(result)


def build_result(
    spec: FunnelSpec,
    outcomes: Outcomes | pa.Table,
    *,
    engine: str,
    events_of: EventsOf | None = None,
) -> FunnelResult:
    """Aggregate the outcomes (arrays, or the Arrow table of a distributed engine)."""
    out = outcomes if isinstance(outcomes, Outcomes) else Outcomes.from_arrow(spec, outcomes)
    if len(out) > 1 and (
        out.unit is not None or spec.counting == "totals" or (np.diff(out.person_id) < 0).any()
    ):
        # partitions come back in any order; persons() is deterministic
        unit = (
            np.zeros(len(out), np.int64)
            if out.unit is None
            else np.asarray(pc.rank(out.unit.fill_null(""), sort_keys="ascending"))
        )
        out = out.take(np.lexsort((out.attempt, unit, out.person_id)))
    ttc, total = _times_to_convert(spec, out.times)
    return FunnelResult(
        spec=spec,
        engine=engine,
        units=len(out),
        steps=_steps(spec, out.reached, out.advanced),
        time_to_convert=ttc,
        total_time_to_convert=total,
        trend=_trend(spec, out.times, out.reached),
        breakdowns=_breakdowns(spec, out),
        outcomes=out,
        events_of=events_of,
    )
