"""Funnels: which units (persons, sessions, carts...) go through a sequence of steps, and who
drops off where. The semantics of every option are written down in docs/funnels.md.

A :class:`FunnelSpec` is pure data and validates itself, collecting every problem (stable codes
such as ``funnel.too_few_steps``) before raising :class:`~funnelscope.errors.InvalidSpecError`
once. :func:`run` executes a spec on an engine (embedded or Spark: the same kernels, the same
answers) and returns a :class:`~funnelscope.analysis.funnel_result.FunnelResult`.

Examples
--------
>>> spec = FunnelSpec.of("product_viewed", "product_added", "order_completed", window="2d")
>>> spec.window
datetime.timedelta(days=2)
>>> try:
...     FunnelSpec.of("product_viewed", window="400d")
... except InvalidSpecError as exc:
...     print(sorted(p.code for p in exc.problems))
['funnel.too_few_steps', 'funnel.window_out_of_range']
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from funnelscope.errors import InvalidSpecError, Problem
from funnelscope.events.schema import EVENT_SCHEMA
from funnelscope.events.stages import DEFAULT_STAGE_MODEL, Stage, StageModel
from funnelscope.events.vocabulary import canonical_event

if TYPE_CHECKING:
    from funnelscope.analysis.funnel_result import FunnelResult

__all__ = [
    "ATTRIBUTIONS",
    "COUNTINGS",
    "DEFAULT_CONVERSION_WINDOW",
    "MAX_STEPS",
    "MODES",
    "Exclusion",
    "FunnelSpec",
    "PropertyFilter",
    "Step",
    "parse_duration",
    "run",
    "run_layout",
    "run_many",
    "stage_funnel_spec",
]

#: The conversion window when none is given: from a chain's first step to its last.
DEFAULT_CONVERSION_WINDOW: Final = timedelta(days=7)
MAX_WINDOW: Final = timedelta(days=366)
MIN_STEPS: Final = 2
MAX_STEPS: Final = 32
MAX_BREAKDOWNS: Final = 3
MAX_HOLD_CONSTANT: Final = 3
#: ordered: other events may happen between steps; strict: none may; any: steps in any order.
MODES: Final = ("ordered", "strict", "any")
#: uniques: each unit once, at its best chain; totals: every attempt (re-entry) counts.
COUNTINGS: Final = ("uniques", "totals")
ATTRIBUTIONS: Final = ("first_touch", "last_touch", "step")
PERIODS: Final = ("day", "week", "month")
UNITS: Final = ("persons", "sessions")
FILTER_OPS: Final = (
    "eq",
    "neq",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "is_set",
    "is_not_set",
)
_OP_SYMBOLS: Final = (
    ("!=", "neq"),
    (">=", "gte"),
    ("<=", "lte"),
    ("~", "contains"),
    ("=", "eq"),
    (">", "gt"),
    ("<", "lt"),
)
#: Event columns a filter, breakdown, key or hold-constant may name (or ``properties.<key>``).
PROPERTY_COLUMNS: Final = tuple(
    n for n in EVENT_SCHEMA.names if n not in ("properties", "items", "timestamp", "received_at")
)
_PROPERTY_KEY = re.compile(r"^properties\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(w|d|h|m|min|s|ms)?\s*$")
_UNIT_SECONDS: Final = {
    "w": 604800,
    "d": 86400,
    "h": 3600,
    "m": 60,
    "min": 60,
    "s": 1,
    "ms": 0.001,
    None: 1,
}


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` or seconds as a number.

    >>> parse_duration("36h")
    datetime.timedelta(days=1, seconds=43200)
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 7d, 12h, 30m, 45s)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _check_property(name: str, location: str, problems: list[Problem]) -> None:
    if name not in PROPERTY_COLUMNS and not _PROPERTY_KEY.match(name):
        problems.append(
            Problem(
                "funnel.unknown_property",
                location,
                f"unknown property {name!r}: use an event column ({', '.join(PROPERTY_COLUMNS)}) "
                "or properties.<key>",
            )
        )


@dataclass(frozen=True)
class PropertyFilter:
    """A condition on an event column or JSON property: ``country eq "US"``.

    Examples
    --------
    >>> PropertyFilter.parse("revenue>=100")
    PropertyFilter(property='revenue', op='gte', value='100')
    >>> PropertyFilter.parse("country in US,CA").value
    ('US', 'CA')
    """

    property: str
    op: str = "eq"
    value: Any = None

    def problems(self, location: str) -> list[Problem]:
        found: list[Problem] = []
        _check_property(self.property, f"{location}.property", found)
        if self.op not in FILTER_OPS:
            found.append(
                Problem(
                    "filter.unknown_op",
                    f"{location}.op",
                    f"unknown operator {self.op!r}; allowed: {', '.join(FILTER_OPS)}",
                )
            )
        elif self.op not in ("is_set", "is_not_set") and self.value is None:
            found.append(
                Problem(
                    "filter.missing_value", f"{location}.value", f"operator {self.op} needs a value"
                )
            )
        return found

    @classmethod
    def parse(cls, text: str) -> PropertyFilter:
        """``"country=US"``, ``"revenue>=100"``, ``"country in US,CA"``, ``"coupon is_set"``."""
        words = text.split(None, 2)
        if len(words) >= 2 and words[1] in FILTER_OPS:
            op = words[1]
            value: Any = words[2] if len(words) > 2 else None
            if op in ("in", "not_in") and isinstance(value, str):
                value = tuple(v.strip() for v in value.split(","))
            return cls(words[0], op, value)
        for symbol, op in _OP_SYMBOLS:
            if symbol in text:
                prop, _, value = text.partition(symbol)
                return cls(prop.strip(), op, value.strip())
        raise InvalidSpecError(
            [
                Problem(
                    "filter.unparsable",
                    "filter",
                    f"cannot read filter {text!r}: use property=value, "
                    "property>=value or 'property in a,b'",
                )
            ]
        )

    @classmethod
    def from_value(cls, value: Any) -> PropertyFilter:
        if isinstance(value, PropertyFilter):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, Mapping):
            raw = value.get("value")
            if isinstance(raw, list):
                raw = tuple(raw)
            return cls(str(value.get("property", "")), str(value.get("op", "eq")), raw)
        raise InvalidSpecError(
            [
                Problem(
                    "filter.unparsable",
                    "filter",
                    f"a filter is a string or a mapping, got {value!r}",
                )
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"property": self.property, "op": self.op, "value": value}


@dataclass(frozen=True)
class Step:
    """One funnel step: an event (canonical name) or a journey stage, with property filters.

    ``within`` limits the time from the previous step (on top of the funnel's window);
    ``is_optional`` steps may be skipped; ``first_time`` matches only the unit's first event
    that fits the step, ever.

    Examples
    --------
    >>> Step("Product Added").event
    'product_added'
    >>> Step.stage("decision").of_stage
    <Stage.DECISION: 3>
    """

    event: str | None = None
    filters: tuple[PropertyFilter, ...] = ()
    of_stage: Stage | None = None
    within: timedelta | None = None
    is_optional: bool = False
    first_time: bool = False
    label: str | None = None

    def __post_init__(self) -> None:
        if self.event is not None:
            object.__setattr__(self, "event", canonical_event(self.event))
        object.__setattr__(
            self, "filters", tuple(PropertyFilter.from_value(f) for f in self.filters)
        )

    @classmethod
    def stage(cls, name: str | Stage, **options: Any) -> Step:
        """A step matched by any event of a journey stage (see :mod:`funnelscope.events.stages`)."""
        stage = name if isinstance(name, Stage) else Stage.parse(name)
        return cls(of_stage=stage, **options)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        base = self.of_stage.label if self.of_stage is not None else str(self.event)
        if self.filters:
            conds = ", ".join(f"{f.property} {f.op} {f.value}" for f in self.filters)
            base = f"{base} ({conds})"
        return base

    @classmethod
    def from_value(cls, value: Any) -> Step:
        if isinstance(value, Step):
            return value
        if isinstance(value, str):
            if value.lower().startswith("stage:"):
                return cls.stage(value.split(":", 1)[1])
            return cls(value)
        if isinstance(value, Mapping):
            data = dict(value)
            stage = data.pop("stage", None)
            within = data.pop("within", None)
            step = cls(
                event=data.pop("event", None),
                filters=tuple(data.pop("filters", ()) or ()),
                of_stage=Stage.parse(stage) if isinstance(stage, str) else stage,
                within=parse_duration(within) if within is not None else None,
                is_optional=bool(data.pop("optional", data.pop("is_optional", False))),
                first_time=bool(data.pop("first_time", False)),
                label=data.pop("label", None),
            )
            if data:
                raise InvalidSpecError(
                    [
                        Problem(
                            "funnel.unknown_field", "steps", f"unknown step fields {sorted(data)}"
                        )
                    ]
                )
            return step
        raise InvalidSpecError(
            [
                Problem(
                    "funnel.bad_step",
                    "steps",
                    f"a step is an event name or a mapping, got {value!r}",
                )
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "stage": self.of_stage.name.lower() if self.of_stage is not None else None,
            "filters": [f.to_dict() for f in self.filters],
            "within": self.within.total_seconds() if self.within is not None else None,
            "optional": self.is_optional,
            "first_time": self.first_time,
            "label": self.label,
            "name": self.name,
        }


@dataclass(frozen=True)
class Exclusion:
    """An event that, between ``from_step`` and ``to_step`` (1-based), ends the attempt.

    Examples
    --------
    >>> Exclusion("product_removed", from_step=2, to_step=3).event
    'product_removed'
    """

    event: str
    filters: tuple[PropertyFilter, ...] = ()
    from_step: int = 1
    to_step: int | None = None  # default: the last step

    def __post_init__(self) -> None:
        object.__setattr__(self, "event", canonical_event(self.event))
        object.__setattr__(
            self, "filters", tuple(PropertyFilter.from_value(f) for f in self.filters)
        )

    @classmethod
    def from_value(cls, value: Any) -> Exclusion:
        if isinstance(value, Exclusion):
            return value
        if isinstance(value, str):
            # "event" or "event:from-to"
            name, _, span = value.partition(":")
            if span:
                a, _, b = span.partition("-")
                return cls(name, from_step=int(a), to_step=int(b) if b else None)
            return cls(name)
        if isinstance(value, Mapping):
            return cls(
                str(value.get("event", "")),
                tuple(value.get("filters", ()) or ()),
                int(value.get("from_step", 1)),
                None if value.get("to_step") is None else int(value["to_step"]),
            )
        raise InvalidSpecError(
            [
                Problem(
                    "funnel.bad_exclusion",
                    "exclusions",
                    f"an exclusion is an event name or a mapping: {value!r}",
                )
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "filters": [f.to_dict() for f in self.filters],
            "from_step": self.from_step,
            "to_step": self.to_step,
        }


@dataclass(frozen=True)
class FunnelSpec:
    """Everything that defines a funnel; validated on construction.

    Parameters
    ----------
    steps
        2 to 32 :class:`Step` (or event names).
    window
        From a chain's first step to its last, inclusive. Default 7 days; 0 to 366 days.
    mode
        ``ordered`` (default; equals ClickHouse ``windowFunnel``), ``strict`` (no other event
        of the unit between consecutive steps) or ``any`` (steps in any order in the window).
    exclusions
        Events that end an attempt between two steps.
    count_by
        ``persons`` (stitched), ``sessions``, or a key column (``cart_id``, ``order_id``,
        ``properties.<key>``): the unit that goes through the funnel.
    counting
        ``uniques`` (each unit once, at its best chain) or ``totals`` (every attempt).
    hold_constant
        Properties every step of a chain must share (e.g. ``product_id``).
    is_open
        Open funnel: a unit may enter at any step.
    breakdowns, attribution, attribution_step
        Split results by up to 3 properties, read from the counted chain's first step
        (``first_touch``), furthest step (``last_touch``) or step N (``step``).
    start_at, end_at
        Entry range: a chain's first step must be in ``[start_at, end_at)``; later steps may
        fall up to the window after ``end_at``.
    filters
        Global filters: events that fail them do not exist for the funnel.
    trend_period
        Entry period of the conversion trend: ``day``, ``week`` (ISO, Monday) or ``month``.

    Examples
    --------
    >>> spec = FunnelSpec.of("page_viewed", Step("order_completed", filters=["revenue>=50"]),
    ...                      mode="strict", breakdowns=("country",))
    >>> [s.name for s in spec.steps]
    ['page_viewed', 'order_completed (revenue gte 50)']
    """

    steps: tuple[Step, ...]
    window: timedelta = DEFAULT_CONVERSION_WINDOW
    mode: str = "ordered"
    exclusions: tuple[Exclusion, ...] = ()
    count_by: str = "persons"
    counting: str = "uniques"
    hold_constant: tuple[str, ...] = ()
    is_open: bool = False
    breakdowns: tuple[str, ...] = ()
    attribution: str = "first_touch"
    attribution_step: int | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    filters: tuple[PropertyFilter, ...] = ()
    trend_period: str = "week"
    stage_model: StageModel = field(default=DEFAULT_STAGE_MODEL, compare=False, repr=False)

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        steps: list[Step] = []
        for i, raw in enumerate(self.steps):
            try:
                steps.append(Step.from_value(raw))
            except InvalidSpecError as exc:
                problems.extend(replace(p, location=f"steps[{i}]") for p in exc.problems)
        object.__setattr__(self, "steps", tuple(steps))
        for name in ("exclusions", "filters", "hold_constant", "breakdowns"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
        try:
            object.__setattr__(
                self, "exclusions", tuple(Exclusion.from_value(x) for x in self.exclusions)
            )
            object.__setattr__(
                self, "filters", tuple(PropertyFilter.from_value(f) for f in self.filters)
            )
        except InvalidSpecError as exc:
            problems.extend(exc.problems)
        if not isinstance(self.window, timedelta):
            try:
                object.__setattr__(self, "window", parse_duration(self.window))
            except ValueError as exc:
                problems.append(Problem("funnel.bad_window", "window", str(exc)))
                object.__setattr__(self, "window", DEFAULT_CONVERSION_WINDOW)
        problems.extend(self._problems())
        if problems:
            raise InvalidSpecError(problems)

    # -- construction helpers --------------------------------------------------------------
    @classmethod
    def of(cls, *steps: str | Step | Mapping[str, Any], **options: Any) -> FunnelSpec:
        """A spec from steps given positionally (event names or :class:`Step`) and options."""
        if "window" in options:
            try:
                options["window"] = parse_duration(options["window"])
            except ValueError as exc:
                raise InvalidSpecError([Problem("funnel.bad_window", "window", str(exc))]) from exc
        return cls(steps=tuple(steps), **options)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FunnelSpec:
        """A spec from plain data (a JSON/YAML document); the keys are the field names, with
        ``window`` as ``"7d"``/seconds and ``open`` accepted for ``is_open``."""
        known = {f.name for f in fields(cls)} - {"stage_model"}
        data = dict(data)
        if "open" in data:
            data["is_open"] = data.pop("open")
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSpecError(
                [
                    Problem(
                        "funnel.unknown_field",
                        k,
                        f"unknown field; allowed: {', '.join(sorted(known))}",
                    )
                    for k in unknown
                ]
            )
        options: dict[str, Any] = {}
        problems: list[Problem] = []
        for key, value in data.items():
            if key == "window":
                try:
                    value = parse_duration(value)
                except ValueError as exc:
                    problems.append(Problem("funnel.bad_window", "window", str(exc)))
                    continue
            elif key in ("start_at", "end_at") and isinstance(value, str):
                try:
                    value = _parse_instant(value)
                except ValueError:
                    problems.append(
                        Problem("funnel.bad_date", key, f"not an ISO 8601 date or time: {value!r}")
                    )
                    continue
            elif key in ("steps", "exclusions", "filters", "hold_constant", "breakdowns"):
                value = tuple(value) if isinstance(value, list | tuple) else (value,)
            options[key] = value
        if problems:
            raise InvalidSpecError(problems)
        return cls(**options)

    @classmethod
    def from_file(cls, path: str) -> FunnelSpec:
        """Read a spec from a YAML or JSON file (see :meth:`from_dict`)."""
        import yaml

        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise InvalidSpecError([Problem("funnel.unreadable", str(path), str(exc))]) from exc
        except yaml.YAMLError as exc:
            raise InvalidSpecError([Problem("funnel.bad_yaml", str(path), str(exc))]) from exc
        if not isinstance(data, Mapping):
            raise InvalidSpecError(
                [
                    Problem(
                        "funnel.bad_file", str(path), "the file must hold a mapping of spec fields"
                    )
                ]
            )
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": [s.to_dict() for s in self.steps],
            "window": self.window.total_seconds(),
            "mode": self.mode,
            "exclusions": [x.to_dict() for x in self.exclusions],
            "count_by": self.count_by,
            "counting": self.counting,
            "hold_constant": list(self.hold_constant),
            "open": self.is_open,
            "breakdowns": list(self.breakdowns),
            "attribution": self.attribution,
            "attribution_step": self.attribution_step,
            "start_at": self.start_at.isoformat() if self.start_at else None,
            "end_at": self.end_at.isoformat() if self.end_at else None,
            "filters": [f.to_dict() for f in self.filters],
            "trend_period": self.trend_period,
        }

    # -- derived ---------------------------------------------------------------------------
    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    @property
    def columns(self) -> tuple[str, ...]:
        """The event columns the funnel reads besides time and event name."""
        wanted: list[str] = []
        for step in self.steps:
            wanted.extend(f.property for f in step.filters)
        for x in self.exclusions:
            wanted.extend(f.property for f in x.filters)
        wanted.extend(f.property for f in self.filters)
        wanted.extend(self.hold_constant)
        wanted.extend(self.breakdowns)
        if self.count_by == "sessions":
            wanted.append("session_id")
        elif self.count_by != "persons":
            wanted.append(self.count_by)
        return tuple(dict.fromkeys(wanted))

    # -- validation ------------------------------------------------------------------------
    def _problems(self) -> list[Problem]:
        p: list[Problem] = []
        n = len(self.steps)
        if n < MIN_STEPS:
            p.append(
                Problem(
                    "funnel.too_few_steps",
                    "steps",
                    f"a funnel needs {MIN_STEPS} to {MAX_STEPS} steps, got {n}",
                )
            )
        if n > MAX_STEPS:
            p.append(
                Problem(
                    "funnel.too_many_steps",
                    "steps",
                    f"a funnel needs {MIN_STEPS} to {MAX_STEPS} steps, got {n}",
                )
            )
        if not timedelta(0) <= self.window <= MAX_WINDOW:
            p.append(
                Problem(
                    "funnel.window_out_of_range",
                    "window",
                    f"the window must be between 0 seconds and {MAX_WINDOW.days} days, "
                    f"got {self.window}",
                )
            )
        for name, allowed in (
            ("mode", MODES),
            ("counting", COUNTINGS),
            ("attribution", ATTRIBUTIONS),
            ("trend_period", PERIODS),
        ):
            if getattr(self, name) not in allowed:
                p.append(
                    Problem(
                        f"funnel.unknown_{name}",
                        name,
                        f"unknown {name} {getattr(self, name)!r}; allowed: {', '.join(allowed)}",
                    )
                )
        for i, step in enumerate(self.steps):
            loc = f"steps[{i}]"
            if (step.event is None) == (step.of_stage is None):
                p.append(
                    Problem(
                        "funnel.bad_step",
                        loc,
                        "a step needs exactly one of an event name or a stage",
                    )
                )
            for j, f in enumerate(step.filters):
                p.extend(f.problems(f"{loc}.filters[{j}]"))
            if step.within is not None:
                if i == 0:
                    p.append(
                        Problem(
                            "funnel.step_window_on_first_step",
                            f"{loc}.within",
                            "the first step has no previous step to be within",
                        )
                    )
                elif not timedelta(0) <= step.within <= self.window:
                    p.append(
                        Problem(
                            "funnel.step_window_out_of_range",
                            f"{loc}.within",
                            f"a step limit must be between 0 and the window "
                            f"({self.window}), got {step.within}",
                        )
                    )
            if step.is_optional and i in (0, n - 1):
                p.append(
                    Problem(
                        "funnel.optional_end_step",
                        f"{loc}.optional",
                        f"only steps 2 to {max(n - 1, 2)} may be optional: the first "
                        "and last steps define the funnel",
                    )
                )
        for j, x in enumerate(self.exclusions):
            loc = f"exclusions[{j}]"
            to = n if x.to_step is None else x.to_step
            if not 1 <= x.from_step < to <= n:
                p.append(
                    Problem(
                        "funnel.exclusion_out_of_range",
                        loc,
                        f"an exclusion needs 1 <= from_step < to_step <= {n}, got "
                        f"{x.from_step}..{to}",
                    )
                )
            elif self.steps[x.from_step - 1].is_optional or self.steps[to - 1].is_optional:
                p.append(
                    Problem(
                        "funnel.exclusion_on_optional_step",
                        loc,
                        "an exclusion must start and end at required steps",
                    )
                )
            for k, f in enumerate(x.filters):
                p.extend(f.problems(f"{loc}.filters[{k}]"))
        for k, f in enumerate(self.filters):
            p.extend(f.problems(f"filters[{k}]"))
        if self.count_by not in UNITS:
            _check_property(self.count_by, "count_by", p)
        for k, name in enumerate(self.hold_constant):
            _check_property(name, f"hold_constant[{k}]", p)
        if len(self.hold_constant) > MAX_HOLD_CONSTANT:
            p.append(
                Problem(
                    "funnel.too_many_hold_constant",
                    "hold_constant",
                    f"hold at most {MAX_HOLD_CONSTANT} properties constant",
                )
            )
        for k, name in enumerate(self.breakdowns):
            _check_property(name, f"breakdowns[{k}]", p)
        if len(self.breakdowns) > MAX_BREAKDOWNS:
            p.append(
                Problem(
                    "funnel.too_many_breakdowns",
                    "breakdowns",
                    f"break down by at most {MAX_BREAKDOWNS} properties",
                )
            )
        if self.attribution == "step" and (
            self.attribution_step is None or not 1 <= self.attribution_step <= n
        ):
            p.append(
                Problem(
                    "funnel.attribution_step_out_of_range",
                    "attribution_step",
                    f"step attribution needs attribution_step in 1..{n}",
                )
            )
        if self.start_at and self.end_at and self.start_at >= self.end_at:
            p.append(
                Problem("funnel.date_range_reversed", "end_at", "end_at must be after start_at")
            )
        for name in ("start_at", "end_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                p.append(
                    Problem(
                        "funnel.naive_datetime",
                        name,
                        "give a timezone-aware instant (UTC recommended)",
                    )
                )
        p.extend(self._mode_conflicts())
        return p

    def _mode_conflicts(self) -> list[Problem]:
        p: list[Problem] = []

        def conflict(option: str, why: str) -> None:
            p.append(Problem("funnel.mode_conflict", option, why))

        if self.mode == "any":
            if self.exclusions:
                conflict("exclusions", "exclusions need step order: use mode ordered or strict")
            if any(s.is_optional for s in self.steps):
                conflict("steps", "optional steps need step order: use mode ordered or strict")
            if any(s.within is not None for s in self.steps):
                conflict("steps", "per-step limits need step order: use ordered or strict")
            if self.is_open:
                conflict("is_open", "an any-order funnel is already open")
        if self.counting == "totals" and self.mode != "ordered":
            conflict("counting", "totals (re-entry) are defined for mode ordered only")
        if self.is_open and self.mode == "strict":
            conflict("is_open", "open funnels are defined for mode ordered only")
        if self.is_open and self.counting == "totals":
            conflict("is_open", "open funnels count uniques only")
        if self.is_open and self.hold_constant:
            conflict("is_open", "open funnels cannot hold properties constant")
        return p


def _parse_instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def stage_funnel_spec(model: StageModel = DEFAULT_STAGE_MODEL, **options: Any) -> FunnelSpec:
    """Awareness -> Interest -> Decision -> Action -> Retention as an ordered funnel.

    A step is any event of the stage; with ``repeat_order_is_retention`` an order after the
    person's first is a Retention event (not an Action event).

    >>> [s.name for s in stage_funnel_spec().steps]
    ['Awareness', 'Interest', 'Decision', 'Action', 'Retention']
    """
    return FunnelSpec(steps=tuple(Step.stage(s) for s in Stage), stage_model=model, **options)


def run(spec: FunnelSpec, engine: Any) -> FunnelResult:
    """Run ``spec`` on an engine (:class:`~funnelscope.engines.embedded.EmbeddedEngine` or
    :class:`~funnelscope.engines.spark.SparkEngine`): the same kernels, the same result.

    Examples
    --------
    >>> import funnelscope
    >>> ws = funnelscope.open(":memory:")
    >>> run(FunnelSpec.of("page_viewed", "order_completed"), ws.engine).steps[0].count
    0
    """
    from functools import partial

    from funnelscope.analysis.funnel_plan import compute_arrays, outcome_schema
    from funnelscope.analysis.funnel_result import build_result

    outcomes = engine.map_person_partitions(
        partial(compute_arrays, spec),
        columns=spec.columns,
        schema=outcome_schema(spec),
        partition_by=_partition_key(spec),
        to_arrow_args=(spec,),
    )
    return build_result(spec, outcomes, engine=engine.name, events_of=engine.events_of_person)


def run_layout(spec: FunnelSpec, layout: Any) -> FunnelResult:
    """Run ``spec`` directly on a :class:`~funnelscope.store.layout.PersonLayout` (benchmarks,
    notebooks holding arrays): what the embedded engine does after refreshing its layout.

    Examples
    --------
    >>> import numpy as np
    >>> from funnelscope.store.layout import PersonLayout
    >>> lay = PersonLayout.from_arrays(np.array([0, 0]), np.array([0, 60_000_000]),
    ...                                np.array([0, 1]), ["page_viewed", "order_completed"])
    >>> run_layout(FunnelSpec.of("page_viewed", "order_completed"), lay).counts
    (1, 1)
    """
    from funnelscope.analysis.funnel_plan import compute_arrays
    from funnelscope.analysis.funnel_result import build_result

    return build_result(spec, compute_arrays(spec, layout), engine="embedded")


def run_many(specs: Sequence[FunnelSpec], engine: Any) -> list[FunnelResult]:
    """Run several funnels in one pass over the data (one Spark job per partition key instead
    of one per funnel): dashboards and test suites.

    Examples
    --------
    >>> import funnelscope
    >>> ws = funnelscope.open(":memory:")
    >>> specs = [FunnelSpec.of("page_viewed", "order_completed"),
    ...          FunnelSpec.of("page_viewed", "order_completed", mode="strict")]
    >>> [r.spec.mode for r in run_many(specs, ws.engine)]
    ['ordered', 'strict']
    """
    from functools import partial

    from funnelscope.analysis.funnel_plan import PACKED_SCHEMA, compute_packed, unpack
    from funnelscope.analysis.funnel_result import build_result

    results: dict[int, FunnelResult] = {}
    by_key: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_key.setdefault(_partition_key(spec), []).append(i)
    for key, indexes in by_key.items():
        group = tuple(specs[i] for i in indexes)
        columns = tuple(dict.fromkeys(c for spec in group for c in spec.columns))
        packed = engine.map_person_partitions(
            partial(compute_packed, group),
            columns=columns,
            schema=PACKED_SCHEMA,
            partition_by=key,
        )
        for j, outcomes in enumerate(unpack(group, packed)):
            results[indexes[j]] = build_result(
                group[j], outcomes, engine=engine.name, events_of=engine.events_of_person
            )
    return [results[i] for i in range(len(specs))]


def _partition_key(spec: FunnelSpec) -> str:
    """Units never span partitions: persons and sessions live in one person; a key may not."""
    return "person_id" if spec.count_by in UNITS else spec.count_by


def steps_from_names(names: Sequence[str]) -> tuple[Step, ...]:
    """CLI helper: ``stage:decision`` is a stage step, anything else an event name."""
    return tuple(Step.from_value(n) for n in names)
