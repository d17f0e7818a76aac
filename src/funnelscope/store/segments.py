"""Event segments: imported Parquet files kept as they are, read through the ``events`` view.

Writing a wide event table costs far more than reading a Parquet file: a clean, canonical
Parquet import therefore keeps the file itself (copied next to the store, never modified) and
stores only what the import computes per row in a narrow native *side table*. The physical
tables and views (docs/data-model.md, "Storage"):

* ``event_log``: the native event table; the pipeline (collector, frames, CSV, JSON Lines and
  any Parquet file that is not clean) inserts here;
* ``event_segments``: one row per segment: its file (relative to the store's segments folder
  ``<store file>.segments/``), its kind, the columns it maps, the import's source and time, and
  its ``seq`` range;
* ``event_segment_<id>``: per row of a *reference* segment, in file order: ``person_id`` and
  the integer codes of ``event`` (canonical) and ``channel``, whose names ``event_segments``
  keeps (``event_names``, ``channel_names``); ``seq`` is the segment's ``first_seq`` plus the
  row's position in its file; the other stored columns are the file's. (Side tables written
  before migration 0008 hold ``seq`` and the names as text; their names columns are NULL.);
* ``events`` (view): ``event_log`` UNION ALL each segment (its Parquet file POSITIONAL JOIN its
  side table); every reader reads this, with the same columns and types as ``event_log``;
* ``event_keys`` (view): ``event_id, timestamp`` of every stored event, for deduplication;
  segments contribute straight from their files, so Parquet row-group statistics prune the
  lookup by time and no wide column is read.

The views name segment files by absolute path, so they are rebuilt whenever a segment is added
and each time a store is opened for writing (a store moved with its segments folder still
works). A store opened read-only after a move cannot rebuild them: open it once for writing.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.events.schema import EVENT_SCHEMA

if TYPE_CHECKING:  # the store imports this module
    from funnelscope.store.store import Store

__all__ = [
    "SEGMENT_KINDS",
    "SegmentCopy",
    "SegmentInfo",
    "SideCodes",
    "add_segment_file",
    "compact_segments",
    "list_segments",
    "refresh_views",
    "remove_orphan_files",
    "segments_folder",
    "side_table",
    "write_side_table",
]

#: Kinds of segment: only ``reference`` (the imported file as it is, plus a side table) so far.
SEGMENT_KINDS: Final = ("reference",)
#: Columns a reference segment's side table holds, in this order (``event`` and ``channel``
#: as int32 codes into the segment's names).
SIDE_COLUMNS: Final = ("person_id", "event", "channel")
#: The side table's columns before migration 0008 (``event`` and ``channel`` as text).
_TEXT_SIDE_COLUMNS: Final = ("seq", "person_id", "event", "channel")
#: SQL types of the stored columns (``event_log``), for columns a segment's file lacks.
_SQL_TYPES: Final = {
    "timestamp": "TIMESTAMPTZ",
    "received_at": "TIMESTAMPTZ",
    "person_id": "INTEGER",
    "properties": "JSON",
    "revenue": "DECIMAL(18, 4)",
    "items": "STRUCT(product_id VARCHAR, sku VARCHAR, name VARCHAR, category VARCHAR, "
    "brand VARCHAR, variant VARCHAR, price DECIMAL(18, 4), quantity INTEGER)[]",
    "seq": "BIGINT",
}
_STORED: Final = (*EVENT_SCHEMA.names, "seq")


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One registered segment (a row of ``event_segments``)."""

    segment_id: int
    kind: str  # one of SEGMENT_KINDS
    file: str
    columns: dict[str, str]
    source: str
    received_at: datetime
    row_count: int
    first_seq: int
    last_seq: int
    #: the names behind the side table's codes; None: a side table of names (before 0008)
    event_names: tuple[str | None, ...] | None = None
    channel_names: tuple[str | None, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment_id": self.segment_id,
            "kind": self.kind,
            "file": self.file,
            "columns": dict(self.columns),
            "source": self.source,
            "received_at": self.received_at.isoformat(),
            "row_count": self.row_count,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
        }


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def segments_folder(store_path: Path) -> Path | None:
    """``<store file>.segments``; None for an in-memory store (it keeps no segments)."""
    if str(store_path) == ":memory:":
        return None
    return store_path.parent / (store_path.name + ".segments")


def side_table(segment_id: int) -> str:
    """The side table of a reference segment (an identifier; ``segment_id`` is an int)."""
    return f"event_segment_{int(segment_id)}"


def list_segments(con: duckdb.DuckDBPyConnection) -> list[SegmentInfo]:
    rows = con.execute(
        "SELECT segment_id, kind, file, columns, source, received_at, row_count, first_seq, "
        "last_seq, event_names, channel_names FROM main.event_segments ORDER BY segment_id"
    ).fetchall()
    return [
        SegmentInfo(
            int(r[0]),
            str(r[1]),
            str(r[2]),
            dict(json.loads(r[3])),
            str(r[4]),
            r[5],
            int(r[6]),
            int(r[7]),
            int(r[8]),
            None if r[9] is None else tuple(r[9]),
            None if r[10] is None else tuple(r[10]),
        )
        for r in rows
    ]


#: A dictionary with more entries than this is re-encoded to its distinct names (a shop has a
#: few dozen event names and channels; a dictionary may repeat a name).
_MAX_NAMES: Final = 1024


@dataclass(frozen=True, slots=True)
class SideCodes:
    """The names behind a side table's ``event`` and ``channel`` codes (code i: name i)."""

    event_names: tuple[str | None, ...]
    channel_names: tuple[str | None, ...]


def _coded(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, tuple[str | None, ...]]:
    """(int32 codes, the names they index) of a text or dictionary column; NULL stays NULL."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    if len(column.dictionary) > _MAX_NAMES:
        # the names go into the events view's SQL as a list: keep only the distinct ones
        column = pc.dictionary_encode(column.cast(pa.string()))
    names = tuple(column.dictionary.cast(pa.string()).to_pylist())
    return column.indices.cast(pa.int32()), names


def write_side_table(
    con: duckdb.DuckDBPyConnection,
    segment_id: int,
    person_id: pa.Array | pa.ChunkedArray,
    event: pa.Array | pa.ChunkedArray,
    channel: pa.Array | pa.ChunkedArray,
) -> SideCodes:
    """Create the side table of ``segment_id`` from its rows in file order; the names to
    pass to :func:`register_segment`.

    ``event`` and ``channel`` are text or dictionary arrays (a dictionary's indices are stored
    as they are: a dictionary may repeat a name). Codes, not names: DuckDB writes 10M rows of
    three int32 columns in a third of the time it takes for two text columns.
    """
    events, event_names = _coded(event)
    channels, channel_names = _coded(channel)
    side = pa.table({"person_id": person_id, "event": events, "channel": channels})
    # DuckDB refuses register() while a result of the connection is unfinished
    con.execute("SELECT 1").fetchall()
    con.register("_side_rows", side)
    try:
        # a plain scan of an Arrow table keeps its order (DuckDB preserves insertion order)
        con.execute(
            f"CREATE TABLE {side_table(segment_id)} AS SELECT CAST(person_id AS INTEGER) AS "
            "person_id, event, channel FROM _side_rows"
        )
    finally:
        con.unregister("_side_rows")
    return SideCodes(event_names, channel_names)


def _branch(info: SegmentInfo, folder: Path) -> tuple[str, str]:
    """(SELECT of the segment's events, SELECT of its event keys)."""
    path = _literal(str((folder / info.file).resolve()))
    meta = f"(SELECT received_at, source FROM event_segments WHERE segment_id = {info.segment_id})"
    cols = info.columns
    coded = info.event_names is not None and info.channel_names is not None
    exprs = []
    for name in _STORED:
        if coded and name == "seq":
            expr = f"CAST({int(info.first_seq)} + p.file_row_number AS BIGINT)"
        elif coded and name in ("event", "channel"):
            names = info.event_names if name == "event" else info.channel_names
            expr = f"{_names_list(names or ())}[s.{name} + 1]"
        elif name in (SIDE_COLUMNS if coded else _TEXT_SIDE_COLUMNS):
            expr = f"s.{_q(name)}"
        elif name == "received_at":
            expr = "g.received_at"
        elif name == "source":
            expr = f"coalesce(p.{_q(cols['source'])}, g.source)" if "source" in cols else "g.source"
        elif name == "raw_event":
            expr = f"p.{_q(cols['event'])}"
        elif name in cols:
            expr = f"CAST(p.{_q(cols[name])} AS {_SQL_TYPES.get(name, 'VARCHAR')})"
        else:
            expr = f"CAST(NULL AS {_SQL_TYPES.get(name, 'VARCHAR')})"
        exprs.append(f"{expr} AS {_q(name)}")
    numbered = ", file_row_number = true" if coded else ""
    events = (
        f"SELECT {', '.join(exprs)} FROM read_parquet({path}{numbered}) p "
        f"POSITIONAL JOIN {side_table(info.segment_id)} s CROSS JOIN {meta} g"
    )
    keys = (
        f"SELECT {_q(cols['event_id'])} AS event_id, "
        f'CAST({_q(cols["timestamp"])} AS TIMESTAMPTZ) AS "timestamp" '
        f"FROM read_parquet({path})"
    )
    return events, keys


def _names_list(names: Sequence[str | None]) -> str:
    """A SQL list literal of ``names`` (a code's name is ``list[code + 1]``)."""
    items = ", ".join("NULL" if n is None else _literal(n) for n in names)
    return f"CAST([{items}] AS VARCHAR[])"


def refresh_views(con: duckdb.DuckDBPyConnection, store_path: Path) -> None:
    """(Re)create ``events`` and ``event_keys`` over ``event_log`` and every segment."""
    folder = segments_folder(store_path)
    segments = list_segments(con) if folder is not None else []
    events = ["SELECT * FROM event_log"]
    keys = ['SELECT event_id, "timestamp" FROM event_log']
    for info in segments:
        assert folder is not None
        ev, k = _branch(info, folder)
        events.append(ev)
        keys.append(k)
    con.execute("CREATE OR REPLACE VIEW events AS " + "\nUNION ALL BY NAME\n".join(events))
    con.execute("CREATE OR REPLACE VIEW event_keys AS " + "\nUNION ALL\n".join(keys))


def add_segment_file(folder: Path, source_file: Path, segment_id: int) -> Path:
    """Copy ``source_file`` into ``folder`` as ``<segment_id>.parquet`` (write, then rename).

    A copy, not a hard link: a link would change if the user rewrote the original in place.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{int(segment_id)}.parquet"
    partial = folder / f".{int(segment_id)}.parquet.partial"
    shutil.copyfile(source_file, partial)
    os.replace(partial, target)
    return target


#: ``ioctl`` request of a copy-on-write clone (Linux ``FICLONE``): btrfs, XFS, bcachefs.
_FICLONE: Final = 0x40049409


def _clone_or_copy(source_file: Path, target: Path) -> None:
    """A reflink where the file system has them (instant, and safe: unlike a hard link it
    does not change when the user rewrites the original in place), else a byte copy."""
    try:
        import fcntl

        with open(source_file, "rb") as src, open(target, "wb") as dst:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
    except (OSError, ImportError):  # no reflinks here (ext4, tmpfs, another OS): copy
        shutil.copyfile(source_file, target)


class SegmentCopy:
    """A segment's file copied into the segments folder on a thread of its own.

    The copy (kernel time, mostly) overlaps the side table's build; :meth:`place` waits for it
    and names the file after the segment, :meth:`discard` waits and deletes it. A partial file
    left by a crash is removed by :func:`remove_orphan_files` when the store is next opened.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "in.parquet").write_bytes(b"PAR1")
    >>> copy = SegmentCopy(folder / "in.parquet", folder / "s.duckdb.segments")
    >>> target = copy.place(7)
    >>> target.name, target.read_bytes()
    ('7.parquet', b'PAR1')
    """

    def __init__(self, source_file: Path, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.partial = folder / f".{uuid.uuid4().hex}.parquet.partial"
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(source_file,), name="segment-copy", daemon=True
        )
        self._thread.start()

    def _run(self, source_file: Path) -> None:
        try:
            _clone_or_copy(source_file, self.partial)
        except BaseException as exc:  # re-raised by place() on the importing thread
            self._error = exc

    def place(self, segment_id: int) -> Path:
        """Wait for the copy; rename it ``<segment_id>.parquet``; return that path."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        target = self.folder / f"{int(segment_id)}.parquet"
        os.replace(self.partial, target)
        return target

    def discard(self) -> None:
        self._thread.join()
        self.partial.unlink(missing_ok=True)


def remove_orphan_files(con: duckdb.DuckDBPyConnection, store_path: Path) -> list[Path]:
    """Delete files of the segments folder that no segment references (a crashed import)."""
    folder = segments_folder(store_path)
    if folder is None or not folder.is_dir():
        return []
    known = {info.file for info in list_segments(con)}
    removed = []
    for entry in folder.iterdir():
        if entry.is_file() and entry.name not in known:
            entry.unlink()
            removed.append(entry)
    return removed


def next_segment_id(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT coalesce(max(segment_id), 0) + 1 FROM event_segments").fetchone()
    return int(row[0]) if row else 1


def register_segment(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    *,
    segment_id: int,
    columns: dict[str, str],
    source: str,
    received_at: datetime,
    row_count: int,
    first_seq: int,
    codes: SideCodes,
) -> None:
    """Record a reference segment whose file (and side table, :func:`write_side_table`)
    exist, rebuild the views, and move the store's next ``seq`` past its rows (committed with
    the caller's transaction)."""
    con.execute(
        "INSERT INTO event_segments (segment_id, kind, file, columns, source, received_at, "
        "row_count, first_seq, last_seq, created_at, event_names, channel_names) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            segment_id,
            "reference",
            f"{int(segment_id)}.parquet",
            json.dumps(columns),
            source,
            received_at,
            row_count,
            first_seq,
            first_seq + row_count - 1,
            received_at,
            list(codes.event_names),
            list(codes.channel_names),
        ],
    )
    refresh_views(con, store.path)
    store.advance_seq(first_seq + row_count)


def compact_segments(
    con: duckdb.DuckDBPyConnection, store_path: Path, segment_ids: Sequence[int] | None = None
) -> int:
    """Copy segments' events into ``event_log`` and drop the segments; returns rows moved.

    Runs inside the caller's write transaction; the segment files are deleted by the caller
    after the commit (:func:`remove_orphan_files`).
    """
    folder = segments_folder(store_path)
    if folder is None:
        return 0
    chosen = [
        s for s in list_segments(con) if segment_ids is None or s.segment_id in set(segment_ids)
    ]
    moved = 0
    names = ", ".join(_q(c) for c in _STORED)
    for info in chosen:
        events, _ = _branch(info, folder)
        con.execute(f"INSERT INTO event_log ({names}) SELECT {names} FROM ({events})")
        moved += info.row_count
        con.execute("DELETE FROM event_segments WHERE segment_id = ?", [info.segment_id])
    refresh_views(con, store_path)  # before the drops: the views name the side tables
    for info in chosen:
        con.execute(f"DROP TABLE IF EXISTS {side_table(info.segment_id)}")
    return moved
