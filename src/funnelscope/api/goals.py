"""The goals API: SMART goals with progress, pacing, forecast and status (docs/goals.md).

Every route needs a read key (write keys are public SDK keys: they cannot read or change
goals). Invalid goals answer 422 with FastAPI's shape, one entry per problem, ``type`` being
the stable code (``goal.unknown_kpi``, ``goal.deadline_before_start``, ...); an unknown goal
answers 404 in the same shape.

Routes::

    GET    /api/v1/goals                every goal with its status at the last check
    POST   /api/v1/goals                add a goal (body: the GoalSpec JSON; ?replace=true)
    POST   /api/v1/goals/check          re-evaluate every goal now (records status changes)
    GET    /api/v1/goals/{name}         progress as of now (or ?now=ISO), with the daily series
    DELETE /api/v1/goals/{name}         forget a goal and its history
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request

from funnelscope.api.auth import require_read_key
from funnelscope.api.problems import problem_detail
from funnelscope.api.query import jsonable
from funnelscope.errors import InvalidInputError, Problem
from funnelscope.workspace import Workspace

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["goals"], dependencies=[Depends(require_read_key)])


def _workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


WorkspaceDep = Annotated[Workspace, Depends(_workspace)]


@contextmanager
def _as_422(prefix: str) -> Iterator[None]:
    try:
        yield
    except InvalidInputError as exc:
        status = 404 if exc.code == "goal.not_found" else 422
        raise HTTPException(status, [problem_detail(p, prefix) for p in exc.problems]) from exc


def _now(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)  # the edge: library code never reads the clock
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            422,
            [
                problem_detail(
                    Problem("goal.bad_now", "now", f"{text!r} is not an ISO date or datetime"),
                    "query",
                )
            ],
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@router.get("/goals", summary="Every goal with its status at the last check")
def list_goals(ws: WorkspaceDep) -> list[dict[str, Any]]:
    from funnelscope.analysis.goals import list_goals as stored

    return [
        jsonable(
            {
                **g["goal"].to_dict(),
                "status": g["status"],
                "probability": g["probability"],
                "checked_at": g["checked_at"],
            }
        )
        for g in stored(ws.store)
    ]


@router.post("/goals", status_code=201, summary="Add a goal (validated against the store's data)")
def add_goal(
    ws: WorkspaceDep,
    goal: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {
                    "name": "q1-product-x",
                    "kpi": "product_revenue",
                    "target": "+15%",
                    "start": "2025-01-01",
                    "deadline": "2025-03-31",
                    "scope": {"product": "X"},
                    "initiative": "email_spring",
                    "owner": "ana",
                }
            ]
        ),
    ],
    replace: Annotated[bool, Query(description="replace a goal of the same name")] = False,
    now: Annotated[str | None, Query(description="ISO datetime; default: now")] = None,
) -> dict[str, Any]:
    with _as_422("body"):
        spec = ws.add_goal(goal, now=_now(now), replace=replace)
    return jsonable(spec.to_dict())  # type: ignore[no-any-return]


@router.post(
    "/goals/check", summary="Re-evaluate every goal; record status changes, queue webhooks"
)
def check_goals(
    ws: WorkspaceDep,
    now: Annotated[str | None, Query(description="ISO datetime; default: now")] = None,
) -> list[dict[str, Any]]:
    with _as_422("query"):
        checks = ws.check_goals(now=_now(now))
    return [jsonable(c.to_dict()) for c in checks]


@router.get(
    "/goals/{name}",
    summary="A goal's progress: value, pacing, forecast, probability, "
    "status, SMART checks and the daily series",
)
def goal_progress(
    ws: WorkspaceDep,
    name: str,
    now: Annotated[str | None, Query(description="ISO datetime; default: now")] = None,
) -> dict[str, Any]:
    at = _now(now)
    with _as_422("path"):
        progress = ws.goal_progress(name, now=at)
    return jsonable(progress.to_dict())  # type: ignore[no-any-return]


@router.delete("/goals/{name}", status_code=204, summary="Forget a goal and its history")
def delete_goal(ws: WorkspaceDep, name: str) -> None:
    from funnelscope.analysis.goals import delete_goal as forget

    with _as_422("path"):
        forget(ws.store, name)
