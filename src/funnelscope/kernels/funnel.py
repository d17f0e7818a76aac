"""Funnel kernels: one pass over each unit's time-ordered events.

Inputs are CSR ``offsets`` (unit ``u`` owns rows ``offsets[u]:offsets[u+1]``, ordered by time),
``ts`` (int64 microseconds) and the steps each row matches, given either as ``lut[codes[i]]``
(a bit mask per event code; the fast path) or, when filters apply, as ``emask[i]`` (pass an
empty ``emask`` to use the lookup). Bit ``k`` is step ``k`` (0-based). ``xmask[i]`` holds the
exclusions a row matches (bit ``j`` is exclusion ``j``, between steps ``xfrom[j]`` and
``xto[j]``); an empty ``xmask`` means none. The general kernels take these as one
:class:`Rows` and the funnel's step rules as one :class:`StepRules`.

Semantics (docs/funnels.md): rows with equal timestamps are processed as one group, step by
step in step order (ClickHouse sorts ``(ts, step)``); each slot ``k`` keeps the chains that
reached step ``k`` and that no other one beats: a later start is never worse (perf-baselines
section 2), so that is usually one chain. Per-step limits also value a later last step, and
when one event can match several steps (``overlap``; one event fills at most one step) a chain
holding fewer rows of the current instant can still use them: those keep a few more candidates
(exact, see :func:`_offer`), and only the general kernels pay for them.

Outputs per unit: ``level`` (furthest step reached, 1-based; 0 = never entered), ``reached``
(bit mask of the steps the counted chain did; for open funnels every step done), ``advanced``
(open funnels: step ``k`` followed step ``k-1`` within the window) and ``chain`` (row index of
each step of the counted chain, ``-1`` when not done).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba as nb
import numpy as np
import numpy.typing as npt

__all__ = [
    "Rows",
    "StepRules",
    "any_uniques",
    "chunks_for",
    "first_time_only",
    "ordered_totals",
    "ordered_uniques",
    "repeat_rows",
    "step_mask",
    "strict_uniques",
]

I64 = npt.NDArray[np.int64]
_CHUNKS_PER_THREAD = 64


def chunks_for(units: int) -> int:
    """How many blocks of units to spread over the threads (many, so skewed units even out)."""
    return max(1, min(units, nb.get_num_threads() * _CHUNKS_PER_THREAD))


# Numba's on-disk cache names these classes in its index files and unpickles an index before it
# checks that it is stale: after renaming or removing one, clear this package's __pycache__
# (*.nbi, *.nbc) or the kernels fail to load with an AttributeError.
class Rows(NamedTuple):
    """A stream's rows as the kernels read them (see the module docstring for each field).

    Numba compiles a kernel once per combination of field types: build it from the same
    dtypes every time (``int64`` offsets and times, ``uint32`` masks).
    """

    offsets: I64
    ts: I64
    codes: npt.NDArray[Any]
    lut: npt.NDArray[Any]
    emask: npt.NDArray[Any]
    xmask: npt.NDArray[Any]


class StepRules(NamedTuple):
    """What a chain may do: ``n`` steps within ``window`` (µs) of its step 1, step ``k`` at
    most ``limits[k]`` µs after the step before it (-1: no limit), ``optional[k]`` steps may be
    skipped, exclusion ``j`` breaks chains between steps ``xfrom[j]`` and ``xto[j]``, step 1
    only at ``entry_lo <= ts < entry_hi``, and ``overlap`` when one event can match several
    steps. Scalars as Python ``int`` and ``bool`` (numba: ``int64``, ``boolean``)."""

    n: int
    window: int
    limits: I64
    optional: npt.NDArray[np.bool_]
    xfrom: I64
    xto: I64
    entry_lo: int
    entry_hi: int
    overlap: bool


# ``state``, a unit's scan state (numba folds these module ints into the compiled code)
_LEVEL = 0  # the counted chain's level (furthest step, 1-based)
_REACHED = 1  # the counted chain's reached mask
_DONE = 2  # open funnels: steps any chain did
_ADVANCED = 3  # open funnels: steps that followed their previous step within the window
_CHAIN = 4  # the counted chain's last record (-1: none)
_RECORDS = 5  # chain records used
_START = 6  # the counted chain's start
_LAST = 7  # the counted chain's last step time
_STATE_SIZE = 8
# ``val[c, field, k]``, candidate ``c`` of slot ``k``
_C_START = 0
_C_LAST = 1
_C_REACHED = 2
# ``rec[r, field]``, one step of a chain
_ROW = 0
_PARENT = 1  # the record of the chain's previous step (-1: none)
_STEP = 2


@nb.njit(cache=True, nogil=True, inline="always")
def step_mask(i, codes, lut, emask):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """The steps row ``i`` matches (bit ``k``: step ``k``): ``emask[i]``, or ``lut[codes[i]]``
    when ``emask`` is empty."""
    if emask.shape[0] > 0:
        return np.int64(emask[i])
    return np.int64(lut[codes[i]])


# The kernels unpack their Rows and StepRules once; the helpers below take plain arrays. Numba
# borrows an array argument for free, but each array taken out of a tuple costs an atomic
# reference count update: with rows, rules and the scratch arrays passed as tuples, at a helper
# call per (row, step), the kernels ran ~1.7x slower, and ~15% with only the scratch arrays in
# a tuple (measured at 1M events, numba 0.68).
@nb.njit(cache=True, nogil=True)
def _uses(r, e, t, ts, rec):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Whether the chain ending at record ``r`` uses row ``e`` (of time ``t``): only its rows at
    ``t`` can be ``e``, and those are its last records."""
    while r >= 0:
        row = rec[r, _ROW]
        if row == e:
            return True
        if ts[row] != t:
            return False
        r = rec[r, _PARENT]
    return False


@nb.njit(cache=True, nogil=True)
def _within(a, b, t, ts, rec):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Whether every row at time ``t`` of chain ``a`` is also in chain ``b``."""
    while a >= 0:
        row = rec[a, _ROW]
        if ts[row] != t:
            return True
        if not _uses(b, row, t, ts, rec):
            return False
        a = rec[a, _PARENT]
    return True


@nb.njit(cache=True, nogil=True)
def _in_turn(e, g0, r, t, ts, codes, lut, emask, rec):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Rows of one instant with the same step mask are interchangeable, so a chain takes them in
    row order: row ``e`` only once chain ``r`` holds the earlier rows like it (from ``g0``, the
    group's first row). Candidates then differ by how many of each kind they use, not which."""
    m = step_mask(e, codes, lut, emask)
    for f in range(g0, e):
        if step_mask(f, codes, lut, emask) == m and not _uses(r, f, t, ts, rec):
            return False
    return True


@nb.njit(cache=True, nogil=True)
def _drop(c, k, cnt, val, srec):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    last = cnt[k] - 1
    for f in range(3):
        val[c, f, k] = val[last, f, k]
    srec[c, k] = srec[last, k]
    cnt[k] = last


@nb.njit(cache=True, nogil=True)
def _offer(k, s, t, reached, r, overlap, cnt, val, srec, ts, rec):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Keep chain record ``r`` (start ``s``, last step at ``t``, the current time) in slot ``k``
    unless a kept candidate is at least as good, and drop those it is at least as good as.
    At least as good: a start as late (the window), a last step as late (per-step limits) and,
    when one event can match several steps, no row of this instant the other does not use
    (those rows cannot serve the chain's next steps)."""
    for c in range(cnt[k]):
        if (
            val[c, _C_START, k] >= s
            and val[c, _C_LAST, k] >= t
            and (not overlap or _within(srec[c, k], r, t, ts, rec))
        ):
            return False
    c = 0
    while c < cnt[k]:
        if s >= val[c, _C_START, k] and (
            not overlap or (val[c, _C_LAST, k] == t and _within(r, srec[c, k], t, ts, rec))
        ):
            _drop(c, k, cnt, val, srec)
        else:
            c += 1
    c = cnt[k]
    val[c, _C_START, k] = s
    val[c, _C_LAST, k] = t
    val[c, _C_REACHED, k] = reached
    srec[c, k] = r
    cnt[k] = c + 1
    return True


@nb.njit(cache=True, nogil=True)
def _extend(  # type: ignore[no-untyped-def]  # pragma: no cover
    k,
    e,
    s,
    t,
    reached,
    parent,
    overlap,
    is_open,
    cnt,
    val,
    srec,
    ts,
    rec,
    fst,
    state,
):
    """Offer the chain ``parent`` + row ``e`` as step ``k`` (start ``s``, reached mask)."""
    r = state[_RECORDS]
    rec[r, _ROW] = e
    rec[r, _PARENT] = parent
    rec[r, _STEP] = k
    if not _offer(k, s, t, reached, r, overlap, cnt, val, srec, ts, rec):
        return
    state[_RECORDS] = r + 1
    if is_open and fst[k] < 0:
        fst[k] = e
    state[_DONE] |= np.int64(1) << k
    # the counted chain: the first to reach the furthest step, with the latest start
    if k + 1 > state[_LEVEL] or (
        k + 1 == state[_LEVEL] and state[_LAST] == t and s > state[_START]
    ):
        state[_LEVEL] = k + 1
        state[_REACHED] = reached
        state[_CHAIN] = r
        state[_START] = s
        state[_LAST] = t


@nb.njit(cache=True, nogil=True)
def _step(  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    k,
    e,
    g0,
    t,
    # the rows (:class:`Rows` fields)
    ts,
    codes,
    lut,
    emask,
    # the step rules (:class:`StepRules` fields); ``entry_ok``: row ``e`` may start a chain
    window,
    limits,
    optional,
    entry_ok,
    overlap,
    is_open,
    # the thread's scratch, allocated per block of units by the kernel
    cnt,
    val,
    srec,
    rec,
    fst,
    state,
):
    """Offer row ``e`` (time ``t``; its instant's rows start at ``g0``) as step ``k``.

    Slot ``k`` keeps the candidate chains that reached step ``k`` and that no other candidate
    beats (:func:`_offer`): ``val[c, field, k]`` with fields ``_C_START``, ``_C_LAST`` (last
    step time) and ``_C_REACHED`` (reached mask), for ``c < cnt[k]``. Without repeated steps
    one candidate per slot is the rule (the latest start), more only with per-step limits or
    optional steps. Chains are records ``rec[r] = (row, parent record, step)``; ``srec[c, k]``
    is a candidate's last record, so extending a chain costs O(1) whatever the step count.
    ``state`` holds the unit's fields ``_LEVEL`` to ``_LAST``, ``fst`` the first row of each
    step (open funnels)."""
    bit = np.int64(1) << k
    if entry_ok and (not overlap or _in_turn(e, g0, -1, t, ts, codes, lut, emask, rec)):
        _extend(k, e, t, t, bit, -1, overlap, is_open, cnt, val, srec, ts, rec, fst, state)
    if k == 0:
        return
    lim = limits[k]
    found = False
    bs = np.int64(0)
    bc = -1
    bp = 0
    p = k - 1
    while True:
        for c in range(cnt[p]):
            s = val[c, _C_START, p]
            if t - s > window or (lim >= 0 and t - val[c, _C_LAST, p] > lim):
                continue
            r = srec[c, p]
            if overlap:
                # one event fills one step, and same-kind rows are taken in turn
                if _uses(r, e, t, ts, rec) or not _in_turn(e, g0, r, t, ts, codes, lut, emask, rec):
                    continue
                _extend(
                    k,
                    e,
                    s,
                    t,
                    val[c, _C_REACHED, p] | bit,
                    r,
                    overlap,
                    is_open,
                    cnt,
                    val,
                    srec,
                    ts,
                    rec,
                    fst,
                    state,
                )
            elif bc < 0 or s > bs:
                bs = s
                bc = c
                bp = p
            found = True
        if p == 0 or not optional[p]:
            break
        p -= 1
    if found:
        state[_ADVANCED] |= bit
    if bc >= 0:
        _extend(
            k,
            e,
            bs,
            t,
            val[bc, _C_REACHED, bp] | bit,
            srec[bc, bp],
            overlap,
            is_open,
            cnt,
            val,
            srec,
            ts,
            rec,
            fst,
            state,
        )


@nb.njit(cache=True, nogil=True)
def _reserve(k, cnt, optional, val, srec, rec, state):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Room for what one :func:`_step` at step ``k`` can add (grown arrays when needed)."""
    need = 1
    p = k - 1
    while p >= 0:
        need += cnt[p]
        if p == 0 or not optional[p]:
            break
        p -= 1
    if cnt[k] + need > val.shape[0]:
        size = max(2 * val.shape[0], cnt[k] + need)
        grown = np.zeros((size, val.shape[1], val.shape[2]), np.int64)
        grown[: val.shape[0]] = val
        val = grown
        more = np.full((size, srec.shape[1]), -1, np.int64)
        more[: srec.shape[0]] = srec
        srec = more
    if state[_RECORDS] + need > rec.shape[0]:
        bigger = np.empty((max(2 * rec.shape[0], state[_RECORDS] + need), 3), np.int64)
        bigger[: rec.shape[0]] = rec
        rec = bigger
    return val, srec, rec


@nb.njit(cache=True, nogil=True)
def _prune(m, cnt, val, srec):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """After an instant, in the slots of mask ``m``: rows of that instant no longer matter, so
    keep only the candidates no other beats on start and last time (ties: the first)."""
    k = 0
    while m != 0:
        if m & 1 and cnt[k] > 1:
            c = 0
            while c < cnt[k]:
                beaten = False
                for d in range(cnt[k]):
                    if (
                        d != c
                        and val[d, _C_START, k] >= val[c, _C_START, k]
                        and val[d, _C_LAST, k] >= val[c, _C_LAST, k]
                        and (
                            d < c
                            or val[d, _C_START, k] > val[c, _C_START, k]
                            or val[d, _C_LAST, k] > val[c, _C_LAST, k]
                        )
                    ):
                        beaten = True
                        break
                if beaten:
                    _drop(c, k, cnt, val, srec)
                else:
                    c += 1
        m >>= 1
        k += 1


@nb.njit(cache=True, nogil=True)
def _row_at_step(r, step, rec):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """The row of ``step`` in the chain ending at record ``r``, -1 when the chain skipped it."""
    while r >= 0 and rec[r, _STEP] > step:
        r = rec[r, _PARENT]
    if r >= 0 and rec[r, _STEP] == step:
        return rec[r, _ROW]
    return -1


@nb.njit(cache=True, nogil=True)
def _exclude(x, t, ts, xfrom, xto, cnt, val, srec, rec):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Drop chains that did step ``xfrom[j]`` before ``t`` and have not reached ``xto[j]``."""
    j = 0
    while x != 0:
        if x & 1:
            a = xfrom[j]
            for k in range(a, xto[j]):
                c = 0
                while c < cnt[k]:
                    ea = _row_at_step(srec[c, k], a, rec)
                    if ea >= 0 and ts[ea] < t:
                        _drop(c, k, cnt, val, srec)
                    else:
                        c += 1
        x >>= 1
        j += 1


@nb.njit(cache=True, nogil=True)
def _reset(n, cnt, state, fst):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    for k in range(n):
        cnt[k] = 0
        fst[k] = -1
    for f in range(_STATE_SIZE):
        state[f] = 0
    state[_CHAIN] = -1


@nb.njit(cache=True, nogil=True)
def _write_chain(r, rec, out, u):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    while r >= 0:
        out[u, rec[r, _STEP]] = rec[r, _ROW]
        r = rec[r, _PARENT]


@nb.njit(cache=True, nogil=True, inline="always")
def _group_end(i, hi, ts):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    t = ts[i]
    j = i + 1
    while j < hi and ts[j] == t:
        j += 1
    return j


@nb.njit(cache=True, nogil=True)
def _records_needed(offsets, u0, u1, n):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Chain records of one unit of a block, as first allocated: rows x steps (grown when the
    candidates of repeated steps or limits need more, see :func:`_reserve`)."""
    most = 1
    for u in range(u0, u1):
        most = max(most, offsets[u + 1] - offsets[u])
    return most * n + 1


@nb.njit(parallel=True, cache=True)
def ordered_uniques(chunks, rows, rules, is_open):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Per unit: the best chain over every start (ClickHouse ``windowFunnel`` default mode;
    with repeated steps, ``'strict_once'``). ``rows`` is a :class:`Rows`, ``rules`` a
    :class:`StepRules`; ``is_open``: a chain may start at any step (open funnels)."""
    offsets, ts, codes, lut, emask, xmask = rows
    n, window, limits, optional, xfrom, xto, entry_lo, entry_hi, overlap = rules
    units = offsets.shape[0] - 1
    level = np.zeros(units, np.int8)
    reached = np.zeros(units, np.int64)
    advanced = np.zeros(units, np.int64)
    chain = np.full((units, n), -1, np.int64)
    for c in nb.prange(chunks):
        u0 = c * units // chunks
        u1 = (c + 1) * units // chunks
        cnt = np.zeros(n, np.int64)
        val = np.zeros((2, 3, n), np.int64)
        srec = np.full((2, n), -1, np.int64)
        rec = np.empty((_records_needed(offsets, u0, u1, n), 3), np.int64)
        fst = np.full(n, -1, np.int64)
        state = np.zeros(_STATE_SIZE, np.int64)
        for u in range(u0, u1):
            lo = offsets[u]
            hi = offsets[u + 1]
            if lo == hi:
                continue
            _reset(n, cnt, state, fst)
            i = lo
            while i < hi:
                t = ts[i]
                j = _group_end(i, hi, ts)
                in_range = entry_lo <= t < entry_hi
                union = np.int64(0)
                for e in range(i, j):
                    union |= step_mask(e, codes, lut, emask)
                # equal timestamps: step by step in step order (ClickHouse sorts (ts, step))
                m = union
                k = 0
                while m != 0:
                    if m & 1:
                        ok = (k == 0 or is_open) and in_range
                        for e in range(i, j):
                            if (step_mask(e, codes, lut, emask) >> k) & 1:
                                val, srec, rec = _reserve(k, cnt, optional, val, srec, rec, state)
                                _step(
                                    k,
                                    e,
                                    i,
                                    t,
                                    ts,
                                    codes,
                                    lut,
                                    emask,
                                    window,
                                    limits,
                                    optional,
                                    ok,
                                    overlap,
                                    is_open,
                                    cnt,
                                    val,
                                    srec,
                                    rec,
                                    fst,
                                    state,
                                )
                    m >>= 1
                    k += 1
                if overlap:
                    _prune(union, cnt, val, srec)
                if xmask.shape[0] > 0:
                    for e in range(i, j):
                        if xmask[e] != 0:
                            _exclude(np.int64(xmask[e]), t, ts, xfrom, xto, cnt, val, srec, rec)
                i = j
            level[u] = state[_LEVEL]
            if is_open:
                reached[u] = state[_DONE]
                advanced[u] = state[_ADVANCED]
                for k in range(n):
                    chain[u, k] = fst[k]
            else:
                reached[u] = state[_REACHED]
                _write_chain(state[_CHAIN], rec, chain, u)
    return level, reached, advanced, chain


@nb.njit(parallel=True, cache=True)
def _attempt_bounds(offsets, ts, codes, lut, emask, entry_lo, entry_hi):  # type: ignore[no-untyped-def]  # pragma: no cover
    units = offsets.shape[0] - 1
    rows = np.zeros(units + 1, np.int64)
    for u in nb.prange(units):
        c = 0
        for i in range(offsets[u], offsets[u + 1]):
            if step_mask(i, codes, lut, emask) & 1 and entry_lo <= ts[i] < entry_hi:
                c += 1
        rows[u + 1] = max(c, 1) if offsets[u + 1] > offsets[u] else 0
    for u in range(units):
        rows[u + 1] += rows[u]
    return rows


@nb.njit(cache=True, nogil=True)
def _emit(pos, u, a, state, rec, out_unit, out_attempt, out_level, out_reached, out_chain):  # type: ignore[no-untyped-def]  # pragma: no cover
    out_unit[pos] = u
    out_attempt[pos] = a
    out_level[pos] = state[_LEVEL]
    out_reached[pos] = state[_REACHED]
    _write_chain(state[_CHAIN], rec, out_chain, pos)


@nb.njit(parallel=True, cache=True)
def ordered_totals(chunks, rows, rules):  # type: ignore[no-untyped-def]  # pragma: no cover - numba
    """Every attempt: a step-1 row opens one when none is open; it closes on completion, when
    the window (from its step 1) has passed, or at an exclusion. Returns one row per attempt
    (a unit without attempts gets one row of level 0): unit, attempt, level, reached, chain.
    ``rows`` is a :class:`Rows`, ``rules`` a :class:`StepRules`."""
    offsets, ts, codes, lut, emask, xmask = rows
    n, window, limits, optional, xfrom, xto, entry_lo, entry_hi, overlap = rules
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
        cnt = np.zeros(n, np.int64)
        val = np.zeros((2, 3, n), np.int64)
        srec = np.full((2, n), -1, np.int64)
        rec = np.empty((_records_needed(offsets, u0, u1, n), 3), np.int64)
        fst = np.full(n, -1, np.int64)
        state = np.zeros(_STATE_SIZE, np.int64)
        for u in range(u0, u1):
            lo = offsets[u]
            hi = offsets[u + 1]
            if lo == hi:
                continue
            pos = bounds[u]
            a = 0
            is_open = False
            start = np.int64(0)
            _reset(n, cnt, state, fst)
            i = lo
            while i < hi:
                t = ts[i]
                j = _group_end(i, hi, ts)
                if is_open and t - start > window:
                    _emit(
                        pos,
                        u,
                        a,
                        state,
                        rec,
                        out_unit,
                        out_attempt,
                        out_level,
                        out_reached,
                        out_chain,
                    )
                    pos += 1
                    a += 1
                    is_open = False
                    _reset(n, cnt, state, fst)
                in_range = entry_lo <= t < entry_hi
                union = np.int64(0)
                for e in range(i, j):
                    union |= step_mask(e, codes, lut, emask)
                opened = False  # an attempt opened at this instant may start at any of its rows
                m = union
                k = 0
                while m != 0:
                    if m & 1:
                        for e in range(i, j):
                            if not (step_mask(e, codes, lut, emask) >> k) & 1:
                                continue
                            ok = k == 0 and in_range and (opened or not is_open)
                            if k > 0 and not is_open:
                                continue
                            val, srec, rec = _reserve(k, cnt, optional, val, srec, rec, state)
                            _step(
                                k,
                                e,
                                i,
                                t,
                                ts,
                                codes,
                                lut,
                                emask,
                                window,
                                limits,
                                optional,
                                ok,
                                overlap,
                                False,
                                cnt,
                                val,
                                srec,
                                rec,
                                fst,
                                state,
                            )
                            if ok and not is_open:
                                is_open = True
                                opened = True
                                start = t
                            if is_open and state[_LEVEL] == n:
                                _emit(
                                    pos,
                                    u,
                                    a,
                                    state,
                                    rec,
                                    out_unit,
                                    out_attempt,
                                    out_level,
                                    out_reached,
                                    out_chain,
                                )
                                pos += 1
                                a += 1
                                is_open = False
                                opened = False
                                _reset(n, cnt, state, fst)
                    m >>= 1
                    k += 1
                if overlap:
                    _prune(union, cnt, val, srec)
                if is_open and xmask.shape[0] > 0:
                    for e in range(i, j):
                        x = np.int64(xmask[e])
                        b = 0
                        while x != 0 and is_open:
                            if x & 1:
                                fa = xfrom[b]
                                ra = _row_at_step(state[_CHAIN], fa, rec)
                                if fa < state[_LEVEL] <= xto[b] and ra >= 0 and ts[ra] < t:
                                    _emit(
                                        pos,
                                        u,
                                        a,
                                        state,
                                        rec,
                                        out_unit,
                                        out_attempt,
                                        out_level,
                                        out_reached,
                                        out_chain,
                                    )
                                    pos += 1
                                    a += 1
                                    is_open = False
                                    _reset(n, cnt, state, fst)
                            x >>= 1
                            b += 1
                i = j
            if is_open or a == 0:
                _emit(
                    pos, u, a, state, rec, out_unit, out_attempt, out_level, out_reached, out_chain
                )
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
        m = step_mask(e, codes, lut, emask)
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
    chunks,
    offsets,
    ts,
    codes,
    lut,
    emask,
    xmask,
    hold,
    n,
    window,
    limits,
    optional,
    entry_lo,
    entry_hi,
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
                    m = step_mask(e, codes, lut, emask)
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
                                    if (
                                        (pl >> p) & 1
                                        and t - pst[p] <= window
                                        and (limits[k] < 0 or t - ts[prev] <= limits[k])
                                        and (not found or pst[p] > bs)
                                    ):
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
                    m = step_mask(r, codes, lut, emask)
                    k = 0
                    while m != 0:
                        if m & 1:
                            if cnt[k] == 0:
                                distinct += 1
                            cnt[k] += 1
                        m >>= 1
                        k += 1
                    r += 1
                mi = step_mask(i, codes, lut, emask)
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
                    m = step_mask(e, codes, lut, emask)
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
