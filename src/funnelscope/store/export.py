"""``funnelscope export``: the store as one Parquet file per table, for Spark or any engine.

``events.parquet`` holds stitched persons (``person_id`` is the canonical id) and is ordered by
``(person_id, timestamp)``, so an engine that partitions by person reads clustered data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from funnelscope.store.store import Store

__all__ = ["EXPORTED_TABLES", "export_parquet"]

EXPORTED_TABLES: Final = (
    "events",
    "person_map",
    "identities",
    "ad_spend",
    "email_campaigns",
    "survey_responses",
    "products",
    "currency_rates",
    "meta",
)


def export_parquet(store: Store, out_dir: str | Path) -> dict[str, Path]:
    """Write every table to ``out_dir/<table>.parquet``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    cur = store.reader()
    try:
        for table in EXPORTED_TABLES:
            target = out / f"{table}.parquet"
            if table == "events":
                query = (
                    "SELECT e.* REPLACE (m.canonical_id AS person_id) FROM events e "
                    "JOIN person_map m USING (person_id) "
                    "ORDER BY m.canonical_id, e.timestamp, e.seq"
                )
            else:
                query = f"SELECT * FROM {table}"
            path_literal = str(target).replace("'", "''")
            cur.execute(f"COPY ({query}) TO '{path_literal}' (FORMAT parquet, COMPRESSION zstd)")
            written[table] = target
    finally:
        cur.close()
    return written
