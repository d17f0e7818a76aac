"""Writing a simulated shop to files: Parquet, CSV and JSON Lines, written by DuckDB/Arrow.

Text formats carry ``properties`` and ``items`` as JSON text and timestamps as ISO 8601 with
microseconds and ``Z`` (``2024-01-01T09:30:00.123456Z``), which ``funnelscope import`` reads
back into identical events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from funnelscope.simulate.assemble import plain_text

__all__ = ["write_events", "write_fact_csv"]

#: Staging columns the simulator never fills; left out of files.
_ALWAYS_EMPTY: Final = ("source", "previous_id")
_ISO_US: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _text_select(table: pa.Table) -> str:
    exprs = []
    for field in table.schema:
        col = _q(field.name)
        if pa.types.is_timestamp(field.type):
            exprs.append(f"strftime({col}, '{_ISO_US}') AS {col}")
        elif pa.types.is_list(field.type) or pa.types.is_struct(field.type):
            exprs.append(f"CAST(to_json({col}) AS VARCHAR) AS {col}")
        else:
            exprs.append(col)
    return f"SELECT {', '.join(exprs)} FROM t"


def _copy(table: pa.Table, path: Path, options: str) -> None:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("t", table)
        con.execute(f"COPY ({_text_select(table)}) TO {_literal(str(path))} ({options})")
    finally:
        con.close()


#: Rows per Parquet row group of an events file.
_ROW_GROUP_ROWS: Final = 131_072


def write_events(events: pa.Table, path: Path, suffix: str) -> Path:
    """Events to ``path`` in the format of ``suffix`` (.parquet, .csv or .jsonl)."""
    table = events.drop_columns([c for c in _ALWAYS_EMPTY if c in events.column_names])
    if suffix == ".parquet":
        # plain strings: any reader gets text back; row groups of 128k rows let a reader
        # (DuckDB scans one row group per thread) use every core
        pq.write_table(plain_text(table), path, row_group_size=_ROW_GROUP_ROWS)
    elif suffix == ".csv":
        _copy(table, path, "FORMAT CSV, HEADER true")
    else:
        _copy(table, path, "FORMAT JSON")
    return path


def write_fact_csv(table: pa.Table, path: Path) -> Path:
    """A fact table as CSV with a header; times in ISO 8601 UTC."""
    _copy(table, path, "FORMAT CSV, HEADER true")
    return path
