"""SMART goals: a target on a catalogue KPI, with pacing, a forecast, a probability and a status.

A :class:`GoalSpec` says *what* (a KPI of :mod:`funnelscope.analysis.kpi_catalogue`, narrowed by
scope filters), *how much* (an absolute target, or a % change against a baseline period),
*by when* (start and deadline, whole UTC days, both inclusive), *who* (an owner) and *through
what* (an optional linked initiative, e.g. a campaign). :func:`goal_progress` measures it on a
workspace as of ``now``: the value so far, the pacing line, a forecast of the value at the
deadline (:mod:`funnelscope.models.forecast`), the probability of reaching the target and a
status. :func:`check_goals` re-evaluates every stored goal, records status changes and queues a
signed webhook for each (``goal.status_changed``). Semantics: docs/goals.md.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from funnelscope.analysis.kpi_catalogue import CATALOGUE, DIMENSIONS, Kpi, Measure, kpi_by_name
from funnelscope.errors import InvalidSpecError, Problem
from funnelscope.models.forecast import (
    Aggregation,
    InsufficientHistoryError,
    PeriodForecast,
    period_forecast,
)

if TYPE_CHECKING:
    import pandas as pd

    from funnelscope.store.store import Store
    from funnelscope.workspace import Workspace

__all__ = [
    "AT_RISK_PROBABILITY",
    "GOAL_EVENT_TYPE",
    "ON_TRACK_PROBABILITY",
    "SCOPES",
    "GoalCheck",
    "GoalProgress",
    "GoalSpec",
    "SmartCheck",
    "check_goals",
    "delete_goal",
    "evaluate_goals",
    "format_value",
    "get_goal",
    "goal_progress",
    "kpi_daily_frame",
    "kpi_daily_series",
    "list_goals",
    "parse_target",
    "save_goal",
    "status_for",
    "subscribe_goal_webhook",
    "validate_goal",
]

TargetKind = Literal["absolute", "change"]
Status = Literal["on_track", "at_risk", "off_track", "achieved", "missed", "insufficient_data"]

#: A probability of reaching the target at or above this is ``on_track``.
ON_TRACK_PROBABILITY: Final = 0.7
#: At or above this (and below on-track) is ``at_risk``; below it, ``off_track``.
AT_RISK_PROBABILITY: Final = 0.3
#: Days of history (at most) fitted by the forecast; older days say little about this period.
HISTORY_DAYS: Final = 365
#: The longest goal period: three years.
MAX_GOAL_DAYS: Final = 1096
GOAL_EVENT_TYPE: Final = "goal.status_changed"
#: Scope properties beyond the KPI breakdown dimensions.
EXTRA_SCOPES: Final = {
    "category": "product category: the products of that category (products table or order items)",
    "segment": "a stored rule segment (funnelscope segments)",
}
SCOPES: Final = {**DIMENSIONS, **EXTRA_SCOPES}
#: The value range of each KPI unit: (lowest, highest) a value can take; None = unbounded.
UNIT_BOUNDS: Final[dict[str, tuple[float | None, float | None]]] = {
    "ratio": (0.0, 1.0),
    "percent": (0.0, 100.0),
    "score": (-100.0, 100.0),
    "count": (0.0, None),
    "currency": (0.0, None),
    "seconds": (0.0, None),
    "days": (0.0, None),
    "multiple": (0.0, None),
}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_TARGET = re.compile(
    r"^\s*(?:(?P<pre>[A-Za-z]{3})\s+)?(?P<num>[+-]?\d+(?:[.,]\d+)?)\s*(?P<post>%|[A-Za-z]{3})?\s*$"
)


def parse_target(text: str | float) -> tuple[TargetKind, float, str | None]:
    """Read a target as written by a person: ``(kind, value, unit)``.

    ``"+15%"`` / ``"-10%"`` are changes against the baseline (signed percentages); ``"2.5%"`` is
    an absolute percentage; ``"50000 USD"`` or ``"USD 50000"`` an absolute amount; ``"1200"``
    or ``0.03`` an absolute value in the KPI's own unit.

    Examples
    --------
    >>> parse_target("+15%"), parse_target("2.5%"), parse_target("USD 50000")
    (('change', 15.0, '%'), ('absolute', 2.5, '%'), ('absolute', 50000.0, 'USD'))
    """
    if isinstance(text, int | float):
        return "absolute", float(text), None
    match = _TARGET.match(text)
    if not match:
        raise InvalidSpecError([Problem(
            "goal.bad_target", "target", f"cannot read target {text!r}: write a number "
            "(1200, 0.03), an amount with its currency (50000 USD), a percentage (2.5%) or a "
            "change against the baseline (+15%, -10%)")])
    number = match.group("num").replace(",", ".")
    unit = (match.group("pre") or match.group("post") or None)
    unit = unit.upper() if unit and unit != "%" else unit
    is_change = unit == "%" and number[0] in "+-"
    return ("change" if is_change else "absolute"), float(number), unit


def _as_date(value: Any, where: str, problems: list[Problem]) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        problems.append(Problem("goal.bad_date", where, f"{value!r} is not a date (YYYY-MM-DD)"))
        return None


@dataclass(frozen=True)
class GoalSpec:
    """A SMART goal on one KPI.

    Attributes
    ----------
    name, owner
        The goal's unique name and who answers for it.
    kpi
        A KPI of the catalogue (``funnelscope kpi --list``; docs/kpis.md).
    target, target_kind, target_unit
        ``absolute``: the value to reach, in ``target_unit`` (None: the KPI's own unit; ``"%"``:
        percentage points, 2.5 = 0.025 on a ratio KPI; an ISO code: the store currency).
        ``change``: a % change against the baseline (15 = +15%, -10 = -10%).
    start, deadline
        The goal period, whole UTC days, both inclusive. No deadline: not time-bound (invalid).
    baseline_start, baseline_end
        The period a ``change`` is measured against (inclusive days). Default: the period of
        the same length just before ``start``.
    scope
        ``(property, value)`` filters: product, category, channel, campaign, segment, and the
        other KPI breakdowns (device, country, new_vs_returning, page).
    initiative
        What is meant to move the KPI, e.g. a campaign name: checked for in the data.
    aggregation
        How the daily values make the period's value: ``sum`` (additive KPIs), ``ratio`` (sum
        of numerators / sum of denominators) or ``mean`` (of the daily values). Default: from
        the catalogue, see :meth:`resolved_aggregation`.

    Examples
    --------
    >>> goal = GoalSpec.create(
    ...     "q1-product-x", kpi="product_revenue", target="+15%", start="2025-01-01",
    ...     deadline="2025-03-31", scope={"product": "X"}, initiative="email_spring",
    ...     owner="ana")
    >>> goal.validate()
    >>> goal.baseline_period()
    (datetime.date(2024, 10, 3), datetime.date(2024, 12, 31))
    """

    name: str
    kpi: str
    target: float
    start: date
    deadline: date | None
    target_kind: TargetKind = "absolute"
    target_unit: str | None = None
    baseline_start: date | None = None
    baseline_end: date | None = None
    scope: tuple[tuple[str, str], ...] = ()
    owner: str | None = None
    initiative: str | None = None
    aggregation: Aggregation | None = None
    description: str = ""

    # -- building --------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        *,
        kpi: str,
        target: str | float,
        start: date | str,
        deadline: date | str | None,
        baseline_start: date | str | None = None,
        baseline_end: date | str | None = None,
        scope: Mapping[str, str] | None = None,
        owner: str | None = None,
        initiative: str | None = None,
        aggregation: str | None = None,
        description: str = "",
        target_unit: str | None = None,
    ) -> GoalSpec:
        """Build from loose values: dates as ISO text, the target as written (see
        :func:`parse_target`). Raises :class:`InvalidSpecError` for unreadable values; call
        :meth:`validate` for the SMART rules."""
        problems: list[Problem] = []
        kind, value, unit = parse_target(target)
        dates = {k: _as_date(v, k, problems) for k, v in (
            ("start", start), ("deadline", deadline), ("baseline_start", baseline_start),
            ("baseline_end", baseline_end))}
        if dates["start"] is None and not any(p.location == "start" for p in problems):
            problems.append(Problem("goal.no_start", "start", "a goal needs a start date"))
        if aggregation not in (None, "sum", "ratio", "mean"):
            problems.append(Problem("goal.bad_aggregation", "aggregation",
                                    f"unknown aggregation {aggregation!r}; allowed: sum, ratio, "
                                    "mean"))
        if problems:
            raise InvalidSpecError(problems)
        return cls(
            name=name, kpi=kpi, target=value, target_kind=kind,
            target_unit=target_unit if target_unit is not None else unit,
            start=dates["start"] or date.min, deadline=dates["deadline"],
            baseline_start=dates["baseline_start"], baseline_end=dates["baseline_end"],
            scope=tuple(sorted((str(k), str(v)) for k, v in (scope or {}).items())),
            owner=owner, initiative=initiative,
            aggregation=aggregation,  # type: ignore[arg-type]
            description=description,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GoalSpec:
        """From the JSON/YAML form (:meth:`to_dict`; ``target`` may be text like ``+15%``)."""
        known = {"name", "kpi", "target", "start", "deadline", "baseline_start", "baseline_end",
                 "scope", "owner", "initiative", "aggregation", "description", "target_kind",
                 "target_unit"}
        extra = sorted(set(data) - known)
        if extra:
            raise InvalidSpecError([Problem("goal.unknown_field", k, f"unknown field {k!r}; "
                                            f"allowed: {', '.join(sorted(known))}")
                                    for k in extra])
        missing = [k for k in ("name", "kpi", "target", "start") if data.get(k) in (None, "")]
        if missing:
            raise InvalidSpecError([Problem("goal.missing_field", k, f"{k} is required")
                                    for k in missing])
        wrong = [k for k, types in (("target", (str, int, float)), ("owner", (str,)),
                                    ("initiative", (str,)), ("description", (str,)),
                                    ("target_unit", (str,)), ("aggregation", (str,)))
                 if data.get(k) is not None and not isinstance(data[k], types)]
        if wrong:
            raise InvalidSpecError([Problem("goal.bad_field", k, f"{k} must be "
                                            f"{'a number or text' if k == 'target' else 'text'}")
                                    for k in wrong])
        target = data["target"]
        if data.get("target_kind") == "change" and isinstance(target, int | float):
            target = f"{float(target):+}%"
        scope = data.get("scope") or {}
        if not isinstance(scope, Mapping):
            raise InvalidSpecError([Problem("goal.bad_scope", "scope",
                                            "scope is a mapping of property to value")])
        return cls.create(
            str(data["name"]), kpi=str(data["kpi"]), target=target, start=data["start"],
            deadline=data.get("deadline"), baseline_start=data.get("baseline_start"),
            baseline_end=data.get("baseline_end"), scope=scope, owner=data.get("owner"),
            initiative=data.get("initiative"), aggregation=data.get("aggregation"),
            description=str(data.get("description") or ""),
            target_unit=data.get("target_unit"),
        )

    def to_dict(self) -> dict[str, Any]:
        def iso(d: date | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "name": self.name, "owner": self.owner, "kpi": self.kpi,
            "target": self.target, "target_kind": self.target_kind,
            "target_unit": self.target_unit, "start": iso(self.start),
            "deadline": iso(self.deadline), "baseline_start": iso(self.baseline_start),
            "baseline_end": iso(self.baseline_end), "scope": dict(self.scope),
            "initiative": self.initiative, "aggregation": self.aggregation,
            "description": self.description,
        }

    # -- derived -----------------------------------------------------------------------------
    @property
    def catalogue_kpi(self) -> Kpi:
        return kpi_by_name(self.kpi)

    @property
    def direction(self) -> Literal["at_least", "at_most"]:
        """``at_least`` for KPIs where higher is better, else ``at_most``."""
        return "at_least" if self.catalogue_kpi.higher_is_better else "at_most"

    def resolved_aggregation(self) -> Aggregation:
        """``sum`` for additive KPIs, ``ratio`` for numerator/denominator KPIs, else ``mean``."""
        if self.aggregation:
            return self.aggregation
        kpi = self.catalogue_kpi
        if kpi.additive:
            return "sum"
        if isinstance(kpi.numerator, Measure) and isinstance(kpi.denominator, Measure) and all(
            m.quantile is None for m in kpi.measures
        ):
            return "ratio"
        return "mean"

    def days(self) -> int:
        """Days in the goal period (start and deadline included)."""
        assert self.deadline is not None
        return (self.deadline - self.start).days + 1

    def baseline_period(self) -> tuple[date, date]:
        """The baseline (inclusive days); by default the same length just before ``start``."""
        if self.baseline_start and self.baseline_end:
            return self.baseline_start, self.baseline_end
        end = self.start - timedelta(days=1)
        return end - timedelta(days=self.days() - 1), end

    def absolute_target(self, baseline: float | None) -> float | None:
        """The target in the KPI's unit (None for a change target without a baseline)."""
        if self.target_kind == "change":
            return None if baseline is None else baseline * (1 + self.target / 100)
        if self.target_unit == "%" and self.catalogue_kpi.unit == "ratio":
            return self.target / 100
        return self.target

    # -- validation ----------------------------------------------------------------------------
    def problems(self, *, store_currency: str = "USD") -> list[Problem]:
        """Every problem with the definition itself (no data needed)."""
        out: list[Problem] = []
        if not self.name.strip() or len(self.name) > 100:
            out.append(Problem("goal.bad_name", "name", "a goal needs a name of 1-100 characters"))
        known = [k.name for k in CATALOGUE]
        if self.kpi not in known:
            close = difflib.get_close_matches(self.kpi, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            out.append(Problem("goal.unknown_kpi", "kpi", f"unknown KPI {self.kpi!r}{hint} "
                               "(funnelscope kpi --list shows the catalogue)"))
        if self.deadline is None:
            out.append(Problem("goal.not_time_bound", "deadline",
                               "the goal has no deadline, so it is not time-bound: give one"))
        elif self.deadline < self.start:
            out.append(Problem("goal.deadline_before_start", "deadline",
                               f"the deadline {self.deadline} is before the start {self.start}"))
        elif self.days() > MAX_GOAL_DAYS:
            out.append(Problem("goal.too_long", "deadline",
                               f"a goal lasts at most {MAX_GOAL_DAYS} days; this one "
                               f"{self.days()}"))
        if not 1971 <= self.start.year <= 9000:
            out.append(Problem("goal.bad_date", "start", "the start must be in 1971..9000"))
        if self.baseline_start or self.baseline_end:
            if not (self.baseline_start and self.baseline_end):
                out.append(Problem("goal.bad_baseline", "baseline_end",
                                   "give both baseline_start and baseline_end, or neither"))
            elif self.baseline_end < self.baseline_start:
                out.append(Problem("goal.bad_baseline", "baseline_end",
                                   "the baseline ends before it starts"))
            elif self.baseline_end >= self.start:
                out.append(Problem("goal.bad_baseline", "baseline_end",
                                   "the baseline must end before the goal starts"))
            elif (self.baseline_end - self.baseline_start).days >= MAX_GOAL_DAYS:
                out.append(Problem("goal.bad_baseline", "baseline_start",
                                   f"a baseline lasts at most {MAX_GOAL_DAYS} days"))
        for prop, value in self.scope:
            if prop not in SCOPES:
                out.append(Problem("goal.unknown_scope", f"scope.{prop}",
                                   f"unknown scope property {prop!r}; allowed: "
                                   f"{', '.join(SCOPES)}"))
            elif not value.strip():
                out.append(Problem("goal.bad_scope", f"scope.{prop}", "a scope needs a value"))
        if self.kpi in known:
            out += self._kpi_problems(store_currency)
        return out

    def _kpi_problems(self, store_currency: str) -> list[Problem]:
        out: list[Problem] = []
        kpi = self.catalogue_kpi
        for prop, _ in self.scope:
            dim = "product" if prop == "category" else prop
            if prop == "segment":
                out.append(Problem("goal.unmeasurable", "scope.segment",
                                   f"{kpi.name} cannot be measured for a segment yet: KPIs are "
                                   "filtered by breakdown dimensions only"))
            elif prop in SCOPES and dim not in kpi.breakdowns:
                alternatives = [k.name for k in CATALOGUE if dim in k.breakdowns
                                and k.unit == kpi.unit and k.additive == kpi.additive]
                hint = f"; KPIs of the same unit that can: {', '.join(alternatives)}" \
                    if alternatives else ""
                out.append(Problem("goal.unmeasurable", f"scope.{prop}",
                                   f"{kpi.name} cannot be scoped by {prop} (allowed: "
                                   f"{', '.join(kpi.breakdowns) or 'none'}){hint}"))
        if self.aggregation == "sum" and not kpi.additive:
            out.append(Problem("goal.bad_aggregation", "aggregation",
                               f"{kpi.name} is not additive, so its days cannot be summed; "
                               "use ratio or mean"))
        if self.target_kind == "change":
            if self.target_unit not in (None, "%"):
                out.append(Problem("goal.target_unit", "target", "a change target is a "
                                   f"percentage (+15%), not {self.target_unit}"))
            if self.target <= -100:
                out.append(Problem("goal.target_unit", "target",
                                   "a change target must be above -100%"))
            better = self.target > 0 if kpi.higher_is_better else self.target < 0
            if not better:
                way = "higher" if kpi.higher_is_better else "lower"
                out.append(Problem("goal.target_direction", "target",
                                   f"{kpi.name} is better {way}; a {self.target:+g}% target "
                                   "does not improve it"))
            return out
        unit = self.target_unit
        if unit == "%" and kpi.unit not in ("ratio", "percent"):
            out.append(Problem("goal.target_unit", "target",
                               f"{kpi.name} is in {kpi.unit}, not a percentage; for a change "
                               f"against the baseline write +{self.target:g}%"))
        elif unit not in (None, "%"):
            if kpi.unit != "currency":
                out.append(Problem("goal.target_unit", "target",
                                   f"{kpi.name} is in {kpi.unit}, not a currency: drop "
                                   f"{unit}"))
            elif unit != store_currency:
                out.append(Problem("goal.target_unit", "target",
                                   f"amounts are in the store currency {store_currency}, "
                                   f"not {unit}"))
        value = self.absolute_target(None)
        low, high = UNIT_BOUNDS[kpi.unit]
        if value is not None and (
            (low is not None and value < low) or (high is not None and value > high)
        ):
            shown = f"{self.target:g}{'%' if unit == '%' else ''}"
            allowed = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
            hint = ""
            if kpi.unit == "ratio" and unit is None and value > 1:
                hint = f" (write {value:g}% or {value / 100:g} for {value:g}%)"
            out.append(Problem("goal.target_unit", "target",
                               f"{kpi.name} is a {kpi.unit} in {allowed}; {shown} is outside"
                               f"{hint}"))
        return out

    def validate(self, *, store_currency: str = "USD") -> None:
        """Raise :class:`InvalidSpecError` with every problem of the definition."""
        problems = self.problems(store_currency=store_currency)
        if problems:
            raise InvalidSpecError(problems)


# -- the KPI's daily values -------------------------------------------------------------------


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def kpi_daily_frame(
    workspace: Workspace, kpi: str, start: date, end: date,
    filters: Mapping[str, tuple[str, ...]] | None = None,
) -> pd.DataFrame:
    """Daily ``value``, ``numerator``, ``denominator`` of ``kpi`` on ``[start, end]`` (inclusive
    UTC days), one row per day, indexed by day (tz-naive midnight)."""
    import pandas as pd

    frame: pd.DataFrame = workspace.kpis(
        [kpi], _day_start(start), _day_start(end + timedelta(days=1)), granularity="day",
        filters=dict(filters or {}))
    frame.index = pd.DatetimeIndex(frame["period"].dt.tz_convert(None)).normalize()
    days = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="D")
    out: pd.DataFrame = (frame[["value", "numerator", "denominator"]].groupby(level=0).first()
                         .reindex(days))
    out.index.name = "date"
    return out


def kpi_daily_series(
    workspace: Workspace, kpi: str, start: date, end: date,
    filters: Mapping[str, tuple[str, ...]] | None = None,
) -> pd.Series:
    """The KPI's daily values on ``[start, end]`` (see :func:`kpi_daily_frame`)."""
    series: pd.Series = kpi_daily_frame(workspace, kpi, start, end, filters)["value"]
    return series


def _filters(workspace: Workspace, spec: GoalSpec) -> dict[str, tuple[str, ...]]:
    """Scope -> KPI filters; a category becomes the product ids listed under it."""
    filters: dict[str, tuple[str, ...]] = {}
    for prop, value in spec.scope:
        if prop != "category":
            filters[prop] = (value,)
            continue
        rows = workspace.store.query(
            "SELECT DISTINCT product_id FROM products WHERE category = ? AND product_id IS NOT "
            "NULL UNION SELECT DISTINCT i.product_id FROM (SELECT unnest(items) AS i FROM events "
            "WHERE items IS NOT NULL) WHERE i.category = ? AND i.product_id IS NOT NULL",
            [value, value])
        products = tuple(sorted(str(r[0]) for r in rows))
        # A category nobody has bought from yet still narrows to nothing, not to everything.
        filters["product"] = tuple(sorted(set(filters.get("product", ())) | set(products))) \
            or ("\x00no product in category",)
    return filters


def _aggregate(frame: pd.DataFrame, aggregation: Aggregation, scale: float) -> float | None:
    rows = frame.dropna(subset=["value"]) if aggregation != "sum" else frame
    if aggregation == "sum":
        total = float(frame["value"].fillna(0.0).sum())
        return total
    if rows.empty:
        return None
    if aggregation == "ratio":
        den = float(rows["denominator"].sum())
        return None if den == 0 else scale * float(rows["numerator"].sum()) / den
    return float(rows["value"].mean())


# -- progress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmartCheck:
    """One SMART property of a goal: passed (True/False, None = cannot tell) and why."""

    property: Literal["specific", "measurable", "achievable", "relevant", "time_bound"]
    passed: bool | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"property": self.property, "passed": self.passed, "message": self.message}


def status_for(probability: float | None, *, is_complete: bool = False,
               is_met: bool = False) -> Status:
    """The status rule (docs/goals.md): after the deadline ``achieved``/``missed``; before it
    ``on_track`` when P >= 0.7, ``at_risk`` when 0.3 <= P < 0.7, else ``off_track``.

    Examples
    --------
    >>> status_for(0.72), status_for(0.5), status_for(0.1), status_for(None, is_complete=True)
    ('on_track', 'at_risk', 'off_track', 'missed')
    """
    if is_complete:
        return "achieved" if is_met else "missed"
    if probability is None:
        return "insufficient_data"
    if probability >= ON_TRACK_PROBABILITY:
        return "on_track"
    if probability >= AT_RISK_PROBABILITY:
        return "at_risk"
    return "off_track"


@dataclass(frozen=True)
class GoalProgress:
    """Where a goal stands as of ``evaluated_at`` (see docs/goals.md for every number).

    ``daily`` has one row per day of the goal period: ``actual`` (the day's value),
    ``actual_to_date`` (the period's value so far: a running sum, or running ratio),
    ``pacing`` (the required trajectory), ``forecast_mean`` and ``lower80``/``upper80``/
    ``lower95``/``upper95`` (of the period's value, on future days) and ``target``.
    """

    goal: GoalSpec
    evaluated_at: datetime
    status: Status
    probability: float | None
    unit: str
    currency: str | None
    aggregation: Aggregation
    direction: Literal["at_least", "at_most"]
    target_value: float | None
    baseline_value: float | None
    baseline_period: tuple[date, date]
    current_value: float | None
    percent_of_target: float | None
    expected_to_date: float | None
    days_elapsed: int
    days_total: int
    data_through: date | None
    forecast: PeriodForecast | None
    checks: tuple[SmartCheck, ...]
    daily: pd.DataFrame = field(repr=False, compare=False)

    @property
    def days_left(self) -> int:
        return self.days_total - self.days_elapsed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the goal, the numbers, the checks, and the daily chart series."""
        import pandas as pd

        def num(x: Any) -> float | None:
            return None if x is None or pd.isna(x) else float(x)

        records = self.daily.to_dict("records")
        daily = [{"date": day.date().isoformat(), **{str(c): num(v) for c, v in row.items()}}
                 for day, row in zip(pd.DatetimeIndex(self.daily.index), records, strict=True)]
        return {
            "goal": self.goal.to_dict(),
            "evaluated_at": self.evaluated_at.isoformat(),
            "status": self.status,
            "probability": self.probability,
            "unit": self.unit,
            "currency": self.currency,
            "aggregation": self.aggregation,
            "direction": self.direction,
            "target_value": self.target_value,
            "baseline_value": self.baseline_value,
            "baseline_period": [d.isoformat() for d in self.baseline_period],
            "current_value": self.current_value,
            "percent_of_target": self.percent_of_target,
            "expected_to_date": self.expected_to_date,
            "days_elapsed": self.days_elapsed,
            "days_total": self.days_total,
            "days_left": self.days_left,
            "data_through": self.data_through.isoformat() if self.data_through else None,
            "forecast": self.forecast.to_dict() if self.forecast else None,
            "checks": [c.to_dict() for c in self.checks],
            "daily": daily,
        }

    def to_pandas(self) -> pd.DataFrame:
        """The daily chart series (a copy)."""
        return self.daily.copy()


def format_value(value: float | None, unit: str, currency: str | None) -> str:
    """A KPI value for people: ratios as percentages, amounts with their currency."""
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value:.2%}"
    if unit == "currency":
        return f"{value:,.2f} {currency}"
    if unit == "percent":
        return f"{value:.1f}%"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise InvalidSpecError([Problem("goal.naive_time", "now", "now must be timezone-aware")])
    if not 1971 <= now.year <= 9000:
        raise InvalidSpecError([Problem("goal.bad_now", "now", "now must be in 1971..9000")])


def _history_start(spec: GoalSpec, observed_end: date) -> date:
    first = min(spec.baseline_period()[0], spec.start)
    return min(first, observed_end - timedelta(days=HISTORY_DAYS - 1))


def _data_days(frame: pd.DataFrame, aggregation: Aggregation) -> pd.DataFrame:
    """The frame from its first day with data (leading days before the data began are not 0)."""
    has = frame["value"].notna() & ((frame["value"] != 0) | (aggregation != "sum"))
    if not has.any():
        return frame.iloc[0:0]
    return frame.loc[has.idxmax():]


def goal_progress(
    workspace: Workspace, spec: GoalSpec, *, now: datetime, repetitions: int = 2000
) -> GoalProgress:
    """Measure ``spec`` on ``workspace`` as of ``now`` (only whole days before ``now`` count).

    Examples
    --------
    >>> import funnelscope
    >>> from datetime import UTC, datetime
    >>> ws = funnelscope.open(":memory:")
    >>> goal = GoalSpec.create("orders-may", kpi="orders", target=100, start="2024-05-01",
    ...                        deadline="2024-05-31")
    >>> goal_progress(ws, goal, now=datetime(2024, 5, 10, tzinfo=UTC)).status
    'insufficient_data'
    """
    _require_aware(now)
    spec.validate(store_currency=workspace.store.currency)
    assert spec.deadline is not None
    kpi = spec.catalogue_kpi
    aggregation = spec.resolved_aggregation()
    currency = workspace.store.currency if kpi.unit == "currency" else None
    last_complete = now.astimezone(UTC).date() - timedelta(days=1)
    observed_end = min(last_complete, spec.deadline)
    fetch_end = max(observed_end, spec.baseline_period()[1])
    frame = kpi_daily_frame(workspace, spec.kpi, _history_start(spec, observed_end), fetch_end,
                            _filters(workspace, spec))
    import pandas as pd

    def period(a: date, b: date) -> pd.DataFrame:
        return frame.loc[pd.Timestamp(a):pd.Timestamp(b)]

    base_from, base_to = spec.baseline_period()
    baseline = _aggregate(period(base_from, min(base_to, observed_end)), aggregation, kpi.scale) \
        if base_from <= observed_end else None
    if baseline is not None and aggregation == "sum" and observed_end < base_to:
        # A baseline still in progress: its total so far, pro rata to its full length.
        baseline *= ((base_to - base_from).days + 1) / ((observed_end - base_from).days + 1)
    target = spec.absolute_target(baseline)
    history = _data_days(frame.loc[:pd.Timestamp(observed_end)], aggregation)
    data_through = history.index[-1].date() if len(history) else None
    elapsed = max(0, min(spec.days(), (observed_end - spec.start).days + 1))
    current = _aggregate(period(spec.start, observed_end), aggregation, kpi.scale) \
        if elapsed else None

    forecast: PeriodForecast | None = None
    probability: float | None = None
    low, high = UNIT_BOUNDS[kpi.unit]
    if len(history) and target is not None:
        try:
            forecast = period_forecast(
                history["value"], period_start=spec.start, period_end=spec.deadline,
                aggregation=aggregation,
                denominator=history["denominator"] if aggregation == "ratio" else None,
                lower=low, upper=high, repetitions=repetitions,
                seed=zlib.crc32(spec.name.encode("utf-8")),
            )
        except InsufficientHistoryError:
            forecast = None
    if forecast is not None and target is not None:
        probability = forecast.probability(target, spec.direction)
    complete = elapsed == spec.days()
    met = current is not None and target is not None and (
        current >= target if spec.direction == "at_least" else current <= target)
    status = status_for(probability, is_complete=complete, is_met=met)

    # The pacing line: cumulative 0 -> target for sums; baseline -> target for rates and means.
    days = pd.date_range(pd.Timestamp(spec.start), pd.Timestamp(spec.deadline), freq="D")
    share = (pd.Series(range(1, len(days) + 1), index=days, dtype="float64") / len(days))
    if target is None:
        pacing = pd.Series(float("nan"), index=days)
    elif aggregation == "sum":
        pacing = share * target
    else:
        origin = baseline if baseline is not None else target
        pacing = origin + share * (target - origin)
    expected = float(pacing.iloc[elapsed - 1]) if elapsed else None
    daily = pd.DataFrame(index=pd.DatetimeIndex(days, name="date"))
    if forecast is not None:
        fc = forecast.daily
        daily["actual"] = fc["actual"]
        daily["actual_to_date"] = fc["actual_to_date"]
    else:
        observed = period(spec.start, observed_end)
        daily["actual"] = observed["value"].reindex(days)
        daily["actual_to_date"] = float("nan")
    daily["pacing"] = pacing
    for src, dst in (("mean", "forecast_mean"), ("lower80", "lower80"), ("upper80", "upper80"),
                     ("lower95", "lower95"), ("upper95", "upper95")):
        daily[dst] = forecast.daily[src] if forecast is not None else float("nan")
    daily["target"] = float("nan") if target is None else target
    if forecast is None and elapsed:
        running = _running_frame(period(spec.start, observed_end), aggregation, kpi.scale)
        daily["actual_to_date"] = running.reindex(days)

    percent = None if current is None or not target else 100 * current / target
    progress = GoalProgress(
        goal=spec, evaluated_at=now, status=status, probability=probability, unit=kpi.unit,
        currency=currency, aggregation=aggregation, direction=spec.direction,
        target_value=target, baseline_value=baseline, baseline_period=(base_from, base_to),
        current_value=current, percent_of_target=percent, expected_to_date=expected,
        days_elapsed=elapsed, days_total=spec.days(), data_through=data_through,
        forecast=forecast, checks=(), daily=daily,
    )
    return replace(progress, checks=_smart_checks(workspace, progress, history))


def _running_frame(frame: pd.DataFrame, aggregation: Aggregation, scale: float) -> pd.Series:
    if aggregation == "sum":
        running: pd.Series = frame["value"].fillna(0.0).cumsum()
        return running
    if aggregation == "ratio":
        num = frame["numerator"].fillna(0.0).cumsum()
        den = frame["denominator"].fillna(0.0).cumsum()
        ratio: pd.Series = (scale * num / den).where(den > 0)
        return ratio
    mean: pd.Series = frame["value"].expanding().mean()
    return mean


def _initiative_found(workspace: Workspace, initiative: str) -> list[str]:
    """Where the initiative shows up: UTM campaigns, channels, ad spend, email campaigns."""
    q = workspace.store.query
    where = []
    if q("SELECT 1 FROM events WHERE utm_campaign = ? LIMIT 1", [initiative]):
        where.append("events")
    if q("SELECT 1 FROM events WHERE channel = ? LIMIT 1", [initiative]):
        where.append("events (as a channel)")
    if q("SELECT 1 FROM ad_spend WHERE campaign = ? LIMIT 1", [initiative]):
        where.append("ad spend")
    if q("SELECT 1 FROM email_campaigns WHERE campaign_id = ? OR name = ? LIMIT 1",
         [initiative, initiative]):
        where.append("email campaigns")
    return where


def _smart_checks(
    workspace: Workspace, p: GoalProgress, history: pd.DataFrame
) -> tuple[SmartCheck, ...]:
    g, unit, cur = p.goal, p.unit, p.currency
    scope = ", ".join(f"{k}={v}" for k, v in g.scope) or "the whole store"
    word = "at least" if p.direction == "at_least" else "at most"
    what = f"{g.kpi} ({p.aggregation} over {g.start}..{g.deadline}) for {scope}: {word} " \
        f"{format_value(p.target_value, unit, cur)}"
    if g.target_kind == "change":
        what += f" ({g.target:+g}% vs {format_value(p.baseline_value, unit, cur)} in " \
            f"{p.baseline_period[0]}..{p.baseline_period[1]})"
    improves = None
    if p.target_value is not None and p.baseline_value is not None:
        improves = (p.target_value > p.baseline_value if p.direction == "at_least"
                    else p.target_value < p.baseline_value)
    if p.target_value is None:
        specific = SmartCheck("specific", False, what + "; the baseline period has no data, "
                              "so the target cannot be computed")
    elif improves is False:
        specific = SmartCheck("specific", False, what + "; the target is no better than the "
                              f"baseline ({format_value(p.baseline_value, unit, cur)})")
    else:
        specific = SmartCheck("specific", True, what)
    if len(history):
        measurable = SmartCheck("measurable", True,
                                f"measured daily; {len(history)} day(s) of data up to "
                                f"{p.data_through}")
    else:
        measurable = SmartCheck("measurable", False,
                                f"no {g.kpi} data for {scope} up to the evaluation day")
    if p.forecast is None or p.probability is None:
        achievable = SmartCheck("achievable", None,
                                "not enough history to forecast the value at the deadline")
    else:
        f = p.forecast
        values = history["value"].dropna()
        span = "daily values"
        if p.aggregation == "sum" and len(values) >= 14:
            # Daily sales of one product are mostly zeros; whole weeks say more.
            whole = values.iloc[len(values) % 7:]
            values = whole.groupby(np.arange(len(whole)) // 7).sum()
            span = "weekly totals"
        cv = float(values.std() / values.mean()) if len(values) > 1 and values.mean() else None
        spread = f"; {span} vary by ±{cv:.0%} (coefficient of variation)" if cv else ""
        low, high = (format_value(x, unit, cur) for x in f.interval80)
        achievable = SmartCheck(
            "achievable", p.probability >= AT_RISK_PROBABILITY,
            f"probability of reaching the target: {p.probability:.0%} (forecast at the deadline "
            f"{format_value(f.mean, unit, cur)}, 80% interval {low} to {high}; model "
            f"{f.method}){spread}")
    if g.initiative is None:
        relevant = SmartCheck("relevant", None, "no linked initiative: link the campaign or "
                              "project meant to move this KPI")
    else:
        found = _initiative_found(workspace, g.initiative)
        relevant = SmartCheck(
            "relevant", bool(found),
            f"initiative {g.initiative!r} found in {', '.join(found)}" if found else
            f"initiative {g.initiative!r} not found in events (utm_campaign or channel), ad spend "
            "or email campaigns yet")
    if p.days_left > 0:
        timing = f"deadline {g.deadline}: {p.days_total} days, {p.days_left} left"
    else:
        timing = f"ended on {g.deadline} after {p.days_total} days"
    return (specific, measurable, achievable, relevant,
            SmartCheck("time_bound", True, timing))


# -- validation against the store --------------------------------------------------------------


def validate_goal(workspace: Workspace, spec: GoalSpec, *, now: datetime) -> None:
    """Every definition problem plus ``goal.unmeasurable`` when the store has no data for the
    KPI in its scope over the year before ``now`` (or the goal's period); raises once."""
    _require_aware(now)
    problems = spec.problems(store_currency=workspace.store.currency)
    if not problems:
        assert spec.deadline is not None
        end = min(max(now.astimezone(UTC).date() - timedelta(days=1), spec.start), spec.deadline)
        frame = kpi_daily_frame(workspace, spec.kpi, _history_start(spec, end), end,
                                _filters(workspace, spec))
        if _data_days(frame, spec.resolved_aggregation()).empty:
            scope = ", ".join(f"{k}={v}" for k, v in spec.scope) or "the whole store"
            problems.append(Problem(
                "goal.unmeasurable", "kpi",
                f"the store has no {spec.kpi} data for {scope} between "
                f"{_history_start(spec, end)} and {end}: the goal cannot be measured"))
    if problems:
        raise InvalidSpecError(problems)


# -- storage -------------------------------------------------------------------------------------


def save_goal(store: Store, spec: GoalSpec, *, now: datetime, replace: bool = False) -> None:
    """Store a goal (validate it first: :func:`validate_goal`). An existing name is an error
    unless ``replace``; replacing keeps the status history."""
    _require_aware(now)
    with store.write() as cur:
        found = cur.execute("SELECT created_at FROM goals WHERE name = ?", [spec.name]).fetchone()
        if found and not replace:
            raise InvalidSpecError([Problem("goal.exists", "name",
                                            f"a goal named {spec.name!r} exists; replace it "
                                            "explicitly")])
        cur.execute("DELETE FROM goals WHERE name = ?", [spec.name])
        cur.execute(
            "INSERT INTO goals (name, spec, owner, kpi, start_date, deadline, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [spec.name, json.dumps(spec.to_dict()), spec.owner, spec.kpi, spec.start,
             spec.deadline, found[0] if found else now, now])


def _spec_of(text: str) -> GoalSpec:
    return GoalSpec.from_dict(json.loads(text))


def list_goals(store: Store) -> list[dict[str, Any]]:
    """Stored goals, by name, with their last evaluated status."""
    rows = store.query(
        "SELECT name, spec, created_at, updated_at, status, probability, checked_at "
        "FROM goals ORDER BY name")
    return [{"goal": _spec_of(r[1]), "created_at": r[2], "updated_at": r[3], "status": r[4],
             "probability": r[5], "checked_at": r[6]} for r in rows]


def get_goal(store: Store, name: str) -> GoalSpec:
    """The stored goal ``name`` (``goal.not_found`` when there is none)."""
    rows = store.query("SELECT spec FROM goals WHERE name = ?", [name])
    if not rows:
        known = [r[0] for r in store.query("SELECT name FROM goals ORDER BY name")]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidSpecError([Problem("goal.not_found", "name",
                                        f"no goal named {name!r}{hint}")])
    return _spec_of(rows[0][0])


def delete_goal(store: Store, name: str) -> None:
    """Forget a goal, its status history and its webhook subscriptions."""
    get_goal(store, name)
    with store.write() as cur:
        for table, column in (("goals", "name"), ("goal_status_history", "goal"),
                              ("goal_webhooks", "goal")):
            cur.execute(f'DELETE FROM {table} WHERE "{column}" = ?', [name])


def subscribe_goal_webhook(
    store: Store, url: str, secret: str, *, now: datetime, goal: str | None = None
) -> None:
    """POST ``goal.status_changed`` to ``url`` when ``goal`` (None: any goal) changes status."""
    problems = []
    if not re.match(r"^https?://", url):
        problems.append(Problem("webhook.bad_url", "url", "url must start with http:// or "
                                "https://"))
    if not secret:
        problems.append(Problem("webhook.missing_secret", "secret",
                                "a signing secret is required"))
    if problems:
        raise InvalidSpecError(problems)
    if goal is not None:
        get_goal(store, goal)
    with store.write() as cur:
        cur.execute("DELETE FROM goal_webhooks WHERE goal IS NOT DISTINCT FROM ? AND url = ?",
                    [goal, url])
        cur.execute("INSERT INTO goal_webhooks VALUES (?, ?, ?, ?)", [goal, url, secret, now])


@dataclass(frozen=True)
class GoalCheck:
    """One goal's re-evaluation: its status before and now, and the webhooks queued."""

    goal: str
    previous_status: str | None
    status: str
    probability: float | None
    changed: bool
    webhooks: int
    progress: GoalProgress | None = field(default=None, repr=False, compare=False)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"goal": self.goal, "previous_status": self.previous_status,
                "status": self.status, "probability": self.probability,
                "changed": self.changed, "webhooks": self.webhooks, "error": self.error}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def check_goals(workspace: Workspace, *, now: datetime,
                names: list[str] | None = None) -> list[GoalCheck]:
    """Re-evaluate stored goals as of ``now``; record each status (a history row when it
    changed) and queue a ``goal.status_changed`` webhook to every subscriber, in the same
    transaction. A goal that cannot be evaluated is reported with ``error`` and skipped."""
    from funnelscope.webhooks import enqueue

    _require_aware(now)
    store = workspace.store
    out: list[GoalCheck] = []
    for name in names or [r[0] for r in store.query("SELECT name FROM goals ORDER BY name")]:
        spec = get_goal(store, name)
        try:
            progress = goal_progress(workspace, spec, now=now)
        except InvalidSpecError as exc:
            out.append(GoalCheck(name, None, "invalid", None, False, 0, error=str(exc)))
            continue
        last = store.query("SELECT status FROM goals WHERE name = ?", [name])
        previous = last[0][0] if last else None
        changed = previous != progress.status
        f = progress.forecast
        sent = 0
        with store.write() as cur:
            cur.execute("UPDATE goals SET status = ?, probability = ?, checked_at = ? "
                        "WHERE name = ?", [progress.status, progress.probability, now, name])
            if changed:
                cur.execute(
                    "INSERT INTO goal_status_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [name, now, progress.status, previous, progress.probability,
                     _finite(progress.current_value), _finite(progress.target_value),
                     _finite(f.mean) if f else None, _finite(f.interval80[0]) if f else None,
                     _finite(f.interval80[1]) if f else None])
                hooks = cur.execute(
                    "SELECT url, secret FROM goal_webhooks WHERE goal = ? OR goal IS NULL "
                    "ORDER BY url", [name]).fetchall()
                payload = {
                    "goal": name, "previous_status": previous, "status": progress.status,
                    "probability": progress.probability, "evaluated_at": now.isoformat(),
                    "current_value": _finite(progress.current_value),
                    "target_value": _finite(progress.target_value),
                    "forecast_mean": _finite(f.mean) if f else None,
                    "deadline": spec.deadline.isoformat() if spec.deadline else None,
                }
                for url, secret in hooks:
                    enqueue(store, url, secret, GOAL_EVENT_TYPE, payload,
                            f"goal:{name}:{now.isoformat()}:{progress.status}:{url}",
                            now=now, con=cur)
                    sent += 1
        out.append(GoalCheck(name, previous, progress.status, progress.probability, changed,
                             sent, progress))
    return out


def evaluate_goals(workspace: Workspace, now: datetime) -> list[GoalCheck]:
    """What ``serve`` runs on a schedule: :func:`check_goals` on every goal (then
    :func:`funnelscope.webhooks.deliver_pending` sends what was queued)."""
    return check_goals(workspace, now=now)
