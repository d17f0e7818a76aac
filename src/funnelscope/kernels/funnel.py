"""Funnel kernels: one pass over each unit's time-ordered events.

Inputs are CSR ``offsets`` (unit ``u`` owns rows ``offsets[u]:offsets[u+1]``, ordered by time),
``ts`` (int64 microseconds) and the steps each row matches, given either as ``lut[codes[i]]``
(a bit mask per event code; the fast path) or, when filters apply, as ``emask[i]`` (pass an
empty ``emask`` to use the lookup). Bit ``k`` is step ``k`` (0-based). ``xmask[i]`` holds the
exclusions a row matches (bit ``j`` is exclusion ``j``, between steps ``xfrom[j]`` and
``xto[j]``); an empty ``xmask`` means none.

Semantics (docs/funnels.md): rows with equal timestamps are processed as one group, step by
step in step order (ClickHouse sorts ``(ts, step)``); each slot ``k`` keeps the chain with the
latest start among the chains that reached step ``k``, which is never worse than an earlier
start (perf-baselines section 2). When one event can match several steps (``overlap``), a slot
also keeps the best chain written by another event, so one event fills at most one step.

Outputs per unit: ``level`` (furthest step reached, 1-based; 0 = never entered), ``reached``
(bit mask of the steps the counted chain did; for open funnels every step done), ``advanced``
(open funnels: step ``k`` followed step ``k-1`` within the window) and ``chain`` (row index of
each step of the counted chain, ``-1`` when not done).
"""

from __future__ import annotations

import numba as nb
import numpy as np
import numpy.typing as npt

__all__ = [
    "any_uniques",
    "chunks_for",
    "first_time_only",
    "ordered_plain",
    "ordered_totals",
    "ordered_uniques",
    "repeat_rows",
    "strict_uniques",
]

I64 = npt.NDArray[np.int64]
_CHUNKS_PER_THREAD = 64


def chunks_for(units: int) -> int:
    """How many blocks of units to spread over the threads (many, so skewed units even out)."""
    return max(1, min(units, nb.get_num_threads() * _CHUNKS_PER_THREAD))


@nb.njit(cache=True, nogil=True, inline="always")
def _mask(i, codes, lut, emask):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    if emask.shape[0] > 0:
        return np.int64(emask[i])
    return np.int64(lut[codes[i]])


@nb.njit(cache=True, nogil=True)
def _step(  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    k, e, t, n, window, limits, optional, entry_ok, overlap, is_open, has, val, srec, rec, fst,
    state,
):
    """Offer row ``e`` (time ``t``) as step ``k``.

    ``val[top, field, slot]``: fields are start, last, writer row, reached mask; ``top`` 0 is
    the best chain of the slot, 1 the best chain written by another row (kept only with
    ``overlap``). Chains are records ``rec[r] = (row, parent record, step)``; ``srec[top, k]``
    is the slot's last record, so extending a chain costs O(1) whatever the step count.
    ``state``: level, counted reached mask, steps done, steps advanced, counted chain record,
    records used."""
    found = False
    bs = np.int64(0)
    bp = 0
    btop = 0
    if k > 0:
        p = k - 1
        lim = limits[k]
        while True:
            for top in range(2):
                if not has[top, p]:
                    continue
                if overlap and val[top, 1, p] == t:
                    # one event fills one step: skip chains that already use this event (only
                    # a chain whose last step is at this very time can contain it)
                    used = False
                    r = srec[top, p]
                    while r >= 0:
                        if rec[r, 0] == e:
                            used = True
                        r = rec[r, 1]
                    if used:
                        continue
                s = val[top, 0, p]
                if t - s > window:
                    continue
                if lim >= 0 and t - val[top, 1, p] > lim:
                    continue
                if not found or s > bs:
                    found = True
                    bs = s
                    bp = p
                    btop = top
            if p == 0 or not optional[p]:
                break
            p -= 1
    if found:
        state[3] |= np.int64(1) << k
    if entry_ok:
        start = t
    elif found:
        start = bs
    else:
        return
    tgt = 0
    if overlap:
        if has[0, k] and val[0, 2, k] == e:
            if start < val[0, 0, k]:
                return
        elif not has[0, k] or start >= val[0, 0, k]:
            if has[0, k]:
                has[1, k] = True
                for f in range(4):
                    val[1, f, k] = val[0, f, k]
                srec[1, k] = srec[0, k]
            elif has[1, k] and val[1, 2, k] == e:
                has[1, k] = False
        else:
            if has[1, k] and val[1, 2, k] != e and start < val[1, 0, k]:
                return
            tgt = 1
    bit = np.int64(1) << k
    r = state[5]
    state[5] = r + 1
    rec[r, 0] = e
    rec[r, 2] = k
    if entry_ok:
        rec[r, 1] = -1
        val[tgt, 3, k] = bit
    else:
        rec[r, 1] = srec[btop, bp]
        val[tgt, 3, k] = val[btop, 3, bp] | bit
    has[tgt, k] = True
    val[tgt, 0, k] = start
    val[tgt, 1, k] = t
    val[tgt, 2, k] = e
    srec[tgt, k] = r
    if is_open and fst[k] < 0:
        fst[k] = e
    state[2] |= bit
    if k + 1 > state[0]:
        state[0] = k + 1
        state[1] = val[tgt, 3, k]
        state[4] = r


@nb.njit(cache=True, nogil=True)
def _row_at_step(r, step, rec):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """The row of ``step`` in the chain ending at record ``r``, -1 when the chain skipped it."""
    while r >= 0 and rec[r, 2] > step:
        r = rec[r, 1]
    if r >= 0 and rec[r, 2] == step:
        return rec[r, 0]
    return -1


@nb.njit(cache=True, nogil=True)
def _exclude(x, t, ts, xfrom, xto, has, srec, rec):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Drop chains that did step ``xfrom[j]`` before ``t`` and have not reached ``xto[j]``."""
    j = 0
    while x != 0:
        if x & 1:
            a = xfrom[j]
            for k in range(a, xto[j]):
                for top in range(2):
                    if has[top, k]:
                        ea = _row_at_step(srec[top, k], a, rec)
                        if ea >= 0 and ts[ea] < t:
                            has[top, k] = False
        x >>= 1
        j += 1


@nb.njit(cache=True, nogil=True)
def _reset(n, has, state, fst):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    for k in range(n):
        has[0, k] = False
        has[1, k] = False
        fst[k] = -1
    for f in range(4):
        state[f] = 0
    state[4] = -1
    state[5] = 0


@nb.njit(cache=True, nogil=True)
def _write_chain(r, rec, out, u):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    while r >= 0:
        out[u, rec[r, 2]] = rec[r, 0]
        r = rec[r, 1]


@nb.njit(cache=True, nogil=True, inline="always")
def _group_end(i, hi, ts):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    t = ts[i]
    j = i + 1
    while j < hi and ts[j] == t:
        j += 1
    return j


@nb.njit(cache=True, nogil=True)
def _records_needed(offsets, u0, u1, n):  # type: ignore[no-untyped-def]  # pragma: no cover
    """An upper bound on the chain records of one unit of a block: rows x steps."""
    most = 1
    for u in range(u0, u1):
        most = max(most, offsets[u + 1] - offsets[u])
    return most * n + 1


@nb.njit(parallel=True, cache=True)
def ordered_uniques(  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    chunks, offsets, ts, codes, lut, emask, xmask, xfrom, xto, n, window, limits, optional,
    entry_lo, entry_hi, overlap, is_open,
):
    """Per unit: the best chain over every start (ClickHouse ``windowFunnel`` default mode)."""
    units = offsets.shape[0] - 1
    level = np.zeros(units, np.int8)
    reached = np.zeros(units, np.int64)
    advanced = np.zeros(units, np.int64)
    chain = np.full((units, n), -1, np.int64)
    for c in nb.prange(chunks):
        u0 = c * units // chunks
        u1 = (c + 1) * units // chunks
        has = np.zeros((2, n), np.bool_)
        val = np.zeros((2, 4, n), np.int64)
        srec = np.full((2, n), -1, np.int64)
        rec = np.empty((_records_needed(offsets, u0, u1, n), 3), np.int64)
        fst = np.full(n, -1, np.int64)
        state = np.zeros(6, np.int64)
        for u in range(u0, u1):
            lo = offsets[u]
            hi = offsets[u + 1]
            if lo == hi:
                continue
            _reset(n, has, state, fst)
            i = lo
            while i < hi:
                t = ts[i]
                j = _group_end(i, hi, ts)
                in_range = entry_lo <= t < entry_hi
                if j - i == 1:
                    m = _mask(i, codes, lut, emask)
                    k = 0
                    while m != 0:
                        if m & 1:
                            ok = (k == 0 or is_open) and in_range
                            _step(k, i, t, n, window, limits, optional, ok, overlap, is_open,
                                  has, val, srec, rec, fst, state)
                        m >>= 1
                        k += 1
                else:
                    union = np.int64(0)
                    for e in range(i, j):
                        union |= _mask(e, codes, lut, emask)
                    k = 0
                    while union != 0:
                        if union & 1:
                            ok = (k == 0 or is_open) and in_range
                            for e in range(i, j):
                                if (_mask(e, codes, lut, emask) >> k) & 1:
                                    _step(k, e, t, n, window, limits, optional, ok, overlap,
                                          is_open, has, val, srec, rec, fst, state)
                        union >>= 1
                        k += 1
                if xmask.shape[0] > 0:
                    for e in range(i, j):
                        if xmask[e] != 0:
                            _exclude(np.int64(xmask[e]), t, ts, xfrom, xto, has, srec, rec)
                i = j
            level[u] = state[0]
            if is_open:
                reached[u] = state[2]
                advanced[u] = state[3]
                for k in range(n):
                    chain[u, k] = fst[k]
            else:
                reached[u] = state[1]
                _write_chain(state[4], rec, chain, u)
    return level, reached, advanced, chain


@nb.njit(parallel=True, cache=True)
def _attempt_bounds(offsets, ts, codes, lut, emask, entry_lo, entry_hi):  # type: ignore[no-untyped-def]  # pragma: no cover
    units = offsets.shape[0] - 1
    rows = np.zeros(units + 1, np.int64)
    for u in nb.prange(units):
        c = 0
        for i in range(offsets[u], offsets[u + 1]):
            if _mask(i, codes, lut, emask) & 1 and entry_lo <= ts[i] < entry_hi:
                c += 1
        rows[u + 1] = max(c, 1) if offsets[u + 1] > offsets[u] else 0
    for u in range(units):
        rows[u + 1] += rows[u]
    return rows


@nb.njit(cache=True, nogil=True)
def _emit(pos, u, a, state, rec, out_unit, out_attempt, out_level, out_reached, out_chain):  # type: ignore[no-untyped-def]  # pragma: no cover
    out_unit[pos] = u
    out_attempt[pos] = a
    out_level[pos] = state[0]
    out_reached[pos] = state[1]
    _write_chain(state[4], rec, out_chain, pos)


@nb.njit(parallel=True, cache=True)
def ordered_totals(  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    chunks, offsets, ts, codes, lut, emask, xmask, xfrom, xto, n, window, limits, optional,
    entry_lo, entry_hi, overlap,
):
    """Every attempt: a step-1 row opens one when none is open; it closes on completion, when
    the window (from its step 1) has passed, or at an exclusion. Returns one row per attempt
    (a unit without attempts gets one row of level 0): unit, attempt, level, reached, chain."""
    units = offsets.shape[0] - 1
    bounds = _attempt_bounds(offsets, ts, codes, lut, emask, entry_lo, entry_hi)
    total = bounds[units]
    out_unit = np.full(total, -1, np.int64)
    out_attempt = np.zeros(total, np.int32)
    out_level = np.zeros(total, np.int8)
    out_reached = np.zeros(total, np.int64)
    out_chain = np.full((total, n), -1, np.int64)
    for c in nb.prange(chunks):
        u0 = c * units // chunks
        u1 = (c + 1) * units // chunks
        has = np.zeros((2, n), np.bool_)
        val = np.zeros((2, 4, n), np.int64)
        srec = np.full((2, n), -1, np.int64)
        rec = np.empty((_records_needed(offsets, u0, u1, n), 3), np.int64)
        fst = np.full(n, -1, np.int64)
        state = np.zeros(6, np.int64)
        for u in range(u0, u1):
            lo = offsets[u]
            hi = offsets[u + 1]
            if lo == hi:
                continue
            pos = bounds[u]
            a = 0
            is_open = False
            start = np.int64(0)
            _reset(n, has, state, fst)
            i = lo
            while i < hi:
                t = ts[i]
                j = _group_end(i, hi, ts)
                if is_open and t - start > window:
                    _emit(pos, u, a, state, rec, out_unit, out_attempt, out_level, out_reached,
                          out_chain)
                    pos += 1
                    a += 1
                    is_open = False
                    _reset(n, has, state, fst)
                in_range = entry_lo <= t < entry_hi
                union = np.int64(0)
                for e in range(i, j):
                    union |= _mask(e, codes, lut, emask)
                k = 0
                while union != 0:
                    if union & 1:
                        for e in range(i, j):
                            if not (_mask(e, codes, lut, emask) >> k) & 1:
                                continue
                            ok = k == 0 and in_range and not is_open
                            if k > 0 and not is_open:
                                continue
                            _step(k, e, t, n, window, limits, optional, ok, overlap, False,
                                  has, val, srec, rec, fst, state)
                            if ok:
                                is_open = True
                                start = t
                            if is_open and state[0] == n:
                                _emit(pos, u, a, state, rec, out_unit, out_attempt, out_level,
                                      out_reached, out_chain)
                                pos += 1
                                a += 1
                                is_open = False
                                _reset(n, has, state, fst)
                    union >>= 1
                    k += 1
                if is_open and xmask.shape[0] > 0:
                    for e in range(i, j):
                        x = np.int64(xmask[e])
                        b = 0
                        while x != 0 and is_open:
                            if x & 1:
                                fa = xfrom[b]
                                ra = _row_at_step(state[4], fa, rec)
                                if fa < state[0] <= xto[b] and ra >= 0 and ts[ra] < t:
                                    _emit(pos, u, a, state, rec, out_unit, out_attempt,
                                          out_level, out_reached, out_chain)
                                    pos += 1
                                    a += 1
                                    is_open = False
                                    _reset(n, has, state, fst)
                            x >>= 1
                            b += 1
                i = j
            if is_open or a == 0:
                _emit(pos, u, a, state, rec, out_unit, out_attempt, out_level, out_reached,
                      out_chain)
    return out_unit, out_attempt, out_level, out_reached, out_chain


@nb.njit(cache=True, nogil=True)
def _after(a0, a1, a2, b0, b1, b2):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    if a0 != b0:
        return a0 > b0
    if a1 != b1:
        return a1 > b1
    return a2 > b2


@nb.njit(cache=True, nogil=True)
def _group_order(i, j, codes, lut, emask, hold, order):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Rows ``i:j`` (one timestamp) in strict-mode order: rows matching no step first, then by
    lowest step, mask and hold value (so the result does not depend on arrival order)."""
    g = j - i
    keys = np.empty((g, 3), np.int64)
    for r in range(g):
        e = i + r
        m = _mask(e, codes, lut, emask)
        low = 0
        if m != 0:
            low = 1
            while not (m >> (low - 1)) & 1:
                low += 1
        keys[r, 0] = low
        keys[r, 1] = m
        keys[r, 2] = hold[e] if hold.shape[0] > 0 else 0
        order[r] = e
    for r in range(1, g):
        e = order[r]
        k0, k1, k2 = keys[r, 0], keys[r, 1], keys[r, 2]
        s = r - 1
        while s >= 0 and _after(keys[s, 0], keys[s, 1], keys[s, 2], k0, k1, k2):
            order[s + 1] = order[s]
            keys[s + 1, 0] = keys[s, 0]
            keys[s + 1, 1] = keys[s, 1]
            keys[s + 1, 2] = keys[s, 2]
            s -= 1
        order[s + 1] = e
        keys[s + 1, 0] = k0
        keys[s + 1, 1] = k1
        keys[s + 1, 2] = k2


@nb.njit(parallel=True, cache=True)
def strict_uniques(  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    chunks, offsets, ts, codes, lut, emask, xmask, hold, n, window, limits, optional,
    entry_lo, entry_hi,
):
    """Per unit: the best chain whose consecutive steps are consecutive rows of the unit (no
    other row between them). Rows with an exclusion break chains. ``hold`` (empty for none)
    gives each row's hold-constant value id (-1 = missing): a chain keeps one value."""
    units = offsets.shape[0] - 1
    level = np.zeros(units, np.int8)
    reached = np.zeros(units, np.int64)
    advanced = np.zeros(units, np.int64)
    chain = np.full((units, n), -1, np.int64)
    for c in nb.prange(chunks):
        pst = np.zeros(n, np.int64)
        cst = np.zeros(n, np.int64)
        prm = np.zeros(n, np.int64)
        crm = np.zeros(n, np.int64)
        pch = np.full((n, n), -1, np.int64)
        cch = np.full((n, n), -1, np.int64)
        bch = np.full(n, -1, np.int64)
        order = np.empty(64, np.int64)
        for u in range(c * units // chunks, (c + 1) * units // chunks):
            lo = offsets[u]
            hi = offsets[u + 1]
            if lo == hi:
                continue
            lvl = 0
            brm = np.int64(0)
            for k in range(n):
                bch[k] = -1
            pl = np.int64(0)
            prev = -1
            i = lo
            while i < hi:
                j = _group_end(i, hi, ts)
                if j - i > order.shape[0]:
                    order = np.empty(2 * (j - i), np.int64)
                if j - i == 1:
                    order[0] = i
                else:
                    _group_order(i, j, codes, lut, emask, hold, order)
                for r in range(j - i):
                    e = order[r]
                    t = ts[e]
                    m = _mask(e, codes, lut, emask)
                    if xmask.shape[0] > 0 and xmask[e] != 0:
                        m = 0
                    hv = hold[e] if hold.shape[0] > 0 else 0
                    cl = np.int64(0)
                    k = 0
                    while m != 0 and hv >= 0:
                        if m & 1:
                            if k == 0:
                                if entry_lo <= t < entry_hi:
                                    cl |= 1
                                    cst[0] = t
                                    for q in range(n):
                                        cch[0, q] = -1
                                    cch[0, 0] = e
                                    crm[0] = 1
                            elif hold.shape[0] == 0 or hold[prev] == hv:
                                p = k - 1
                                found = False
                                bs = np.int64(0)
                                bp = 0
                                while True:
                                    if ((pl >> p) & 1 and t - pst[p] <= window
                                            and (limits[k] < 0 or t - ts[prev] <= limits[k])
                                            and (not found or pst[p] > bs)):
                                        found = True
                                        bs = pst[p]
                                        bp = p
                                    if p == 0 or not optional[p]:
                                        break
                                    p -= 1
                                if found:
                                    cl |= np.int64(1) << k
                                    cst[k] = bs
                                    for q in range(n):
                                        cch[k, q] = pch[bp, q]
                                    cch[k, k] = e
                                    crm[k] = prm[bp] | (np.int64(1) << k)
                            if (cl >> k) & 1 and k + 1 > lvl:
                                lvl = k + 1
                                brm = crm[k]
                                for q in range(n):
                                    bch[q] = cch[k, q]
                        m >>= 1
                        k += 1
                    pl = cl
                    for k in range(n):
                        if (cl >> k) & 1:
                            pst[k] = cst[k]
                            prm[k] = crm[k]
                            for q in range(n):
                                pch[k, q] = cch[k, q]
                    prev = e
                i = j
            level[u] = lvl
            reached[u] = brm
            for k in range(n):
                chain[u, k] = bch[k]
    return level, reached, advanced, chain


@nb.njit(parallel=True, cache=True)
def any_uniques(chunks, offsets, ts, codes, lut, emask, n, window, entry_lo, entry_hi):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Per unit: the most distinct steps done inside one window that starts at a step row (in
    the entry range). ``chain`` holds the first row of each step inside that window."""
    units = offsets.shape[0] - 1
    level = np.zeros(units, np.int8)
    reached = np.zeros(units, np.int64)
    advanced = np.zeros(units, np.int64)
    chain = np.full((units, n), -1, np.int64)
    for c in nb.prange(chunks):
        cnt = np.zeros(n, np.int64)
        for u in range(c * units // chunks, (c + 1) * units // chunks):
            lo = offsets[u]
            hi = offsets[u + 1]
            for k in range(n):
                cnt[k] = 0
            distinct = 0
            best = -1
            bestd = 0
            r = lo
            for i in range(lo, hi):
                while r < hi and ts[r] - ts[i] <= window:
                    m = _mask(r, codes, lut, emask)
                    k = 0
                    while m != 0:
                        if m & 1:
                            if cnt[k] == 0:
                                distinct += 1
                            cnt[k] += 1
                        m >>= 1
                        k += 1
                    r += 1
                mi = _mask(i, codes, lut, emask)
                if mi != 0 and entry_lo <= ts[i] < entry_hi and distinct > bestd:
                    bestd = distinct
                    best = i
                k = 0
                while mi != 0:
                    if mi & 1:
                        cnt[k] -= 1
                        if cnt[k] == 0:
                            distinct -= 1
                    mi >>= 1
                    k += 1
            if best >= 0:
                e = best
                while e < hi and ts[e] - ts[best] <= window:
                    m = _mask(e, codes, lut, emask)
                    k = 0
                    while m != 0:
                        if m & 1 and chain[u, k] < 0:
                            chain[u, k] = e
                        m >>= 1
                        k += 1
                    e += 1
            level[u] = bestd
            reached[u] = (np.int64(1) << bestd) - 1
    return level, reached, advanced, chain


@nb.njit(parallel=True, cache=True)
def first_time_only(offsets, emask, bits):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Keep the step bits in ``bits`` only on each unit's first row that has them (in place)."""
    units = offsets.shape[0] - 1
    for u in nb.prange(units):
        seen = np.int64(0)
        for i in range(offsets[u], offsets[u + 1]):
            m = np.int64(emask[i])
            emask[i] = m & ~(seen & bits)
            seen |= m & bits


@nb.njit(parallel=True, cache=True)
def repeat_rows(offsets, codes, code):  # type: ignore[no-untyped-def]  # pragma: no cover
    """True for each row with event ``code`` that is not its unit's first row with it."""
    out = np.zeros(codes.shape[0], np.bool_)
    units = offsets.shape[0] - 1
    for u in nb.prange(units):
        seen = False
        for i in range(offsets[u], offsets[u + 1]):
            if codes[i] == code:
                out[i] = seen
                seen = True
    return out


@nb.njit(parallel=True, cache=True)
def ordered_plain(chunks, offsets, ts, codes, lut, emask, n, window, entry_lo, entry_hi, overlap,  # type: ignore[no-untyped-def]  # pragma: no cover
                  lut_steps):
    """:func:`ordered_uniques` without per-step limits, optional steps, exclusions or open
    entry: the lean latest-start scan, then the counted chain rebuilt as the earliest unused
    rows after the counted start (which reach the same level).

    With ``overlap`` (an event may match several steps) one event's steps are offered from the
    last to the first, so it cannot extend a chain it started. A unit with several events at
    one timestamp where one of them matches several steps needs the general kernel: it is
    returned with level -1. ``lut_steps[code]`` lists each code's steps in processing order
    (-1 ends the list): one event's steps without scanning every bit."""
    units = offsets.shape[0] - 1
    level = np.zeros(units, np.int8)
    reached = np.zeros(units, np.int64)
    advanced = np.zeros(units, np.int64)
    chain = np.full((units, n), -1, np.int64)
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
                g = r
                while g > lo and ts[g - 1] == ts[r]:
                    g -= 1
    return level, reached, advanced, chain
