"""The plain ordered funnel (no per-step limits, optional steps, exclusions or open entry):
latest-start scans with one slot per step, the kernels behind most funnels and the benchmark.

Same inputs and outputs as :mod:`funnelscope.kernels.funnel` (CSR ``offsets``, ``ts``, step
masks by ``lut[codes[i]]`` or ``emask[i]``); same semantics as its ``ordered_uniques`` on the
funnels they accept (the property tests run both).
"""

from __future__ import annotations

import numba as nb
import numpy as np

# numba's cache does not see changes in other files: after editing ``step_mask``, clear this
# module's cache (its __pycache__ *.nbi/*.nbc) too
from funnelscope.kernels.funnel import step_mask

__all__ = ["ordered_lean", "ordered_repeat"]


@nb.njit(parallel=True, cache=True)
def ordered_repeat(  # type: ignore[no-untyped-def]  # pragma: no cover
    chunks,
    offsets,
    ts,
    codes,
    lut,
    src_of,
    dst_of,
    emask,
    n,
    window,
    entry_lo,
    entry_hi,
    keep_chain,
):
    """:func:`ordered_lean` when an event may match several steps (repeated step names): one
    event fills one step, so its steps are offered from the last to the first (it cannot
    extend a chain it started). ``src_of[code]`` / ``dst_of[code]`` list a code's slot reads and
    writes in that order, padded with the no-step pair (``n + 1``, ``n + 2``): each row does
    the same branch-free max updates whatever its steps. Rows with ``emask`` offer their bits
    from the highest.

    Several events at one instant chain in step order (as in :func:`ordered_lean`) when each
    matches one step; a unit with such an instant where an event matches several steps needs
    the general kernel (which keeps every undominated chain): it is returned with level -1.
    The counted chain is rebuilt as the earliest unused rows after the counted start (which
    reach the same level). Returns level, reached, advanced, chain (no rows unless
    ``keep_chain``), times."""
    units = offsets.shape[0] - 1
    none = np.iinfo(np.int64).min
    level = np.zeros(units, np.int8)
    reached = np.zeros(units, np.int64)
    advanced = np.zeros(units, np.int64)
    chain = np.empty((units if keep_chain else 0, n), np.int64)
    times = np.empty((units, n), np.int64)
    lost = np.int64(-(2**62))
    lut_rows = emask.shape[0] == 0
    width = src_of.shape[1]
    for c in nb.prange(chunks):
        sl = np.empty(n + 3, np.int64)
        rows = np.empty(n, np.int64)  # the counted chain's rows
        for u in range(c * units // chunks, (c + 1) * units // chunks):
            lo = offsets[u]
            hi = offsets[u + 1]
            for k in range(n):
                times[u, k] = none
            if keep_chain:
                for k in range(n):
                    chain[u, k] = -1
            for k in range(1, n + 3):
                sl[k] = lost
            lvl = 0
            bstart = np.int64(0)
            punt = False
            i = lo
            while i < hi and lvl < n:
                t = ts[i]
                sl[0] = t if entry_lo <= t < entry_hi else lost
                floor = t - window
                j = i + 1
                if j == hi or ts[j] != t:
                    if lut_rows and width == 2:
                        code = codes[i]
                        d1 = dst_of[code, 1]
                        v1 = sl[src_of[code, 1]]
                        v1 = v1 if v1 >= floor else lost
                        s0 = src_of[code, 0]
                        if s0 <= lvl:
                            # a chain can be at step s0 only once one reached it: for most
                            # units the later repeat is out of reach, and this branch
                            # predictable. Both reads come before both writes (the event
                            # fills one step only).
                            d0 = dst_of[code, 0]
                            v0 = sl[s0]
                            v0 = v0 if v0 >= floor else lost
                            if v0 > lost and d0 > lvl:
                                lvl = d0
                                bstart = v0
                            sl[d0] = max(sl[d0], v0)
                        if v1 > lost and d1 > lvl:
                            lvl = d1
                            bstart = v1
                        sl[d1] = max(sl[d1], v1)
                    elif lut_rows:
                        code = codes[i]
                        for q in range(width):
                            dst = dst_of[code, q]
                            v = sl[src_of[code, q]]
                            v = v if v >= floor else lost
                            if v > lost and dst > lvl:
                                lvl = dst
                                bstart = v
                            sl[dst] = max(sl[dst], v)
                    else:
                        m = np.int64(emask[i])
                        k = n - 1
                        while m != 0 and k >= 0:
                            if (m >> k) & 1:
                                m ^= np.int64(1) << k
                                v = sl[k]
                                if v >= floor and v > lost:
                                    sl[k + 1] = max(sl[k + 1], v)
                                    if k + 1 > lvl:
                                        lvl = k + 1
                                        bstart = v
                            k -= 1
                    i = j
                    continue
                # equal timestamps: every step of the instant, in step order
                m = np.int64(0)
                j = i
                while j < hi and ts[j] == t:
                    mj = step_mask(j, codes, lut, emask)
                    if mj & (mj - 1):
                        punt = True
                    m |= mj
                    j += 1
                if punt:
                    break
                k = 0
                while m != 0:
                    if m & 1:
                        v = sl[k]
                        if v >= floor and v > lost:
                            sl[k + 1] = max(sl[k + 1], v)
                            if k + 1 > lvl:
                                lvl = k + 1
                                bstart = v
                    m >>= 1
                    k += 1
                i = j
            if punt:
                level[u] = -1
                continue
            level[u] = lvl
            reached[u] = (np.int64(1) << lvl) - 1
            if lvl == 0:
                continue
            r = lo
            while not (ts[r] == bstart and step_mask(r, codes, lut, emask) & 1):
                r += 1
            rows[0] = r
            times[u, 0] = bstart
            g = r
            while g > lo and ts[g - 1] == bstart:
                g -= 1
            for k in range(1, lvl):
                r = g
                while True:
                    if (step_mask(r, codes, lut, emask) >> k) & 1:
                        # only chain rows at this row's instant can be this row
                        used = False
                        q = k - 1
                        while q >= 0 and times[u, q] == ts[r]:
                            if rows[q] == r:
                                used = True
                            q -= 1
                        if not used:
                            break
                    r += 1
                rows[k] = r
                times[u, k] = ts[r]
                g = r
                while g > lo and ts[g - 1] == ts[r]:
                    g -= 1
            if keep_chain:
                for k in range(lvl):
                    chain[u, k] = rows[k]
    return level, reached, advanced, chain, times


@nb.njit(parallel=True, cache=True)
def ordered_lean(  # type: ignore[no-untyped-def]  # pragma: no cover
    chunks,
    offsets,
    ts,
    codes,
    step_of,
    emask,
    n,
    window,
    entry_lo,
    entry_hi,
    keep_chain,
):
    """The plain ordered funnel when no event matches two steps (the common funnel). A row's
    step comes from ``step_of[code]`` (-1 = none; or from the single bit of ``emask[i]``).

    Slots live in ``sl``: ``sl[0]`` is the current row's own time (the start it offers as step
    1; -2**62 outside the entry range), ``sl[k + 1]`` the latest start of a chain at step ``k``,
    ``sl[n + 1]`` a start that is never in the window (what rows of no step read) and
    ``sl[n + 2]`` where they write. A row of step ``k`` then reads ``sl[k]`` and writes
    ``sl[k + 1]`` without a branch on its step: slot starts never decrease, so the write is a
    ``max``. The scan of a unit stops once its counted chain reaches the last step (no later
    chain replaces it), and the counted chain's times are written while its rows are still in
    cache. Returns level, reached, advanced, chain (no rows unless ``keep_chain``: the times
    are what most callers need), times (``INT64_MIN`` where a step is not in the chain)."""
    units = offsets.shape[0] - 1
    none = np.iinfo(np.int64).min
    level = np.zeros(units, np.int8)
    reached = np.zeros(units, np.int64)
    advanced = np.zeros(units, np.int64)
    chain = np.empty((units if keep_chain else 0, n), np.int64)
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
                times[u, k] = none
            if keep_chain:
                for k in range(n):
                    chain[u, k] = -1
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
            if keep_chain:
                chain[u, 0] = r
            times[u, 0] = bstart
            g = r
            while g > lo and ts[g - 1] == bstart:
                g -= 1
            for k in range(1, lvl):
                r = g
                while _lean_step(r, codes, step_of, emask) != k:
                    r += 1
                if keep_chain:
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
