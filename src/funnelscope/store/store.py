"""The embedded store: one DuckDB file, migrated on open, one writer at a time.

Every connection runs with ``TimeZone = 'UTC'``. Writes go through :meth:`Store.write`, a
transaction under a process-wide lock, so the collector's threads and a background job never
interleave half-written batches. Reads use :meth:`Store.reader`, a cursor of its own per call.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Final

import duckdb

from funnelscope.errors import StoreError

__all__ = ["DEFAULT_STORE_PATH", "Store"]

DEFAULT_STORE_PATH: Final = Path("funnelscope.duckdb")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
#: a DuckDB size setting such as ``16MiB`` or ``16.0 MiB``
_SIZE = re.compile(r"\d+(\.\d+)? ?([KMGTP]i?B|B|bytes)")


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("funnelscope.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class Store:
    """A DuckDB file (or ``:memory:``) holding events, identities, facts and quarantine.

    Parameters
    ----------
    path
        The database file; created, with its parent folder, when missing.
    read_only
        Open without migrating or writing (a second process may read a store no one writes).
    """

    def __init__(self, path: str | Path = DEFAULT_STORE_PATH, *, read_only: bool = False) -> None:
        self.path = Path(path) if str(path) != ":memory:" else Path(":memory:")
        self._lock = threading.RLock()
        self._in_write = threading.local()  # .depth: this thread's open write() blocks
        #: bumped after every committed write; caches (the person layout) compare against it
        self.version = 0
        self._next_seq: int | None = None
        self._pending_seq: int | None = None
        #: called before each read when set: the collector's journal loader uses it so that a
        #: read in the server process sees every acknowledged event (read-your-writes)
        self.read_barrier: Callable[[], object] | None = None
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(
                f"cannot open store {path}: {exc}. Is another funnelscope process "
                "(serve, import) using it? Stop it or use another --store path."
            ) from exc
        self._con.execute("SET TimeZone = 'UTC'")
        if not read_only:
            self._migrate()
            self._open_segments()

    # -- connections -----------------------------------------------------------------------
    def reader(self) -> duckdb.DuckDBPyConnection:
        """A cursor for reading, safe to use from the calling thread."""
        barrier = self.read_barrier
        # a read inside this thread's own write transaction must not wait for another writer
        if barrier is not None and not getattr(self._in_write, "depth", 0):
            barrier()
        cur = self._con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A transaction under the store's write lock; committed on success, else rolled back."""
        with self._lock:
            cur = self._con.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute("BEGIN TRANSACTION")
            self._in_write.depth = getattr(self._in_write, "depth", 0) + 1
            try:
                yield cur
            except BaseException:
                self._pending_seq = None
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
                if self._pending_seq is not None:
                    self._next_seq, self._pending_seq = self._pending_seq, None
                self.version += 1
            finally:
                self._in_write.depth -= 1
                cur.close()

    def close(self) -> None:
        self._con.close()

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def wal_bytes(self) -> int:
        """Size of the store's write-ahead log in bytes (0: none, or an in-memory store).

        DuckDB moves the WAL into the database file at a *checkpoint*; until then every commit
        appends to it.
        """
        if str(self.path) == ":memory:":
            return 0
        try:
            return self.path.with_name(self.path.name + ".wal").stat().st_size
        except FileNotFoundError:
            return 0

    def checkpoint(self) -> None:
        """Write the WAL into the database file now (DuckDB's ``CHECKPOINT``).

        Taken under the write lock, so never inside one of this store's write transactions;
        readers may keep reading meanwhile.
        """
        with self._lock:
            cur = self._con.cursor()
            try:
                cur.execute("CHECKPOINT")
            finally:
                cur.close()

    def set_checkpoint_threshold(self, value: str) -> str:
        """Set the WAL size at which a commit checkpoints automatically; the previous value.

        ``value`` is a DuckDB size such as ``'16MiB'`` (DuckDB's default) or ``'256MiB'``; the
        returned string can be passed back to restore it.

        Examples
        --------
        >>> store = Store(":memory:")
        >>> previous = store.set_checkpoint_threshold("256MiB")
        >>> store.set_checkpoint_threshold(previous)
        '256.0 MiB'
        """
        if not _SIZE.fullmatch(value):  # a clear error here, not DuckDB's parser error
            raise StoreError(f"not a DuckDB size: {value!r}")
        # no write lock: a setting is not a transaction (and a writer may hold the lock long)
        cur = self._con.cursor()
        try:
            row = cur.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
            previous = row[0] if row else "16MiB"
            cur.execute("SET checkpoint_threshold = ?", [value])
        finally:
            cur.close()
        return str(previous)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query with bound parameters and return all rows."""
        cur = self.reader()
        try:
            return cur.execute(sql, params or []).fetchall()
        finally:
            cur.close()

    # -- schema ----------------------------------------------------------------------------
    def _migrate(self) -> None:
        con = self._con
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, name, sql in _migrations():
            if version in done:
                continue
            with self.write() as cur:
                try:
                    cur.execute(sql)
                except duckdb.Error as exc:
                    raise StoreError(f"migration {name} failed on {self.path}: {exc}") from exc
                cur.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name])

    def _open_segments(self) -> None:
        """Point the ``events`` view at this location's segment files (store/segments.py)."""
        from funnelscope.store import segments

        if self.query("SELECT count(*) FROM event_segments")[0][0]:
            with self.write() as cur:
                segments.refresh_views(cur, self.path)
        segments.remove_orphan_files(self._con, self.path)

    @property
    def schema_version(self) -> int:
        rows = self.query("SELECT coalesce(max(version), 0) FROM schema_migrations")
        return int(rows[0][0])

    # -- arrival order ----------------------------------------------------------------------
    def next_seq(self, con: duckdb.DuckDBPyConnection) -> int:
        """The first free ``events.seq``, kept between writes instead of a max() per batch.

        The check that nothing was written past it (another Store on the same file) reads only
        the last row group: seq grows with storage order, so the others are pruned by stats.
        """
        if self._next_seq is not None:
            row = con.execute(
                "SELECT (SELECT count(*) FROM event_log WHERE seq >= $1) "
                "+ (SELECT count(*) FROM event_segments WHERE last_seq >= $1)",
                [self._next_seq],
            ).fetchall()[0]
            if row and row[0]:
                self._next_seq = None
        if self._next_seq is None:
            # segments' seq ranges are in event_segments: their side tables are not scanned
            (top,) = con.execute(
                "SELECT greatest((SELECT coalesce(max(seq), 0) FROM event_log), "
                "(SELECT coalesce(max(last_seq), 0) FROM event_segments)) + 1"
            ).fetchall()[0]
            self._next_seq = int(top)
        return self._next_seq

    def advance_seq(self, value: int) -> None:
        """Called inside the write transaction; forgotten if that transaction rolls back."""
        self._pending_seq = max(value, self._next_seq or 0)

    # -- settings kept in the store ---------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", [key])
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as cur:
            cur.execute("DELETE FROM meta WHERE key = ?", [key])
            cur.execute("INSERT INTO meta VALUES (?, ?)", [key, value])

    @property
    def currency(self) -> str:
        """The store's reporting currency (ISO 4217)."""
        return self.get_meta("store_currency") or "USD"
