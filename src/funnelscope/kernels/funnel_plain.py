"""The plain ordered funnel (no per-step limits, optional steps, exclusions or open entry):
latest-start scans with one slot per step, the kernels behind most funnels and the benchmark.

Same inputs and outputs as :mod:`funnelscope.kernels.funnel` (CSR ``offsets``, ``ts``, step
masks by ``lut[codes[i]]`` or ``emask[i]``); same semantics as its ``ordered_uniques`` on the
funnels they accept (the property tests run both).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from funnelscope.kernels.funnel import _mask

__all__ = ["ordered_lean", "ordered_plain"]


@nb.njit(parallel=True, cache=True)
def ordered_plain(chunks, offsets, ts, codes, lut, emask, n, window, entry_lo, entry_hi, overlap,  # type: ignore[no-untyped-def]  # pragma: no cover
                  lut_steps):
    """``ordered_uniques`` (:mod:`funnelscope.kernels.funnel`) without per-step limits, optional
    steps, exclusions or open entry: the lean latest-start scan, then the counted chain rebuilt
    as the earliest unused rows after the counted start (which reach the same level).

    With ``overlap`` (an event may match several steps) one event's steps are offered from the
    last to the first, so it cannot extend a chain it started. A unit with several events at
    one timestamp where one of them matches several steps needs the general kernel: it is
    returned with level -1. ``lut_steps[code]`` lists each code's steps in processing order
    (-1 ends the list): one event's steps without scanning every bit. Also returns the counted
    chain's times (``INT64_MIN`` where a step is not in the chain), written while its rows are
    in cache."""
    units = offsets.shape[0] - 1
    level = np.zeros(units, np.int8)
    reached = np.zeros(units, np.int64)
    advanced = np.zeros(units, np.int64)
    chain = np.full((units, n), -1, np.int64)
    times = np.full((units, n), np.iinfo(np.int64).min, np.int64)
    for c in nb.prange(chunks):
        st = np.zeros(n, np.int64)
        has = np.zeros(n, np.bool_)
        for u in range(c * units // chunks, (c + 1) * units // chunks):
            lo = offsets[u]
            hi = offsets[u + 1]
            if lo == hi:
                continue
            for k in range(n):
                has[k] = False
            lvl = 0
            bstart = np.int64(0)
            punt = False
            i = lo
            while i < hi:
                t = ts[i]
                m = _mask(i, codes, lut, emask)
                j = i + 1
                while j < hi and ts[j] == t:
                    mj = _mask(j, codes, lut, emask)
                    if overlap and (mj & (mj - 1) or m & (m - 1)):
                        punt = True
                    m |= mj
                    j += 1
                if punt:
                    break
                single = j - i == 1 and emask.shape[0] == 0
                q = 0
                k = n - 1 if overlap else 0
                while 0 <= k < n:
                    if single:
                        k = lut_steps[codes[i], q]
                        q += 1
                        if k < 0:
                            break
                    if (m >> k) & 1:
                        if k == 0:
                            if entry_lo <= t < entry_hi:
                                st[0] = t
                                has[0] = True
                                if lvl == 0:
                                    lvl = 1
                                    bstart = t
                        elif has[k - 1] and t - st[k - 1] <= window:
                            st[k] = st[k - 1]
                            has[k] = True
                            if k + 1 > lvl:
                                lvl = k + 1
                                bstart = st[k]
                    if not single:
                        k = k - 1 if overlap else k + 1
                i = j
            if punt:
                level[u] = -1
                continue
            level[u] = lvl
            reached[u] = (np.int64(1) << lvl) - 1
            if lvl == 0:
                continue
            r = lo
            while not (ts[r] == bstart and _mask(r, codes, lut, emask) & 1):
                r += 1
            chain[u, 0] = r
            times[u, 0] = bstart
            g = r
            while g > lo and ts[g - 1] == ts[r]:
                g -= 1
            for k in range(1, lvl):
                r = g
                while True:
                    if (_mask(r, codes, lut, emask) >> k) & 1:
                        used = False
                        for q in range(k):
                            if chain[u, q] == r:
                                used = True
                        if not used:
                            break
                    r += 1
                chain[u, k] = r
                times[u, k] = ts[r]
                g = r
                while g > lo and ts[g - 1] == ts[r]:
                    g -= 1
    return level, reached, advanced, chain, times


@nb.njit(parallel=True, cache=True)
def ordered_lean(chunks, offsets, ts, codes, step_of, emask, n, window, entry_lo, entry_hi):  # type: ignore[no-untyped-def]  # pragma: no cover
    """:func:`ordered_plain` when no event matches two steps (the common funnel), leaner. A row's
    step comes from ``step_of[code]`` (-1 = none; or from the single bit of ``emask[i]``).

    Slots live in ``sl``: ``sl[0]`` is the current row's own time (the start it offers as step
    1; -2**62 outside the entry range), ``sl[k + 1]`` the latest start of a chain at step ``k``,
    ``sl[n + 1]`` a start that is never in the window (what rows of no step read) and
    ``sl[n + 2]`` where they write. A row of step ``k`` then reads ``sl[k]`` and writes
    ``sl[k + 1]`` without a branch on its step: slot starts never decrease, so the write is a
    ``max``. The scan of a unit stops once its counted chain reaches the last step (no later
    chain replaces it), and the counted chain's times are written while its rows are still in
    cache. Returns level, reached, advanced, chain, times (``INT64_MIN`` where a step is not
    in the chain)."""
    units = offsets.shape[0] - 1
    none = np.iinfo(np.int64).min
    level = np.zeros(units, np.int8)
    reached = np.zeros(units, np.int64)
    advanced = np.zeros(units, np.int64)
    chain = np.empty((units, n), np.int64)
    times = np.empty((units, n), np.int64)
    lost = np.int64(-(2**62))
    src_of = np.empty(step_of.shape[0], np.int64)
    dst_of = np.empty(step_of.shape[0], np.int64)
    for code in range(step_of.shape[0]):
        src_of[code] = step_of[code] if step_of[code] >= 0 else n + 1
        dst_of[code] = step_of[code] + 1 if step_of[code] >= 0 else n + 2
    lut_rows = emask.shape[0] == 0
    for c in nb.prange(chunks):
        sl = np.empty(n + 3, np.int64)
        for u in range(c * units // chunks, (c + 1) * units // chunks):
            lo = offsets[u]
            hi = offsets[u + 1]
            for k in range(n):
                chain[u, k] = -1
                times[u, k] = none
            for k in range(1, n + 3):
                sl[k] = lost
            lvl = 0
            bstart = np.int64(0)
            i = lo
            while i < hi and lvl < n:
                t = ts[i]
                sl[0] = t if entry_lo <= t < entry_hi else lost
                j = i + 1
                if j == hi or ts[j] != t:
                    if lut_rows:
                        src = src_of[codes[i]]
                        dst = dst_of[codes[i]]
                    else:
                        q = _lean_step(i, codes, step_of, emask)
                        src = q if q >= 0 else n + 1
                        dst = q + 1 if q >= 0 else n + 2
                    v = sl[src]
                    v = v if v >= t - window else lost
                    if v > lost and dst > lvl:
                        lvl = dst
                        bstart = v
                    sl[dst] = max(sl[dst], v)
                    i = j
                    continue
                # equal timestamps: every step of the instant, in step order
                m = np.int64(0)
                j = i
                while j < hi and ts[j] == t:
                    q = _lean_step(j, codes, step_of, emask)
                    if q >= 0:
                        m |= np.int64(1) << q
                    j += 1
                k = 0
                while m != 0:
                    if m & 1:
                        v = sl[k]
                        if v >= t - window and v > lost:
                            sl[k + 1] = max(sl[k + 1], v)
                            if k + 1 > lvl:
                                lvl = k + 1
                                bstart = v
                    m >>= 1
                    k += 1
                i = j
            level[u] = lvl
            reached[u] = (np.int64(1) << lvl) - 1
            if lvl == 0:
                continue
            # the counted chain: its step 1 at bstart, then the earliest row of each next step
            r = lo
            while not (ts[r] == bstart and _lean_step(r, codes, step_of, emask) == 0):
                r += 1
            chain[u, 0] = r
            times[u, 0] = bstart
            g = r
            while g > lo and ts[g - 1] == bstart:
                g -= 1
            for k in range(1, lvl):
                r = g
                while _lean_step(r, codes, step_of, emask) != k:
                    r += 1
                chain[u, k] = r
                times[u, k] = ts[r]
                g = r
                while g > lo and ts[g - 1] == ts[r]:
                    g -= 1
    return level, reached, advanced, chain, times


@nb.njit(cache=True, nogil=True, inline="always")
def _lean_step(i, codes, step_of, emask):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The one step row ``i`` matches, -1 for none (``emask`` rows have at most one bit)."""
    if emask.shape[0] == 0:
        return step_of[codes[i]]
    m = np.int64(emask[i])
    if m == 0:
        return -1
    k = 0
    while not (m >> k) & 1:
        k += 1
    return k

