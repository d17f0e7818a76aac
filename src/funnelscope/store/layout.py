"""The person-clustered, time-ordered in-memory layout that sequence analyses scan.

Rows are grouped by (canonical) person, in time order inside each person: CSR ``offsets`` over
dense person indexes, timestamps as int64 microseconds (UTC), event names as small integer
codes into ``event_names``. Other columns (filters, breakdowns, hold-constant keys) are loaded
on demand and cached, in layout order.

Three ways to build one:

* :meth:`PersonLayout.from_arrays`: plain arrays (benchmarks, tests);
* :meth:`PersonLayout.from_table`: an Arrow table with the canonical event columns (one Spark
  partition, a user's Parquet file);
* :class:`LiveLayout`: the store's events, kept in memory by a long-running process and
  refreshed incrementally: only rows with ``events.seq`` above the watermark are read; when
  ``person_map`` changed (persons merged), rows are re-clustered in memory.

Grouping is a stable counting sort by person (O(n)); only persons whose rows arrived out of
time order are sorted (see :mod:`funnelscope.kernels.cluster`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.kernels.cluster import cluster_columns, cluster_rows

if TYPE_CHECKING:
    from funnelscope.store.store import Store

__all__ = ["LiveLayout", "PersonLayout", "property_path"]

I64 = npt.NDArray[np.int64]
CODE_DTYPE: Final = np.int16
#: Prefix of JSON property columns: ``properties.plan`` is ``$.plan`` of ``events.properties``.
PROPERTY_PREFIX: Final = "properties."

ColumnLoader = Callable[[str, "PersonLayout"], pa.Array]


def property_path(name: str) -> str | None:
    """The JSON path of a ``properties.<key>`` column name, else None."""
    if name.startswith(PROPERTY_PREFIX):
        return "$." + name[len(PROPERTY_PREFIX) :]
    return None


def _dense_keys(person: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], I64]:
    """(dense key per row, external id per key). Small non-negative ids are used as they are."""
    if person.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo, hi = int(person.min()), int(person.max())
    if lo >= 0 and hi < 2 * person.shape[0] + 1024:
        return person, np.arange(hi + 1, dtype=np.int64)
    import pandas as pd

    codes, uniques = pd.factorize(person, sort=True)
    return codes.astype(np.int64), np.asarray(uniques, dtype=np.int64)


def _encode_events(events: pa.Array | pa.ChunkedArray) -> tuple[npt.NDArray[np.int16], list[str]]:
    encoded = pc.dictionary_encode(events)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks() if encoded.num_chunks else pa.array([], encoded.type)
    names = [str(v) for v in encoded.dictionary.to_pylist()]
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(CODE_DTYPE)
    return codes, names


@dataclass(eq=False)
class PersonLayout:
    """Rows grouped by person, time-ordered inside each person.

    Attributes
    ----------
    offsets
        Person index ``p`` owns rows ``offsets[p]:offsets[p+1]``.
    ts
        Event time in microseconds since the epoch (UTC).
    codes
        Event name code per row: ``event_names[codes[i]]``.
    person_ids
        The external (canonical) person id of each person index.
    rows
        Where each layout row came from (store ``seq`` or input row), or None.

    Examples
    --------
    >>> import numpy as np
    >>> lay = PersonLayout.from_arrays(np.array([7, 3, 7]), np.array([20, 5, 10]),
    ...                                np.array([0, 1, 1]), ["view", "buy"])
    >>> lay.person_ids.tolist(), lay.offsets.tolist(), lay.ts.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 1, 1, 1, 1, 3], [5, 10, 20])
    """

    offsets: I64
    ts: I64
    codes: npt.NDArray[np.int16]
    event_names: tuple[str, ...]
    person_ids: I64
    rows: I64 | None = None
    loader: ColumnLoader | None = None
    _columns: dict[str, pa.Array] = field(default_factory=dict, repr=False)
    _person_of_row: I64 | None = field(default=None, repr=False)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        person: npt.NDArray[np.integer],
        ts_us: npt.NDArray[np.integer],
        codes: npt.NDArray[np.integer],
        event_names: Sequence[str],
        *,
        columns: Mapping[str, pa.Array] | None = None,
    ) -> PersonLayout:
        """Build from parallel arrays: person id, time (us), event code into ``event_names``.

        ``columns`` (optional, in input row order) are served by :meth:`column`. Input in time
        order is clustered in O(n); other persons are sorted individually.
        """
        keys, person_ids = _dense_keys(np.asarray(person))
        ts = np.ascontiguousarray(ts_us, dtype=np.int64)
        # codes are placed in the sort's pass; the row order is kept only to serve columns
        order, offsets, grouped_ts, grouped_codes = cluster_columns(
            keys,
            ts,
            np.asarray(codes),
            person_ids.shape[0],
            with_order=bool(columns),
            codes_dtype=CODE_DTYPE,
        )
        assert grouped_codes is not None
        loader = None
        if columns:
            source = dict(columns)

            def loader(name: str, layout: PersonLayout) -> pa.Array:
                return _take_column(source, name, layout.rows)

        return cls(
            offsets,
            grouped_ts,
            grouped_codes,
            tuple(event_names),
            person_ids,
            order if columns else None,
            loader,
        )

    @classmethod
    def from_table(cls, table: pa.Table) -> PersonLayout:
        """Build from an Arrow table with the canonical columns ``timestamp`` and ``event`` and
        either ``person_id`` or ``user_id``/``anonymous_id`` (ids are then derived). Every other
        column is served by :meth:`column`; ``properties.<key>`` reads the JSON property."""
        if "person_id" in table.column_names:
            person = table.column("person_id").to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            ids = pc.coalesce(table.column("user_id"), table.column("anonymous_id"))
            person = (
                pc.dictionary_encode(ids)
                .combine_chunks()
                .indices.to_numpy(zero_copy_only=False)
                .astype(np.int64)
            )
        ts = pc.cast(table.column("timestamp"), pa.int64()).to_numpy(zero_copy_only=False)
        codes, names = _encode_events(table.column("event"))
        keys, person_ids = _dense_keys(person)
        order, offsets, grouped_ts, grouped_codes = cluster_columns(
            keys,
            np.ascontiguousarray(ts, np.int64),
            codes,
            person_ids.shape[0],
            with_order=True,
            codes_dtype=CODE_DTYPE,
        )
        assert order is not None and grouped_codes is not None
        source = {name: table.column(name) for name in table.column_names}

        def loader(name: str, layout: PersonLayout) -> pa.Array:
            return _take_column(source, name, layout.rows)

        return cls(offsets, grouped_ts, grouped_codes, tuple(names), person_ids, order, loader)

    # -- access ----------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return int(self.ts.shape[0])

    @property
    def n_persons(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def code_of(self, event: str) -> int | None:
        """The code of an event name, None when no row has it."""
        try:
            return self.event_names.index(event)
        except ValueError:
            return None

    def person_of_row(self) -> I64:
        """The person index of every row (computed once)."""
        if self._person_of_row is None:
            self._person_of_row = np.repeat(
                np.arange(self.n_persons, dtype=np.int64), np.diff(self.offsets)
            )
        return self._person_of_row

    def column(self, name: str) -> pa.Array:
        """Column ``name`` in layout row order (loaded once, then cached)."""
        cached = self._columns.get(name)
        if cached is None:
            if self.loader is None:
                raise KeyError(f"this layout has no column {name!r}")
            cached = self.loader(name, self)
            self._columns[name] = cached
        return cached

    def person_index(self, person_id: int) -> int | None:
        """The person index of an external person id, None if unknown."""
        pos = int(np.searchsorted(self.person_ids, person_id))
        if pos < self.person_ids.shape[0] and int(self.person_ids[pos]) == person_id:
            return pos
        return None

    def subset(self, person_indexes: Sequence[int]) -> PersonLayout:
        """A layout of only these persons (same codes and columns): explanations, tests."""
        parts = [np.arange(self.offsets[p], self.offsets[p + 1]) for p in person_indexes]
        take = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        sizes = [int(self.offsets[p + 1] - self.offsets[p]) for p in person_indexes]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        parent = self

        def loader(name: str, layout: PersonLayout) -> pa.Array:
            return parent.column(name).take(pa.array(take))

        return PersonLayout(
            offsets,
            self.ts[take],
            self.codes[take],
            self.event_names,
            self.person_ids[np.asarray(person_indexes, dtype=np.int64)],
            None if self.rows is None else self.rows[take],
            loader,
        )


def _take_column(source: Mapping[str, Any], name: str, rows: I64 | None) -> pa.Array:
    path = property_path(name)
    if name in source:
        values = source[name]
    elif path is not None and "properties" in source:
        import duckdb

        props = pa.table({"p": pa.array(source["properties"]).cast(pa.string())})
        con = duckdb.connect()
        try:
            con.register("props", props)
            values = (
                con.sql(
                    "SELECT json_extract_string(p, $path) AS v FROM props", params={"path": path}
                )
                .to_arrow_table()
                .column("v")
            )
        finally:
            con.close()
    else:
        raise KeyError(f"no column {name!r} in the events")
    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if rows is None else array.take(pa.array(rows))


# -- the store's layout, kept live ---------------------------------------------------------------


class LiveLayout:
    """The store's events as a :class:`PersonLayout`, refreshed from ``events.seq``.

    ``get()`` returns the current layout, first reading only rows appended since the last call
    (``Store.version`` changes on every commit, so an unchanged store costs nothing). Persons
    are canonical (stitched): ``person_map`` is applied as an array gather; when an identity
    merge moved persons, rows are re-clustered in memory without reading the store again.

    Examples
    --------
    >>> import funnelscope
    >>> ws = funnelscope.open(":memory:")
    >>> LiveLayout(ws.store).get().n_rows
    0
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._version = -1
        self._watermark = 0
        self._names: list[str] = []
        self._raw_person = np.zeros(0, np.int32)  # layout order: the uncanonical person id
        self._canon = np.zeros(0, np.int64)  # person_map as a dense array
        self._layout = self._empty()

    def _empty(self) -> PersonLayout:
        return PersonLayout(
            np.zeros(1, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, CODE_DTYPE),
            (),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            self._load_column,
        )

    def get(self) -> PersonLayout:
        """The layout including every committed event."""
        with self._lock:
            if self.store.version != self._version or self._version < 0:
                self._refresh()
            return self._layout

    def _refresh(self) -> None:
        version = self.store.version
        cur = self.store.reader()
        try:
            new = cur.sql(
                'SELECT seq, person_id, epoch_us("timestamp") AS ts, event FROM events '
                "WHERE seq > $w ORDER BY seq",
                params={"w": self._watermark},
            ).to_arrow_table()
            pmap = cur.sql(
                "SELECT person_id, canonical_id FROM person_map ORDER BY person_id"
            ).to_arrow_table()
        finally:
            cur.close()
        top = pc.max(pmap.column("person_id")).as_py()
        canon = np.full(0 if top is None else int(top) + 1, -1, np.int64)
        canon[pmap.column("person_id").to_numpy()] = pmap.column("canonical_id").to_numpy()
        old = self._layout
        merged = bool(
            self._canon.shape[0] and not np.array_equal(canon[: self._canon.shape[0]], self._canon)
        )
        if new.num_rows == 0 and not merged:
            self._canon = canon
            self._version = version
            return
        codes, names = _encode_events(new.column("event"))
        remap = np.array([self._code(n) for n in names], dtype=CODE_DTYPE)
        new_codes = remap[codes] if codes.shape[0] else codes
        seq = np.concatenate(
            [
                old.rows if old.rows is not None else np.zeros(0, np.int64),
                new.column("seq").to_numpy(),
            ]
        )
        raw = np.concatenate(
            [self._raw_person, new.column("person_id").to_numpy().astype(np.int32)]
        )
        ts = np.concatenate([old.ts, new.column("ts").to_numpy()])
        all_codes = np.concatenate([old.codes, new_codes])
        persons = canon[raw]
        n_persons = int(canon.max()) + 1 if canon.shape[0] else 0
        # old rows are already clustered and time-ordered: the stable counting sort keeps them
        # in place and appends each person's new rows; only out-of-order persons get sorted
        order, offsets, grouped_ts = cluster_rows(persons, ts, n_persons)
        self._raw_person = raw[order]
        self._canon = canon
        self._watermark = int(seq.max()) if seq.shape[0] else self._watermark
        self._layout = PersonLayout(
            offsets,
            grouped_ts,
            all_codes[order],
            tuple(self._names),
            np.arange(n_persons, dtype=np.int64),
            seq[order],
            self._load_column,
        )
        self._version = version

    def _code(self, name: str) -> int:
        try:
            return self._names.index(name)
        except ValueError:
            self._names.append(name)
            return len(self._names) - 1

    def _load_column(self, name: str, layout: PersonLayout) -> pa.Array:
        from funnelscope.events.schema import EVENT_SCHEMA

        path = property_path(name)
        if path is not None:
            expr, params = "json_extract_string(properties, $path)", {"path": path}
        elif name in EVENT_SCHEMA.names:
            expr, params = '"' + name.replace('"', '""') + '"', {}
        else:
            raise KeyError(f"no column {name!r} in the events")
        assert layout.rows is not None
        cur = self.store.reader()
        try:
            got = cur.sql(
                f"SELECT seq, {expr} AS v FROM events WHERE seq <= $w",
                params={"w": int(layout.rows.max()) if layout.rows.shape[0] else 0, **params},
            ).to_arrow_table()
        finally:
            cur.close()
        # place values by seq: layout row i holds seq layout.rows[i]
        seqs = got.column("seq").to_numpy()
        pos = np.empty(int(seqs.max()) + 1 if seqs.shape[0] else 0, np.int64)
        pos[seqs] = np.arange(seqs.shape[0])
        values = got.column("v").combine_chunks()
        return values.take(pa.array(pos[layout.rows]))
