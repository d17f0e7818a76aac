"""The collector's journal: segments on disk, torn tails, replay after a crash, the loader."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from funnelscope.api.journal import (
    JOURNAL_SCHEMA,
    Journal,
    JournalLoader,
    JournalSettings,
    load_journal_table,
    read_segment,
)
from funnelscope.api.writer import BatchOutcome, GroupWriter
from funnelscope.errors import StoreError
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.store.store import Store

TS = "2024-05-01T10:00:00+00:00"
#: A loader that never loads on its own: only a read, a stop or a replay makes it load.
IDLE = JournalSettings(load_interval_seconds=3600, load_at_events=10**9)


def row(event_id: str, **extra: str | None) -> dict[str, str | None]:
    values: dict[str, str | None] = dict.fromkeys(STAGING_COLUMNS)
    values.update(event_id=event_id, event="Order Completed", user_id="u1", timestamp=TS)
    values.update(extra)
    return values


def batch(*ids: str, received_at: datetime | None = None) -> pa.RecordBatch:
    at = received_at or datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC)
    return pa.RecordBatch.from_pylist(
        [{**row(i), "_index": n, "_received_at": at} for n, i in enumerate(ids)],
        schema=JOURNAL_SCHEMA,
    )


def send(writer: GroupWriter, *requests: list[str]) -> list[BatchOutcome]:
    async def scenario() -> list[BatchOutcome]:
        return [
            await writer.write(
                [row(i) for i in ids], list(range(len(ids))), [], len(ids), timeout=30
            )
            for ids in requests
        ]

    return asyncio.run(scenario())


def event_ids(store: Store) -> list[str]:
    return [r[0] for r in store.query("SELECT event_id FROM events ORDER BY event_id")]


def test_segments_rotate_and_a_torn_tail_is_ignored(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.claim()
    journal.append(batch("a", "b"))
    journal.append(batch("c"))
    (first,) = journal.rotate()
    journal.append(batch("d"))
    closed = journal.rotate()
    assert [s.events for s in closed] == [3, 1] and journal.backlog_events == 4
    assert [p.name for p in sorted((tmp_path / "j").iterdir())] == [
        "000000000001.arrows",
        "000000000002.arrows",
    ]
    # a crash in the middle of appending a third batch: only part of it reached the disk
    assert first.path is not None
    with first.path.open("ab") as f:
        f.write(batch("e").serialize().to_pybytes()[:150])
    assert read_segment(first)["event_id"].to_pylist() == ["a", "b", "c"]
    journal.remove([first])
    assert not first.path.exists() and journal.backlog_events == 1
    journal.close()
    journal.release()


def test_one_writer_per_journal_folder(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    first = GroupWriter(store, max_queue_events=10, max_group_events=10)
    second = GroupWriter(store, max_queue_events=10, max_group_events=10)
    first.start()
    with pytest.raises(StoreError, match="in use by another app"):
        second.start()
    first.stop()
    second.start()  # the folder is free again
    assert send(second, ["a"])[0].accepted == 1
    second.stop()


def test_replay_after_a_crash_loads_every_acknowledged_event_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    folder = tmp_path / "s.duckdb.journal"
    # what the ack stage of a server killed with -9 left: acknowledged groups, never loaded
    crashed = Journal(folder)
    crashed.claim()
    crashed.append(batch("a", "b"))
    crashed.append(batch("c"))
    crashed.release()  # the process died: its claim on the folder went with it
    assert len(list(folder.iterdir())) == 1
    # ... and a segment that was loaded, but the crash came before it was deleted
    loaded_not_deleted = folder / "000000000099.arrows"
    loaded_not_deleted.write_bytes(
        JOURNAL_SCHEMA.serialize().to_pybytes() + batch("a", "z").serialize().to_pybytes()
    )
    load_journal_table(
        store, pa.Table.from_batches([batch("z")]), now=datetime(2024, 5, 1, 11, tzinfo=UTC)
    )

    restarted = GroupWriter(store, max_queue_events=100, max_group_events=100)
    restarted.start()
    assert restarted.loader.wait_replayed(30)
    assert event_ids(store) == ["a", "b", "c", "z"]
    assert list(folder.iterdir()) == []  # every leftover segment loaded and deleted
    assert send(restarted, ["d"])[0].accepted == 1
    restarted.stop()
    assert event_ids(store) == ["a", "b", "c", "d", "z"]


def test_a_read_waits_for_acknowledged_events_and_keeps_their_received_at(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.duckdb")
    writer = GroupWriter(store, max_queue_events=100, max_group_events=100, journal_settings=IDLE)
    writer.start()
    before = datetime.now(UTC)
    send(writer, ["a", "b"])
    acked = datetime.now(UTC)
    assert writer.backlog_events == 2  # the idle loader has not loaded them...
    rows = store.query("SELECT event_id, received_at FROM events ORDER BY 1")
    assert [r[0] for r in rows] == ["a", "b"]  # ...but the read made it load first
    assert writer.backlog_events == 0
    # received_at is when the ack stage took the events, not when they were loaded
    assert all(before <= r[1] <= acked for r in rows)
    writer.stop()


def test_a_memory_store_journals_in_memory(tmp_path: Path) -> None:
    store = Store(":memory:")
    writer = GroupWriter(store, max_queue_events=100, max_group_events=100, journal_settings=IDLE)
    writer.start()
    cwd = os.listdir(tmp_path)
    send(writer, ["a"], ["b", "c"])
    assert writer.journal.folder is None and writer.backlog_events == 3
    writer.stop()
    assert event_ids(store) == ["a", "b", "c"]
    assert os.listdir(tmp_path) == cwd


def test_shutdown_loads_everything_and_leaves_no_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    writer = GroupWriter(store, max_queue_events=100, max_group_events=100, journal_settings=IDLE)
    writer.start()
    send(writer, ["a"], ["b"], ["a"])  # a retry of "a": deduplicated at load
    writer.stop()
    store.read_barrier = None
    assert event_ids(store) == ["a", "b"]
    assert list((tmp_path / "s.duckdb.journal").iterdir()) == []


def test_not_ready_and_refusing_while_the_journal_is_replayed(tmp_path: Path) -> None:
    import httpx

    import funnelscope
    from funnelscope.api import ApiSettings, create_app
    from funnelscope.api.server import BackgroundServer

    ws = funnelscope.open(tmp_path / "s.duckdb")
    crashed = Journal(tmp_path / "s.duckdb.journal")
    crashed.claim()
    crashed.append(batch("left", "over"))  # what a crash left
    crashed.release()
    app = create_app(ws, ApiSettings(require_auth=False))
    event = {"type": "track", "event": "x", "userId": "u", "messageId": "new", "timestamp": TS}
    with ws.store._lock:  # the replay cannot commit until this is released
        server = BackgroundServer(app).start()
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["writer"] is False
        refused = httpx.post(server.url + "/v1/batch", json={"batch": [event]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "journal left by a restart" in refused.json()["message"]
        assert "funnelscope_journal_replaying 1.0" in httpx.get(server.url + "/metrics").text
    assert app.state.writer.loader.wait_replayed(30)
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert httpx.post(server.url + "/v1/batch", json={"batch": [event]}).status_code == 200
    assert event_ids(ws.store) == ["left", "new", "over"]
    server.stop()
    ws.close()


def _threshold(store: Store) -> str:
    return str(store.query("SELECT current_setting('checkpoint_threshold')")[0][0])


def _eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _loader(tmp_path: Path, settings: JournalSettings) -> tuple[Store, Journal, JournalLoader]:
    store = Store(tmp_path / "s.duckdb")
    store.checkpoint()
    journal = Journal(tmp_path / "s.duckdb.journal")
    journal.claim()
    loader = JournalLoader(store, journal, settings)
    loader.start()
    return store, journal, loader


def test_a_large_load_skips_the_wal_and_the_setting_is_given_back(tmp_path: Path) -> None:
    # 1,000 events make ~800 KB of WAL: past a 256 KiB threshold DuckDB writes them straight
    # into the database file in the load's commit (4 MiB does that for the ~20,000-event loads
    # of a busy collector)
    store, journal, loader = _loader(tmp_path, replace(IDLE, checkpoint_threshold="256KiB"))
    assert _threshold(store) == "256.0 KiB"
    ids = [f"e{n:04d}" for n in range(1000)]
    journal.append(batch(*ids))
    assert loader.sync(10)
    assert store.wal_bytes == 0 and loader.checkpoints == 0  # no WAL, and no CHECKPOINT needed
    journal.append(batch("late"))  # a small load goes to the WAL, under the threshold
    assert loader.sync(10)
    assert 0 < store.wal_bytes < 256 * 2**10
    loader.stop()  # a clean stop checkpoints and gives DuckDB its 16 MiB back
    assert store.wal_bytes == 0 and _threshold(store) == "16.0 MiB"
    store.close()
    reopened = Store(tmp_path / "s.duckdb")
    assert event_ids(reopened) == sorted([*ids, "late"])


def test_the_loader_checkpoints_once_the_wal_passes_its_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a threshold DuckDB never reaches here: only the loader's own CHECKPOINT bounds the WAL
    # (as when readers keep DuckDB from checkpointing in a commit)
    settings = replace(IDLE, checkpoint_threshold="1GiB", max_wal_bytes=2**40)
    store, journal, loader = _loader(tmp_path, settings)
    journal.append(batch("a", "b"))
    assert loader.sync(10)
    one_load = store.wal_bytes
    assert one_load > 0 and loader.checkpoints == 0
    loader.settings = replace(settings, max_wal_bytes=one_load)  # the next load passes it
    journal.append(batch("c", "d"))
    assert loader.sync(10)
    assert _eventually(lambda: loader.checkpoints >= 1) and loader.checkpoints == 1
    assert store.wal_bytes == 0
    # a reader whose snapshot predates a commit postpones the checkpoint; loading goes on
    reader = store.reader()
    reader.execute("BEGIN TRANSACTION")
    assert reader.execute("SELECT count(*) FROM events").fetchall() == [(4,)]
    for ids in (["e", "f"], ["g", "h"]):
        journal.append(batch(*ids))
        assert loader.sync(10)
    assert _eventually(lambda: "checkpoint postponed" in caplog.text)
    assert store.wal_bytes > one_load and loader.checkpoints == 1
    reader.execute("COMMIT")
    journal.append(batch("i"))
    assert loader.sync(10)
    assert _eventually(lambda: loader.checkpoints >= 2) and store.wal_bytes == 0
    loader.stop()
    assert event_ids(store) == list("abcdefghi") and _threshold(store) == "16.0 MiB"


def test_checkpoints_are_left_to_duckdb_by_default(tmp_path: Path) -> None:
    assert JournalSettings().checkpoint_threshold is None
    store, journal, loader = _loader(tmp_path, IDLE)
    assert _threshold(store) == "16.0 MiB"
    journal.append(batch("a"))
    assert loader.sync(10)
    loader.stop()
    assert loader.checkpoints == 0 and store.wal_bytes > 0 and event_ids(store) == ["a"]
