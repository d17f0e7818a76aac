"""A goal measured on a workspace: value so far, pacing, forecast, probability, status."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from funnelscope.analysis.goals.spec import (
    AT_RISK_PROBABILITY,
    HISTORY_DAYS,
    ON_TRACK_PROBABILITY,
    UNIT_BOUNDS,
    GoalSpec,
    Status,
)
from funnelscope.errors import InvalidSpecError, Problem
from funnelscope.models.forecast import (
    Aggregation,
    InsufficientHistoryError,
    PeriodForecast,
    period_forecast,
)

if TYPE_CHECKING:
    import pandas as pd

    from funnelscope.workspace import Workspace

# -- the KPI's daily values -------------------------------------------------------------------


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def kpi_daily_frame(
    workspace: Workspace,
    kpi: str,
    start: date,
    end: date,
    filters: Mapping[str, tuple[str, ...]] | None = None,
) -> pd.DataFrame:
    """Daily ``value``, ``numerator``, ``denominator`` of ``kpi`` on ``[start, end]`` (inclusive
    UTC days), one row per day, indexed by day (tz-naive midnight)."""
    import pandas as pd

    frame: pd.DataFrame = workspace.kpis(
        [kpi],
        _day_start(start),
        _day_start(end + timedelta(days=1)),
        granularity="day",
        filters=dict(filters or {}),
    )
    frame.index = pd.DatetimeIndex(frame["period"].dt.tz_convert(None)).normalize()
    days = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="D")
    out: pd.DataFrame = (
        frame[["value", "numerator", "denominator"]].groupby(level=0).first().reindex(days)
    )
    out.index.name = "date"
    return out


def kpi_daily_series(
    workspace: Workspace,
    kpi: str,
    start: date,
    end: date,
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
            [value, value],
        )
        products = tuple(sorted(str(r[0]) for r in rows))
        # A category nobody has bought from yet still narrows to nothing, not to everything.
        filters["product"] = tuple(sorted(set(filters.get("product", ())) | set(products))) or (
            "\x00no product in category",
        )
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


def status_for(
    probability: float | None, *, is_complete: bool = False, is_met: bool = False
) -> Status:
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
        daily = [
            {"date": day.date().isoformat(), **{str(c): num(v) for c, v in row.items()}}
            for day, row in zip(pd.DatetimeIndex(self.daily.index), records, strict=True)
        ]
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
    return frame.loc[has.idxmax() :]


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
    frame = kpi_daily_frame(
        workspace,
        spec.kpi,
        _history_start(spec, observed_end),
        fetch_end,
        _filters(workspace, spec),
    )
    import pandas as pd

    def period(a: date, b: date) -> pd.DataFrame:
        return frame.loc[pd.Timestamp(a) : pd.Timestamp(b)]

    base_from, base_to = spec.baseline_period()
    baseline = (
        _aggregate(period(base_from, min(base_to, observed_end)), aggregation, kpi.scale)
        if base_from <= observed_end
        else None
    )
    if baseline is not None and aggregation == "sum" and observed_end < base_to:
        # A baseline still in progress: its total so far, pro rata to its full length.
        baseline *= ((base_to - base_from).days + 1) / ((observed_end - base_from).days + 1)
    target = spec.absolute_target(baseline)
    history = _data_days(frame.loc[: pd.Timestamp(observed_end)], aggregation)
    data_through = history.index[-1].date() if len(history) else None
    elapsed = max(0, min(spec.days(), (observed_end - spec.start).days + 1))
    current = (
        _aggregate(period(spec.start, observed_end), aggregation, kpi.scale) if elapsed else None
    )

    forecast: PeriodForecast | None = None
    probability: float | None = None
    low, high = UNIT_BOUNDS[kpi.unit]
    if len(history) and target is not None:
        try:
            forecast = period_forecast(
                history["value"],
                period_start=spec.start,
                period_end=spec.deadline,
                aggregation=aggregation,
                denominator=history["denominator"] if aggregation == "ratio" else None,
                lower=low,
                upper=high,
                repetitions=repetitions,
                seed=zlib.crc32(spec.name.encode("utf-8")),
            )
        except InsufficientHistoryError:
            forecast = None
    if forecast is not None and target is not None:
        probability = forecast.probability(target, spec.direction)
    complete = elapsed == spec.days()
    met = (
        current is not None
        and target is not None
        and (current >= target if spec.direction == "at_least" else current <= target)
    )
    status = status_for(probability, is_complete=complete, is_met=met)

    # The pacing line: cumulative 0 -> target for sums; baseline -> target for rates and means.
    days = pd.date_range(pd.Timestamp(spec.start), pd.Timestamp(spec.deadline), freq="D")
    share = pd.Series(range(1, len(days) + 1), index=days, dtype="float64") / len(days)
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
    for src, dst in (
        ("mean", "forecast_mean"),
        ("lower80", "lower80"),
        ("upper80", "upper80"),
        ("lower95", "lower95"),
        ("upper95", "upper95"),
    ):
        daily[dst] = forecast.daily[src] if forecast is not None else float("nan")
    daily["target"] = float("nan") if target is None else target
    if forecast is None and elapsed:
        running = _running_frame(period(spec.start, observed_end), aggregation, kpi.scale)
        daily["actual_to_date"] = running.reindex(days)

    percent = None if current is None or not target else 100 * current / target
    progress = GoalProgress(
        goal=spec,
        evaluated_at=now,
        status=status,
        probability=probability,
        unit=kpi.unit,
        currency=currency,
        aggregation=aggregation,
        direction=spec.direction,
        target_value=target,
        baseline_value=baseline,
        baseline_period=(base_from, base_to),
        current_value=current,
        percent_of_target=percent,
        expected_to_date=expected,
        days_elapsed=elapsed,
        days_total=spec.days(),
        data_through=data_through,
        forecast=forecast,
        checks=(),
        daily=daily,
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
    if q(
        "SELECT 1 FROM email_campaigns WHERE campaign_id = ? OR name = ? LIMIT 1",
        [initiative, initiative],
    ):
        where.append("email campaigns")
    return where


def _smart_checks(
    workspace: Workspace, p: GoalProgress, history: pd.DataFrame
) -> tuple[SmartCheck, ...]:
    g, unit, cur = p.goal, p.unit, p.currency
    scope = ", ".join(f"{k}={v}" for k, v in g.scope) or "the whole store"
    word = "at least" if p.direction == "at_least" else "at most"
    what = (
        f"{g.kpi} ({p.aggregation} over {g.start}..{g.deadline}) for {scope}: {word} "
        f"{format_value(p.target_value, unit, cur)}"
    )
    if g.target_kind == "change":
        what += (
            f" ({g.target:+g}% vs {format_value(p.baseline_value, unit, cur)} in "
            f"{p.baseline_period[0]}..{p.baseline_period[1]})"
        )
    improves = None
    if p.target_value is not None and p.baseline_value is not None:
        improves = (
            p.target_value > p.baseline_value
            if p.direction == "at_least"
            else p.target_value < p.baseline_value
        )
    if p.target_value is None:
        specific = SmartCheck(
            "specific",
            False,
            what + "; the baseline period has no data, so the target cannot be computed",
        )
    elif improves is False:
        specific = SmartCheck(
            "specific",
            False,
            what + "; the target is no better than the "
            f"baseline ({format_value(p.baseline_value, unit, cur)})",
        )
    else:
        specific = SmartCheck("specific", True, what)
    if len(history):
        measurable = SmartCheck(
            "measurable",
            True,
            f"measured daily; {len(history)} day(s) of data up to {p.data_through}",
        )
    else:
        measurable = SmartCheck(
            "measurable", False, f"no {g.kpi} data for {scope} up to the evaluation day"
        )
    if p.forecast is None or p.probability is None:
        achievable = SmartCheck(
            "achievable", None, "not enough history to forecast the value at the deadline"
        )
    else:
        f = p.forecast
        values = history["value"].dropna()
        span = "daily values"
        if p.aggregation == "sum" and len(values) >= 14:
            # Daily sales of one product are mostly zeros; whole weeks say more.
            whole = values.iloc[len(values) % 7 :]
            values = whole.groupby(np.arange(len(whole)) // 7).sum()
            span = "weekly totals"
        cv = float(values.std() / values.mean()) if len(values) > 1 and values.mean() else None
        spread = f"; {span} vary by ±{cv:.0%} (coefficient of variation)" if cv else ""
        low, high = (format_value(x, unit, cur) for x in f.interval80)
        achievable = SmartCheck(
            "achievable",
            p.probability >= AT_RISK_PROBABILITY,
            f"probability of reaching the target: {p.probability:.0%} (forecast at the deadline "
            f"{format_value(f.mean, unit, cur)}, 80% interval {low} to {high}; model "
            f"{f.method}){spread}",
        )
    if g.initiative is None:
        relevant = SmartCheck(
            "relevant",
            None,
            "no linked initiative: link the campaign or project meant to move this KPI",
        )
    else:
        found = _initiative_found(workspace, g.initiative)
        relevant = SmartCheck(
            "relevant",
            bool(found),
            f"initiative {g.initiative!r} found in {', '.join(found)}"
            if found
            else f"initiative {g.initiative!r} not found in events (utm_campaign or channel), "
            "ad spend or email campaigns yet",
        )
    if p.days_left > 0:
        timing = f"deadline {g.deadline}: {p.days_total} days, {p.days_left} left"
    else:
        timing = f"ended on {g.deadline} after {p.days_total} days"
    return (specific, measurable, achievable, relevant, SmartCheck("time_bound", True, timing))


# -- validation against the store --------------------------------------------------------------


def validate_goal(workspace: Workspace, spec: GoalSpec, *, now: datetime) -> None:
    """Every definition problem plus ``goal.unmeasurable`` when the store has no data for the
    KPI in its scope over the year before ``now`` (or the goal's period); raises once."""
    _require_aware(now)
    problems = spec.problems(store_currency=workspace.store.currency)
    if not problems:
        assert spec.deadline is not None
        end = min(max(now.astimezone(UTC).date() - timedelta(days=1), spec.start), spec.deadline)
        frame = kpi_daily_frame(
            workspace, spec.kpi, _history_start(spec, end), end, _filters(workspace, spec)
        )
        if _data_days(frame, spec.resolved_aggregation()).empty:
            scope = ", ".join(f"{k}={v}" for k, v in spec.scope) or "the whole store"
            problems.append(
                Problem(
                    "goal.unmeasurable",
                    "kpi",
                    f"the store has no {spec.kpi} data for {scope} between "
                    f"{_history_start(spec, end)} and {end}: the goal cannot be measured",
                )
            )
    if problems:
        raise InvalidSpecError(problems)
