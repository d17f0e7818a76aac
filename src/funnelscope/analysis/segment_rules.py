"""The rule-segment language: a small, safe language for "who did what, when".

A segment is a name and a rule tree (docs/customers.md, "Rule language"). Written as JSON or
YAML::

    name: cart_abandoners
    rule:
      all:
        - event: product_added
          within: 7d
        - no_event_since: {event: order_completed, since: product_added}

or with the Python builders (re-exported by :mod:`funnelscope.analysis.segments`):
``all_of(did("product_added", within="7d"),
no_event_since("order_completed", since="product_added"))``.

Nodes:

* ``event``: the person did ``event`` (canonical name) in the last ``within`` (default: ever),
  matching every ``where`` filter, a number of times satisfying ``count`` (default ``>= 1``);
* ``no_event_since``: the person did ``since`` at least once, and no ``event`` strictly after
  their last ``since``;
* ``property``: a customer-table column (analysis/customers.py) compared with a value; a person
  whose property is missing (no NPS answer...) never matches;
* ``all`` / ``any`` / ``not``: and, or, not.

Operators: ``eq ne gt gte lt lte in not_in contains exists``. Validation reports every problem
with a dotted code and the field path (``rule.all[1].where[0].op``). Rules compile to SQL in
which every identifier comes from a fixed table in this module and every value is a bound
parameter; nothing is ever evaluated as code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Union

import yaml

from funnelscope.errors import InvalidSpecError, Problem

__all__ = [
    "OPERATORS",
    "AllRule",
    "AnyRule",
    "EventRule",
    "Filter",
    "NoEventSinceRule",
    "NotRule",
    "PropertyRule",
    "Rule",
    "SegmentSpec",
    "all_of",
    "any_of",
    "compile_segment",
    "did",
    "load_segment",
    "no_event_since",
    "not_",
    "parse_segment",
    "prop",
    "where",
]

OPERATORS: Final = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "exists")
_ORDER_OPS: Final = ("gt", "gte", "lt", "lte")
_SQL_OP: Final = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_DEPTH: Final = 16
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_WINDOW = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_JSON_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")

# Event fields usable in ``where``: name -> (kind, trusted SQL over the alias ``e``).
_EVENT_FIELDS: Final[dict[str, tuple[str, str]]] = {
    **{
        c: ("text", f"e.{c}")
        for c in (
            "channel",
            "device_type",
            "os",
            "browser",
            "country",
            "page_path",
            "page_url",
            "page_title",
            "referrer",
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "utm_term",
            "utm_content",
            "product_id",
            "order_id",
            "cart_id",
            "session_id",
            "source",
            "currency",
        )
    },
    "revenue": ("number", "CAST(e.revenue AS DOUBLE)"),
    "category": (
        "list",
        "list_concat(coalesce(list_transform(e.items, lambda i: i.category), []), "
        "[json_extract_string(e.properties, '$.category'), "
        "(SELECT min(p.category) FROM products p WHERE p.product_id = e.product_id)])",
    ),
}
# Customer-table columns usable in ``property`` rules: name -> kind.
_PROPERTIES: Final[dict[str, str]] = {
    **{
        c: "number"
        for c in (
            "orders",
            "revenue",
            "refunds",
            "net_revenue",
            "average_order_value",
            "recency_days",
            "tenure_days",
            "email_opens",
            "email_clicks",
            "nps",
            "unconverted_orders",
        )
    },
    **{
        c: "text"
        for c in (
            "user_id",
            "acquisition_channel",
            "acquisition_source",
            "acquisition_campaign",
            "stage",
            "main_device",
            "country",
            "nps_group",
        )
    },
    **{c: "time" for c in ("first_seen_at", "last_seen_at", "first_order_at", "last_order_at")},
    "top_categories": "list",
}


# -- the spec tree ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filter:
    """``field op value`` on an event (``where``) or a count (``field == "count"``)."""

    field: str
    op: str
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "value": _plain(self.value)}


@dataclass(frozen=True, slots=True)
class EventRule:
    event: str
    within: timedelta | None = None
    count: Filter = Filter("count", "gte", 1)
    where: tuple[Filter, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event}
        if self.within is not None:
            out["within"] = _format_window(self.within)
        if self.count != Filter("count", "gte", 1):
            out["count"] = {"op": self.count.op, "value": self.count.value}
        if self.where:
            out["where"] = [f.to_dict() for f in self.where]
        return out


@dataclass(frozen=True, slots=True)
class NoEventSinceRule:
    event: str
    since: str

    def to_dict(self) -> dict[str, Any]:
        return {"no_event_since": {"event": self.event, "since": self.since}}


@dataclass(frozen=True, slots=True)
class PropertyRule:
    property: str
    op: str
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"property": self.property, "op": self.op, "value": _plain(self.value)}


@dataclass(frozen=True, slots=True)
class AllRule:
    rules: tuple[Rule, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"all": [r.to_dict() for r in self.rules]}


@dataclass(frozen=True, slots=True)
class AnyRule:
    rules: tuple[Rule, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"any": [r.to_dict() for r in self.rules]}


@dataclass(frozen=True, slots=True)
class NotRule:
    rule: Rule

    def to_dict(self) -> dict[str, Any]:
        return {"not": self.rule.to_dict()}


Rule = Union[EventRule, NoEventSinceRule, PropertyRule, AllRule, AnyRule, NotRule]  # noqa: UP007


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    """A named rule. Build with :func:`parse_segment` (validates) or the builders.

    Examples
    --------
    >>> spec = SegmentSpec("repeat_detractors", all_of(
    ...     prop("nps_group", "eq", "detractor"), prop("orders", "gte", 2)))
    >>> spec.to_dict()["rule"]["all"][1]
    {'property': 'orders', 'op': 'gte', 'value': 2}
    """

    name: str
    rule: Rule
    description: str = ""

    def __post_init__(self) -> None:
        # builders skip parsing: validate the round-trip form so both paths agree
        parse_segment(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "rule": self.rule.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def uses_properties(self) -> bool:
        return _uses_properties(self.rule)


def _uses_properties(rule: Rule) -> bool:
    if isinstance(rule, PropertyRule):
        return True
    if isinstance(rule, AllRule | AnyRule):
        return any(_uses_properties(r) for r in rule.rules)
    if isinstance(rule, NotRule):
        return _uses_properties(rule.rule)
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _format_window(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


# -- builders -----------------------------------------------------------------------------------


def where(field_name: str, op: str, value: Any = None) -> Filter:
    """An event filter for :func:`did`: ``where("category", "eq", "running")``."""
    return Filter(field_name, op, value)


def did(
    event: str,
    *,
    within: str | timedelta | None = None,
    count: tuple[str, int] = ("gte", 1),
    where: Sequence[Filter] = (),
) -> EventRule:
    """The person did ``event`` (``count`` times, in the last ``within``, matching ``where``).

    Examples
    --------
    >>> did("product_viewed", within="30d", count=("gte", 3),
    ...     where=[Filter("category", "eq", "running")]).to_dict()["count"]
    {'op': 'gte', 'value': 3}
    """
    problems: list[Problem] = []
    window = None if within is None else _parse_window(within, "within", problems)
    if problems:
        raise InvalidSpecError(problems)
    return EventRule(event, window, Filter("count", count[0], count[1]), tuple(where))


def no_event_since(event: str, *, since: str) -> NoEventSinceRule:
    """The person did ``since``, and no ``event`` after their last ``since``."""
    return NoEventSinceRule(event, since)


def prop(name: str, op: str, value: Any = None) -> PropertyRule:
    """A customer-table property compared with ``value``: ``prop("orders", "gte", 2)``."""
    return PropertyRule(name, op, value)


def all_of(*rules: Rule) -> AllRule:
    return AllRule(tuple(rules))


def any_of(*rules: Rule) -> AnyRule:
    return AnyRule(tuple(rules))


def not_(rule: Rule) -> NotRule:
    return NotRule(rule)


# -- parsing and validation ---------------------------------------------------------------------


def load_segment(text: str) -> SegmentSpec:
    """Parse a segment written in YAML or JSON (JSON is YAML)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpecError(
            [Problem("segment.bad_yaml", "", f"not valid YAML or JSON: {exc}")]
        ) from exc
    if not isinstance(data, Mapping):
        raise InvalidSpecError(
            [Problem("segment.not_a_mapping", "", "a segment is a mapping with name and rule")]
        )
    return parse_segment(data)


def parse_segment(data: Mapping[str, Any]) -> SegmentSpec:
    """Validate a segment's JSON form and build its frozen spec; raise with every problem.

    Examples
    --------
    >>> parse_segment({"name": "x", "rule": {"event": "order_completed", "within": "9y"}})
    Traceback (most recent call last):
    ...
    funnelscope.errors.InvalidSpecError: rule.within: ...
    """
    problems: list[Problem] = []
    for key in data:
        if key not in ("name", "description", "rule"):
            problems.append(
                Problem("segment.unknown_key", str(key), "allowed keys: name, description, rule")
            )
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            Problem(
                "segment.bad_name",
                "name",
                "name must be 1-64 characters: lower-case letters, digits, '_' or '-'",
            )
        )
    description = data.get("description", "") or ""
    if not isinstance(description, str):
        problems.append(Problem("segment.bad_description", "description", "must be text"))
    rule = None
    if "rule" not in data:
        problems.append(Problem("segment.missing_rule", "rule", "a rule is required"))
    else:
        rule = _parse_rule(data["rule"], "rule", problems, 1)
    if problems or rule is None:
        raise InvalidSpecError(problems)
    spec = object.__new__(SegmentSpec)  # skip __post_init__: already validated
    object.__setattr__(spec, "name", name)
    object.__setattr__(spec, "rule", rule)
    object.__setattr__(spec, "description", description)
    return spec


_NODE_KEYS: Final = {
    "event": ("event", "within", "count", "where"),
    "no_event_since": ("no_event_since",),
    "property": ("property", "op", "value"),
    "all": ("all",),
    "any": ("any",),
    "not": ("not",),
}


def _parse_rule(node: Any, path: str, problems: list[Problem], depth: int) -> Rule | None:
    if depth > MAX_DEPTH:
        problems.append(
            Problem("segment.too_deep", path, f"rules nest at most {MAX_DEPTH} levels deep")
        )
        return None
    if not isinstance(node, Mapping):
        problems.append(Problem("segment.bad_node", path, "a rule is a mapping"))
        return None
    kinds = [k for k in _NODE_KEYS if k in node]
    if len(kinds) != 1:
        problems.append(
            Problem(
                "segment.bad_node",
                path,
                "a rule has exactly one of the keys: "
                + ", ".join(_NODE_KEYS)
                + (f" (found {', '.join(kinds)})" if kinds else ""),
            )
        )
        return None
    kind = kinds[0]
    for key in node:
        if key not in _NODE_KEYS[kind]:
            problems.append(
                Problem(
                    "segment.unknown_key",
                    f"{path}.{key}",
                    f"a {kind} rule allows: {', '.join(_NODE_KEYS[kind])}",
                )
            )
    if kind in ("all", "any"):
        children = node[kind]
        if not isinstance(children, list) or not children:
            problems.append(
                Problem("segment.empty_group", f"{path}.{kind}", "must be a non-empty list")
            )
            return None
        parsed = [
            _parse_rule(c, f"{path}.{kind}[{i}]", problems, depth + 1)
            for i, c in enumerate(children)
        ]
        if any(p is None for p in parsed):
            return None
        rules = tuple(p for p in parsed if p is not None)
        return AllRule(rules) if kind == "all" else AnyRule(rules)
    if kind == "not":
        inner = _parse_rule(node["not"], f"{path}.not", problems, depth + 1)
        return None if inner is None else NotRule(inner)
    if kind == "property":
        return _parse_property(node, path, problems)
    if kind == "no_event_since":
        return _parse_no_event_since(node["no_event_since"], f"{path}.no_event_since", problems)
    return _parse_event(node, path, problems)


def _event_name(value: Any, path: str, problems: list[Problem]) -> str | None:
    if not isinstance(value, str) or not value.strip():
        problems.append(Problem("segment.bad_event", path, "an event name (text) is required"))
        return None
    from funnelscope.events.vocabulary import canonical_event

    return canonical_event(value)


def _parse_window(value: Any, path: str, problems: list[Problem]) -> timedelta | None:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        match = _WINDOW.match(value) if isinstance(value, str) else None
        if match is None:
            problems.append(
                Problem(
                    "segment.bad_window",
                    path,
                    "a window is a whole number and a unit s, m, h, d or w (7d, 12h, 2w)",
                )
            )
            return None
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= 10 * 366 * 86400:
        problems.append(
            Problem("segment.bad_window", path, "a window must be > 0 and at most 10 years")
        )
        return None
    return timedelta(seconds=seconds)


def _parse_event(node: Mapping[str, Any], path: str, problems: list[Problem]) -> EventRule | None:
    event = _event_name(node["event"], f"{path}.event", problems)
    window = None
    if node.get("within") is not None:
        window = _parse_window(node["within"], f"{path}.within", problems)
    count = Filter("count", "gte", 1)
    if "count" in node:
        raw = node["count"]
        cpath = f"{path}.count"
        if not isinstance(raw, Mapping) or set(raw) != {"op", "value"}:
            problems.append(Problem("segment.bad_count", cpath, "count is {op: ..., value: n}"))
        elif raw["op"] not in (*_SQL_OP, "in", "not_in"):
            problems.append(
                Problem(
                    "segment.unknown_operator",
                    f"{cpath}.op",
                    "count operators: eq, ne, gt, gte, lt, lte, in, not_in",
                )
            )
        else:
            values = raw["value"] if raw["op"] in ("in", "not_in") else [raw["value"]]
            if (
                not isinstance(values, list)
                or not values
                or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
                )
            ):
                problems.append(
                    Problem("segment.bad_count", f"{cpath}.value", "counts are whole numbers >= 0")
                )
            else:
                value = tuple(values) if raw["op"] in ("in", "not_in") else values[0]
                count = Filter("count", str(raw["op"]), value)
    filters: list[Filter] = []
    raw_where = node.get("where", [])
    if not isinstance(raw_where, list):
        problems.append(Problem("segment.bad_where", f"{path}.where", "where is a list of filters"))
        raw_where = []
    for i, item in enumerate(raw_where):
        wpath = f"{path}.where[{i}]"
        if (
            not isinstance(item, Mapping)
            or not {"field", "op"} <= set(item)
            or set(item) - {"field", "op", "value"}
        ):
            problems.append(Problem("segment.bad_where", wpath, "a filter is {field, op, value}"))
            continue
        kind = _event_field_kind(item["field"], f"{wpath}.field", problems)
        parsed = _check_comparison(kind, item["op"], item.get("value"), wpath, problems)
        if parsed is not None:
            filters.append(Filter(str(item["field"]), str(item["op"]), parsed))
    if event is None:
        return None
    return EventRule(event, window, count, tuple(filters))


def _parse_no_event_since(raw: Any, path: str, problems: list[Problem]) -> NoEventSinceRule | None:
    if not isinstance(raw, Mapping) or set(raw) != {"event", "since"}:
        problems.append(
            Problem("segment.bad_node", path, "no_event_since is {event: ..., since: ...}")
        )
        return None
    event = _event_name(raw["event"], f"{path}.event", problems)
    since = _event_name(raw["since"], f"{path}.since", problems)
    if event is None or since is None:
        return None
    return NoEventSinceRule(event, since)


def _parse_property(
    node: Mapping[str, Any], path: str, problems: list[Problem]
) -> PropertyRule | None:
    name = node["property"]
    kind = _PROPERTIES.get(name) if isinstance(name, str) else None
    if kind is None:
        problems.append(
            Problem(
                "segment.unknown_property",
                f"{path}.property",
                "properties: " + ", ".join(sorted(_PROPERTIES)),
            )
        )
    if "op" not in node:
        problems.append(Problem("segment.missing_operator", f"{path}.op", "op is required"))
        return None
    value = _check_comparison(kind, node["op"], node.get("value"), path, problems)
    if kind is None or value is None:
        return None
    return PropertyRule(name, str(node["op"]), value)


def _event_field_kind(name: Any, path: str, problems: list[Problem]) -> str | None:
    if isinstance(name, str) and name.startswith("properties."):
        if _JSON_KEY.match(name.removeprefix("properties.")):
            return "json"
        problems.append(
            Problem("segment.bad_field", path, "properties.<key>: key of letters, digits and _")
        )
        return None
    if isinstance(name, str) and name in _EVENT_FIELDS:
        return _EVENT_FIELDS[name][0]
    problems.append(
        Problem(
            "segment.unknown_field",
            path,
            "event fields: " + ", ".join(sorted(_EVENT_FIELDS)) + ", properties.<key>",
        )
    )
    return None


_MISSING: Final = object()


def _check_comparison(
    kind: str | None, op: Any, value: Any, path: str, problems: list[Problem]
) -> Any:
    """The validated value (datetimes parsed, lists as tuples), or None after a problem."""
    if op not in OPERATORS:
        problems.append(
            Problem("segment.unknown_operator", f"{path}.op", "operators: " + ", ".join(OPERATORS))
        )
        return None
    vpath = f"{path}.value"
    if op == "exists":
        if not isinstance(value, bool):
            problems.append(Problem("segment.bad_value", vpath, "exists takes true or false"))
            return None
        return value
    if kind is None:
        return None
    allowed = {
        "number": ("eq", "ne", *_ORDER_OPS, "in", "not_in"),
        "time": ("eq", "ne", *_ORDER_OPS),
        "text": ("eq", "ne", "in", "not_in", "contains"),
        "list": ("eq", "ne", "in", "not_in", "contains"),
        "json": ("eq", "ne", *_ORDER_OPS, "in", "not_in", "contains"),
    }[kind]
    if op not in allowed:
        problems.append(
            Problem(
                "segment.bad_operator",
                f"{path}.op",
                f"a {kind} field takes the operators: {', '.join(allowed)}",
            )
        )
        return None
    items = value if op in ("in", "not_in") else [value]
    if op in ("in", "not_in") and (not isinstance(value, list) or not value):
        problems.append(Problem("segment.bad_value", vpath, f"{op} takes a non-empty list"))
        return None
    out = []
    for item in items:
        ok = _value_ok(kind, op, item)
        if ok is _MISSING:
            expected = {
                "number": "a number",
                "time": "an ISO 8601 time with a time zone",
                "text": "text",
                "list": "text",
                "json": "text or a number" if op not in _ORDER_OPS else "a number",
            }[kind]
            problems.append(Problem("segment.bad_value", vpath, f"the value must be {expected}"))
            return None
        out.append(ok)
    return tuple(out) if op in ("in", "not_in") else out[0]


def _value_ok(kind: str, op: str, value: Any) -> Any:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "number" or (kind == "json" and op in _ORDER_OPS):
        return float(value) if is_number else _MISSING
    if kind == "time":
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return _MISSING
        else:
            return _MISSING
        return parsed if parsed.tzinfo is not None else _MISSING
    if kind == "json":
        return value if isinstance(value, str) or is_number else _MISSING
    return value if isinstance(value, str) else _MISSING


# -- compiling to SQL ---------------------------------------------------------------------------


@dataclass
class _Compiler:
    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = list(value) if isinstance(value, tuple) else value
        return f"${name}"

    def rule(self, rule: Rule) -> str:
        if isinstance(rule, AllRule):
            return "(" + " AND ".join(self.rule(r) for r in rule.rules) + ")"
        if isinstance(rule, AnyRule):
            return "(" + " OR ".join(self.rule(r) for r in rule.rules) + ")"
        if isinstance(rule, NotRule):
            return f"(NOT {self.rule(rule.rule)})"
        if isinstance(rule, PropertyRule):
            return self.compare(
                _PROPERTIES[rule.property], f"c.{rule.property}", rule.op, rule.value
            )
        if isinstance(rule, NoEventSinceRule):
            since = self.bind(rule.since)
            event = self.bind(rule.event)
            last = (
                f'(SELECT max(a."timestamp") FROM events a WHERE a.person_id = c.person_id '
                f'AND a.event = {since} AND a."timestamp" <= $now)'
            )
            return (
                f"({last} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events b "
                f"WHERE b.person_id = c.person_id AND b.event = {event} "
                f'AND b."timestamp" <= $now AND b."timestamp" > {last}))'
            )
        conditions = [
            "e.person_id = c.person_id",
            f"e.event = {self.bind(rule.event)}",
            'e."timestamp" <= $now',
        ]
        if rule.within is not None:
            conditions.append(f'e."timestamp" > $now - {self.bind(rule.within)}')
        for f in rule.where:
            if f.field.startswith("properties."):
                path = self.bind("$." + f.field.removeprefix("properties."))
                expr = f"json_extract_string(e.properties, {path})"
                conditions.append(self.compare("json", expr, f.op, f.value))
            else:
                kind, expr = _EVENT_FIELDS[f.field]
                conditions.append(self.compare(kind, expr, f.op, f.value))
        count = f"(SELECT count(*) FROM events e WHERE {' AND '.join(conditions)})"
        return self.compare("number", count, rule.count.op, rule.count.value)

    def compare(self, kind: str, expr: str, op: str, value: Any) -> str:
        """A two-valued comparison: NULL (missing) never matches."""
        if op == "exists":
            test = (
                f"{expr} IS NOT NULL"
                if kind != "list"
                else f"len(list_filter({expr}, lambda v: v IS NOT NULL)) > 0"
            )
            return f"({test})" if value else f"(NOT ({test}))"
        if kind == "list":
            if op == "contains":
                test = f"len(list_filter({expr}, lambda v: contains(v, {self.bind(value)}))) > 0"
            elif op in ("eq", "ne"):
                test = f"list_contains({expr}, {self.bind(value)})"
            else:
                test = f"list_has_any({expr}, {self.bind(value)})"
            if op in ("ne", "not_in"):
                test = f"NOT coalesce({test}, FALSE)"
            return f"coalesce({test}, FALSE)"
        if kind == "json" and (
            op in _ORDER_OPS
            or isinstance(value, float | int)
            or (isinstance(value, tuple) and all(isinstance(v, float | int) for v in value))
        ):
            expr = f"TRY_CAST({expr} AS DOUBLE)"
        if op == "contains":
            test = f"contains({expr}, {self.bind(str(value))})"
        elif op in ("in", "not_in"):
            test = f"list_contains({self.bind(value)}, {expr})"
            if op == "not_in":
                test = f"NOT {test}"
        else:
            test = f"{expr} {_SQL_OP[op]} {self.bind(value)}"
        return f"coalesce({test}, FALSE)"


def compile_segment(
    spec: SegmentSpec, customers_sql: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The SQL selecting the segment's ``person_id`` s, and its parameters (``$now`` excluded).

    ``customers_sql`` is the customer-table query (needed when the rule uses properties).
    """
    compiler = _Compiler()
    condition = compiler.rule(spec.rule)
    if spec.uses_properties:
        if customers_sql is None:
            raise ValueError("a rule with properties needs the customer-table SQL")
        universe = f"({customers_sql})"
    else:
        universe = '(SELECT DISTINCT person_id FROM events WHERE "timestamp" <= $now)'
    return f"SELECT c.person_id FROM {universe} c WHERE {condition} ORDER BY 1", compiler.params
