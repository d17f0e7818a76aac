"""The ingest pipeline: validation with stable reason codes, quarantine, dedup, idempotency."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import funnelscope
from funnelscope.ingest.pipeline import Rejection, append_events
from funnelscope.workspace import Workspace
from tests.conftest import NOW, T0, staging_table

GOOD: dict[str, Any] = {
    "event_id": "e-good",
    "timestamp": "2024-05-06T09:00:00Z",
    "event": "Order Completed",
    "user_id": "u1",
    "revenue": "30.00",
    "currency": "EUR",
}


def _row(**changes: Any) -> dict[str, Any]:
    row = {**GOOD, "event_id": "e-bad", **changes}
    return {k: v for k, v in row.items() if v is not None}


BAD_ROWS = [
    pytest.param(_row(event_id=None), "event.missing_id", id="missing-event-id"),
    pytest.param(_row(event_id="   "), "event.missing_id", id="blank-event-id"),
    pytest.param(_row(event_id="x" * 201), "event.bad_id", id="event-id-too-long"),
    pytest.param(_row(event=None), "event.missing_name", id="missing-event-name"),
    pytest.param(_row(user_id=None), "event.missing_identity", id="no-user-or-anonymous-id"),
    pytest.param(_row(timestamp=None), "event.bad_timestamp", id="missing-timestamp"),
    pytest.param(_row(timestamp="yesterday"), "event.bad_timestamp", id="timestamp-not-a-time"),
    pytest.param(
        _row(timestamp="2024-13-45T99:00:00Z"),
        "event.bad_timestamp",
        id="timestamp-impossible-date",
    ),
    pytest.param(
        _row(timestamp="1999-12-31T23:59:59Z"),
        "event.timestamp_out_of_range",
        id="timestamp-before-2000",
    ),
    pytest.param(
        _row(timestamp=(NOW + timedelta(days=2)).isoformat()),
        "event.timestamp_out_of_range",
        id="timestamp-two-days-ahead",
    ),
    pytest.param(
        _row(properties="{not json"), "event.invalid_properties", id="properties-invalid-json"
    ),
    pytest.param(
        _row(properties="[1, 2]"), "event.invalid_properties", id="properties-not-an-object"
    ),
    pytest.param(
        _row(properties=json.dumps({"blob": "x" * 40_000})),
        "event.properties_too_large",
        id="properties-over-32kib",
    ),
    pytest.param(_row(revenue="thirty"), "event.bad_revenue", id="revenue-wrong-type"),
    pytest.param(_row(currency="EURO"), "event.unknown_currency", id="currency-not-iso"),
    pytest.param(_row(currency="XYZ"), "event.unknown_currency", id="currency-unknown-code"),
    pytest.param(_row(items='{"product_id": "p1"}'), "event.bad_items", id="items-not-a-list"),
    pytest.param(
        _row(items='[{"product_id": "p1", "price": "cheap"}]'),
        "event.bad_items",
        id="items-price-not-a-number",
    ),
    pytest.param(
        _row(items='[{"product_id": "p1", "quantity": "two"}]'),
        "event.bad_items",
        id="items-quantity-not-an-integer",
    ),
    pytest.param(_row(items="[{oops"), "event.bad_items", id="items-invalid-json"),
]


@pytest.mark.parametrize(("bad", "code"), BAD_ROWS)
def test_bad_row_is_quarantined_with_its_code(
    workspace: Workspace, bad: dict[str, Any], code: str
) -> None:
    rows = [GOOD, bad, {**GOOD, "event_id": "e-good-2"}]
    report = append_events(workspace.store, staging_table(rows), source="t", received_at=NOW)

    assert (report.rows, report.accepted, report.rejected) == (3, 2, 1)
    assert report.accepted + report.rejected == report.rows
    assert dict(report.reasons) == {code: 1}
    assert [(r.row, r.code) for r in report.rejections] == [(1, code)]
    stored = workspace.store.query(
        "SELECT source, row_number, reason_code, payload FROM quarantine"
    )
    assert len(stored) == 1
    source, row_number, reason_code, payload = stored[0]
    assert (source, row_number, reason_code) == ("t", 1, code)
    # the payload is the row as staged, so it can be fixed and replayed
    kept = json.loads(bytes(payload))
    assert {k: kept[k] for k in bad} == bad
    assert workspace.store.query("SELECT event_id FROM events ORDER BY 1") == [
        ("e-good",),
        ("e-good-2",),
    ]


def test_first_failing_check_names_the_row(workspace: Workspace) -> None:
    # missing id and bad timestamp at once: the id check comes first, one code per row
    rows = [{"timestamp": "nope", "event": "x", "user_id": "u"}]
    report = append_events(workspace.store, staging_table(rows), source="t", received_at=NOW)
    assert dict(report.reasons) == {"event.missing_id": 1}


def test_epoch_seconds_and_milliseconds_are_times(workspace: Workspace) -> None:
    at = int(T0.timestamp())
    rows = [
        {**GOOD, "event_id": "s", "timestamp": str(at)},
        {**GOOD, "event_id": "ms", "timestamp": str(at * 1000)},
    ]
    report = append_events(workspace.store, staging_table(rows), source="t", received_at=NOW)
    assert report.rejected == 0
    assert workspace.store.query('SELECT DISTINCT "timestamp" FROM events') == [(T0,)]


def test_parser_rejections_are_counted_and_stored(workspace: Workspace) -> None:
    pre = [Rejection(5, "row.invalid_json", "the line is not valid JSON", b"{oops")]
    staging = staging_table([GOOD]).append_column("_row", pa.array([4], pa.int64()))
    report = append_events(workspace.store, staging, source="t", received_at=NOW, pre_rejected=pre)
    assert (report.rows, report.accepted, report.rejected, report.inserted) == (2, 1, 1, 1)
    assert workspace.store.query("SELECT row_number, reason_code, payload FROM quarantine") == [
        (5, "row.invalid_json", b"{oops")
    ]


def test_duplicates_within_a_batch_keep_the_first_row(workspace: Workspace) -> None:
    rows = [
        {**GOOD, "event_id": "a", "event": "Product Viewed"},
        {**GOOD, "event_id": "a", "event": "Order Completed"},
        {**GOOD, "event_id": "b"},
    ]
    report = append_events(workspace.store, staging_table(rows), source="t", received_at=NOW)
    assert (report.accepted, report.inserted, report.duplicates) == (3, 2, 1)
    assert workspace.store.query("SELECT event_id, event FROM events ORDER BY 1") == [
        ("a", "product_viewed"),
        ("b", "order_completed"),
    ]


def test_duplicates_across_batches_are_not_stored_twice(workspace: Workspace) -> None:
    first = [{**GOOD, "event_id": f"e{i}"} for i in range(3)]
    second = [{**GOOD, "event_id": f"e{i}"} for i in range(2, 5)]
    append_events(workspace.store, staging_table(first), source="t", received_at=NOW)
    report = append_events(workspace.store, staging_table(second), source="t", received_at=NOW)
    assert (report.inserted, report.duplicates) == (2, 1)
    assert workspace.store.query("SELECT count(*) FROM events") == [(5,)]


def test_reimporting_the_same_batch_adds_nothing(workspace: Workspace) -> None:
    rows = [{**GOOD, "event_id": f"e{i}", "user_id": f"u{i % 3}"} for i in range(20)]
    append_events(workspace.store, staging_table(rows), source="t", received_at=NOW)
    before = workspace.store.query(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM identities), "
        "(SELECT count(*) FROM person_map)"
    )
    again = append_events(workspace.store, staging_table(rows), source="t", received_at=NOW)
    assert (again.accepted, again.inserted, again.duplicates) == (20, 0, 20)
    assert (
        workspace.store.query(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM identities), "
            "(SELECT count(*) FROM person_map)"
        )
        == before
        == [(20, 3, 3)]
    )


def test_event_names_are_normalised_and_the_raw_name_kept(workspace: Workspace) -> None:
    rows = [
        {**GOOD, "event_id": "1", "event": "purchase"},
        {**GOOD, "event_id": "2", "event": "Order Completed"},
        {**GOOD, "event_id": "3", "event": "Wishlist Shared"},
    ]
    append_events(workspace.store, staging_table(rows), source="t", received_at=NOW)
    assert workspace.store.query("SELECT event, raw_event FROM events ORDER BY event_id") == [
        ("order_completed", "purchase"),
        ("order_completed", "Order Completed"),
        ("wishlist_shared", "Wishlist Shared"),
    ]


def test_revenue_without_currency_takes_the_store_currency(workspace: Workspace) -> None:
    rows = [{**GOOD, "currency": None}]
    append_events(workspace.store, staging_table(rows), source="t", received_at=NOW)
    assert workspace.store.query("SELECT CAST(revenue AS VARCHAR), currency FROM events") == [
        ("30.0000", "USD")
    ]


def test_links_between_known_ids_still_stitch_across_batches(workspace: Workspace) -> None:
    """Batches whose ids are all known take the stitching shortcut only when no link would
    merge: a later link from a known anonymous-only person to a known user merges them, and a
    shared device (an anonymous id already in a user's person) does not merge two users."""
    store = workspace.store

    def send(n: int, **ids: str) -> None:
        row = {"event_id": f"e{n}", "timestamp": "2024-05-06T09:00:00Z", "event": "page", **ids}
        report = append_events(store, staging_table([row]), source="t", received_at=NOW)
        assert report.inserted == 1

    def canonical(distinct_id: str) -> int:
        return int(
            store.query(
                "SELECT m.canonical_id FROM identities i JOIN person_map m USING (person_id) "
                "WHERE i.distinct_id = ?",
                [distinct_id],
            )[0][0]
        )

    send(1, anonymous_id="a1")
    send(2, user_id="u1")
    send(3, user_id="u2")
    assert len({canonical("a1"), canonical("u1"), canonical("u2")}) == 3
    send(4, user_id="u1", anonymous_id="a1")  # all ids known; the link merges a1 into u1
    assert canonical("a1") == canonical("u1")
    send(5, user_id="u2", anonymous_id="a1")  # shared device: u1 and u2 stay apart
    assert canonical("a1") == canonical("u1") != canonical("u2")
    send(6, user_id="u1", anonymous_id="a1")  # nothing to do: the shortcut
    assert canonical("a1") == canonical("u1")


def test_known_valid_rows_are_stored_exactly_as_validated_ones(tmp_path: Path) -> None:
    """The collector's loader skips the validation of rows its ack already validated: the
    stored events, persons and channels must be the same as with the validation."""
    rows = staging_table(
        [
            {
                "event_id": "a1",
                "event": "Order Completed",
                "user_id": "u1",
                "revenue": "12.5",
                "currency": "eur",
                "items": '[{"product_id": "p1", "price": 12.5, "quantity": 1}]',
                "utm_source": "google",
                "utm_medium": "cpc",
                "timestamp": "2024-05-01T10:00:00Z",
            },
            {
                "event_id": "a2",
                "event": "Product Viewed",
                "anonymous_id": "x1",
                "properties": '{"k": 1}',
                "referrer": "https://t.co/x",
                "timestamp": "2024-05-01T09:00:00+00:00",
            },
            {
                "event_id": "a2",
                "event": "Product Viewed",
                "anonymous_id": "x1",
                "timestamp": "2024-05-01T09:00:00Z",
            },  # a retry: deduplicated either way
        ]
    )
    stored = []
    for known_valid in (False, True):
        with funnelscope.open(tmp_path / f"{known_valid}.duckdb") as ws:
            report = append_events(
                ws.store, rows, source="t", received_at=NOW, known_valid=known_valid
            )
            assert (report.accepted, report.inserted, report.rejected) == (3, 2, 0)
            stored.append(
                ws.store.query(
                    "SELECT * EXCLUDE (person_id), person_id IS NOT NULL FROM events ORDER BY seq"
                )
            )
    assert stored[0] == stored[1]
    assert [r[0] for r in stored[0]] == ["a1", "a2"]
