"""Grouping rows by person in O(n): a stable counting sort, then a time-order fix-up.

Logs are appended in (nearly) time order, so a stable counting sort by person leaves each
person's rows in time order already; only the persons whose rows arrived out of order are sorted
(perf-baselines section 7.3: a comparison sort over all rows costs 5-10x more).

The sort runs on every thread: each counts its block of rows per key, and each then places its
block's timestamps (and codes, and row numbers when asked) straight into their grouped
positions, thread 0's rows of a key before thread 1's, so the result is the stable order. No
second pass gathers the columns through the order.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt

__all__ = ["cluster_columns", "cluster_rows", "segments_sorted", "sort_segments"]

I64 = npt.NDArray[np.int64]


@nb.njit(parallel=True, cache=True)
def _counting_scatter(keys, n_keys, parts, ts, codes, out_ts, out_codes, order):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Stable counting sort of rows by ``keys`` over ``parts`` blocks of rows: returns the
    offsets and fills ``out_ts`` (and ``out_codes`` / ``order`` when not empty) in grouped
    order."""
    n = keys.shape[0]
    counts = np.zeros((parts, n_keys), np.int64)
    for p in nb.prange(parts):
        for i in range(p * n // parts, (p + 1) * n // parts):
            counts[p, keys[i]] += 1
    # each block's first position per key: keys in order, blocks in order inside a key
    offsets = np.empty(n_keys + 1, np.int64)
    pos = np.int64(0)
    for k in range(n_keys):
        offsets[k] = pos
        for p in range(parts):
            c = counts[p, k]
            counts[p, k] = pos
            pos += c
    offsets[n_keys] = pos
    with_codes = out_codes.shape[0] > 0
    with_order = order.shape[0] > 0
    for p in nb.prange(parts):
        for i in range(p * n // parts, (p + 1) * n // parts):
            k = keys[i]
            d = counts[p, k]
            counts[p, k] = d + 1
            out_ts[d] = ts[i]
            if with_codes:
                out_codes[d] = codes[i]
            if with_order:
                order[d] = i
    return offsets


@nb.njit(cache=True, nogil=True)
def _unsorted_segments(offsets: I64, ts: I64) -> I64:  # pragma: no cover - numba
    bad = np.zeros(offsets.shape[0] - 1, np.bool_)
    n = 0
    for u in range(offsets.shape[0] - 1):
        for i in range(offsets[u] + 1, offsets[u + 1]):
            if ts[i] < ts[i - 1]:
                bad[u] = True
                n += 1
                break
    out = np.empty(n, np.int64)
    j = 0
    for u in range(bad.shape[0]):
        if bad[u]:
            out[j] = u
            j += 1
    return out


@nb.njit(cache=True, nogil=True)
def _sort_segments(offsets, ts, segments, order, codes):  # type: ignore[no-untyped-def]  # pragma: no cover
    for s in range(segments.shape[0]):
        u = segments[s]
        lo, hi = offsets[u], offsets[u + 1]
        # stable: rows with equal timestamps keep their arrival order
        local = np.argsort(ts[lo:hi], kind="mergesort")
        ts[lo:hi] = ts[lo:hi][local]
        if order.shape[0] > 0:
            order[lo:hi] = order[lo:hi][local]
        if codes.shape[0] > 0:
            codes[lo:hi] = codes[lo:hi][local]


def segments_sorted(offsets: I64, ts: I64) -> bool:
    """True when every segment's timestamps are non-decreasing."""
    return bool(_unsorted_segments(offsets, ts).shape[0] == 0)


def sort_segments(offsets: I64, ts: I64, order: I64) -> None:
    """Stable-sort, in place, the segments whose timestamps are out of order (``order`` follows)."""
    bad = _unsorted_segments(offsets, ts)
    if bad.shape[0]:
        _sort_segments(offsets, ts, bad, order, order[:0])


def cluster_rows(keys: npt.NDArray[np.integer], ts: I64, n_keys: int) -> tuple[I64, I64, I64]:
    """Rows grouped by ``keys`` (dense ``0..n_keys-1``), time-ordered inside each group.

    Returns ``(order, offsets, grouped_ts)``: row ``order[i]`` of the input is row ``i`` of the
    grouped layout, group ``k`` holds rows ``offsets[k]:offsets[k+1]`` and ``grouped_ts`` is
    ``ts[order]``. Equal timestamps keep the input order (stable).

    Examples
    --------
    >>> import numpy as np
    >>> order, offsets, _ = cluster_rows(np.array([1, 0, 1]), np.array([5, 6, 4]), 2)
    >>> order.tolist(), offsets.tolist()
    ([1, 2, 0], [0, 1, 3])
    """
    order, offsets, grouped_ts, _ = cluster_columns(keys, ts, None, n_keys, with_order=True)
    assert order is not None
    return order, offsets, grouped_ts


def cluster_columns(
    keys: npt.NDArray[np.integer],
    ts: I64,
    codes: npt.NDArray[np.integer] | None,
    n_keys: int,
    *,
    with_order: bool,
    codes_dtype: npt.DTypeLike = np.int16,
) -> tuple[I64 | None, I64, I64, npt.NDArray[Any] | None]:
    """:func:`cluster_rows` placing ``codes`` (as ``codes_dtype``) in the same pass; the row
    order only ``with_order``. Returns ``(order, offsets, grouped_ts, grouped_codes)``.

    Examples
    --------
    >>> import numpy as np
    >>> _, offsets, ts, codes = cluster_columns(np.array([1, 0, 1]), np.array([5, 6, 4]),
    ...                                         np.array([7, 8, 9]), 2, with_order=False)
    >>> offsets.tolist(), ts.tolist(), codes.tolist()
    ([0, 1, 3], [6, 4, 5], [8, 9, 7])
    """
    keys = np.ascontiguousarray(keys)
    ts = np.ascontiguousarray(ts, np.int64)
    n = keys.shape[0]
    grouped_ts = np.empty(n, np.int64)
    grouped_codes = None if codes is None else np.empty(n, codes_dtype)
    order = np.empty(n, np.int64) if with_order else None
    no_codes = np.zeros(0, codes_dtype)
    no_order = np.zeros(0, np.int64)
    parts = max(1, min(nb.get_num_threads(), n // 65_536))  # small inputs: one block
    offsets = _counting_scatter(
        keys,
        int(n_keys),
        parts,
        ts,
        no_codes if codes is None else np.ascontiguousarray(codes),
        grouped_ts,
        no_codes if grouped_codes is None else grouped_codes,
        no_order if order is None else order,
    )
    bad = _unsorted_segments(offsets, grouped_ts)
    if bad.shape[0]:
        _sort_segments(
            offsets,
            grouped_ts,
            bad,
            no_order if order is None else order,
            no_codes if grouped_codes is None else grouped_codes,
        )
    return order, offsets, grouped_ts, grouped_codes
