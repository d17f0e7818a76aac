"""The ack stage: many requests, one journal append; each request gets its own rejections back,
and the ack's verdict is the store's verdict."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from funnelscope.api.journal import JournalSettings
from funnelscope.api.writer import BatchOutcome, GroupWriter, QueueFullError, validate_staging
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.pipeline import REPORTED_REJECTIONS, Rejection, append_events
from funnelscope.store.store import Store

TS = "2024-05-01T10:00:00+00:00"


def row(event_id: str | None, **extra: str | None) -> dict[str, str | None]:
    values: dict[str, str | None] = dict.fromkeys(STAGING_COLUMNS)
    values.update(
        event_id=event_id, event="Product Viewed", user_id="u1", timestamp=TS, source="test:web"
    )
    values.update(extra)
    return values


def run_writer(
    writer: GroupWriter, requests: list[tuple[list[dict[str, str | None]], list[Rejection]]]
) -> list[BatchOutcome]:
    """Start ``writer``, send the requests concurrently, stop it (which loads everything)."""

    async def scenario() -> list[BatchOutcome]:
        writer.start()
        return list(
            await asyncio.gather(
                *(
                    writer.write(
                        rows,
                        list(range(len(rows))),
                        pre,
                        len(rows) + len(pre),
                        timeout=60,
                    )
                    for rows, pre in requests
                )
            )
        )

    try:
        return asyncio.run(scenario())
    finally:
        writer.stop()


def test_concurrent_requests_share_groups_and_get_their_own_rejections(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    groups: list[int] = []
    loads: list[int] = []
    writer = GroupWriter(
        store,
        max_queue_events=10_000,
        max_group_events=10_000,
        on_ack=lambda events, seconds: groups.append(events),
        on_load=lambda events, seconds: loads.append(events),
    )
    requests = []
    for r in range(20):
        rows = [row(f"r{r}-{i}") for i in range(5)]
        rows[2]["timestamp"] = "not a time"  # index 2 of the 6 is rejected by the validation
        # index 5 could not even be mapped: the route rejected it before the writer
        pre = [Rejection(5, "event.not_an_object", "each message must be a JSON object", b"7")]
        requests.append((rows, pre))
    outcomes = run_writer(writer, requests)
    assert all(o.events == 6 and o.accepted == 4 for o in outcomes)
    assert all(
        [(r.row, r.code) for r in o.rejected]
        == [(2, "event.bad_timestamp"), (5, "event.not_an_object")]
        for o in outcomes
    )
    assert sum(groups) == 120 and sum(loads) == 120
    assert len(groups) < 20  # requests waiting together went into one group
    assert store.query("SELECT count(*) FROM events")[0][0] == 80
    assert store.query("SELECT reason_code, count(*) FROM quarantine GROUP BY 1 ORDER BY 1") == [
        ("event.bad_timestamp", 20),
        ("event.not_an_object", 20),
    ]
    assert store.query("SELECT DISTINCT payload FROM quarantine WHERE reason_code LIKE '%object'")
    assert list((tmp_path / "s.duckdb.journal").iterdir()) == []  # loaded, then deleted


def test_more_rejections_than_the_report_keeps(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    writer = GroupWriter(store, max_queue_events=10_000, max_group_events=10_000)
    n = REPORTED_REJECTIONS + 200
    rows = [row(f"e{i}", timestamp="bad") for i in range(n)] + [row("ok")]
    (outcome,) = run_writer(writer, [(rows, [])])
    assert outcome.accepted == 1
    assert [r.row for r in outcome.rejected] == list(range(n))  # all of them
    assert store.query("SELECT count(*) FROM quarantine")[0][0] == n


class _StoreWithAHeldCurrency(Store):
    """A store whose currency read waits until the test lets it go (as a read can wait behind
    a load's commit and checkpoint)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.held = False
        self.release = threading.Event()

    @property
    def currency(self) -> str:
        if self.held:
            self.release.wait(30)
        return super().currency


def test_acknowledgements_never_wait_for_a_read_of_the_store(tmp_path: Path) -> None:
    store = _StoreWithAHeldCurrency(tmp_path / "s.duckdb")
    writer = GroupWriter(
        store, max_queue_events=1000, max_group_events=1000, currency_refresh_seconds=0.01
    )

    async def scenario() -> BatchOutcome:
        writer.start()  # reads the currency once, before taking requests
        store.held = True  # from now on every currency read hangs until released
        store.set_meta("store_currency", "EUR")
        await asyncio.sleep(0.1)  # the refresher is inside a held read by now
        outcome = await writer.write([row("e1")], [0], [], 1, timeout=10)
        assert writer.currency == "USD"  # the ack ran on the last value it had
        store.release.set()
        return outcome

    try:
        assert asyncio.run(scenario()).accepted == 1
        deadline = time.monotonic() + 10
        while writer.currency != "EUR" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.currency == "EUR"  # re-read once the store answered
    finally:
        store.release.set()
        writer.stop()


def test_full_queue_refuses_before_taking_memory(tmp_path: Path) -> None:
    writer = GroupWriter(Store(tmp_path / "s.duckdb"), max_queue_events=5, max_group_events=5)
    # not started: nothing drains the queue
    writer.submit([row("a")], [0], [], 4, lambda outcome: None)
    with pytest.raises(QueueFullError, match="waiting to be journaled"):
        writer.submit([row("b")], [0], [], 2, lambda outcome: None)
    assert writer.queued_events == 4


def test_journal_backlog_bound_refuses(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    writer = GroupWriter(
        store,
        max_queue_events=100,
        max_group_events=100,
        journal_settings=JournalSettings(max_backlog_events=5),
    )
    with store._lock:  # the loader cannot commit: the backlog stays
        outcomes = run_writer_no_stop(writer, [[row("a"), row("b"), row("c")]])
        assert outcomes[0].accepted == 3 and writer.backlog_events == 3
        assert writer.has_room(2) and not writer.has_room(3)
        with pytest.raises(QueueFullError, match="waiting to be loaded"):
            writer.submit([row("d")] * 3, [0, 1, 2], [], 3, lambda outcome: None)
    writer.stop()
    assert store.query("SELECT count(*) FROM events")[0][0] == 3


def run_writer_no_stop(
    writer: GroupWriter, requests: list[list[dict[str, str | None]]]
) -> list[BatchOutcome]:
    async def scenario() -> list[BatchOutcome]:
        writer.start()
        return [
            await writer.write(rows, list(range(len(rows))), [], len(rows), timeout=30)
            for rows in requests
        ]

    return asyncio.run(scenario())


# -- the ack's verdict is the store's verdict -----------------------------------------------------

FUTURE = (datetime.now(UTC) + timedelta(days=3)).isoformat()
BAD_ROWS = [
    pytest.param(row(None), id="missing-id"),
    pytest.param(row("x" * 201), id="id-too-long"),
    pytest.param(row("e", event="  "), id="blank-name"),
    pytest.param(row("e", user_id=None), id="no-identity"),
    pytest.param(row("e", timestamp="yesterday"), id="bad-timestamp"),
    pytest.param(row("e", timestamp="1999-12-31T23:59:59Z"), id="too-old"),
    pytest.param(row("e", timestamp=FUTURE), id="three-days-ahead"),
    pytest.param(row("e", properties="[1, 2]"), id="properties-not-object"),
    pytest.param(row("e", properties="{bad json"), id="properties-bad-json"),
    pytest.param(row("e", properties='{"a": "' + "x" * 40_000 + '"}'), id="properties-large"),
    pytest.param(row("e", revenue="ten"), id="bad-revenue"),
    pytest.param(row("e", revenue="1", currency="EURO"), id="bad-currency"),
    pytest.param(row("e", items='[{"price": "cheap"}]'), id="bad-items"),
    pytest.param(row("e", items='{"price": 1}'), id="items-not-list"),
]


@pytest.mark.parametrize("bad", BAD_ROWS)
def test_ack_verdict_equals_the_store_verdict(bad: dict[str, str | None]) -> None:
    good = row("good", revenue="12.5", currency="eur", items='[{"price": 2, "quantity": 1}]')
    rows = [good, bad, good | {"event_id": "good2"}]
    columns = {c: [r[c] for r in rows] for c in STAGING_COLUMNS}
    used = [c for c in STAGING_COLUMNS if any(v is not None for v in columns[c])]
    staging = pa.table(
        {**{c: pa.array(columns[c], pa.string()) for c in used}, "_row": pa.array([0, 1, 2])}
    )
    received_at = datetime.now(UTC)
    store = Store(":memory:")
    acked = validate_staging(
        duckdb.connect(), staging, received_at=received_at, currency=store.currency
    )
    report = append_events(store, staging, source="t", received_at=received_at)
    stored = store.query("SELECT row_number, reason_code, message, payload FROM quarantine")
    assert len(acked) == 1 and report.rejected == 1
    assert [(v.row, v.code, v.message, v.payload) for v in acked] == [
        (int(r[0]), r[1], r[2], bytes(r[3])) for r in stored
    ]


def test_ack_verdicts_on_a_table_of_bad_rows_match_the_store_after_loading(
    tmp_path: Path,
) -> None:
    """The whole path: ack stage -> journal -> loader, against append_events on its own."""
    bad: list[dict[str, str | None]] = [p.values[0] for p in BAD_ROWS]  # type: ignore[misc]
    # unique ids (a shared id would only hide a wrong verdict behind deduplication)
    rows = [row(f"ok{i}") for i in range(3)] + [
        r | {"event_id": f"bad{i}"} if r["event_id"] == "e" else r for i, r in enumerate(bad)
    ]
    store = Store(tmp_path / "s.duckdb")
    (outcome,) = run_writer(
        GroupWriter(store, max_queue_events=1000, max_group_events=1000), [(rows, [])]
    )
    direct = Store(":memory:")
    append_events(
        direct,
        pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in STAGING_COLUMNS}),
        source="t",
        received_at=datetime.now(UTC),
    )
    expected = direct.query("SELECT row_number, reason_code FROM quarantine ORDER BY 1")
    assert [(r.row, r.code) for r in outcome.rejected] == expected
    assert store.query("SELECT row_number, reason_code FROM quarantine ORDER BY 1") == expected
    assert store.query("SELECT count(*) FROM events") == [(3,)]


def test_rows_proven_in_python_leave_the_rejections_exactly_as_the_sql_gives_them(
    tmp_path: Path,
) -> None:
    """Proven rows skip the SQL; the others are validated with the whole group's columns, so
    codes, messages and payloads are those of validating every row in SQL."""
    bad: list[dict[str, str | None]] = [p.values[0] for p in BAD_ROWS]  # type: ignore[misc]
    rows = [
        row(f"ok{i}", revenue="12.5", currency="eur", utm_source="google") for i in range(4)
    ] + [r | {"event_id": f"bad{i}"} if r["event_id"] == "e" else r for i, r in enumerate(bad)]
    store = Store(tmp_path / "s.duckdb")
    (outcome,) = run_writer(
        GroupWriter(store, max_queue_events=1000, max_group_events=1000), [(rows, [])]
    )
    used = [c for c in STAGING_COLUMNS if any(r[c] is not None for r in rows)]
    staging = pa.table(
        {
            **{c: pa.array([r[c] for r in rows], pa.string()) for c in used},
            "_row": pa.array(range(len(rows)), pa.int64()),
        }
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    expected = validate_staging(
        con, staging, received_at=datetime.now(UTC), currency=store.currency
    )
    assert len(expected) == len(bad)
    assert [(r.row, r.code, r.message) for r in outcome.rejected] == [
        (v.row, v.code, v.message) for v in expected
    ]
    stored = store.query(
        "SELECT row_number, reason_code, message, payload FROM quarantine ORDER BY 1"
    )
    assert [(int(r[0]), r[1], r[2], bytes(r[3])) for r in stored] == [
        (v.row, v.code, v.message, v.payload) for v in expected
    ]
    assert store.query("SELECT count(*) FROM events") == [(4,)]


def test_tuning_the_gc_for_serving_freezes_the_heap_and_the_undo_restores_it() -> None:
    import gc
    import weakref

    from funnelscope.api.server import tune_gc_for_serving

    before = gc.get_threshold()
    undo = tune_gc_for_serving(12_345)
    try:
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0  # the startup heap is out of every collection
        # a cycle made while serving is still collected
        holder = type("Holder", (), {})()
        holder.self = holder  # type: ignore[attr-defined]
        watched = weakref.ref(holder)
        del holder
        assert watched() is not None  # reference counting alone cannot free a cycle
        gc.collect()
        assert watched() is None
    finally:
        undo()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
