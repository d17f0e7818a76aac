"""The embedded engine: DuckDB over the store file, plus the in-memory person layout."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from funnelscope.errors import EngineError
from funnelscope.store.layout import LiveLayout, PersonLayout, property_path
from funnelscope.store.store import Store

__all__ = ["EmbeddedEngine"]

# Analyses see stitched persons: person_id is replaced by the canonical id. The view lives in
# the temp catalog, so the base tables are named with the database's own catalog.
_EVENTS_VIEW = """
CREATE OR REPLACE TEMP VIEW events AS
SELECT e.* REPLACE (m.canonical_id AS person_id)
FROM {db}.main.events e JOIN {db}.main.person_map m ON m.person_id = e.person_id
"""


class EmbeddedEngine:
    """Runs analyses on one store, in process."""

    name = "embedded"
    dialect = "duckdb"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._layout: LiveLayout | None = None

    def sql(self, query: str, params: Mapping[str, object] | None = None) -> pa.Table:
        import duckdb

        cur = self.store.reader()
        try:
            (db,) = cur.execute("SELECT current_database()").fetchone() or ("memory",)
            cur.execute(_EVENTS_VIEW.format(db='"' + str(db).replace('"', '""') + '"'))
            return cur.sql(query, params=params or None).to_arrow_table()
        except duckdb.Error as exc:
            raise EngineError(f"embedded engine failed: {exc}") from exc
        finally:
            cur.close()

    # -- sequence work: the person layout ------------------------------------------------------
    def person_layout(self) -> PersonLayout:
        """The store's events clustered by person, kept in memory and refreshed on new commits."""
        if self._layout is None:
            self._layout = LiveLayout(self.store)
        return self._layout.get()

    def map_person_partitions(
        self,
        fn: Callable[[PersonLayout], Any],
        *,
        columns: Sequence[str] = (),
        schema: pa.Schema | None = None,
        partition_by: str = "person_id",
        to_arrow_args: tuple[Any, ...] = (),
    ) -> Any:
        """Run ``fn`` over the person layout (in process there is one partition: all of it)
        and return what it returns (no Arrow round trip).

        ``columns`` are loaded lazily by the layout; ``schema``, ``partition_by`` and
        ``to_arrow_args`` matter to distributed engines only.
        """
        del columns, schema, partition_by, to_arrow_args
        return fn(self.person_layout())

    def events_of_person(self, person_id: int, columns: Sequence[str] = ()) -> pa.Table:
        """All events of one (canonical) person, with ``columns`` (``properties.<key>`` too)."""
        select = ["person_id", '"timestamp"', "event"]
        params: dict[str, Any] = {"p": int(person_id)}
        for i, name in enumerate(dict.fromkeys(columns)):
            alias = '"' + name.replace('"', '""') + '"'
            path = property_path(name)
            if path is not None:
                params[f"path{i}"] = path
                select.append(f"json_extract_string(properties, $path{i}) AS {alias}")
            elif name not in ("person_id", "timestamp", "event"):
                select.append(alias)
        query = f"SELECT {', '.join(select)} FROM events WHERE person_id = $p ORDER BY seq"
        return self.sql(query, params)
