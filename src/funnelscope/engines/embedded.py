"""The embedded engine: DuckDB over the store file, plus the in-memory person layout."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from funnelscope.errors import EngineError
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
