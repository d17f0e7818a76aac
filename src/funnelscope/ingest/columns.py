"""Column plans: which file or frame column fills which staging column.

Names are matched after snake_casing (``userId`` -> ``user_id``): the canonical name first, then
its aliases (:data:`COLUMN_ALIASES`); PostHog's ``distinct_id`` fills whichever identity column
is left open. The same columns tell an events file from a facts file (:func:`detect_kind`).
docs/import.md lists the accepted names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from funnelscope.errors import InvalidEventError, Problem
from funnelscope.events.schema import STAGING_COLUMNS

__all__ = [
    "COLUMN_ALIASES",
    "REQUIRED_COLUMNS",
    "column_plan",
    "detect_kind",
    "snake",
    "unreadable",
]

REQUIRED_COLUMNS: Final = ("event_id", "timestamp", "event")
#: Other accepted names of canonical columns, after names are snake_cased (``userId`` ->
#: ``user_id``). A canonical name present in the file always wins over its aliases.
COLUMN_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "event_id": ("id", "message_id", "uuid", "eid", "event_uuid", "insert_id"),
    "timestamp": ("ts", "time", "event_time", "event_timestamp", "occurred_at", "datetime"),
    "event": ("event_name", "name", "event_type"),
    "user_id": ("customer_id", "userid"),
    "anonymous_id": ("anon_id", "anonymousid", "visitor_id"),
    "previous_id": ("previousid",),
    "session_id": ("session",),
    "page_url": ("url",),
    "page_path": ("path",),
    "page_title": ("title",),
    "referrer": ("referer", "page_referrer"),
    "currency": ("currency_code",),
    "device_type": ("device",),
    "os": ("operating_system",),
    "country": ("country_code",),
}
#: The columns that make a file or frame one of facts (unless it also has event_id and event).
_FACT_COLUMNS: Final[dict[str, frozenset[str]]] = {
    "ad_spend": frozenset({"date", "channel", "spend"}),
    "currency_rates": frozenset({"date", "currency", "rate"}),
    "email_campaigns": frozenset({"campaign_id", "sent_at"}),
    "survey_responses": frozenset({"response_id", "score"}),
    "products": frozenset({"product_id", "price"}),
}


def unreadable(path: object, message: str) -> InvalidEventError:
    """The error of a file that cannot be read at all (``file.unreadable``)."""
    return InvalidEventError([Problem("file.unreadable", str(path), message)])


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s.\-/]+")


def snake(name: str) -> str:
    """``userId`` / ``User ID`` / ``user-id`` -> ``user_id`` (a BOM and ``$`` are dropped)."""
    text = _CAMEL.sub("_", name.strip().lstrip("\ufeff$"))
    return _SEPARATORS.sub("_", text).lower()


def column_plan(names: Sequence[str], where: str) -> dict[str, str]:
    """Map file columns to staging columns: ``{staging name: file name}``.

    Raises ``file.missing_columns`` (no event_id/timestamp/event, or no identity column) and
    ``file.ambiguous_columns`` (two columns that would fill the same canonical column).
    """
    by_snake: dict[str, str] = {}
    problems: list[Problem] = []
    for name in names:
        key = snake(name)
        if key in by_snake:
            problems.append(
                Problem(
                    "file.ambiguous_columns",
                    where,
                    f"columns {by_snake[key]!r} and {name!r} mean the same column; keep one",
                )
            )
        by_snake.setdefault(key, name)
    plan: dict[str, str] = {}
    for target in STAGING_COLUMNS:
        if target in by_snake:
            plan[target] = by_snake[target]
            continue
        hits = [a for a in COLUMN_ALIASES.get(target, ()) if a in by_snake]
        if len(hits) > 1:
            problems.append(
                Problem(
                    "file.ambiguous_columns",
                    where,
                    f"columns {', '.join(by_snake[h] for h in hits)} could each be {target}; "
                    f"rename the one to use to {target!r}",
                )
            )
        elif hits:
            plan[target] = by_snake[hits[0]]
    if "distinct_id" in by_snake:
        # PostHog's distinct_id is whichever id the other columns leave open; with neither it
        # is taken as anonymous, so a later identify can still link it to a user.
        if "anonymous_id" not in plan:
            plan["anonymous_id"] = by_snake["distinct_id"]
        elif "user_id" not in plan:
            plan["user_id"] = by_snake["distinct_id"]
    missing = [c for c in REQUIRED_COLUMNS if c not in plan]
    if "user_id" not in plan and "anonymous_id" not in plan:
        missing.append("user_id or anonymous_id")
    if missing:
        found = ", ".join(names) if names else "none"
        problems.append(
            Problem(
                "file.missing_columns",
                where,
                f"missing required column(s) {', '.join(missing)} (columns found: {found}); "
                "see docs/import.md for accepted names",
            )
        )
    if problems:
        raise InvalidEventError(problems)
    return plan


def detect_kind(names: Sequence[str]) -> str:
    """``events``, or the fact kind whose columns ``names`` has (:data:`_FACT_COLUMNS`)."""
    keys = {snake(n) for n in names}
    for kind, needed in _FACT_COLUMNS.items():
        if needed <= keys and not {"event_id", "event"} <= keys:
            return kind
    return "events"
