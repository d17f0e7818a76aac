"""Per-unit outcome helpers: chain rows to times, step counts, time-to-convert gaps, trend
counts. Linear passes over the kernel outputs (one row per unit), so results over millions of
units stay cheap whatever the step count."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["bit_counts", "chain_rows_and_times", "period_counts", "step_gaps"]


@nb.njit(parallel=True, cache=True)
def chain_rows_and_times(chain, stream_rows, ts):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Chain entries (stream rows, -1 = none) as layout rows and times (``INT64_MIN`` = none).
    An empty ``stream_rows`` means stream rows are layout rows."""
    units, n = chain.shape
    rows = np.empty((units, n), np.int64)
    times = np.empty((units, n), np.int64)
    none = np.iinfo(np.int64).min
    for u in nb.prange(units):
        for k in range(n):
            r = chain[u, k]
            if r < 0:
                rows[u, k] = -1
                times[u, k] = none
            else:
                if stream_rows.shape[0] > 0:
                    r = stream_rows[r]
                rows[u, k] = r
                times[u, k] = ts[r]
    return rows, times


@nb.njit(cache=True)
def bit_counts(masks, n):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """How many masks have each of the ``n`` low bits set."""
    out = np.zeros(n, np.int64)
    for i in range(masks.shape[0]):
        m = masks[i]
        k = 0
        while m != 0 and k < n:
            if m & 1:
                out[k] += 1
            m >>= 1
            k += 1
    return out


@nb.njit(cache=True)
def step_gaps(times, none):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Microseconds from each chain's previous done step to step ``k`` (k >= 1), grouped by
    step: ``values[offsets[k]:offsets[k+1]]``; and step 1 to the last step for chains that
    did both (``total``)."""
    rows, n = times.shape
    counts = np.zeros(n + 1, np.int64)
    n_total = 0
    for r in range(rows):
        seen = times[r, 0] != none
        for k in range(1, n):
            if times[r, k] != none:
                if seen:
                    counts[k + 1] += 1
                seen = True
        if times[r, 0] != none and times[r, n - 1] != none:
            n_total += 1
    for k in range(n):
        counts[k + 1] += counts[k]
    values = np.empty(counts[n], np.int64)
    cursor = counts[:n].copy()
    total = np.empty(n_total, np.int64)
    c = 0
    for r in range(rows):
        last = times[r, 0]
        for k in range(1, n):
            t = times[r, k]
            if t != none:
                if last != none:
                    values[cursor[k]] = t - last
                    cursor[k] += 1
                last = t
        if times[r, 0] != none and times[r, n - 1] != none:
            total[c] = times[r, n - 1] - times[r, 0]
            c += 1
    return values, counts, total


@nb.njit(cache=True)
def period_counts(slot, masks, n, periods):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Per period (``slot`` per row), rows and rows with each of the ``n`` low bits set."""
    entered = np.zeros(periods, np.int64)
    counts = np.zeros((periods, n), np.int64)
    for i in range(slot.shape[0]):
        p = slot[i]
        entered[p] += 1
        m = masks[i]
        k = 0
        while m != 0 and k < n:
            if m & 1:
                counts[p, k] += 1
            m >>= 1
            k += 1
    return entered, counts
