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

from funnelscope.analysis.goals.progress import (
    GoalProgress,
    SmartCheck,
    format_value,
    goal_progress,
    kpi_daily_frame,
    kpi_daily_series,
    status_for,
    validate_goal,
)
from funnelscope.analysis.goals.registry import (
    GoalCheck,
    check_goals,
    delete_goal,
    evaluate_goals,
    get_goal,
    list_goals,
    save_goal,
    subscribe_goal_webhook,
)
from funnelscope.analysis.goals.spec import (
    AT_RISK_PROBABILITY,
    GOAL_EVENT_TYPE,
    ON_TRACK_PROBABILITY,
    SCOPES,
    GoalSpec,
    parse_target,
)

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
