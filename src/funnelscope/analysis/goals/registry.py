"""Stored goals: save, list, delete, webhook subscriptions, and scheduled re-evaluation."""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from funnelscope.analysis.goals.progress import GoalProgress, _require_aware, goal_progress
from funnelscope.analysis.goals.spec import GOAL_EVENT_TYPE, GoalSpec
from funnelscope.errors import InvalidSpecError, Problem

if TYPE_CHECKING:
    from funnelscope.store.store import Store
    from funnelscope.workspace import Workspace

# -- storage -------------------------------------------------------------------------------------


def save_goal(store: Store, spec: GoalSpec, *, now: datetime, replace: bool = False) -> None:
    """Store a goal (validate it first: :func:`validate_goal`). An existing name is an error
    unless ``replace``; replacing keeps the status history."""
    _require_aware(now)
    with store.write() as cur:
        found = cur.execute("SELECT created_at FROM goals WHERE name = ?", [spec.name]).fetchone()
        if found and not replace:
            raise InvalidSpecError(
                [
                    Problem(
                        "goal.exists",
                        "name",
                        f"a goal named {spec.name!r} exists; replace it explicitly",
                    )
                ]
            )
        cur.execute("DELETE FROM goals WHERE name = ?", [spec.name])
        cur.execute(
            "INSERT INTO goals (name, spec, owner, kpi, start_date, deadline, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                spec.name,
                json.dumps(spec.to_dict()),
                spec.owner,
                spec.kpi,
                spec.start,
                spec.deadline,
                found[0] if found else now,
                now,
            ],
        )


def _spec_of(text: str) -> GoalSpec:
    return GoalSpec.from_dict(json.loads(text))


def list_goals(store: Store) -> list[dict[str, Any]]:
    """Stored goals, by name, with their last evaluated status."""
    rows = store.query(
        "SELECT name, spec, created_at, updated_at, status, probability, checked_at "
        "FROM goals ORDER BY name"
    )
    return [
        {
            "goal": _spec_of(r[1]),
            "created_at": r[2],
            "updated_at": r[3],
            "status": r[4],
            "probability": r[5],
            "checked_at": r[6],
        }
        for r in rows
    ]


def get_goal(store: Store, name: str) -> GoalSpec:
    """The stored goal ``name`` (``goal.not_found`` when there is none)."""
    rows = store.query("SELECT spec FROM goals WHERE name = ?", [name])
    if not rows:
        known = [r[0] for r in store.query("SELECT name FROM goals ORDER BY name")]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidSpecError([Problem("goal.not_found", "name", f"no goal named {name!r}{hint}")])
    return _spec_of(rows[0][0])


def delete_goal(store: Store, name: str) -> None:
    """Forget a goal, its status history and its webhook subscriptions."""
    get_goal(store, name)
    with store.write() as cur:
        for table, column in (
            ("goals", "name"),
            ("goal_status_history", "goal"),
            ("goal_webhooks", "goal"),
        ):
            cur.execute(f'DELETE FROM {table} WHERE "{column}" = ?', [name])


def subscribe_goal_webhook(
    store: Store, url: str, secret: str, *, now: datetime, goal: str | None = None
) -> None:
    """POST ``goal.status_changed`` to ``url`` when ``goal`` (None: any goal) changes status."""
    problems = []
    if not re.match(r"^https?://", url):
        problems.append(
            Problem("webhook.bad_url", "url", "url must start with http:// or https://")
        )
    if not secret:
        problems.append(Problem("webhook.missing_secret", "secret", "a signing secret is required"))
    if problems:
        raise InvalidSpecError(problems)
    if goal is not None:
        get_goal(store, goal)
    with store.write() as cur:
        cur.execute(
            "DELETE FROM goal_webhooks WHERE goal IS NOT DISTINCT FROM ? AND url = ?", [goal, url]
        )
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
        return {
            "goal": self.goal,
            "previous_status": self.previous_status,
            "status": self.status,
            "probability": self.probability,
            "changed": self.changed,
            "webhooks": self.webhooks,
            "error": self.error,
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def check_goals(
    workspace: Workspace, *, now: datetime, names: list[str] | None = None
) -> list[GoalCheck]:
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
            cur.execute(
                "UPDATE goals SET status = ?, probability = ?, checked_at = ? WHERE name = ?",
                [progress.status, progress.probability, now, name],
            )
            if changed:
                cur.execute(
                    "INSERT INTO goal_status_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        name,
                        now,
                        progress.status,
                        previous,
                        progress.probability,
                        _finite(progress.current_value),
                        _finite(progress.target_value),
                        _finite(f.mean) if f else None,
                        _finite(f.interval80[0]) if f else None,
                        _finite(f.interval80[1]) if f else None,
                    ],
                )
                hooks = cur.execute(
                    "SELECT url, secret FROM goal_webhooks WHERE goal = ? OR goal IS NULL "
                    "ORDER BY url",
                    [name],
                ).fetchall()
                payload = {
                    "goal": name,
                    "previous_status": previous,
                    "status": progress.status,
                    "probability": progress.probability,
                    "evaluated_at": now.isoformat(),
                    "current_value": _finite(progress.current_value),
                    "target_value": _finite(progress.target_value),
                    "forecast_mean": _finite(f.mean) if f else None,
                    "deadline": spec.deadline.isoformat() if spec.deadline else None,
                }
                for url, secret in hooks:
                    enqueue(
                        store,
                        url,
                        secret,
                        GOAL_EVENT_TYPE,
                        payload,
                        f"goal:{name}:{now.isoformat()}:{progress.status}:{url}",
                        now=now,
                        con=cur,
                    )
                    sent += 1
        out.append(
            GoalCheck(
                name, previous, progress.status, progress.probability, changed, sent, progress
            )
        )
    return out


def evaluate_goals(workspace: Workspace, now: datetime) -> list[GoalCheck]:
    """What ``serve`` runs on a schedule: :func:`check_goals` on every goal (then
    :func:`funnelscope.webhooks.deliver_pending` sends what was queued)."""
    return check_goals(workspace, now=now)
