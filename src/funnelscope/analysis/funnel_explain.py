"""``FunnelResult.explain(person)``: why one person is counted where they are.

The person's events are run through the same plan and kernel as the whole funnel (on a layout
of that person only), then printed in processing order with the steps each event matches, the
counted chain, and the reason the next step was not reached.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from funnelscope.analysis.funnel import FunnelSpec
from funnelscope.analysis.funnel_plan import prepare, run_kernel
from funnelscope.store.layout import PersonLayout

__all__ = ["explain_person"]


def _at(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.4g}{unit}"
    return f"{seconds:.4g}s"


def explain_person(spec: FunnelSpec, events: pa.Table, person: int) -> str:
    """The trace for ``person`` given all of their events (canonical columns)."""
    n = len(spec.steps)
    head = (
        f"person {person}: {spec.mode} funnel of {n} steps, window "
        f"{_span(spec.window.total_seconds())}, "
        f"counting {spec.counting} of {spec.count_by}"
    )
    if events.num_rows == 0:
        return f"{head}\nno events: not counted (furthest step 0)"
    layout = PersonLayout.from_table(events)
    stream = prepare(spec, layout)
    _, attempt, level, _, _, chain = run_kernel(spec, stream)
    rows = stream.rows if stream.rows is not None else np.arange(layout.n_rows)
    masks = stream.emask if stream.emask.shape[0] else stream.lut[stream.codes]
    step_of_row: dict[int, list[int]] = {}
    for pos, row in enumerate(rows):
        bits = int(masks[pos])
        step_of_row[int(row)] = [k + 1 for k in range(n) if bits >> k & 1]
    lines = [head]
    best = int(np.argmax(level)) if level.shape[0] else -1
    chain_rows: dict[int, int] = {}
    if best >= 0:
        for k in range(n):
            r = int(chain[best, k])
            if r >= 0:
                chain_rows[int(rows[r])] = k + 1
    furthest = int(level.max()) if level.shape[0] else 0
    name = spec.steps[furthest - 1].name if furthest else "none"
    if spec.counting == "totals":
        done = ", ".join(
            f"attempt {int(a) + 1}: step {int(lv)}" for a, lv in zip(attempt, level, strict=True)
        )
        lines.append(f"counted attempts: {done}")
    lines.append(f"furthest step: {furthest} of {n} ({name})")
    lines.append("events (time order; ties by step):")
    visible = set(int(r) for r in rows)
    for i in range(layout.n_rows):
        event = layout.event_names[layout.codes[i]]
        steps = step_of_row.get(i, [])
        note = (
            "hidden by filters or the date range"
            if i not in visible
            else ("matches step " + ", ".join(map(str, steps)) if steps else "")
        )
        mark = f"  <- step {chain_rows[i]} of the counted chain" if i in chain_rows else ""
        lines.append(f"  {_at(int(layout.ts[i]))}  {event:<24} {note}{mark}")
    if best < 0 or furthest == 0:
        lines.append(
            "never entered: no event matched step 1"
            + (" inside the entry range" if spec.start_at or spec.end_at else "")
        )
        return "\n".join(lines)
    times = {
        k: int(layout.ts[int(rows[int(chain[best, k])])]) for k in range(n) if chain[best, k] >= 0
    }
    start = times[min(times)]
    parts = [
        f"step {k + 1} at {_at(t)}" + (f" (+{_span((t - start) / 1e6)})" if k else "")
        for k, t in sorted(times.items())
    ]
    lines.append("counted chain: " + "; ".join(parts))
    if furthest < n and spec.mode != "any":
        nxt = spec.steps[furthest]
        deadline = start + int(spec.window.total_seconds() * 1e6)
        candidates = [
            int(layout.ts[int(r)]) for pos, r in enumerate(rows) if int(masks[pos]) >> furthest & 1
        ]
        later = [t for t in candidates if t >= times[max(times)]]
        if not later:
            why = "no matching event after the previous step"
        elif min(later) > deadline:
            why = (
                f"the next matching event ({_at(min(later))}) is after the window's end "
                f"({_at(deadline)})"
            )
        elif spec.mode == "strict":
            why = "another event came between the previous step and every matching event"
        else:
            why = (
                "every matching event in the window was ruled out (a per-step limit, an "
                "exclusion or a hold-constant value)"
            )
        lines.append(f"step {furthest + 1} ({nxt.name}) not reached: {why}")
    return "\n".join(lines)
