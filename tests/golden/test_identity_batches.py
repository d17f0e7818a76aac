"""Identity stitching when one batch holds several merges, golden cases worked out by hand.

The rules (docs/data-model.md, "Identity"): an anonymous-only person linked to two users in
one batch joins the user of the earliest link (least event time, then least user id); merges
within a batch end where the links taken one at a time in event order would leave them.

These cases need an id first seen as an anonymous id and later sent as a user id: it keeps
``is_user`` false, so its person counts as anonymous-only, can hold two anonymous ids, and can
itself be merged in the batch that merges another person into it. Each case is loaded a batch
at a time (one ``append_staging`` per batch), and run twice with the batch's rows reversed:
the result must not depend on row order.
"""

from __future__ import annotations

from typing import Any

import pytest

from funnelscope.workspace import Workspace
from tests.conftest import NOW, journey_rows, load_journeys, staging_table
from tests.golden.test_identity import _people


def _ids(anonymous: str | None = None, user: str | None = None) -> dict[str, str]:
    return {k: v for k, v in (("anonymous_id", anonymous), ("user_id", user)) if v is not None}


#: x is seen anonymous, then sent as a user id with the anonymous id y: one anonymous-only
#: person {x, y}
TWO_ANONYMOUS_IDS = [
    {"b1": [(0, "Page Viewed", _ids("x"))]},
    {"b2": [(1, "logged_in", _ids("y", user="x"))]},
]

CASES = [
    pytest.param(
        [
            *TWO_ANONYMOUS_IDS,
            {
                "c": [
                    (20, "logged_in", _ids("y", user="u1")),
                    (10, "logged_in", _ids("x", user="u2")),
                ]
            },
        ],
        # the link at minute 10 (x -> u2) is the earlier: the person {x, y} is u2's; u1 keeps
        # only its own event
        [{"b1-0", "b2-0", "c-1"}, {"c-0"}],
        id="anonymous-person-linked-to-two-users-joins-the-earliest",
    ),
    pytest.param(
        [
            *TWO_ANONYMOUS_IDS,
            {
                "c": [
                    (10, "logged_in", _ids("y", user="u-b")),
                    (10, "logged_in", _ids("x", user="u-a")),
                ]
            },
        ],
        # same minute: the least user id (u-a, linked through x) wins
        [{"b1-0", "b2-0", "c-1"}, {"c-0"}],
        id="same-time-the-least-user-id-wins",
    ),
    pytest.param(
        [
            *TWO_ANONYMOUS_IDS,
            {
                "c": [
                    (10, "logged_in", _ids("y", user="u-a")),
                    (10, "logged_in", _ids("x", user="u-b")),
                ]
            },
        ],
        # the same with the users swapped: now u-a is linked through y
        [{"b1-0", "b2-0", "c-0"}, {"c-1"}],
        id="same-time-the-least-user-id-wins-either-way",
    ),
    pytest.param(
        [
            {"a": [(0, "Page Viewed", _ids("a"))], "x": [(1, "Page Viewed", _ids("x"))]},
            {
                "m": [
                    (5, "logged_in", _ids("a", user="x")),  # a's person -> x's
                    (6, "Signed Up", _ids("x", user="u")),  # x's person -> u's
                ]
            },
        ],
        # a chain in one batch: a -> x -> u, everything is u's (a's events never stay with x's
        # old person)
        [{"a-0", "m-0", "m-1", "x-0"}],
        id="merge-into-a-person-merged-in-the-same-batch",
    ),
    pytest.param(
        [
            {"a": [(0, "Page Viewed", _ids("a"))], "x": [(1, "Page Viewed", _ids("x"))]},
            {
                "m": [
                    (5, "logged_in", _ids("a", user="x")),
                    (9, "logged_in", _ids("x", user="a")),
                ]
            },
        ],
        # a cycle: both ids end in one person
        [{"a-0", "m-0", "m-1", "x-0"}],
        id="two-anonymous-ids-linked-both-ways",
    ),
]


def _load(ws: Workspace, journeys: dict[str, list[tuple[Any, ...]]], reverse: bool) -> None:
    """One batch, as ``load_journeys``; ``reverse``: its staging rows in reverse order (the
    event ids stay those of the journeys)."""
    rows = journey_rows(journeys)
    table = staging_table(rows[::-1] if reverse else rows)
    report = ws.append_staging(table, source="test", received_at=NOW)
    assert report.rejected == 0, report.rejections


@pytest.mark.parametrize("reverse", [False, True], ids=["as-written", "rows-reversed"])
@pytest.mark.parametrize(("batches", "people"), CASES)
def test_batch_merges(
    workspace: Workspace,
    batches: list[dict[str, list[tuple[Any, ...]]]],
    people: list[set[str]],
    reverse: bool,
) -> None:
    for batch in batches:
        _load(workspace, batch, reverse)
    assert _people(workspace) == people


def test_a_cycle_ends_in_the_person_of_its_earliest_link(workspace: Workspace) -> None:
    # a (person 0) -> x (person 1) at minute 5; x -> a at minute 9 finds both in x's person
    load_journeys(
        workspace, {"a": [(0, "Page Viewed", _ids("a"))], "x": [(1, "Page Viewed", _ids("x"))]}
    )
    load_journeys(
        workspace,
        {
            "m": [
                (9, "logged_in", _ids("x", user="a")),
                (5, "logged_in", _ids("a", user="x")),
            ]
        },
    )
    table = workspace.engine.sql("SELECT DISTINCT person_id FROM events")
    assert table.column("person_id").to_pylist() == [1]
