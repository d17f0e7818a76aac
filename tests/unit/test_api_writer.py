"""The group writer: many requests, one commit; each request gets its own rejections back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from funnelscope.api.writer import BatchOutcome, GroupWriter, QueueFullError
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.pipeline import REPORTED_REJECTIONS, Rejection
from funnelscope.store.store import Store

TS = "2024-05-01T10:00:00+00:00"


def row(event_id: str, **extra: str | None) -> dict[str, str | None]:
    values: dict[str, str | None] = dict.fromkeys(STAGING_COLUMNS)
    values.update(
        event_id=event_id, event="Product Viewed", user_id="u1", timestamp=TS, source="test:web"
    )
    values.update(extra)
    return values


def test_concurrent_requests_share_commits_and_get_their_own_rejections(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    commits: list[int] = []
    writer = GroupWriter(
        store,
        max_queue_events=10_000,
        max_group_events=10_000,
        on_commit=lambda events, seconds: commits.append(events),
    )

    async def scenario() -> list[BatchOutcome]:
        writer.start()
        requests = []
        for r in range(20):
            rows = [row(f"r{r}-{i}") for i in range(5)]
            rows[2]["timestamp"] = "not a time"  # index 2 of the 6 is rejected by the pipeline
            # index 5 could not even be mapped: the route rejected it before the writer
            pre = [Rejection(5, "event.not_an_object", "each message must be a JSON object")]
            requests.append(writer.write(rows, [0, 1, 2, 3, 4], pre, 6, timeout=30))
        return list(await asyncio.gather(*requests))

    outcomes = asyncio.run(scenario())
    writer.stop()
    assert all(o.events == 6 and o.accepted == 4 for o in outcomes)
    assert all(
        [(r.row, r.code) for r in o.rejected]
        == [(2, "event.bad_timestamp"), (5, "event.not_an_object")]
        for o in outcomes
    )
    assert sum(commits) == 120
    assert len(commits) < 20  # requests waiting together went into one commit
    assert store.query("SELECT count(*) FROM events")[0][0] == 80
    assert store.query("SELECT count(*) FROM quarantine")[0][0] == 40


def test_more_rejections_than_the_report_keeps(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    writer = GroupWriter(store, max_queue_events=10_000, max_group_events=10_000)
    n = REPORTED_REJECTIONS + 200
    rows = [row(f"e{i}", timestamp="bad") for i in range(n)] + [row("ok")]

    async def scenario() -> BatchOutcome:
        writer.start()
        return await writer.write(rows, list(range(n + 1)), [], n + 1, timeout=60)

    outcome = asyncio.run(scenario())
    writer.stop()
    assert outcome.accepted == 1
    assert len(outcome.rejected) == n  # all of them, read back from the quarantine
    assert [r.row for r in outcome.rejected] == list(range(n))


def test_full_queue_refuses_before_taking_memory(tmp_path: Path) -> None:
    writer = GroupWriter(Store(tmp_path / "s.duckdb"), max_queue_events=5, max_group_events=5)
    # not started: nothing drains the queue
    writer.submit([row("a")], [0], [], 4, lambda outcome: None)
    with pytest.raises(QueueFullError):
        writer.submit([row("b")], [0], [], 2, lambda outcome: None)
    assert writer.queued_events == 4
