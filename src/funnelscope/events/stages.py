"""The stage model: which events mark Awareness, Interest, Decision, Action and Retention.

The default mapping follows the journey of docs/data-model.md ("Stages"). A shop overrides it
with a TOML file::

    [stages]
    awareness = ["ad_impression", "social_impression", "social_engaged"]
    interest = ["page_viewed", "product_viewed", "products_searched", "email_opened"]
    decision = ["product_added", "checkout_started"]
    action = ["order_completed"]
    retention = ["nps_answered", "referral_sent", "product_reviewed"]

    [options]
    repeat_order_is_retention = true   # an order after the person's first is a Retention event

Event names are normalised with the vocabulary, so ``"Order Completed"`` or GA4's ``purchase``
may be written too. An event in no stage is simply not a stage event.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Final

from funnelscope.errors import InvalidSpecError, Problem
from funnelscope.events.vocabulary import canonical_event

__all__ = ["DEFAULT_STAGE_MODEL", "STAGES", "Stage", "StageModel"]


class Stage(IntEnum):
    """The five stages of the customer journey, in order."""

    AWARENESS = 1
    INTEREST = 2
    DECISION = 3
    ACTION = 4
    RETENTION = 5

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @classmethod
    def parse(cls, name: str) -> Stage:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            allowed = ", ".join(s.name.lower() for s in cls)
            raise InvalidSpecError(
                [Problem("stage.unknown", "stage", f"unknown stage {name!r}; allowed: {allowed}")]
            ) from None


STAGES: Final = tuple(Stage)

#: The event that makes a repeat order a Retention event.
ORDER_EVENT: Final = "order_completed"


@dataclass(frozen=True)
class StageModel:
    """Canonical event name -> stage, plus the repeat-order rule.

    Examples
    --------
    >>> DEFAULT_STAGE_MODEL.stage_of("Product Added")
    <Stage.DECISION: 3>
    >>> DEFAULT_STAGE_MODEL.events_of(Stage.ACTION)
    ('order_completed',)
    """

    events: Mapping[str, Stage] = field(default_factory=dict)
    repeat_order_is_retention: bool = True

    def stage_of(self, event: str) -> Stage | None:
        return self.events.get(canonical_event(event))

    def events_of(self, stage: Stage) -> tuple[str, ...]:
        return tuple(sorted(e for e, s in self.events.items() if s == stage))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, location: str = "") -> StageModel:
        """Build from the TOML structure (``[stages]`` and ``[options]`` tables)."""
        problems: list[Problem] = []
        stages = data.get("stages", {})
        options = data.get("options", {})
        if not isinstance(stages, Mapping) or not stages:
            problems.append(
                Problem(
                    "stages.missing",
                    f"{location}stages",
                    "a [stages] table mapping stage names to event lists is required",
                )
            )
            stages = {}
        events: dict[str, Stage] = {}
        for name, names in stages.items():
            try:
                stage = Stage.parse(str(name))
            except InvalidSpecError as exc:
                problems.extend(exc.problems)
                continue
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                problems.append(
                    Problem(
                        "stages.bad_events",
                        f"{location}stages.{name}",
                        "must be a list of event names",
                    )
                )
                continue
            for raw in names:
                event = canonical_event(raw)
                if event in events and events[event] != stage:
                    problems.append(
                        Problem(
                            "stages.duplicate_event",
                            f"{location}stages.{name}",
                            f"{raw!r} is already in stage {events[event].name.lower()}; "
                            "an event belongs to one stage",
                        )
                    )
                events[event] = stage
        unknown_options = set(options) - {"repeat_order_is_retention"}
        if unknown_options:
            problems.append(
                Problem(
                    "stages.unknown_option",
                    f"{location}options",
                    f"unknown options {sorted(unknown_options)}; allowed: "
                    "repeat_order_is_retention",
                )
            )
        repeat = options.get("repeat_order_is_retention", True)
        if not isinstance(repeat, bool):
            problems.append(
                Problem(
                    "stages.bad_option",
                    f"{location}options.repeat_order_is_retention",
                    "must be true or false",
                )
            )
        if problems:
            raise InvalidSpecError(problems)
        return cls(events=events, repeat_order_is_retention=bool(repeat))

    @classmethod
    def from_toml(cls, path: str | Path) -> StageModel:
        """Read a stage model from a TOML file (see the module docstring for the format)."""
        try:
            with Path(path).open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise InvalidSpecError(
                [Problem("stages.unreadable", str(path), f"cannot read stage file: {exc}")]
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidSpecError(
                [Problem("stages.bad_toml", str(path), f"not valid TOML: {exc}")]
            ) from exc
        return cls.from_mapping(data, location=f"{path}: ")

    def sql_case(self, event_column: str = "event") -> str:
        """A SQL CASE giving each event's stage number (NULL for none), first order = Action.

        ``event_column`` must be a trusted column reference; event names are quoted literals.
        The repeat-order rule needs the person's order rank and is applied by the caller.
        """
        if not self.events:
            return "CAST(NULL AS INTEGER)"
        whens = " ".join(
            "WHEN {col} = '{name}' THEN {n}".format(
                col=event_column, name=event.replace("'", "''"), n=int(stage)
            )
            for event, stage in sorted(self.events.items())
        )
        return f"CASE {whens} END"


_DEFAULT: Final = {
    Stage.AWARENESS: (
        "ad_impression",
        "social_impression",
        "social_engaged",
        "promotion_viewed",
    ),
    Stage.INTEREST: (
        "page_viewed",
        "product_list_viewed",
        "products_searched",
        "product_list_filtered",
        "promotion_clicked",
        "product_clicked",
        "product_viewed",
        "product_added_to_wishlist",
        "product_shared",
        "content_engaged",
        "email_opened",
        "email_clicked",
        "signed_up",
        "logged_in",
    ),
    Stage.DECISION: (
        "product_added",
        "cart_viewed",
        "checkout_started",
        "checkout_step_completed",
        "payment_info_entered",
        "coupon_applied",
    ),
    Stage.ACTION: ("order_completed",),
    Stage.RETENTION: ("nps_answered", "referral_sent", "product_reviewed"),
}

DEFAULT_STAGE_MODEL: Final = StageModel(
    events={event: stage for stage, names in _DEFAULT.items() for event in names}
)
