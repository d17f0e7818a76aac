"""Rule segments on the store: evaluate, keep members and sizes over time, refresh, activate.

The language itself (specs, parsing, builders, SQL) is :mod:`funnelscope.analysis.segment_rules`;
its public names are re-exported here. A stored segment is refreshed on demand
(:func:`refresh_segment`, ``funnelscope segments refresh``, ``POST /api/segments/refresh``) and by
``serve`` every :data:`DEFAULT_REFRESH_INTERVAL` through :func:`refresh_all`. Each refresh
records the segment's size, and queues a signed webhook with the joins and leaves for every
subscriber (:mod:`funnelscope.webhooks`). Members can be exported to CSV or Parquet.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from funnelscope.analysis.segment_rules import (
    OPERATORS,
    AllRule,
    AnyRule,
    EventRule,
    Filter,
    NoEventSinceRule,
    NotRule,
    PropertyRule,
    Rule,
    SegmentSpec,
    all_of,
    any_of,
    compile_segment,
    did,
    load_segment,
    no_event_since,
    not_,
    parse_segment,
    prop,
    where,
)
from funnelscope.errors import InvalidSpecError, Problem
from funnelscope.store.store import Store

__all__ = [
    "DEFAULT_REFRESH_INTERVAL",
    "EXPORT_FORMATS",
    "OPERATORS",
    "AllRule",
    "AnyRule",
    "EventRule",
    "Filter",
    "NoEventSinceRule",
    "NotRule",
    "PropertyRule",
    "RefreshResult",
    "Rule",
    "SegmentSpec",
    "all_of",
    "any_of",
    "compile_segment",
    "delete_segment",
    "did",
    "evaluate",
    "export_segment",
    "get_segment",
    "list_segments",
    "load_segment",
    "members",
    "no_event_since",
    "not_",
    "parse_segment",
    "prop",
    "refresh_all",
    "refresh_segment",
    "save_segment",
    "segment_sizes",
    "subscribe",
    "where",
]

# -- evaluation, storage, refresh, activation ---------------------------------------------------

#: ``serve`` refreshes every stored segment this often (see docs/customers.md).
DEFAULT_REFRESH_INTERVAL: Final = timedelta(minutes=15)
#: Joins and leaves per webhook delivery.
WEBHOOK_CHUNK: Final = 1000
SEGMENT_EVENT_TYPE: Final = "segment.changed"


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise InvalidSpecError([Problem("segment.naive_time", "now", "now must be timezone-aware")])


def evaluate(store: Store, spec: SegmentSpec, *, now: datetime) -> list[int]:
    """The canonical person ids in the segment as of ``now``, ascending.

    Examples
    --------
    >>> import funnelscope
    >>> from datetime import UTC, datetime
    >>> ws = funnelscope.open(":memory:")
    >>> evaluate(ws.store, SegmentSpec("buyers", did("order_completed")),
    ...          now=datetime(2024, 1, 1, tzinfo=UTC))
    []
    """
    from funnelscope.analysis.customers import customer_params, customer_sql
    from funnelscope.engines.embedded import EmbeddedEngine

    _require_aware(now)
    engine = EmbeddedEngine(store)
    params: dict[str, Any] = {"now": now}
    customers = None
    if spec.uses_properties:
        customers = customer_sql()
        params.update(customer_params(engine, now))
    sql, bound = compile_segment(spec, customers)
    params.update(bound)
    table = engine.sql(sql, params)
    return [int(v) for v in table.column("person_id").to_pylist()]


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """One refresh of one segment: its size and who joined and left since the last refresh."""

    segment: str
    computed_at: datetime
    size: int
    joined: tuple[int, ...]
    left: tuple[int, ...]
    deliveries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "computed_at": self.computed_at.isoformat(),
            "size": self.size,
            "joined": list(self.joined),
            "left": list(self.left),
            "deliveries": self.deliveries,
        }


def save_segment(store: Store, spec: SegmentSpec, *, now: datetime) -> None:
    """Store (or replace) a segment definition; members are kept until the next refresh."""
    with store.write() as cur:
        found = cur.execute(
            "SELECT created_at FROM segments WHERE name = ?", [spec.name]
        ).fetchone()
        cur.execute("DELETE FROM segments WHERE name = ?", [spec.name])
        cur.execute(
            "INSERT INTO segments (name, definition, description, created_at, updated_at, "
            "refreshed_at) VALUES (?, ?, ?, ?, ?, NULL)",
            [
                spec.name,
                json.dumps(spec.to_dict()["rule"]),
                spec.description,
                found[0] if found else now,
                now,
            ],
        )


def get_segment(store: Store, name: str) -> SegmentSpec:
    """The stored segment ``name``; :class:`InvalidSpecError` (``segment.not_found``) if none."""
    rows = store.query(
        "SELECT CAST(definition AS VARCHAR), description FROM segments WHERE name = ?", [name]
    )
    if not rows:
        raise InvalidSpecError(
            [Problem("segment.not_found", "name", f"there is no segment named {name!r}")]
        )
    rule, description = rows[0]
    return parse_segment({"name": name, "description": description or "", "rule": json.loads(rule)})


def list_segments(store: Store) -> list[dict[str, Any]]:
    """Every stored segment with its current size and last refresh time."""
    rows = store.query(
        "SELECT s.name, s.description, CAST(s.definition AS VARCHAR), s.updated_at, "
        "s.refreshed_at, (SELECT count(*) FROM segment_members m WHERE m.segment = s.name) "
        "FROM segments s ORDER BY s.name"
    )
    return [
        {
            "name": n,
            "description": d,
            "rule": json.loads(r),
            "updated_at": u,
            "refreshed_at": f,
            "size": int(c),
        }
        for n, d, r, u, f, c in rows
    ]


def delete_segment(store: Store, name: str) -> None:
    """Forget a segment, its members, sizes and subscriptions (delivered webhooks stay)."""
    get_segment(store, name)
    with store.write() as cur:
        for table, column in (
            ("segments", "name"),
            ("segment_members", "segment"),
            ("segment_sizes", "segment"),
            ("segment_webhooks", "segment"),
        ):
            cur.execute(f"DELETE FROM {table} WHERE {column} = ?", [name])


def subscribe(store: Store, segment: str, url: str, secret: str, *, now: datetime) -> None:
    """POST the segment's joins and leaves to ``url`` after every refresh (webhooks.py)."""
    get_segment(store, segment)
    problems = []
    if not url.startswith(("http://", "https://")):
        problems.append(
            Problem("webhook.bad_url", "url", "url must start with http:// or https://")
        )
    if not secret:
        problems.append(Problem("webhook.missing_secret", "secret", "a signing secret is required"))
    if problems:
        raise InvalidSpecError(problems)
    with store.write() as cur:
        cur.execute("DELETE FROM segment_webhooks WHERE segment = ? AND url = ?", [segment, url])
        cur.execute("INSERT INTO segment_webhooks VALUES (?, ?, ?, ?)", [segment, url, secret, now])


def refresh_segment(store: Store, name: str, *, now: datetime) -> RefreshResult:
    """Recompute ``name`` as of ``now``: update members, record the size, queue webhooks.

    Membership, the size row and the webhook deliveries commit in one transaction, so a
    subscriber never misses a join or a leave (they are delivered by
    :func:`funnelscope.webhooks.deliver_pending`).
    """
    from funnelscope.webhooks import enqueue

    spec = get_segment(store, name)
    members = evaluate(store, spec, now=now)
    with store.write() as cur:
        old = {
            int(r[0])
            for r in cur.execute(
                "SELECT person_id FROM segment_members WHERE segment = ?", [name]
            ).fetchall()
        }
        new = set(members)
        joined = tuple(sorted(new - old))
        left = tuple(sorted(old - new))
        if left:
            cur.execute(
                "DELETE FROM segment_members WHERE segment = ? AND list_contains(?, person_id)",
                [name, list(left)],
            )
        if joined:
            cur.execute(
                "INSERT INTO segment_members SELECT ?, j.person_id, "
                "(SELECT max(i.distinct_id) FROM identities i JOIN person_map m "
                " USING (person_id) WHERE m.canonical_id = j.person_id AND i.is_user), ? "
                "FROM (SELECT unnest(?) AS person_id) j",
                [name, now, list(joined)],
            )
        cur.execute(
            "INSERT INTO segment_sizes VALUES (?, ?, ?, ?, ?)",
            [name, now, len(new), len(joined), len(left)],
        )
        cur.execute("UPDATE segments SET refreshed_at = ? WHERE name = ?", [now, name])
        deliveries = 0
        hooks = cur.execute(
            "SELECT url, secret FROM segment_webhooks WHERE segment = ? ORDER BY url", [name]
        ).fetchall()
        if hooks and (joined or left):
            users = _user_ids(cur, joined + left)
            changes = [("joined", p) for p in joined] + [("left", p) for p in left]
            for url, secret in hooks:
                for start in range(0, len(changes), WEBHOOK_CHUNK):
                    chunk = changes[start : start + WEBHOOK_CHUNK]
                    payload = {
                        "segment": name,
                        "computed_at": now.isoformat(),
                        "size": len(new),
                        "joined": [
                            {"person_id": p, "user_id": users.get(p)}
                            for k, p in chunk
                            if k == "joined"
                        ],
                        "left": [
                            {"person_id": p, "user_id": users.get(p)}
                            for k, p in chunk
                            if k == "left"
                        ],
                    }
                    key = f"segment:{name}:{now.isoformat()}:{start // WEBHOOK_CHUNK}:{url}"
                    enqueue(
                        store, url, secret, SEGMENT_EVENT_TYPE, payload, key[:200], now=now, con=cur
                    )
                    deliveries += 1
    return RefreshResult(name, now, len(new), joined, left, deliveries)


def _user_ids(cur: Any, persons: Sequence[int]) -> dict[int, str | None]:
    rows = cur.execute(
        "SELECT m.canonical_id, max(i.distinct_id) FROM identities i JOIN person_map m "
        "USING (person_id) WHERE i.is_user AND list_contains(?, m.canonical_id) GROUP BY 1",
        [list(persons)],
    ).fetchall()
    return {int(p): u for p, u in rows}


def refresh_all(workspace: Any, now: datetime) -> list[RefreshResult]:
    """Refresh every stored segment as of ``now`` (what ``serve`` runs on its schedule).

    ``workspace`` is a :class:`~funnelscope.workspace.Workspace` (or anything with ``.store``).
    """
    store: Store = workspace.store
    names = [str(r[0]) for r in store.query("SELECT name FROM segments ORDER BY name")]
    return [refresh_segment(store, n, now=now) for n in names]


def segment_sizes(store: Store, name: str) -> list[dict[str, Any]]:
    """The segment's size after each refresh, oldest first."""
    get_segment(store, name)
    rows = store.query(
        "SELECT computed_at, size, joins, leaves FROM segment_sizes WHERE segment = ? "
        "ORDER BY computed_at",
        [name],
    )
    return [
        {"computed_at": t, "size": int(s), "joins": int(j), "leaves": int(lv)}
        for t, s, j, lv in rows
    ]


def members(store: Store, name: str) -> list[dict[str, Any]]:
    """The members at the last refresh: person_id, user_id, joined_at."""
    get_segment(store, name)
    rows = store.query(
        "SELECT person_id, user_id, joined_at FROM segment_members WHERE segment = ? "
        "ORDER BY person_id",
        [name],
    )
    return [{"person_id": int(p), "user_id": u, "joined_at": j} for p, u, j in rows]


EXPORT_FORMATS: Final = ("csv", "parquet")


def export_segment(
    store: Store, name: str, path: str | Any, *, now: datetime, format: str | None = None
) -> int:
    """Write the segment's members as of ``now`` with their customer-table row; return the count.

    ``name`` is a stored rule segment, or ``rfm:<segment>`` (e.g. ``rfm:Champions``) for an RFM
    segment. The format is ``csv`` or ``parquet`` (default: from the file suffix).
    """
    from pathlib import Path

    from funnelscope.analysis.customers import customer_table
    from funnelscope.analysis.rfm import RFM_SEGMENTS, rfm
    from funnelscope.engines.embedded import EmbeddedEngine

    target = Path(path)
    fmt = (format or target.suffix.lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise InvalidSpecError(
            [Problem("segment.bad_format", "format", "export formats: csv, parquet")]
        )
    table = customer_table(EmbeddedEngine(store), now=now)
    frame = table.frame
    if name.startswith("rfm:"):
        wanted = name.removeprefix("rfm:")
        if wanted not in RFM_SEGMENTS:
            raise InvalidSpecError(
                [Problem("segment.not_found", "name", "RFM segments: " + ", ".join(RFM_SEGMENTS))]
            )
        scores = rfm(table).scores
        ids = scores.loc[scores["segment"] == wanted, "person_id"].tolist()
    else:
        ids = evaluate(store, get_segment(store, name), now=now)
    out = frame[frame["person_id"].isin(list(ids))].reset_index(drop=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        out = out.assign(
            top_categories=out["top_categories"].map(
                lambda v: "|".join(v) if v is not None and len(v) else ""
            )
        )
        out.to_csv(target, index=False)
    else:
        out.to_parquet(target, index=False)
    return len(out)
