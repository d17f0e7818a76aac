"""A SMART goal's definition: what, how much, by when, who, through what (docs/goals.md)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from funnelscope.analysis.kpi_catalogue import CATALOGUE, DIMENSIONS, Kpi, Measure, kpi_by_name
from funnelscope.errors import InvalidSpecError, Problem
from funnelscope.models.forecast import (
    Aggregation,
)

if TYPE_CHECKING:
    pass


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
        raise InvalidSpecError(
            [
                Problem(
                    "goal.bad_target",
                    "target",
                    f"cannot read target {text!r}: write a number "
                    "(1200, 0.03), an amount with its currency (50000 USD), a percentage (2.5%) "
                    "or a change against the baseline (+15%, -10%)",
                )
            ]
        )
    number = match.group("num").replace(",", ".")
    unit = match.group("pre") or match.group("post") or None
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
        dates = {
            k: _as_date(v, k, problems)
            for k, v in (
                ("start", start),
                ("deadline", deadline),
                ("baseline_start", baseline_start),
                ("baseline_end", baseline_end),
            )
        }
        if dates["start"] is None and not any(p.location == "start" for p in problems):
            problems.append(Problem("goal.no_start", "start", "a goal needs a start date"))
        if aggregation not in (None, "sum", "ratio", "mean"):
            problems.append(
                Problem(
                    "goal.bad_aggregation",
                    "aggregation",
                    f"unknown aggregation {aggregation!r}; allowed: sum, ratio, mean",
                )
            )
        if problems:
            raise InvalidSpecError(problems)
        return cls(
            name=name,
            kpi=kpi,
            target=value,
            target_kind=kind,
            target_unit=target_unit if target_unit is not None else unit,
            start=dates["start"] or date.min,
            deadline=dates["deadline"],
            baseline_start=dates["baseline_start"],
            baseline_end=dates["baseline_end"],
            scope=tuple(sorted((str(k), str(v)) for k, v in (scope or {}).items())),
            owner=owner,
            initiative=initiative,
            aggregation=aggregation,  # type: ignore[arg-type]
            description=description,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GoalSpec:
        """From the JSON/YAML form (:meth:`to_dict`; ``target`` may be text like ``+15%``)."""
        known = {
            "name",
            "kpi",
            "target",
            "start",
            "deadline",
            "baseline_start",
            "baseline_end",
            "scope",
            "owner",
            "initiative",
            "aggregation",
            "description",
            "target_kind",
            "target_unit",
        }
        extra = sorted(set(data) - known)
        if extra:
            raise InvalidSpecError(
                [
                    Problem(
                        "goal.unknown_field",
                        k,
                        f"unknown field {k!r}; allowed: {', '.join(sorted(known))}",
                    )
                    for k in extra
                ]
            )
        missing = [k for k in ("name", "kpi", "target", "start") if data.get(k) in (None, "")]
        if missing:
            raise InvalidSpecError(
                [Problem("goal.missing_field", k, f"{k} is required") for k in missing]
            )
        wrong = [
            k
            for k, types in (
                ("target", (str, int, float)),
                ("owner", (str,)),
                ("initiative", (str,)),
                ("description", (str,)),
                ("target_unit", (str,)),
                ("aggregation", (str,)),
            )
            if data.get(k) is not None and not isinstance(data[k], types)
        ]
        if wrong:
            raise InvalidSpecError(
                [
                    Problem(
                        "goal.bad_field",
                        k,
                        f"{k} must be {'a number or text' if k == 'target' else 'text'}",
                    )
                    for k in wrong
                ]
            )
        target = data["target"]
        if data.get("target_kind") == "change" and isinstance(target, int | float):
            target = f"{float(target):+}%"
        scope = data.get("scope") or {}
        if not isinstance(scope, Mapping):
            raise InvalidSpecError(
                [Problem("goal.bad_scope", "scope", "scope is a mapping of property to value")]
            )
        return cls.create(
            str(data["name"]),
            kpi=str(data["kpi"]),
            target=target,
            start=data["start"],
            deadline=data.get("deadline"),
            baseline_start=data.get("baseline_start"),
            baseline_end=data.get("baseline_end"),
            scope=scope,
            owner=data.get("owner"),
            initiative=data.get("initiative"),
            aggregation=data.get("aggregation"),
            description=str(data.get("description") or ""),
            target_unit=data.get("target_unit"),
        )

    def to_dict(self) -> dict[str, Any]:
        def iso(d: date | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "name": self.name,
            "owner": self.owner,
            "kpi": self.kpi,
            "target": self.target,
            "target_kind": self.target_kind,
            "target_unit": self.target_unit,
            "start": iso(self.start),
            "deadline": iso(self.deadline),
            "baseline_start": iso(self.baseline_start),
            "baseline_end": iso(self.baseline_end),
            "scope": dict(self.scope),
            "initiative": self.initiative,
            "aggregation": self.aggregation,
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
        if (
            isinstance(kpi.numerator, Measure)
            and isinstance(kpi.denominator, Measure)
            and all(m.quantile is None for m in kpi.measures)
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
            out.append(
                Problem(
                    "goal.unknown_kpi",
                    "kpi",
                    f"unknown KPI {self.kpi!r}{hint} (funnelscope kpi --list shows the catalogue)",
                )
            )
        if self.deadline is None:
            out.append(
                Problem(
                    "goal.not_time_bound",
                    "deadline",
                    "the goal has no deadline, so it is not time-bound: give one",
                )
            )
        elif self.deadline < self.start:
            out.append(
                Problem(
                    "goal.deadline_before_start",
                    "deadline",
                    f"the deadline {self.deadline} is before the start {self.start}",
                )
            )
        elif self.days() > MAX_GOAL_DAYS:
            out.append(
                Problem(
                    "goal.too_long",
                    "deadline",
                    f"a goal lasts at most {MAX_GOAL_DAYS} days; this one {self.days()}",
                )
            )
        if not 1971 <= self.start.year <= 9000:
            out.append(Problem("goal.bad_date", "start", "the start must be in 1971..9000"))
        if self.baseline_start or self.baseline_end:
            if not (self.baseline_start and self.baseline_end):
                out.append(
                    Problem(
                        "goal.bad_baseline",
                        "baseline_end",
                        "give both baseline_start and baseline_end, or neither",
                    )
                )
            elif self.baseline_end < self.baseline_start:
                out.append(
                    Problem(
                        "goal.bad_baseline", "baseline_end", "the baseline ends before it starts"
                    )
                )
            elif self.baseline_end >= self.start:
                out.append(
                    Problem(
                        "goal.bad_baseline",
                        "baseline_end",
                        "the baseline must end before the goal starts",
                    )
                )
            elif (self.baseline_end - self.baseline_start).days >= MAX_GOAL_DAYS:
                out.append(
                    Problem(
                        "goal.bad_baseline",
                        "baseline_start",
                        f"a baseline lasts at most {MAX_GOAL_DAYS} days",
                    )
                )
        for prop, value in self.scope:
            if prop not in SCOPES:
                out.append(
                    Problem(
                        "goal.unknown_scope",
                        f"scope.{prop}",
                        f"unknown scope property {prop!r}; allowed: {', '.join(SCOPES)}",
                    )
                )
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
                out.append(
                    Problem(
                        "goal.unmeasurable",
                        "scope.segment",
                        f"{kpi.name} cannot be measured for a segment yet: KPIs are "
                        "filtered by breakdown dimensions only",
                    )
                )
            elif prop in SCOPES and dim not in kpi.breakdowns:
                alternatives = [
                    k.name
                    for k in CATALOGUE
                    if dim in k.breakdowns and k.unit == kpi.unit and k.additive == kpi.additive
                ]
                hint = (
                    f"; KPIs of the same unit that can: {', '.join(alternatives)}"
                    if alternatives
                    else ""
                )
                out.append(
                    Problem(
                        "goal.unmeasurable",
                        f"scope.{prop}",
                        f"{kpi.name} cannot be scoped by {prop} (allowed: "
                        f"{', '.join(kpi.breakdowns) or 'none'}){hint}",
                    )
                )
        if self.aggregation == "sum" and not kpi.additive:
            out.append(
                Problem(
                    "goal.bad_aggregation",
                    "aggregation",
                    f"{kpi.name} is not additive, so its days cannot be summed; use ratio or mean",
                )
            )
        if self.target_kind == "change":
            if self.target_unit not in (None, "%"):
                out.append(
                    Problem(
                        "goal.target_unit",
                        "target",
                        f"a change target is a percentage (+15%), not {self.target_unit}",
                    )
                )
            if self.target <= -100:
                out.append(
                    Problem("goal.target_unit", "target", "a change target must be above -100%")
                )
            better = self.target > 0 if kpi.higher_is_better else self.target < 0
            if not better:
                way = "higher" if kpi.higher_is_better else "lower"
                out.append(
                    Problem(
                        "goal.target_direction",
                        "target",
                        f"{kpi.name} is better {way}; a {self.target:+g}% target "
                        "does not improve it",
                    )
                )
            return out
        unit = self.target_unit
        if unit == "%" and kpi.unit not in ("ratio", "percent"):
            out.append(
                Problem(
                    "goal.target_unit",
                    "target",
                    f"{kpi.name} is in {kpi.unit}, not a percentage; for a change "
                    f"against the baseline write +{self.target:g}%",
                )
            )
        elif unit not in (None, "%"):
            if kpi.unit != "currency":
                out.append(
                    Problem(
                        "goal.target_unit",
                        "target",
                        f"{kpi.name} is in {kpi.unit}, not a currency: drop {unit}",
                    )
                )
            elif unit != store_currency:
                out.append(
                    Problem(
                        "goal.target_unit",
                        "target",
                        f"amounts are in the store currency {store_currency}, not {unit}",
                    )
                )
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
            out.append(
                Problem(
                    "goal.target_unit",
                    "target",
                    f"{kpi.name} is a {kpi.unit} in {allowed}; {shown} is outside{hint}",
                )
            )
        return out

    def validate(self, *, store_currency: str = "USD") -> None:
        """Raise :class:`InvalidSpecError` with every problem of the definition."""
        problems = self.problems(store_currency=store_currency)
        if problems:
            raise InvalidSpecError(problems)
