"""Per-unit outcome helpers: chain rows to times, step counts, time-to-convert gaps, trend
counts. Linear passes over the kernel outputs (one row per unit), so results over millions of
units stay cheap whatever the step count."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["bit_counts", "chain_rows_and_times", "step_gaps", "trend_counts"]


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


_CHUNKS = 256


@nb.njit(parallel=True, cache=True)
def bit_counts(masks, n):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """How many masks have each of the ``n`` low bits set."""
    rows = masks.shape[0]
    chunks = max(1, min(rows, _CHUNKS))
    part = np.zeros((chunks, n), np.int64)
    for c in nb.prange(chunks):
        for i in range(c * rows // chunks, (c + 1) * rows // chunks):
            m = masks[i]
            k = 0
            while m != 0 and k < n:
                if m & 1:
                    part[c, k] += 1
                m >>= 1
                k += 1
    out = np.zeros(n, np.int64)
    for c in range(chunks):
        for k in range(n):
            out[k] += part[c, k]
    return out


@nb.njit(parallel=True, cache=True)
def step_gaps(times, none):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Microseconds from each chain's previous done step to step ``k`` (k >= 1), grouped by
    step: ``values[offsets[k]:offsets[k+1]]``; and step 1 to the last step for chains that
    did both (``total``). Rows are split in blocks counted, then filled, in parallel (each
    step's values stay in row order)."""
    rows, n = times.shape
    chunks = max(1, min(rows, _CHUNKS))
    part = np.zeros((chunks, n + 1), np.int64)  # per block: values of step k; n: totals
    for c in nb.prange(chunks):
        for r in range(c * rows // chunks, (c + 1) * rows // chunks):
            seen = times[r, 0] != none
            for k in range(1, n):
                if times[r, k] != none:
                    if seen:
                        part[c, k] += 1
                    seen = True
            if times[r, 0] != none and times[r, n - 1] != none:
                part[c, n] += 1
    counts = np.zeros(n + 1, np.int64)
    for k in range(n):
        step_total = 0
        for c in range(chunks):
            step_total += part[c, k]
        counts[k + 1] = counts[k] + step_total
    # each block's first position per step, and in the totals
    start = np.empty((chunks, n + 1), np.int64)
    for k in range(n + 1):
        pos = counts[k] if k < n else 0
        for c in range(chunks):
            start[c, k] = pos
            pos += part[c, k]
    values = np.empty(counts[n], np.int64)
    total = np.empty(start[chunks - 1, n] + part[chunks - 1, n], np.int64)
    for c in nb.prange(chunks):
        cursor = start[c].copy()
        for r in range(c * rows // chunks, (c + 1) * rows // chunks):
            last = times[r, 0]
            for k in range(1, n):
                t = times[r, k]
                if t != none:
                    if last != none:
                        values[cursor[k]] = t - last
                        cursor[k] += 1
                    last = t
            if times[r, 0] != none and times[r, n - 1] != none:
                total[cursor[n]] = times[r, n - 1] - times[r, 0]
                cursor[n] += 1
    return values, counts, total


@nb.njit(cache=True, nogil=True)
def _period_of(us, period):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """The UTC period of a time: epoch day (0), Monday of its ISO week as an epoch day (1),
    or months since 1970-01 (2)."""
    days = us // 86_400_000_000
    if period == 0:
        return days
    if period == 1:
        return days - (days + 3) % 7  # 1970-01-01 was a Thursday
    # civil date from days (proleptic Gregorian, eras of 400 years)
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return (year - 1970) * 12 + month - 1


@nb.njit(parallel=True, cache=True)
def trend_counts(times, masks, n, from_first, period, none):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Units by the period of their entry (step 1's time, or with ``from_first`` false the
    earliest step time): the first period, units entered per period offset, and units per
    period with each of the ``n`` low bits of ``masks`` set. ``period``: see
    :func:`_period_of`."""
    rows = times.shape[0]
    per = np.empty(rows, np.int64)
    for r in nb.prange(rows):
        entry = none
        if from_first:
            entry = times[r, 0]
        else:
            for k in range(times.shape[1]):
                t = times[r, k]
                if t != none and (entry == none or t < entry):
                    entry = t
        per[r] = none if entry == none else _period_of(entry, period)
    lo = np.iinfo(np.int64).max
    hi = none
    for r in range(rows):
        if per[r] != none:
            lo = min(lo, per[r])
            hi = max(hi, per[r])
    if hi == none:
        return 0, np.zeros(0, np.int64), np.zeros((0, n), np.int64)
    entered = np.zeros(hi - lo + 1, np.int64)
    counts = np.zeros((hi - lo + 1, n), np.int64)
    for r in range(rows):
        if per[r] == none:
            continue
        p = per[r] - lo
        entered[p] += 1
        m = masks[r]
        k = 0
        while m != 0 and k < n:
            if m & 1:
                counts[p, k] += 1
            m >>= 1
            k += 1
    return lo, entered, counts
