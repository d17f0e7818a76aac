"""Stage KPIs for any window, breakdown and granularity, compared with the previous period.

A :class:`KpiSpec` names KPIs of the catalogue (:mod:`funnelscope.analysis.kpi_catalogue`);
:func:`compute_kpis` groups their measures by base relation, runs one query per base (written
once, in the DuckDB dialect, through :meth:`Engine.sql`, which transpiles it for Spark), and
divides numerators by denominators in Python, identically for every engine.

The base relations (one row per session, order, cart, ...) are SQL in
:class:`~funnelscope.analysis.kpi_catalogue.BasePlan`. Only trusted fragments are composed as
text: dimension names and granularities come from fixed allow-lists and are quoted; every user
value (dates, filter values, currency) is a bound ``$parameter``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from funnelscope.analysis.kpi_catalogue import (
    CATALOGUE,
    DIMENSIONS,
    BasePlan,
    Kpi,
    Measure,
    kpi_by_name,
)
from funnelscope.analysis.sessions import SessionSpec, sessions_relation
from funnelscope.engines.base import Engine
from funnelscope.errors import InvalidSpecError, Problem

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COMPARES",
    "DEFAULT_CART_WINDOW",
    "GRANULARITIES",
    "KpiResult",
    "KpiRow",
    "KpiSpec",
    "compute_kpis",
]

#: An add-to-cart (or checkout start) with no order by the person within this is abandoned.
DEFAULT_CART_WINDOW: Final = timedelta(hours=24)
GRANULARITIES: Final = ("day", "week", "month")
COMPARES: Final = ("previous_period",)
MAX_BUCKETS: Final = 3660


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _as_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


# -- the spec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KpiSpec:
    """Which KPIs, over which window, broken down how.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> spec = KpiSpec(("sessions", "bounce_rate"), datetime(2024, 5, 1, tzinfo=UTC),
    ...                datetime(2024, 6, 1, tzinfo=UTC), breakdown=("channel",))
    >>> spec.validate()
    """

    names: tuple[str, ...]
    start: datetime
    end: datetime
    breakdown: tuple[str, ...] = ()
    granularity: str | None = None
    compare: str | None = None
    #: dimension -> the values to keep
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    session: SessionSpec = field(default_factory=SessionSpec)
    cart_window: timedelta = DEFAULT_CART_WINDOW

    @classmethod
    def create(
        cls,
        names: str | Iterable[str],
        start: datetime,
        end: datetime,
        *,
        breakdown: str | Iterable[str] = (),
        granularity: str | None = None,
        compare: str | None = None,
        filters: Mapping[str, str | Iterable[str]] | None = None,
        session: SessionSpec | None = None,
        cart_window: timedelta = DEFAULT_CART_WINDOW,
    ) -> KpiSpec:
        """Build from loose Python values (single strings or iterables), then validate."""
        spec = cls(
            names=_as_tuple(names),
            start=start,
            end=end,
            breakdown=_as_tuple(breakdown),
            granularity=granularity,
            compare=compare,
            filters=tuple((k, _as_tuple(v)) for k, v in (filters or {}).items()),
            session=session or SessionSpec(),
            cart_window=cart_window,
        )
        spec.validate()
        return spec

    @property
    def kpis(self) -> tuple[Kpi, ...]:
        return tuple(kpi_by_name(n) for n in self.names)

    def validate(self) -> None:
        """Raise :class:`InvalidSpecError` with every problem found."""
        problems: list[Problem] = []
        known = {k.name for k in CATALOGUE}
        if not self.names:
            problems.append(Problem("kpi.no_kpis", "names", "name at least one KPI"))
        unknown = [n for n in self.names if n not in known]
        if unknown:
            problems.append(
                Problem(
                    "kpi.unknown",
                    "names",
                    f"unknown KPI(s) {unknown}; allowed: {', '.join(k.name for k in CATALOGUE)}",
                )
            )
        for label, value in (("start", self.start), ("end", self.end)):
            if not isinstance(value, datetime) or value.tzinfo is None:
                problems.append(
                    Problem(
                        "kpi.naive_time", label, f"{label} must be a timezone-aware datetime (UTC)"
                    )
                )
        if not problems and self.end <= self.start:
            problems.append(Problem("kpi.empty_window", "end", "end must be after start"))
        if self.granularity is not None and self.granularity not in GRANULARITIES:
            problems.append(
                Problem(
                    "kpi.bad_granularity",
                    "granularity",
                    f"unknown granularity {self.granularity!r}; allowed: "
                    f"{', '.join(GRANULARITIES)} or none",
                )
            )
        elif not problems and self.granularity is not None:
            days = (self.end - self.start).days
            per = {"day": 1, "week": 7, "month": 28}[self.granularity]
            if days / per > MAX_BUCKETS:
                problems.append(
                    Problem(
                        "kpi.too_many_periods",
                        "granularity",
                        f"at most {MAX_BUCKETS} periods; use a coarser "
                        "granularity or a shorter window",
                    )
                )
        if self.compare is not None and self.compare not in COMPARES:
            problems.append(
                Problem(
                    "kpi.bad_compare",
                    "compare",
                    f"unknown comparison {self.compare!r}; allowed: previous_period or none",
                )
            )
        if len(set(self.breakdown)) != len(self.breakdown):
            problems.append(
                Problem("kpi.duplicate_breakdown", "breakdown", "a breakdown is named twice")
            )
        if self.cart_window <= timedelta(0):
            problems.append(
                Problem("kpi.bad_cart_window", "cart_window", "the cart window must be positive")
            )
        for where, dims in (
            ("breakdown", self.breakdown),
            ("filters", tuple(k for k, _ in self.filters)),
        ):
            bad = [d for d in dims if d not in DIMENSIONS]
            if bad:
                problems.append(
                    Problem(
                        "kpi.unknown_breakdown",
                        where,
                        f"unknown breakdown(s) {bad}; allowed: {', '.join(DIMENSIONS)}",
                    )
                )
                continue
            for kpi in (kpi_by_name(n) for n in self.names if n in known):
                unsupported = [d for d in dims if d not in kpi.breakdowns]
                if unsupported:
                    allowed = ", ".join(kpi.breakdowns) or "none"
                    problems.append(
                        Problem(
                            "kpi.unsupported_breakdown",
                            f"{where}.{kpi.name}",
                            f"{kpi.name} cannot be broken down by {', '.join(unsupported)}; "
                            f"allowed: {allowed}",
                        )
                    )
        for dim, values in self.filters:
            if not values:
                problems.append(
                    Problem(
                        "kpi.empty_filter", f"filters.{dim}", "a filter needs at least one value"
                    )
                )
        try:
            self.session.validate()
        except InvalidSpecError as exc:
            problems.extend(exc.problems)
        if problems:
            raise InvalidSpecError(problems)


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KpiRow:
    """One KPI value: for a period and a combination of breakdown values."""

    kpi: str
    stage: str
    unit: str
    period: datetime
    breakdown: tuple[tuple[str, str | None], ...]
    value: float | None
    numerator: float | None
    denominator: float | None
    previous_value: float | None = None
    change: float | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kpi": self.kpi,
            "stage": self.stage,
            "unit": self.unit,
            "period": self.period.isoformat(),
            **dict(self.breakdown),
            "value": self.value,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "previous_value": self.previous_value,
            "change": self.change,
            "note": self.note,
        }


@dataclass(frozen=True)
class KpiResult:
    """The tidy KPI table: one :class:`KpiRow` per KPI, period and breakdown values."""

    spec: KpiSpec
    rows: tuple[KpiRow, ...]
    currency: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.spec.start.isoformat(),
            "end": self.spec.end.isoformat(),
            "currency": self.currency,
            "breakdown": list(self.spec.breakdown),
            "granularity": self.spec.granularity,
            "compare": self.spec.compare,
            "rows": [r.to_dict() for r in self.rows],
        }

    @property
    def columns(self) -> list[str]:
        """The columns of a row, in order (tables, CSV and :meth:`to_pandas`)."""
        return [
            "kpi",
            "stage",
            "unit",
            "period",
            *self.spec.breakdown,
            "value",
            "numerator",
            "denominator",
            "previous_value",
            "change",
            "note",
        ]

    def to_pandas(self) -> pd.DataFrame:
        """Columns: kpi, stage, unit, period, <breakdowns...>, value, numerator, denominator,
        previous_value, change, note."""
        import pandas as pd

        records = []
        for r in self.rows:
            rec = r.to_dict()
            rec["period"] = r.period
            records.append(rec)
        frame = pd.DataFrame.from_records(records, columns=self.columns)
        frame["period"] = pd.to_datetime(frame["period"], utc=True)
        for col in ("value", "numerator", "denominator", "previous_value", "change"):
            frame[col] = frame[col].astype("float64")
        return frame

    def value(self, kpi: str, **breakdown: str | None) -> float | None:
        """The value of ``kpi`` for one breakdown combination (the first period's)."""
        for r in self.rows:
            if r.kpi == kpi and all(dict(r.breakdown).get(k) == v for k, v in breakdown.items()):
                return r.value
        raise KeyError(f"no row for {kpi} {breakdown}")


# -- periods -----------------------------------------------------------------------------------


def _trunc(at: datetime, granularity: str | None) -> datetime:
    at = at.astimezone(UTC)
    if granularity is None:
        return at
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _step(at: datetime, granularity: str, n: int = 1) -> datetime:
    if granularity == "month":
        months = at.year * 12 + at.month - 1 + n
        return at.replace(year=months // 12, month=months % 12 + 1)
    return at + timedelta(days=n * (7 if granularity == "week" else 1))


def _periods(start: datetime, end: datetime, granularity: str | None) -> list[datetime]:
    if granularity is None:
        return [start.astimezone(UTC)]
    out, at = [], _trunc(start, granularity)
    while at < end:
        out.append(at)
        at = _step(at, granularity)
    return out


# -- running one window ------------------------------------------------------------------------

Key = tuple[Any, ...]  # (period, *breakdown values)


@dataclass
class _MeasureValues:
    values: dict[Key, Any] = field(default_factory=dict)
    unconverted: dict[Key, int] = field(default_factory=dict)


def _measures_of(kpis: Iterable[Kpi]) -> list[Measure]:
    found: dict[str, Measure] = {}
    for kpi in kpis:
        for ref in (kpi.numerator, kpi.denominator):
            if isinstance(ref, str):
                for m in _measures_of([kpi_by_name(ref)]):
                    found[m.key] = m
        for m in kpi.measures:
            found[m.key] = m
    return list(found.values())


def _filters_sql(spec: KpiSpec, params: dict[str, object]) -> str:
    clauses = []
    for i, (dim, values) in enumerate(spec.filters):
        names = []
        for j, value in enumerate(values):
            params[f"f{i}_{j}"] = value
            names.append(f"$f{i}_{j}")
        clauses.append(f"{_q(dim)} IN ({', '.join(names)})")
    return " AND ".join(clauses) if clauses else "TRUE"


def _period_of(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    raise TypeError(f"period is not a timestamp: {value!r}")


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return value


def _interpolated(q: float) -> str:
    pos = f"(1 + {q!r} * (n - 1))"
    lo = f"max(CASE WHEN rn = CAST(floor{pos} AS BIGINT) THEN x END)"
    hi = f"max(CASE WHEN rn = CAST(ceil{pos} AS BIGINT) THEN x END)"
    whole = f"(1 + {q!r} * (max(n) - 1))"
    return f"{lo} + CAST({whole} - floor{whole} AS DOUBLE) * ({hi} - {lo})"


def _run_window(
    engine: Engine,
    spec: KpiSpec,
    measures: list[Measure],
    session_ctes: list[tuple[str, str]],
    params: dict[str, object],
) -> dict[str, _MeasureValues]:
    """Every measure for one window: one query per base (and per quantile expression)."""
    dims = [_q(d) for d in spec.breakdown]
    out: dict[str, _MeasureValues] = {}
    by_group: dict[tuple[str, str | None, tuple[str, ...]], list[Measure]] = {}
    for m in measures:
        # A distinct count over a few event names gets its own narrow scan: grouped with the
        # others it would hash every row the others read.
        narrow = m.events if "distinct" in m.expr.lower() else ()
        key = (m.base, m.expr if m.quantile is not None else None, narrow)
        by_group.setdefault(key, []).append(m)
    for (base, quantile_expr, _), group in by_group.items():
        site_events = [e for m in group for e in m.events]
        plan = BasePlan(
            granularity=spec.granularity,
            session=spec.session,
            session_ctes=session_ctes,
            site_events=site_events,
        )
        plan.need(base)
        query_params = dict(params)
        where = _filters_sql(spec, query_params)
        period = plan.bucket("ts")
        keys = ", ".join([f"{period} AS period", *dims])
        group_by = ", ".join(([] if spec.granularity is None else [period]) + dims)
        group_sql = f" GROUP BY {group_by}" if group_by else ""
        if quantile_expr is None:
            aggs = []
            for i, m in enumerate(group):
                aggs.append(f"{m.expr} AS m{i}")
                if m.money:
                    aggs.append(f"sum(unconverted) AS u{i}")
            select = f"SELECT {keys}, {', '.join(aggs)} FROM {base} WHERE {where}{group_sql}"
        else:
            part = ", ".join(["period", *dims])
            plan.ctes["_qv"] = f"SELECT {keys}, ({quantile_expr}) AS x FROM {base} WHERE {where}"
            plan.ctes["_qr"] = (
                f"SELECT *, row_number() OVER (PARTITION BY {part} ORDER BY x) "
                f"AS rn, count(*) OVER (PARTITION BY {part}) AS n FROM _qv "
                "WHERE x IS NOT NULL"
            )
            aggs = [f"{_interpolated(float(m.quantile or 0))} AS m{i}" for i, m in enumerate(group)]
            select = f"SELECT {part}, {', '.join(aggs)} FROM _qr GROUP BY {part}"
        query = plan.sql(select)
        used = {k: v for k, v in query_params.items() if re.search(rf"\${k}\b", query)}
        table = engine.sql(query, used)
        for m in group:
            out.setdefault(m.key, _MeasureValues())
        for row in table.to_pylist():
            key = (_period_of(row["period"]), *(row[d] for d in spec.breakdown))
            for i, m in enumerate(group):
                value = _number(row[f"m{i}"])
                if value is None and m.is_sum:
                    value = 0
                out[m.key].values[key] = value
                if m.money:
                    out[m.key].unconverted[key] = int(row.get(f"u{i}") or 0)
    return out


# -- KPI values from measures ------------------------------------------------------------------


@dataclass
class _Cell:
    value: float | None
    numerator: float | None
    denominator: float | None
    note: str | None = None


def _total(mv: _MeasureValues) -> float:
    return sum(float(v) for v in mv.values.values() if v is not None)


def _effective_numerator(
    kpi: Kpi, measured: dict[str, _MeasureValues]
) -> tuple[Measure | str, str | None]:
    """The numerator, or the fallback when the numerator is empty over the whole window."""
    if (
        kpi.fallback is not None
        and isinstance(kpi.numerator, Measure)
        and _total(measured[kpi.numerator.key]) == 0
    ):
        return kpi.fallback, kpi.fallback_note
    return kpi.numerator, None


def _kpi_cells(
    kpi: Kpi,
    measured: dict[str, _MeasureValues],
    keys: list[Key],
    cache: dict[str, dict[Key, _Cell]],
    currency: str,
) -> dict[Key, _Cell]:
    if kpi.name in cache:
        return cache[kpi.name]
    numerator, note = _effective_numerator(kpi, measured)

    def part(ref: Measure | str | None, key: Key) -> tuple[float | None, str | None]:
        if ref is None:
            return None, None
        if isinstance(ref, str):
            cell = _kpi_cells(kpi_by_name(ref), measured, keys, cache, currency).get(key)
            return (None, None) if cell is None else (cell.value, cell.note)
        mv = measured[ref.key]
        value = mv.values.get(key, 0 if ref.is_sum else None)
        missing = mv.unconverted.get(key, 0)
        if missing:
            return None, (
                f"{missing} amount(s) have no {currency} rate at or before their date "
                "(currency_rates); not summed"
            )
        return (None if value is None else float(value)), None

    cells: dict[Key, _Cell] = {}
    for key in keys:
        num, num_note = part(numerator, key)
        if num is not None and isinstance(numerator, Measure):
            num *= kpi.numerator_scale
        den, den_note = part(kpi.denominator, key)
        notes = [n for n in (note, num_note, den_note) if n]
        if kpi.denominator is None:
            value = None if num is None else kpi.scale * num
        elif num is None or den is None or den == 0:
            value = None
        else:
            value = kpi.scale * num / den
        if value is not None and not math.isfinite(value):
            value = None
        cells[key] = _Cell(value, num, den, "; ".join(dict.fromkeys(notes)) or None)
    cache[kpi.name] = cells
    return cells


def _keys_of(kpi: Kpi, measured: dict[str, _MeasureValues]) -> set[Key]:
    keys: set[Key] = set()
    for ref in (_effective_numerator(kpi, measured)[0], kpi.denominator):
        if isinstance(ref, Measure):
            keys.update(measured[ref.key].values)
        elif isinstance(ref, str):
            keys |= _keys_of(kpi_by_name(ref), measured)
    return keys


def _sort_key(key: Key) -> tuple[Any, ...]:
    return (key[0], *((v is None, str(v)) for v in key[1:]))


def compute_kpis(engine: Engine, spec: KpiSpec) -> KpiResult:
    """Run ``spec`` on ``engine``: the tidy KPI table.

    Examples
    --------
    >>> import funnelscope
    >>> from datetime import UTC, datetime
    >>> ws = funnelscope.open(":memory:")
    >>> spec = KpiSpec.create(["sessions", "aov"], datetime(2024, 5, 1, tzinfo=UTC),
    ...                       datetime(2024, 6, 1, tzinfo=UTC))
    >>> [(r.kpi, r.value) for r in compute_kpis(ws.engine, spec).rows]
    [('sessions', 0.0), ('aov', None)]
    """
    spec.validate()
    kpis = spec.kpis
    measures = _measures_of(kpis)
    # sessions, attributed_orders, email_touches, site_facts: materialised, or inline CTEs
    session_ctes = (
        sessions_relation(engine, spec.session)
        if any(m.base not in ("spend", "email_sends", "surveys") for m in measures)
        else []
    )
    currency_rows = engine.sql("SELECT value FROM meta WHERE key = 'store_currency'").to_pylist()
    currency = str(currency_rows[0]["value"]) if currency_rows else "USD"

    def run(start: datetime, end: datetime) -> dict[str, _MeasureValues]:
        g = spec.granularity
        lookback = start - (end - start) if g is None else _step(_trunc(start, g), g, -1)
        params: dict[str, object] = {
            "start": start,
            "end": end,
            "lookback": lookback,
            "store_currency": currency,
            "cart_window_us": int(spec.cart_window / timedelta(microseconds=1)),
        }
        return _run_window(engine, spec, measures, session_ctes, params)

    current = run(spec.start, spec.end)
    previous: dict[str, _MeasureValues] | None = None
    shift: dict[datetime, datetime] = {}
    if spec.compare == "previous_period":
        length = spec.end - spec.start
        prev_start = spec.start - length
        previous = run(prev_start, spec.start)
        shift = dict(
            zip(
                _periods(prev_start, spec.start, spec.granularity),
                _periods(spec.start, spec.end, spec.granularity),
                strict=False,
            )
        )
        for mv in previous.values():  # relabel buckets as the current buckets they compare with
            mv.values = {(shift[k[0]], *k[1:]): v for k, v in mv.values.items() if k[0] in shift}
            mv.unconverted = {
                (shift[k[0]], *k[1:]): v for k, v in mv.unconverted.items() if k[0] in shift
            }

    rows: list[KpiRow] = []
    cur_cache: dict[str, dict[Key, _Cell]] = {}
    prev_cache: dict[str, dict[Key, _Cell]] = {}
    grid = _periods(spec.start, spec.end, spec.granularity)
    for kpi in kpis:
        keys = _keys_of(kpi, current) | (_keys_of(kpi, previous) if previous else set())
        if not spec.breakdown:
            keys |= {(p,) for p in grid}
        ordered = sorted(keys, key=_sort_key)
        cells = _kpi_cells(kpi, current, ordered, cur_cache, currency)
        prev_cells = (
            _kpi_cells(kpi, previous, ordered, prev_cache, currency) if previous is not None else {}
        )
        for key in ordered:
            cell = cells[key]
            prev = prev_cells.get(key)
            prev_value = prev.value if prev else None
            change = (
                None
                if cell.value is None or prev_value in (None, 0)
                else cell.value / prev_value - 1
            )
            rows.append(
                KpiRow(
                    kpi=kpi.name,
                    stage=kpi.stage.name.lower(),
                    unit=kpi.unit,
                    period=key[0],
                    breakdown=tuple(zip(spec.breakdown, key[1:], strict=True)),
                    value=cell.value,
                    numerator=cell.numerator,
                    denominator=cell.denominator,
                    previous_value=prev_value,
                    change=change,
                    note=cell.note,
                )
            )
    return KpiResult(spec, tuple(rows), currency)
