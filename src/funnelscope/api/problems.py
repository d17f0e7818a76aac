"""The collector's error responses: ``{"code", "message", "detail"}`` with a stable code.

Every SDK family reads errors differently (docs/collector.md, "Responses"): RudderStack's SDK drops
a batch at once only when the body has ``code`` and ``message``, PostHog's SDKs read ``detail``;
so every error body carries all three. The HTTP status decides what the SDKs do next: 400/401/413
drop the batch (the payload will never succeed), 429/503 with ``Retry-After`` retry it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from funnelscope.errors import InvalidInputError, Problem

__all__ = [
    "ApiError",
    "api_error_handler",
    "as_http",
    "problem_detail",
    "status_of",
    "to_api_error",
]

#: Input error codes that are about size, not shape: 413 instead of 400.
_TOO_LARGE: Final = frozenset({"body.too_large", "batch.too_many_events"})


class ApiError(Exception):
    """An error answered as ``status`` with a ``{"code", "message", "detail"}`` body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        problems: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.problems = problems or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message, "detail": self.message}
        if self.problems:
            out["problems"] = self.problems
        return out


def status_of(code: str) -> int:
    return 413 if code in _TOO_LARGE else 400


def to_api_error(exc: InvalidInputError) -> ApiError:
    """An input error as 400 (or 413 for size codes), keeping every problem."""
    return ApiError(
        status_of(exc.code),
        exc.code,
        str(exc.problems[0].message if exc.problems else exc),
        problems=[p.to_dict() for p in exc.problems],
    )


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    request.state.error_code = exc.code
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def problem_detail(problem: Problem, prefix: str = "query") -> dict[str, Any]:
    """A Problem in FastAPI's validation-error shape (``type`` is the stable code)."""
    loc: list[str | int] = [prefix]
    for part in problem.location.replace("[", ".").replace("]", "").split("."):
        if part:
            loc.append(int(part) if part.isdigit() else part)
    return {"type": problem.code, "loc": loc, "msg": problem.message}


@contextmanager
def as_http(prefix: str = "query") -> Iterator[None]:
    """Turn :class:`InvalidInputError` into a 422 carrying every problem (query routers)."""
    try:
        yield
    except InvalidInputError as exc:
        raise HTTPException(422, [problem_detail(p, prefix) for p in exc.problems]) from exc
