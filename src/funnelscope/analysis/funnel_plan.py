"""From a :class:`~funnelscope.analysis.funnel.FunnelSpec` and a person layout to one outcome
row per unit (or per attempt): the part every engine runs the same way, on its own rows.

Plan: step masks per row (an event-code lookup, or per-row masks when filters, first-time
matching or the repeat-order rule apply) -> regroup rows by unit (sessions, keys) -> first-time
matching on the unit's whole history -> drop rows hidden by global filters and the date range
-> split by hold-constant value -> the kernel of the mode -> the counted chain's rows, times and
breakdown values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from funnelscope.analysis.funnel import FunnelSpec, PropertyFilter
from funnelscope.events.stages import ORDER_EVENT, Stage
from funnelscope.kernels import funnel as kf
from funnelscope.kernels import funnel_plain as kp
from funnelscope.kernels.cluster import cluster_rows
from funnelscope.kernels.outcomes import chain_rows_and_times
from funnelscope.store.layout import PersonLayout

__all__ = [
    "PACKED_SCHEMA",
    "Outcomes",
    "breakdown_column",
    "compute_arrays",
    "compute_outcomes",
    "compute_packed",
    "outcome_schema",
    "prepare",
    "step_column",
    "unpack",
]

I64 = npt.NDArray[np.int64]
_FAR: Final = 2**62
_EMPTY_U32: Final = np.zeros(0, np.uint32)
_EMPTY_I64: Final = np.zeros(0, np.int64)
TS_TYPE: Final = pa.timestamp("us", tz="UTC")


def step_column(k: int) -> str:
    """The outcome column holding step ``k``'s (1-based) time."""
    return f"step_{k}_at"


def breakdown_column(name: str) -> str:
    return f"breakdown.{name}"


def outcome_schema(spec: FunnelSpec) -> pa.Schema:
    """The columns :func:`compute_outcomes` returns (also Spark's ``mapInArrow`` schema)."""
    return pa.schema(
        [
            ("person_id", pa.int64()),
            ("unit", pa.string()),
            ("attempt", pa.int32()),
            ("level", pa.int8()),
            ("reached", pa.int64()),
            ("advanced", pa.int64()),
        ]
        + [(step_column(k + 1), TS_TYPE) for k in range(len(spec.steps))]
        + [(breakdown_column(b), pa.string()) for b in spec.breakdowns]
    )


def _us(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


def filter_rows(layout: PersonLayout, f: PropertyFilter) -> npt.NDArray[np.bool_]:
    """Which layout rows pass one property filter (null never passes, except ``is_not_set``)."""
    col = layout.column(f.property)
    if f.op == "is_set":
        return np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=bool)
    if f.op == "is_not_set":
        return np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False), dtype=bool)
    values = f.value if isinstance(f.value, tuple | list) else (f.value,)
    numeric = (
        pa.types.is_integer(col.type)
        or pa.types.is_floating(col.type)
        or pa.types.is_decimal(col.type)
    )
    if f.op in ("gt", "gte", "lt", "lte") or numeric:
        import pandas as pd

        nums = pd.to_numeric(pd.Series(col.to_pandas(), dtype=object), errors="coerce")
        left = pa.array(nums.to_numpy(dtype=float), pa.float64(), from_pandas=True)
        try:
            right = [float(v) for v in values]
        except (TypeError, ValueError):
            right = None
        if right is not None:
            if f.op in ("gt", "gte", "lt", "lte"):
                result = getattr(
                    pc,
                    {"gt": "greater", "gte": "greater_equal", "lt": "less", "lte": "less_equal"}[
                        f.op
                    ],
                )(left, right[0])
            elif f.op in ("eq", "in"):
                result = pc.is_in(left, value_set=pa.array(right, pa.float64()))
            elif f.op in ("neq", "not_in"):
                result = pc.invert(pc.is_in(left, value_set=pa.array(right, pa.float64())))
                result = pc.and_(result, pc.is_valid(left))
            else:
                result = None
            if result is not None:
                return np.asarray(result.fill_null(False).to_numpy(zero_copy_only=False), bool)
        if f.op in ("gt", "gte", "lt", "lte"):
            return np.zeros(len(col), bool)
    text = pc.cast(col, pa.string())
    strings = pa.array([str(v) for v in values], pa.string())
    if f.op in ("eq", "in"):
        result = pc.is_in(text, value_set=strings)
    elif f.op in ("neq", "not_in"):
        result = pc.and_(pc.invert(pc.is_in(text, value_set=strings)), pc.is_valid(text))
    else:  # contains
        result = pc.match_substring(text, str(values[0]))
    return np.asarray(result.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


@dataclass
class Stream:
    """Rows regrouped by kernel unit (unit, or unit x hold value), ready for a kernel."""

    offsets: I64
    rows: I64 | None  # layout row of each stream row (None = identity)
    ts: I64
    codes: npt.NDArray[np.int16]
    lut: npt.NDArray[np.uint32]
    emask: npt.NDArray[np.uint32]
    xmask: npt.NDArray[np.uint32]
    hold: I64
    kunit_unit: I64 | None  # kernel unit -> unit (None = identity)
    unit_offsets: I64  # visible rows per unit (for units with no kernel unit)
    unit_person: I64  # layout person index of each unit
    unit_label: pa.Array | None  # session id / key value of each unit
    unit_index: I64 | None = None  # kernel unit -> unit when empty units were dropped


def _step_masks(spec: FunnelSpec, layout: PersonLayout) -> tuple[Any, Any]:
    names = layout.event_names
    lut = np.zeros(max(len(names), 1), np.uint32)
    model = spec.stage_model
    order_code = layout.code_of(ORDER_EVENT)
    split = model.repeat_order_is_retention and order_code is not None
    special: list[tuple[int, Any]] = []
    for k, step in enumerate(spec.steps):
        if step.of_stage is not None:
            wanted = {e for e, s in model.events.items() if s == step.of_stage}
        else:
            wanted = {str(step.event)}
        codes = [c for c, name in enumerate(names) if name in wanted]
        needs_rows = (
            bool(step.filters)
            or step.first_time
            or (split and step.of_stage in (Stage.ACTION, Stage.RETENTION))
        )
        if needs_rows:
            special.append((k, codes))
        else:
            lut[codes] |= np.uint32(1 << k)
    if not special:
        return lut, _EMPTY_U32
    emask = lut[layout.codes]
    repeat = None
    for k, codes in special:
        step = spec.steps[k]
        rows = np.isin(layout.codes, np.asarray(codes, dtype=np.int16))
        if split and step.of_stage in (Stage.ACTION, Stage.RETENTION):
            if repeat is None:
                repeat = kf.repeat_rows(layout.offsets, layout.codes, np.int16(order_code or 0))
                repeat = repeat & (layout.codes == order_code)
            rows = rows & ~repeat if step.of_stage == Stage.ACTION else rows | repeat
        for f in step.filters:
            rows &= filter_rows(layout, f)
        emask[rows] |= np.uint32(1 << k)
    return lut, emask


def _exclusion_masks(spec: FunnelSpec, layout: PersonLayout) -> npt.NDArray[np.uint32]:
    if not spec.exclusions:
        return _EMPTY_U32
    xmask = np.zeros(layout.n_rows, np.uint32)
    for j, x in enumerate(spec.exclusions):
        code = layout.code_of(x.event)
        if code is None:
            continue
        rows = layout.codes == code
        for f in x.filters:
            rows &= filter_rows(layout, f)
        xmask[rows] |= np.uint32(1 << j)
    return xmask


def _factorize(values: Any) -> tuple[I64, int]:
    """Dense ids (-1 for missing) and how many."""
    import pandas as pd

    codes, uniques = pd.factorize(values, sort=False, use_na_sentinel=True)
    return codes.astype(np.int64), len(uniques)


def _compact(offsets: I64, keep: npt.NDArray[np.bool_]) -> I64:
    counts = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return counts[offsets]


def prepare(spec: FunnelSpec, layout: PersonLayout) -> Stream:
    """Everything the kernel needs, in kernel-unit order (see the module docstring)."""
    lut, emask = _step_masks(spec, layout)
    xmask = _exclusion_masks(spec, layout)
    # -- units ------------------------------------------------------------------------------
    unit_label: pa.Array | None = None
    if spec.count_by == "persons":
        rows: I64 | None = None
        offsets = layout.offsets
        unit_person = np.arange(layout.n_persons, dtype=np.int64)
    else:
        person_row = layout.person_of_row()
        key_name = "session_id" if spec.count_by == "sessions" else spec.count_by
        key = pc.cast(layout.column(key_name), pa.string())
        if spec.count_by == "sessions":
            # a session belongs to one person; ids are only unique within a person
            sess, _ = _factorize(key.to_numpy(zero_copy_only=False))
            combined = np.where(sess >= 0, person_row * (int(sess.max(initial=0)) + 2) + sess, -1)
            ids, n_units = _factorize(np.where(combined >= 0, combined, np.nan))
        else:
            ids, n_units = _factorize(key.to_numpy(zero_copy_only=False))
        valid = np.flatnonzero(ids >= 0)
        order, offsets, _ = cluster_rows(ids[valid], layout.ts[valid], n_units)
        rows = valid[order]
        firsts = rows[offsets[:-1]] if n_units else np.zeros(0, np.int64)
        unit_person = person_row[firsts]
        unit_label = key.take(pa.array(firsts))
    ts = layout.ts if rows is None else layout.ts[rows]
    codes = layout.codes if rows is None else layout.codes[rows]
    if emask.shape[0] and rows is not None:
        emask = emask[rows]
    if xmask.shape[0] and rows is not None:
        xmask = xmask[rows]
    first_bits = sum(1 << k for k, s in enumerate(spec.steps) if s.first_time)
    if first_bits:
        emask = emask.copy() if rows is None else emask
        kf.first_time_only(offsets, emask, np.int64(first_bits))
    # -- visibility: global filters and the date range -----------------------------------------
    keep: npt.NDArray[np.bool_] | None = None
    if spec.filters:
        passed = np.ones(layout.n_rows, bool)
        for f in spec.filters:
            passed &= filter_rows(layout, f)
        keep = passed if rows is None else passed[rows]
    if spec.start_at is not None or spec.end_at is not None:
        lo = _us(spec.start_at) if spec.start_at else -_FAR
        hi = _us(spec.end_at) + int(spec.window.total_seconds() * 1e6) if spec.end_at else _FAR
        in_range = (ts >= lo) & (ts <= hi)
        keep = in_range if keep is None else keep & in_range
    if keep is not None and not keep.all():
        offsets = _compact(offsets, keep)
        idx = np.flatnonzero(keep)
        rows = idx if rows is None else rows[idx]
        ts, codes = ts[idx], codes[idx]
        emask = emask[idx] if emask.shape[0] else emask
        xmask = xmask[idx] if xmask.shape[0] else xmask
    unit_offsets = offsets
    # -- hold constant ----------------------------------------------------------------------
    hold = _EMPTY_I64
    kunit_unit: I64 | None = None
    if spec.hold_constant:
        parts = [pc.cast(layout.column(h), pa.string()) for h in spec.hold_constant]
        if rows is not None:
            parts = [p.take(pa.array(rows)) for p in parts]
        import pandas as pd

        frame = pd.DataFrame({str(i): p.to_pandas() for i, p in enumerate(parts)})
        missing = frame.isna().any(axis=1).to_numpy()
        groups = frame.groupby(list(frame.columns), dropna=False, sort=False).ngroup()
        hold = np.array(groups.to_numpy(), dtype=np.int64, copy=True)
        hold[missing] = -1
        if spec.mode != "strict":
            unit_of_row = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
            valid = np.flatnonzero(hold >= 0)
            pair = unit_of_row[valid] * (int(hold.max(initial=0)) + 1) + hold[valid]
            sub, n_sub = _factorize(pair)
            order, offsets, _ = cluster_rows(sub, ts[valid], n_sub)
            take = valid[order]
            firsts = take[offsets[:-1]]
            kunit_unit = unit_of_row[firsts] if n_sub else np.zeros(0, np.int64)
            rows = take if rows is None else rows[take]
            ts, codes = ts[take], codes[take]
            emask = emask[take] if emask.shape[0] else emask
            xmask = xmask[take] if xmask.shape[0] else xmask
            hold = _EMPTY_I64
    unit_index: I64 | None = None
    if kunit_unit is None and spec.counting == "uniques":
        # units without visible rows are not in the result: leave them out of the kernel
        sizes = np.diff(offsets)
        if (sizes == 0).any():
            unit_index = np.flatnonzero(sizes > 0)
            offsets = np.append(offsets[unit_index], offsets[-1])
    return Stream(
        offsets,
        rows,
        np.ascontiguousarray(ts),
        np.ascontiguousarray(codes),
        lut,
        emask,
        xmask,
        hold,
        kunit_unit,
        unit_offsets,
        unit_person,
        unit_label,
        unit_index,
    )


def run_kernel(spec: FunnelSpec, s: Stream) -> tuple[Any, ...]:
    """(kernel unit, attempt, level, reached, advanced, chain) with chain in stream rows."""
    return _run_kernel(spec, s, keep_chain=True)[:6]


def _run_kernel(spec: FunnelSpec, s: Stream, *, keep_chain: bool) -> tuple[Any, ...]:
    """:func:`run_kernel` plus the chain's times when the kernel wrote them (else None). Without
    ``keep_chain`` a kernel that writes the times may return a chain with no rows."""
    n = len(spec.steps)
    window = int(spec.window.total_seconds() * 1_000_000)
    limits = np.array(
        [-1 if st.within is None else int(st.within.total_seconds() * 1e6) for st in spec.steps],
        np.int64,
    )
    optional = np.array([st.is_optional for st in spec.steps], np.bool_)
    lo = _us(spec.start_at) if spec.start_at else -_FAR
    hi = _us(spec.end_at) if spec.end_at else _FAR
    xfrom = np.array([x.from_step - 1 for x in spec.exclusions], np.int64)
    xto = np.array([(n if x.to_step is None else x.to_step) - 1 for x in spec.exclusions], np.int64)
    overlap = _can_overlap(spec)
    rules = kf.StepRules(n, window, limits, optional, xfrom, xto, lo, hi, overlap)
    units = s.offsets.shape[0] - 1
    chunks = kf.chunks_for(units)
    if spec.counting == "totals":
        kernel_rows = kf.Rows(s.offsets, s.ts, s.codes, s.lut, s.emask, s.xmask)
        unit, attempt, level, reached, chain = kf.ordered_totals(chunks, kernel_rows, rules)
        keep = unit >= 0
        return (
            unit[keep],
            attempt[keep],
            level[keep],
            reached[keep],
            np.zeros(int(keep.sum()), np.int64),
            chain[keep],
            None,
        )
    if spec.mode == "strict":
        level, reached, advanced, chain = kf.strict_uniques(
            chunks,
            s.offsets,
            s.ts,
            s.codes,
            s.lut,
            s.emask,
            s.xmask,
            s.hold,
            n,
            window,
            limits,
            optional,
            lo,
            hi,
        )
    elif spec.mode == "any":
        level, reached, advanced, chain = kf.any_uniques(
            chunks, s.offsets, s.ts, s.codes, s.lut, s.emask, n, window, lo, hi
        )
    elif _is_plain(spec) and not overlap:
        # the common funnel: each event in at most one step
        step_of = np.full(s.lut.shape[0], -1, np.int64)
        for code, bits in enumerate(s.lut):
            if bits:
                step_of[code] = int(bits).bit_length() - 1
        level, reached, advanced, chain, times = kp.ordered_lean(
            chunks, s.offsets, s.ts, s.codes, step_of, s.emask, n, window, lo, hi, keep_chain
        )
        return (
            np.arange(units, dtype=np.int64),
            np.zeros(units, np.int32),
            level,
            reached,
            advanced,
            chain,
            times,
        )
    elif _is_plain(spec):
        # repeated steps: each code's (read, write) slots, its last step first
        steps_of = [[k for k in range(n) if int(bits) >> k & 1][::-1] for bits in s.lut]
        width = max(1, max(len(st) for st in steps_of))
        src_of = np.full((s.lut.shape[0], width), n + 1, np.int64)
        dst_of = np.full((s.lut.shape[0], width), n + 2, np.int64)
        for code, st in enumerate(steps_of):
            src_of[code, : len(st)] = st
            dst_of[code, : len(st)] = [k + 1 for k in st]
        level, reached, advanced, chain, times = kp.ordered_repeat(
            chunks,
            s.offsets,
            s.ts,
            s.codes,
            s.lut,
            src_of,
            dst_of,
            s.emask,
            n,
            window,
            lo,
            hi,
            keep_chain,
        )
        punted = np.flatnonzero(level < 0)
        if punted.shape[0]:
            # units with simultaneous events matching several steps: the general kernel
            sizes = s.offsets[punted + 1] - s.offsets[punted]
            take = np.concatenate([np.arange(s.offsets[u], s.offsets[u + 1]) for u in punted])
            sub = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            emask = s.emask[take] if s.emask.shape[0] else s.emask
            sub_rows = kf.Rows(sub, s.ts[take], s.codes[take], s.lut, emask, s.xmask)
            lv, rc, ad, chn = kf.ordered_uniques(
                kf.chunks_for(punted.shape[0]), sub_rows, rules, False
            )
            level[punted], reached[punted], advanced[punted] = lv, rc, ad
            rows = np.where(chn >= 0, take[np.maximum(chn, 0)], -1)
            times[punted] = np.where(rows >= 0, s.ts[rows.clip(0)], NONE)
            if keep_chain:
                chain[punted] = rows
        return (
            np.arange(units, dtype=np.int64),
            np.zeros(units, np.int32),
            level,
            reached,
            advanced,
            chain,
            times,
        )
    else:
        kernel_rows = kf.Rows(s.offsets, s.ts, s.codes, s.lut, s.emask, s.xmask)
        level, reached, advanced, chain = kf.ordered_uniques(
            chunks, kernel_rows, rules, spec.is_open
        )
    unit = np.arange(units, dtype=np.int64)
    return unit, np.zeros(units, np.int32), level, reached, advanced, chain, None


def _is_plain(spec: FunnelSpec) -> bool:
    """No option that needs the general kernel's per-slot chains."""
    return not (
        spec.exclusions
        or spec.is_open
        or any(s.within is not None or s.is_optional for s in spec.steps)
    )


def _can_overlap(spec: FunnelSpec) -> bool:
    """Whether one event could match two steps (then one event fills one step only)."""
    keys = [(s.of_stage, s.event) for s in spec.steps]
    if len(set(keys)) < len(keys):
        return True
    return any(s.of_stage is not None for s in spec.steps) and any(
        s.event is not None for s in spec.steps
    )


NONE: Final = np.iinfo(np.int64).min  # "no time" in Outcomes.times


@dataclass
class Outcomes:
    """One row per unit (uniques) or attempt (totals), as arrays; ``to_arrow()`` gives the
    :func:`outcome_schema` table (what Spark partitions return)."""

    person_id: I64
    unit: pa.Array | None
    attempt: npt.NDArray[np.int32]
    level: npt.NDArray[np.int8]
    reached: I64
    advanced: I64
    times: I64  # (rows, steps) microseconds, NONE when the step is not in the chain
    breakdowns: list[pa.Array]

    def to_arrow(self, spec: FunnelSpec) -> pa.Table:
        schema = outcome_schema(spec)
        rows = self.level.shape[0]
        arrays: list[pa.Array] = [
            pa.array(self.person_id, pa.int64()),
            self.unit.cast(pa.string()) if self.unit is not None else pa.nulls(rows, pa.string()),
            pa.array(self.attempt, pa.int32()),
            pa.array(self.level, pa.int8()),
            pa.array(self.reached, pa.int64()),
            pa.array(self.advanced, pa.int64()),
        ]
        for k in range(self.times.shape[1]):
            col = np.ascontiguousarray(self.times[:, k])
            arrays.append(pa.array(col, TS_TYPE, mask=col == NONE))
        arrays.extend(b.cast(pa.string()) for b in self.breakdowns)
        return pa.Table.from_arrays(arrays, schema=schema)

    @classmethod
    def from_arrow(cls, spec: FunnelSpec, table: pa.Table) -> Outcomes:
        def np_of(name: str) -> Any:
            return table.column(name).combine_chunks().to_numpy(zero_copy_only=False)

        n = len(spec.steps)
        times = np.empty((table.num_rows, n), np.int64)
        for k in range(n):
            col = table.column(step_column(k + 1)).cast(pa.int64()).combine_chunks()
            times[:, k] = col.fill_null(NONE).to_numpy(zero_copy_only=False)
        unit = table.column("unit").combine_chunks()
        return cls(
            np_of("person_id").astype(np.int64),
            None if spec.count_by == "persons" else unit,
            np_of("attempt").astype(np.int32),
            np_of("level").astype(np.int8),
            np_of("reached").astype(np.int64),
            np_of("advanced").astype(np.int64),
            times,
            [table.column(breakdown_column(b)).combine_chunks() for b in spec.breakdowns],
        )

    def take(self, index: I64) -> Outcomes:
        pick = pa.array(index)
        return Outcomes(
            self.person_id[index],
            None if self.unit is None else self.unit.take(pick),
            self.attempt[index],
            self.level[index],
            self.reached[index],
            self.advanced[index],
            self.times[index],
            [b.take(pick) for b in self.breakdowns],
        )

    def __len__(self) -> int:
        return int(self.level.shape[0])


def compute_outcomes(spec: FunnelSpec, layout: PersonLayout) -> pa.Table:
    """One row per unit (uniques) or attempt (totals): see :func:`outcome_schema`."""
    return compute_arrays(spec, layout).to_arrow(spec)


def compute_arrays(spec: FunnelSpec, layout: PersonLayout) -> Outcomes:
    """:func:`compute_outcomes` as arrays (the embedded engine skips the Arrow round trip)."""
    s = prepare(spec, layout)
    # the chain's rows serve breakdowns and regrouped streams; otherwise its times suffice
    keep = bool(spec.breakdowns) or s.rows is not None or s.kunit_unit is not None
    kunit, attempt, level, reached, advanced, chain, times = _run_kernel(spec, s, keep_chain=keep)
    n = len(spec.steps)
    if s.kunit_unit is not None:
        times = None
        unit = s.kunit_unit[kunit]
        if spec.counting == "uniques":
            done = np.where(level > 0, _row_time(s, chain, np.maximum(level - 1, 0)), 0)
            pick = np.lexsort((done, -level.astype(np.int64), unit))
            first = np.ones(pick.shape[0], bool)
            first[1:] = unit[pick][1:] != unit[pick][:-1]
            pick = pick[first]
            unit, attempt, level = unit[pick], attempt[pick], level[pick]
            reached, advanced, chain = reached[pick], advanced[pick], chain[pick]
        # units whose rows all lacked a hold value still count, at level 0
        visible = np.flatnonzero(np.diff(s.unit_offsets) > 0)
        missing = np.setdiff1d(visible, unit)
        if missing.shape[0]:
            m = missing.shape[0]
            unit = np.concatenate([unit, missing])
            attempt = np.concatenate([attempt, np.zeros(m, np.int32)])
            level = np.concatenate([level, np.zeros(m, np.int8)])
            reached = np.concatenate([reached, np.zeros(m, np.int64)])
            advanced = np.concatenate([advanced, np.zeros(m, np.int64)])
            chain = np.concatenate([chain, np.full((m, n), -1, np.int64)])
        order = np.lexsort((attempt, unit))
        unit, attempt, level = unit[order], attempt[order], level[order]
        reached, advanced, chain = reached[order], advanced[order], chain[order]
    else:
        unit = kunit if s.unit_index is None else s.unit_index[kunit]
    if times is not None and s.rows is None:
        rows = chain  # stream rows are layout rows, and the kernel wrote the times
    else:
        rows, times = chain_rows_and_times(
            np.ascontiguousarray(chain), _EMPTY_I64 if s.rows is None else s.rows, layout.ts
        )
    breakdowns: list[pa.Array] = []
    if spec.breakdowns:
        touch = _attributed_rows(spec, rows, times)
        mask = pa.array(touch < 0)
        for b in spec.breakdowns:
            values = pc.cast(layout.column(b), pa.string())
            picked = (
                values.take(pa.array(np.maximum(touch, 0)))
                if len(touch)
                else pa.array([], pa.string())
            )
            breakdowns.append(
                pc.if_else(mask, pa.nulls(len(touch), pa.string()), picked)
                if len(touch)
                else picked
            )
    whole = (
        spec.counting == "uniques"
        and s.unit_label is None
        and s.unit_index is None
        and s.kunit_unit is None
        and unit.shape[0] == layout.n_persons
    )
    return Outcomes(
        # every person a unit, in layout order: no gather (copied: layouts refresh in place)
        person_id=layout.person_ids.copy() if whole else layout.person_ids[s.unit_person[unit]],
        unit=None if s.unit_label is None else s.unit_label.take(pa.array(unit)),
        attempt=attempt.astype(np.int32, copy=False),
        level=level.astype(np.int8, copy=False),
        reached=reached.astype(np.int64, copy=False),
        advanced=advanced.astype(np.int64, copy=False),
        times=times,
        breakdowns=breakdowns,
    )


def _row_time(s: Stream, chain: I64, k: I64) -> I64:
    r = chain[np.arange(chain.shape[0]), k]
    return np.where(r >= 0, s.ts[np.maximum(r, 0)], 0)


def _attributed_rows(spec: FunnelSpec, rows: I64, times: I64) -> I64:
    """The row whose property labels each outcome (first touch, last touch or step N)."""
    n = rows.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    has = rows >= 0
    first = rows[np.arange(n), np.argmin(np.where(has, times, np.iinfo(np.int64).max), axis=1)]
    last = rows[np.arange(n), np.argmax(times, axis=1)]
    if spec.attribution == "first_touch":
        out = first
    elif spec.attribution == "last_touch":
        out = last
    else:
        at = rows[:, int(spec.attribution_step or 1) - 1]
        out = np.where(at >= 0, at, last)
    return np.where(has.any(axis=1), out, -1)


#: Several funnels' outcomes in one table: which spec, and its outcome rows as Arrow IPC.
PACKED_SCHEMA: Final = pa.schema([("spec", pa.int32()), ("outcomes", pa.binary())])


def compute_packed(specs: tuple[FunnelSpec, ...], layout: PersonLayout) -> pa.Table:
    """The outcomes of several specs on one layout, one IPC-encoded row per spec."""
    payloads = []
    for spec in specs:
        sink = pa.BufferOutputStream()
        table = compute_outcomes(spec, layout)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        payloads.append(sink.getvalue().to_pybytes())
    return pa.table(
        {
            "spec": pa.array(range(len(specs)), pa.int32()),
            "outcomes": pa.array(payloads, pa.binary()),
        },
        schema=PACKED_SCHEMA,
    )


def unpack(specs: tuple[FunnelSpec, ...], packed: pa.Table) -> list[pa.Table]:
    """Inverse of :func:`compute_packed` over every partition's rows."""
    parts: list[list[pa.Table]] = [[] for _ in specs]
    for index, payload in zip(
        packed.column("spec").to_pylist(), packed.column("outcomes").to_pylist(), strict=True
    ):
        parts[index].append(pa.ipc.open_stream(payload).read_all())
    return [
        pa.concat_tables(p) if p else outcome_schema(s).empty_table()
        for p, s in zip(parts, specs, strict=True)
    ]
