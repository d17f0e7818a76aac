"""What every engine offers an analysis: SQL over the canonical tables, in its own dialect.

Relational analyses write their SQL once (sqlglot, DuckDB dialect) and call :meth:`Engine.sql`,
which transpiles for the engine. Sequence analyses ask the engine for per-person event arrays
(embedded: the in-memory person layout; spark: ``mapInArrow`` after partitioning by person).

Tables every engine exposes: ``events`` (with ``person_id`` already canonical, i.e. stitched),
``person_map``, ``identities``, ``ad_spend``, ``email_campaigns``, ``survey_responses``,
``products``, ``currency_rates``, ``meta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import pyarrow as pa

__all__ = ["Engine"]


@runtime_checkable
class Engine(Protocol):
    #: ``"embedded"`` or ``"spark"``
    name: str
    #: the sqlglot dialect this engine runs (``"duckdb"``, ``"spark"``)
    dialect: str

    def sql(self, query: str, params: Mapping[str, object] | None = None) -> pa.Table:
        """Run ``query`` (written in the DuckDB dialect) and return the result as Arrow.

        ``params`` are bound by name (``$name`` in the query); engines without native binding
        inline them as typed literals through sqlglot, never by string formatting.
        """
        ...
