"""Identity stitching, golden cases written as journeys.

Each case lists the events (``journey key-index`` is the event id) and the persons they must
end up with, worked out by hand from the rules in docs/data-model.md ("Identity"):
an event with both ids, an identify or an alias links an anonymous id to a user; everything the
anonymous id did, before or after, counts for that user; an anonymous id belongs to the first
user it was linked to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from funnelscope.ingest.files import ingest_file
from funnelscope.workspace import Workspace
from tests.conftest import NOW, journey_rows, load_journeys


def _people(ws: Workspace) -> list[set[str]]:
    """Event ids grouped by stitched person, as sets, ordered by their first event id."""
    table = ws.engine.sql("SELECT person_id, event_id FROM events ORDER BY event_id")
    groups: dict[int, set[str]] = {}
    for person, event_id in zip(
        table.column("person_id").to_pylist(), table.column("event_id").to_pylist(), strict=True
    ):
        groups.setdefault(person, set()).add(event_id)
    return sorted(groups.values(), key=min)


A = {"anonymous_id": "anon-1"}
U = {"user_id": "user-1"}
BOTH = {"anonymous_id": "anon-1", "user_id": "user-1"}

CASES = [
    pytest.param(
        {
            "visit": [
                (0, "Page Viewed", A),
                (3, "Product Viewed", A),
                (6, "Product Added", A),
                (10, "Signed Up", BOTH),
                (15, "Order Completed", U),
            ]
        },
        [{"visit-0", "visit-1", "visit-2", "visit-3", "visit-4"}],
        id="browse-anonymously-sign-up-buy-is-one-person",
    ),
    pytest.param(
        {
            "visit": [
                (0, "Page Viewed", A),
                (5, "identify", BOTH),
                (8, "Order Completed", U),
                (60, "Page Viewed", A),
            ]
        },
        [{"visit-0", "visit-1", "visit-2", "visit-3"}],
        id="identify-links-also-later-anonymous-events",
    ),
    pytest.param(
        {
            "old": [
                (0, "Page Viewed", {"anonymous_id": "old-id"}),
                (1, "Product Viewed", {"anonymous_id": "old-id"}),
            ],
            "new": [
                (5, "alias", {"user_id": "user-2", "previous_id": "old-id"}),
                (9, "Order Completed", {"user_id": "user-2"}),
            ],
        },
        [{"new-0", "new-1", "old-0", "old-1"}],
        id="alias-previous-id-to-user-id",
    ),
    pytest.param(
        {
            "dev": [(0, "Page Viewed", {"anonymous_id": "tablet"})],
            "mum": [
                (5, "logged_in", {"anonymous_id": "tablet", "user_id": "mum"}),
                (6, "Order Completed", {"user_id": "mum"}),
            ],
            "son": [
                (30, "logged_in", {"anonymous_id": "tablet", "user_id": "son"}),
                (31, "Order Completed", {"user_id": "son"}),
            ],
        },
        # the device is mum's (first link); son's own events stay his, the two never merge
        [{"dev-0", "mum-0", "mum-1"}, {"son-0", "son-1"}],
        id="shared-device-does-not-merge-two-users",
    ),
    pytest.param(
        {
            "a": [(0, "Page Viewed", {"anonymous_id": "x"})],
            "b": [(1, "Page Viewed", {"anonymous_id": "y"})],
            "c": [(2, "Order Completed", {"user_id": "z"})],
        },
        [{"a-0"}, {"b-0"}, {"c-0"}],
        id="unlinked-ids-are-separate-persons",
    ),
    pytest.param(
        {
            "ab": [
                (0, "Page Viewed", {"anonymous_id": "laptop"}),
                (20, "Signed Up", {"anonymous_id": "laptop", "user_id": "late"}),
                (10, "logged_in", {"anonymous_id": "laptop", "user_id": "early"}),
            ]
        },
        # two links in one batch: the earlier in event time wins
        [{"ab-0", "ab-2"}, {"ab-1"}],
        id="two-links-in-one-batch-earliest-wins",
    ),
]


@pytest.mark.parametrize(("journeys", "people"), CASES)
def test_stitching(
    workspace: Workspace, journeys: dict[str, list[tuple[Any, ...]]], people: list[set[str]]
) -> None:
    load_journeys(workspace, journeys)
    assert _people(workspace) == people


def test_person_counts_in_the_stage_report_count_the_stitched_person(
    workspace: Workspace,
) -> None:
    load_journeys(
        workspace,
        {
            "visit": [
                (0, "Page Viewed", A),
                (3, "Product Viewed", A),
                (6, "Product Added", A),
                (10, "Signed Up", BOTH),
                (15, "Order Completed", U),
            ]
        },
    )
    assert workspace.info()["persons"] == 1
    report = workspace.stage_report()
    assert {row.stage.name.lower(): row.persons for row in report.rows}["action"] == 1


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = ["event_id", "timestamp", "event", "user_id", "anonymous_id"]
    lines = [",".join(columns)] + [",".join(str(r.get(c) or "") for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_stitching_across_two_imports(workspace: Workspace, tmp_path: Path) -> None:
    # day one: anonymous browsing on two devices; day two: sign-up on one, purchase
    first = _csv(
        tmp_path / "day1.csv",
        journey_rows(
            {
                "phone": [
                    (0, "Page Viewed", {"anonymous_id": "phone"}),
                    (2, "Product Viewed", {"anonymous_id": "phone"}),
                ],
                "desk": [(5, "Page Viewed", {"anonymous_id": "desk"})],
            }
        ),
    )
    second = _csv(
        tmp_path / "day2.csv",
        journey_rows(
            {
                "buy": [
                    (1440, "Signed Up", {"anonymous_id": "phone", "user_id": "ann"}),
                    (1450, "Order Completed", {"user_id": "ann"}),
                ],
            }
        ),
    )
    ingest_file(workspace.store, first, received_at=NOW)
    assert _people(workspace) == [{"desk-0"}, {"phone-0", "phone-1"}]
    ingest_file(workspace.store, second, received_at=NOW)
    assert _people(workspace) == [{"buy-0", "buy-1", "phone-0", "phone-1"}, {"desk-0"}]
    # importing day two again changes nothing
    ingest_file(workspace.store, second, received_at=NOW)
    assert _people(workspace) == [{"buy-0", "buy-1", "phone-0", "phone-1"}, {"desk-0"}]


def test_anonymous_events_after_a_link_in_a_later_import(
    workspace: Workspace, tmp_path: Path
) -> None:
    load_journeys(workspace, {"s": [(0, "Signed Up", BOTH)]})
    later = _csv(
        tmp_path / "later.csv",
        journey_rows(
            {
                "t": [(100, "Page Viewed", A), (101, "Product Viewed", A)],
            }
        ),
    )
    ingest_file(workspace.store, later, received_at=NOW)
    assert _people(workspace) == [{"s-0", "t-0", "t-1"}]
