"""Sessionisation as one pass over a person's time-ordered on-site events (numba).

The written definition is the SQL of :func:`funnelscope.analysis.sessions.session_ctes`
(docs/sessions.md); this kernel computes the same ``sessions`` rows from narrow arrays, so the
one-off build never carries wide columns through sorts. Wide values (event ids, page paths,
first-event attributes) are looked up afterwards, only for the rows a session points at.

Input rows (:func:`sessions_from_rows`) are the on-site events with ``person_id`` (canonical),
``ts`` (int64 microseconds), ``kind`` (:data:`KIND_CODES`), ``event_id``, ``page_path`` and
``tag`` (the concatenated UTM campaign, null when untagged), in any order; the attribute columns
of :data:`FIRST_EVENT_COLUMNS` may be passed separately for the rows that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numba as nb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.kernels.cluster import cluster_rows

__all__ = [
    "FIRST_EVENT_COLUMNS",
    "KIND_CODES",
    "OTHER_KIND",
    "SESSION_COLUMNS",
    "cut_sessions",
    "order_rows",
    "sessions_from_rows",
]

I64 = npt.NDArray[np.int64]

#: Event kind codes the kernel needs (every other on-site event is an interaction: 5).
KIND_CODES: Final = {
    "page_viewed": 0,
    "product_viewed": 1,
    "product_list_viewed": 2,
    "promotion_viewed": 2,
    "product_added": 3,
    "checkout_started": 4,
}
OTHER_KIND: Final = 5
#: The columns a session takes from its first event.
FIRST_EVENT_COLUMNS: Final = (
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "device_type",
    "country",
)
#: The ``sessions`` table's columns, in order.
SESSION_COLUMNS: Final = (
    "person_id",
    "session_number",
    "started_at",
    "ended_at",
    "first_event_id",
    "last_event_id",
    "landing_page",
    "exit_page",
    "duration_us",
    "event_count",
    "page_count",
    "interactions",
    "product_views",
    "cart_adds",
    "first_add_at",
    "first_checkout_at",
    "timed_page_us",
    "timed_pages",
    *FIRST_EVENT_COLUMNS,
    "is_new_visitor",
)

# per-session integer outputs of the kernel, by row of ``out``
(
    _FIRST,
    _LAST,
    _LANDING,
    _EXIT,
    _NUMBER,
    _EVENTS,
    _PAGES,
    _INTERACTIONS,
    _PRODUCT_VIEWS,
    _CART_ADDS,
    _FIRST_ADD,
    _FIRST_CHECKOUT,
    _TIMED_US,
    _TIMED_PAGES,
) = range(14)
_NO_ROW: Final = -1


@nb.njit(cache=True, nogil=True)
def _cut(  # pragma: no cover - numba
    person: I64,
    ts: I64,
    kind: npt.NDArray[np.int8],
    tag: I64,
    has_page: npt.NDArray[np.bool_],
    timeout: int,
) -> I64:
    n = person.shape[0]
    out = np.empty((14, n), np.int64)
    s = -1
    state = -1  # the campaign of the current session's start (-1: none)
    number = 0
    for i in range(n):
        new_person = i == 0 or person[i] != person[i - 1]
        is_gap = new_person or ts[i] - ts[i - 1] > timeout
        is_start = is_gap or (tag[i] != -1 and tag[i] != state)
        if is_gap or tag[i] != -1:
            # a gap resets the campaign to the new event's (maybe none); a tag sets it
            state = tag[i]
        if is_start:
            number = 1 if new_person else number + 1
            s += 1
            out[_FIRST, s] = i
            out[_LANDING, s] = _NO_ROW
            out[_EXIT, s] = _NO_ROW
            out[_NUMBER, s] = number
            for k in range(_EVENTS, _FIRST_ADD):
                out[k, s] = 0
            out[_FIRST_ADD, s] = _NO_ROW
            out[_FIRST_CHECKOUT, s] = _NO_ROW
            out[_TIMED_US, s] = 0
            out[_TIMED_PAGES, s] = 0
        elif kind[i - 1] == 0:
            # the previous row was a page view followed by an event of the same session
            out[_TIMED_US, s] += ts[i] - ts[i - 1]
            out[_TIMED_PAGES, s] += 1
        out[_LAST, s] = i
        if has_page[i]:
            if out[_LANDING, s] == _NO_ROW:
                out[_LANDING, s] = i
            out[_EXIT, s] = i
        out[_EVENTS, s] += 1
        k = kind[i]
        if k == 0:
            out[_PAGES, s] += 1
        elif k == 1:
            out[_PRODUCT_VIEWS, s] += 1
        if k >= 3:
            out[_INTERACTIONS, s] += 1
        if k == 3:
            out[_CART_ADDS, s] += 1
            if out[_FIRST_ADD, s] == _NO_ROW:
                out[_FIRST_ADD, s] = i
        elif k == 4 and out[_FIRST_CHECKOUT, s] == _NO_ROW:
            out[_FIRST_CHECKOUT, s] = i
    return out[:, : s + 1]


def cut_sessions(
    person: npt.NDArray[np.integer],
    ts: I64,
    kind: npt.NDArray[np.int8],
    tag: I64,
    has_page: npt.NDArray[np.bool_],
    timeout_us: int,
) -> I64:
    """Cut rows sorted by ``(person, ts, event_id)`` into sessions.

    Returns a ``(14, sessions)`` int64 array: per session its first and last row, landing and
    exit row (-1: no page path), number, event, page, interaction, product view and cart-add
    counts, first add-to-cart and checkout rows (-1: none), timed page microseconds and count.
    ``tag`` is a campaign code (-1: untagged); ``kind`` holds :data:`KIND_CODES` values.

    Examples
    --------
    >>> import numpy as np
    >>> out = cut_sessions(np.array([1, 1, 1]), np.array([0, 60, 10_000]), np.zeros(3, np.int8),
    ...                    np.full(3, -1), np.ones(3, bool), 1_000)
    >>> out[0].tolist(), out[4].tolist()  # first rows, session numbers
    ([0, 2], [1, 2])
    """
    return _cut(
        np.ascontiguousarray(person, np.int64),
        np.ascontiguousarray(ts, np.int64),
        np.ascontiguousarray(kind, np.int8),
        np.ascontiguousarray(tag, np.int64),
        np.ascontiguousarray(has_page, np.bool_),
        int(timeout_us),
    )


def _dense(person: npt.NDArray[np.integer]) -> tuple[I64, int]:
    if person.shape[0] == 0:
        return np.zeros(0, np.int64), 0
    lo, hi = int(person.min()), int(person.max())
    if lo >= 0 and hi < 2 * person.shape[0] + 1024:
        return person.astype(np.int64, copy=False), hi + 1
    uniques, codes = np.unique(person, return_inverse=True)
    return codes.astype(np.int64), int(uniques.shape[0])


def order_rows(
    person: npt.NDArray[np.integer], ts: I64, event_id: pa.Array | pa.ChunkedArray
) -> I64:
    """The permutation that sorts rows by ``(person, ts, event_id)``.

    A counting sort by person keeps arrival order, which is nearly time order; only persons
    with out-of-order rows are sorted, and only runs of equal ``(person, ts)`` compare event ids
    (byte order, as DuckDB compares VARCHAR).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> order_rows(np.array([2, 1, 1]), np.array([5, 7, 7]), pa.array(["a", "c", "b"])).tolist()
    [2, 1, 0]
    """
    keys, n_keys = _dense(person)
    order, _, grouped_ts = cluster_rows(keys, np.ascontiguousarray(ts, np.int64), n_keys)
    grouped_keys = keys[order]
    tie = (grouped_keys[1:] == grouped_keys[:-1]) & (grouped_ts[1:] == grouped_ts[:-1])
    if tie.any():
        in_run = np.zeros(order.shape[0], np.bool_)
        in_run[1:] |= tie
        in_run[:-1] |= tie
        run_start = in_run.copy()
        run_start[1:] &= ~tie
        rows = np.flatnonzero(in_run)
        runs = np.cumsum(run_start)[rows]
        ids = pc.take(event_id, pa.array(order[rows]))
        perm = pc.sort_indices(
            pa.table({"run": runs, "id": ids}),
            sort_keys=[("run", "ascending"), ("id", "ascending")],
        )
        order[rows] = order[rows][perm.to_numpy()]
    return order


def _take(values: pa.Array | pa.ChunkedArray, rows: I64) -> pa.Array:
    """``values[rows]``, null where ``rows`` is -1."""
    index = pa.array(rows, mask=rows < 0)
    taken = pc.take(values, index)
    return taken.combine_chunks() if isinstance(taken, pa.ChunkedArray) else taken


def _timestamps(ts: I64, rows: I64) -> pa.Array:
    valid = rows >= 0
    values = np.where(valid, ts[np.where(valid, rows, 0)], 0)
    return pa.array(values, pa.timestamp("us", tz="UTC"), mask=~valid)


def _tag_codes(tag: pa.Array | pa.ChunkedArray) -> I64:
    encoded = pc.dictionary_encode(tag)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = (
            encoded.combine_chunks()
            if encoded.num_chunks
            else pa.array([], pa.dictionary(pa.int32(), pa.string()))
        )
    codes = encoded.indices.fill_null(-1)
    return np.asarray(codes.to_numpy(zero_copy_only=False), np.int64)


AttributeLookup = Callable[[I64], pa.Table]


def sessions_from_rows(
    rows: pa.Table, timeout_us: int, attributes: AttributeLookup | None = None
) -> pa.Table:
    """The ``sessions`` table (:data:`SESSION_COLUMNS`) of on-site event rows.

    ``rows`` has ``person_id``, ``ts`` (int64 microseconds), ``kind`` (:data:`KIND_CODES`),
    ``event_id``, ``page_path`` and ``tag``, in any order. The columns of
    :data:`FIRST_EVENT_COLUMNS` come from ``rows`` when present, else from ``attributes``:
    called with the input row numbers of the sessions' first events, it returns a table of those
    columns for those rows, in that order.

    Examples
    --------
    >>> import pyarrow as pa
    >>> rows = pa.table({"person_id": [1, 1], "ts": [0, 10], "kind": [0, 0],
    ...                  "event_id": ["a", "b"], "page_path": ["/", None], "tag": [None, None],
    ...                  **{c: ["direct", None] for c in FIRST_EVENT_COLUMNS}})
    >>> sessions_from_rows(rows, 1_800_000_000).column("landing_page").to_pylist()
    ['/']
    """
    person = rows.column("person_id").to_numpy()
    ts = np.asarray(rows.column("ts").to_numpy(), np.int64)
    # one contiguous array each: a random-access take from many chunks is several times slower
    event_id = rows.column("event_id").combine_chunks()
    order = order_rows(person, ts, event_id)
    sorted_ts = ts[order]
    page = rows.column("page_path").combine_chunks()
    cuts = cut_sessions(
        person[order],
        sorted_ts,
        np.asarray(rows.column("kind").to_numpy(), np.int8)[order],
        _tag_codes(rows.column("tag"))[order],
        np.asarray(page.is_valid().to_numpy(zero_copy_only=False), np.bool_)[order],
        timeout_us,
    )

    def source(k: int) -> I64:  # input row of a per-session sorted-row index (-1 stays -1)
        at = cuts[k]
        return np.where(at >= 0, order[np.where(at >= 0, at, 0)], _NO_ROW)

    first, last = source(_FIRST), source(_LAST)
    if all(c in rows.column_names for c in FIRST_EVENT_COLUMNS):
        attrs = rows.select(list(FIRST_EVENT_COLUMNS)).take(pa.array(first))
    elif attributes is not None:
        attrs = attributes(first)
    else:
        raise ValueError("the first-event attribute columns are missing")
    number = cuts[_NUMBER]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "person_id": pa.array(person[first].astype(np.int32)),
        "session_number": pa.array(number),
        "started_at": _timestamps(sorted_ts, cuts[_FIRST]),
        "ended_at": _timestamps(sorted_ts, cuts[_LAST]),
        "first_event_id": _take(event_id, first),
        "last_event_id": _take(event_id, last),
        "landing_page": _take(page, source(_LANDING)),
        "exit_page": _take(page, source(_EXIT)),
        "duration_us": pa.array(sorted_ts[cuts[_LAST]] - sorted_ts[cuts[_FIRST]]),
        "event_count": pa.array(cuts[_EVENTS]),
        "page_count": pa.array(cuts[_PAGES]),
        "interactions": pa.array(cuts[_INTERACTIONS]),
        "product_views": pa.array(cuts[_PRODUCT_VIEWS]),
        "cart_adds": pa.array(cuts[_CART_ADDS]),
        "first_add_at": _timestamps(sorted_ts, cuts[_FIRST_ADD]),
        "first_checkout_at": _timestamps(sorted_ts, cuts[_FIRST_CHECKOUT]),
        "timed_page_us": pa.array(cuts[_TIMED_US]),
        "timed_pages": pa.array(cuts[_TIMED_PAGES]),
        **{c: attrs.column(c) for c in FIRST_EVENT_COLUMNS},
        "is_new_visitor": pa.array(number == 1),
    }
    return pa.table(columns)
