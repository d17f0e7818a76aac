"""The known-valid load (the collector's journal): exact deduplication by ``event_id_hashes``.

An event id stored once is never stored again by a known-valid load: within one batch, across
loads, across a restart, against events other writers stored (file imports, Parquet segments),
on a store migrated from the layout before the hash table, and when a stored hash belongs to
another id (a collision is confirmed against the stored event, not trusted).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import funnelscope
from funnelscope.ingest.bulk import MIN_SEGMENT_ROWS
from funnelscope.ingest.pipeline import append_events
from funnelscope.store.store import Store
from tests.conftest import NOW, staging_table


def _row(event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event": "Product Viewed",
        "user_id": "u1",
        "timestamp": "2024-05-01T10:00:00Z",
        **extra,
    }


def _load(store: Store, *ids: str, **extra: Any) -> tuple[int, int]:
    report = append_events(
        store,
        staging_table([_row(i, **extra) for i in ids]),
        source="t",
        received_at=NOW,
        known_valid=True,
    )
    return report.inserted, report.duplicates


def _ids(store: Store) -> list[str]:
    return [str(r[0]) for r in store.query("SELECT event_id FROM events ORDER BY seq")]


def test_a_duplicate_inside_one_batch_keeps_the_first_row(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    report = append_events(
        store,
        staging_table([_row("e1", page_path="/first"), _row("e1", page_path="/second")]),
        source="t",
        received_at=NOW,
        known_valid=True,
    )
    assert (report.inserted, report.duplicates) == (1, 1)
    assert store.query("SELECT event_id, page_path FROM events") == [("e1", "/first")]
    store.close()


def test_the_same_id_in_two_loads_is_stored_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    assert _load(store, "e1", "e2") == (2, 0)
    # a retry one week later in event time: outside the old 7-day window, still a duplicate
    late = (datetime(2024, 5, 1, 10, tzinfo=UTC) + timedelta(days=30)).isoformat()
    assert _load(store, "e2", "e3", timestamp=late) == (1, 1)
    assert _ids(store) == ["e1", "e2", "e3"]
    assert store.query("SELECT count(*) FROM event_id_hashes") == [(3,)]
    store.close()


def test_an_id_stored_before_a_restart_is_not_stored_after_it(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = Store(path)
    assert _load(store, "e1", "e2") == (2, 0)
    store.close()
    store = Store(path)
    assert _load(store, "e2", "e1", "e3") == (1, 2)
    assert _ids(store) == ["e1", "e2", "e3"]
    store.close()


def test_ids_stored_by_other_writers_are_hashed_before_the_lookup(tmp_path: Path) -> None:
    """The file-import path (validated append) does not keep the hash table; the next
    known-valid load hashes what it added (seq >= covered_seq) first."""
    store = Store(tmp_path / "s.duckdb")
    assert _load(store, "e1") == (1, 0)
    report = append_events(
        store, staging_table([_row("f1"), _row("f2")]), source="file", received_at=NOW
    )
    assert report.inserted == 2
    assert _load(store, "f2", "f3", "e1") == (1, 2)
    assert _ids(store) == ["e1", "f1", "f2", "f3"]
    store.close()


def test_ids_of_a_parquet_segment_are_not_stored_again(tmp_path: Path) -> None:
    n = MIN_SEGMENT_ROWS
    table = pa.table(
        {
            "event_id": [f"s{i}" for i in range(n)],
            "timestamp": pa.array(
                [datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "event": ["Product Viewed"] * n,
            "anonymous_id": [f"a{i % 50}" for i in range(n)],
        }
    )
    pq.write_table(table, tmp_path / "events.parquet")
    with funnelscope.open(tmp_path / "seg.duckdb") as ws:
        ws.ingest(tmp_path / "events.parquet", received_at=NOW)
        assert ws.store.query("SELECT count(*) FROM event_segments") == [(1,)]
        assert _load(ws.store, "s0", f"s{n - 1}", "new") == (1, 2)
        assert ws.store.query("SELECT count(*) FROM events WHERE event_id = 's0'") == [(1,)]
        assert ws.store.query("SELECT count(*) FROM events") == [(n + 1,)]


def test_a_store_migrated_from_the_old_layout_hashes_its_events_first(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    store = Store(path)
    assert _load(store, "e1", "e2") == (2, 0)
    # back to the layout before migration 0007: no hash table, events already stored
    with store.write() as con:
        con.execute("DROP TABLE event_id_hashes")
        con.execute("DROP TABLE event_id_hashes_state")
        con.execute("DELETE FROM schema_migrations WHERE name LIKE '0007_loader_%'")
    store.close()
    store = Store(path)  # migrates again: an empty table, covered_seq 0
    assert store.query("SELECT count(*) FROM event_id_hashes") == [(0,)]
    assert _load(store, "e1", "e3") == (1, 1)
    assert _ids(store) == ["e1", "e2", "e3"]
    assert store.query("SELECT count(*) FROM event_id_hashes") == [(3,)]
    store.close()


def test_a_hash_match_of_another_id_is_not_a_duplicate(tmp_path: Path) -> None:
    """A stored hash only names a candidate: the event at its seq must carry the same id.
    (A real 64-bit MD5 collision cannot be written down; the table is given one instead.)"""
    store = Store(tmp_path / "s.duckdb")
    assert _load(store, "e1") == (1, 0)
    with store.write() as con:
        con.execute("INSERT INTO event_id_hashes SELECT md5_number_lower('e2'), seq FROM event_log")
    assert _load(store, "e2", "e1") == (1, 1)
    assert _ids(store) == ["e1", "e2"]
    assert _load(store, "e2") == (0, 1)  # and now it is stored: a duplicate
    store.close()


def test_known_valid_loads_store_the_rows_a_validated_load_stores(tmp_path: Path) -> None:
    """Links (identify, alias, a shared device), channels from several inputs, line items and
    duplicates across and within batches: events, identities and persons are the same."""
    batches = [
        [
            _row("a1", anonymous_id="x1", utm_source="google", utm_medium="cpc"),
            _row("a2", user_id=None, anonymous_id="x2", referrer="https://t.co/x"),
            _row("a2", user_id=None, anonymous_id="x2"),
            _row(
                "a3",
                event="Order Completed",
                revenue="12.5",
                currency="eur",
                items='[{"product_id": "p1", "price": 12.5, "quantity": 2}]',
                page_url="https://shop.example.com/p?utm_source=news",
                referrer="https://shop.example.com/",
            ),
        ],
        [
            _row("b1", user_id="u2", anonymous_id="x2", event="identify"),
            _row("b2", user_id="u3", previous_id="x1", event="alias"),
            _row("a3", properties='{"retry": true}'),
            _row("b3", user_id="u2", anonymous_id="x1"),  # x1 already has a user
        ],
    ]
    stored = []
    for known_valid in (False, True):
        store = Store(tmp_path / f"{known_valid}.duckdb")
        for batch in batches:
            append_events(
                store,
                staging_table(batch),
                source="t",
                received_at=NOW,
                known_valid=known_valid,
            )
        stored.append(
            (
                store.query("SELECT * FROM events ORDER BY seq"),
                store.query("SELECT * FROM identities ORDER BY distinct_id"),
                store.query("SELECT * FROM person_map ORDER BY person_id"),
            )
        )
        store.close()
    assert stored[0] == stored[1]
    events = stored[1][0]
    assert [r[0] for r in events] == ["a1", "a2", "a3", "b1", "b2", "b3"]
