"""The one exception hierarchy of funnelscope.

::

    FunnelscopeError
     ├── InvalidInputError (ValueError)      bad input from a user; carries every Problem found
     │    ├── InvalidEventError              an event or file row that cannot be accepted
     │    └── InvalidSpecError               an analysis spec, goal or segment definition
     ├── UnsupportedByEngineError            the engine cannot run this spec
     ├── EngineError                         a driver failed (wraps it: ``raise ... from exc``)
     ├── StoreError                          the store cannot be opened, migrated or written
     └── NotFittedError                      a model was asked for predictions before ``fit``

Validation collects **all** problems before raising once. Each problem has a stable dotted
``code`` (``funnel.too_few_steps``), a ``location`` (field path) and a message that names the
allowed range.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EngineError",
    "FunnelscopeError",
    "InvalidEventError",
    "InvalidInputError",
    "InvalidSpecError",
    "NotFittedError",
    "Problem",
    "StoreError",
    "UnsupportedByEngineError",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input: a stable code, where it is, and what is allowed."""

    code: str
    location: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "loc": self.location, "msg": self.message}

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}{self.message} [{self.code}]"


class FunnelscopeError(Exception):
    """Base of every error funnelscope raises on purpose."""


class InvalidInputError(FunnelscopeError, ValueError):
    """The input is wrong. ``problems`` lists every problem found, not only the first."""

    def __init__(self, problems: Iterable[Problem] | str, *, code: str = "input.invalid") -> None:
        if isinstance(problems, str):
            problems = [Problem(code, "", problems)]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    @property
    def code(self) -> str:
        return self.problems[0].code if self.problems else "input.invalid"


class InvalidEventError(InvalidInputError):
    """An event, a file row or a whole file that cannot be accepted."""


class InvalidSpecError(InvalidInputError):
    """An analysis spec, goal or segment definition that is not valid."""


class UnsupportedByEngineError(FunnelscopeError):
    """The chosen engine cannot run this spec; the message says which option and why."""


class EngineError(FunnelscopeError):
    """The engine's driver failed while running a valid spec."""


class StoreError(FunnelscopeError):
    """The store cannot be opened, migrated or written."""


class NotFittedError(FunnelscopeError):
    """A model method that needs fitted parameters was called before ``fit``."""


def collect(problems: list[Problem], error: type[InvalidInputError] = InvalidInputError) -> None:
    """Raise ``error`` once with every problem, if there is any."""
    if problems:
        raise error(problems)
