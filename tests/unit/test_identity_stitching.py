"""``assign_persons`` against a frozen copy of the implementation it replaced, and its chains.

The copy (``_frozen_assign_persons``, below) is the per-merge ``UPDATE`` version as it stood
before stitching became set-based; its results define "unchanged". Where that version's result
depended on the order DuckDB returned merges in (a person with two candidate merges in one
batch, or a merge into a person itself merged in the batch), it has no single answer; there the
new rules (docs/data-model.md, "Identity") are checked by the golden cases in
tests/golden/test_identity_batches.py, and here only the invariants.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from funnelscope.store.identity import _resolve_chains, assign_persons

T0 = datetime(2025, 3, 1, tzinfo=UTC)
SCHEMA = """
CREATE TABLE identities (
    distinct_id VARCHAR NOT NULL, is_user BOOLEAN NOT NULL, person_id INTEGER NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL
);
CREATE TABLE person_map (person_id INTEGER NOT NULL, canonical_id INTEGER NOT NULL);
"""


def _connect() -> duckdb.DuckDBPyConnection:
    # one thread: these batches are a few rows, where more threads only cost start-up
    con = duckdb.connect(config={"threads": 1})
    con.execute(SCHEMA)
    return con


_PAIR: list[duckdb.DuckDBPyConnection] = []


def _empty_pair() -> tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyConnection]:
    """Two empty stores (old, new), reused across examples: a connection costs ~30 ms."""
    if not _PAIR:
        _PAIR.extend((_connect(), _connect()))
    for con in _PAIR:
        con.execute("DELETE FROM identities; DELETE FROM person_map")
    return _PAIR[0], _PAIR[1]


def _frozen_assign_persons(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """The implementation before set-based merges, unchanged but for its return value: True
    when its merges were order-dependent (a from_id twice, or a to_id that is also a from_id)."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _links AS
        SELECT anon, user_id, ts FROM (
            SELECT anonymous_id AS anon, user_id, "timestamp" AS ts FROM {table}
            WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL AND anonymous_id <> user_id
            UNION ALL
            SELECT previous_id, user_id, "timestamp" FROM {table}
            WHERE previous_id IS NOT NULL AND user_id IS NOT NULL AND previous_id <> user_id
        )
        QUALIFY row_number() OVER (PARTITION BY anon ORDER BY ts, user_id) = 1
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _fresh AS
        WITH ids AS (
            SELECT user_id AS id, TRUE AS is_user, "timestamp" AS ts FROM {table}
            WHERE user_id IS NOT NULL
            UNION ALL
            SELECT anonymous_id, FALSE, "timestamp" FROM {table} WHERE anonymous_id IS NOT NULL
            UNION ALL
            SELECT previous_id, FALSE, "timestamp" FROM {table} WHERE previous_id IS NOT NULL
        )
        SELECT id, bool_or(is_user) AS is_user, min(ts) AS first_seen
        FROM ids
        WHERE id NOT IN (
            SELECT distinct_id FROM identities WHERE distinct_id IN (SELECT id FROM ids)
        )
        GROUP BY id
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _new_persons AS
        SELECT f.id, f.is_user, f.first_seen,
               (SELECT coalesce(max(person_id) + 1, 0) FROM person_map)
                 + row_number() OVER (ORDER BY f.first_seen, f.id) - 1 AS person_id
        FROM _fresh f
        WHERE f.is_user OR f.id NOT IN (SELECT anon FROM _links)
        """
    )
    con.execute(
        "INSERT INTO identities SELECT id, is_user, person_id, first_seen FROM _new_persons"
    )
    con.execute("INSERT INTO person_map SELECT person_id, person_id FROM _new_persons")
    con.execute(
        """
        INSERT INTO identities
        SELECT f.id, FALSE, i.person_id, f.first_seen
        FROM _fresh f JOIN _links l ON l.anon = f.id JOIN identities i ON i.distinct_id = l.user_id
        WHERE NOT f.is_user
        """
    )
    has_links = con.execute("SELECT count(*) FROM _links").fetchone()
    merges = (
        []
        if not has_links or not has_links[0]
        else con.execute(
            """
        WITH ends AS (SELECT anon AS id FROM _links UNION SELECT user_id FROM _links),
        canon AS (
            SELECT i.distinct_id, i.is_user, m.canonical_id
            FROM identities i JOIN person_map m USING (person_id)
            WHERE i.distinct_id IN (SELECT id FROM ends)
        ), users_of AS (
            SELECT m.canonical_id FROM person_map m JOIN identities i USING (person_id)
            WHERE i.is_user AND m.canonical_id IN (SELECT canonical_id FROM canon)
            GROUP BY m.canonical_id
        )
        SELECT DISTINCT a.canonical_id AS from_id, u.canonical_id AS to_id
        FROM _links l
        JOIN canon a ON a.distinct_id = l.anon
        JOIN canon u ON u.distinct_id = l.user_id
        WHERE a.canonical_id <> u.canonical_id
          AND a.canonical_id NOT IN (SELECT canonical_id FROM users_of)
        """
        ).fetchall()
    )
    for from_id, to_id in merges:
        con.execute(
            "UPDATE person_map SET canonical_id = ? WHERE canonical_id = ?", [to_id, from_id]
        )
    for name in ("_links", "_fresh", "_new_persons"):
        con.execute(f"DROP TABLE IF EXISTS {name}")
    froms = [f for f, _ in merges]
    return len(set(froms)) < len(froms) or any(t in froms for _, t in merges)


# -- random batches: a few ids, each in any role, so that ids first seen anonymous later act as
# user ids (the source of chains and of anonymous persons with two ids)

IDS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
#: (user_id, anonymous_id, previous_id, minutes after T0)
Row = tuple[str | None, str | None, str | None, int]
MINUTES = st.integers(0, 12)  # few values, so that link times tie
#: (user_id, anonymous_id, previous_id, minutes): a user id or an anonymous id, or both
ROW = st.one_of(
    st.tuples(IDS, st.none() | IDS, st.none() | IDS, MINUTES),
    st.tuples(st.none(), IDS, st.none() | IDS, MINUTES),
)
BATCHES = st.lists(st.lists(ROW, min_size=1, max_size=6), min_size=1, max_size=4)


def _batch(rows: list[Row]) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.string()),
            "anonymous_id": pa.array([r[1] for r in rows], pa.string()),
            "previous_id": pa.array([r[2] for r in rows], pa.string()),
            "timestamp": pa.array(
                [T0 + timedelta(minutes=r[3]) for r in rows], pa.timestamp("us", tz="UTC")
            ),
        }
    )


def _state(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple[Any, ...]], ...]:
    return (
        con.execute("SELECT * FROM identities ORDER BY distinct_id").fetchall(),
        con.execute("SELECT * FROM person_map ORDER BY person_id").fetchall(),
    )


def _check_invariants(con: duckdb.DuckDBPyConnection) -> None:
    identities, person_map = _state(con)
    canonical = dict((p, c) for p, c in person_map)
    # dense person ids, each one row; canonical ids are canonical (no chain left behind)
    assert sorted(canonical) == list(range(len(person_map)))
    assert all(canonical[c] == c for c in canonical.values())
    # each id once, with a person that exists
    assert len({i[0] for i in identities}) == len(identities)
    assert all(i[2] in canonical for i in identities)
    # a canonical person with a user id never absorbed another's user id: a merge always comes
    # from a person with no user id
    users = [canonical[i[2]] for i in identities if i[1]]
    assert len(users) == len(set(users))


def _apply(con: duckdb.DuckDBPyConnection, rows: list[Row], frozen: bool) -> bool:
    con.register("_arrow", _batch(rows))
    con.execute("CREATE OR REPLACE TEMP TABLE _b AS SELECT * FROM _arrow")
    con.unregister("_arrow")
    con.execute("BEGIN")
    ambiguous = _frozen_assign_persons(con, "_b") if frozen else False
    if not frozen:
        assign_persons(con, "_b")
    con.execute("COMMIT")
    return ambiguous


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BATCHES)
def test_same_identities_and_person_map_as_the_frozen_version(
    batches: list[list[Row]],
) -> None:
    old, new = _empty_pair()
    for rows in batches:
        ambiguous = _apply(old, rows, frozen=True)
        _apply(new, rows, frozen=False)
        _check_invariants(new)
        if ambiguous:  # the old result depended on row order: the states part from here
            event("frozen version order-dependent")
            break
        assert _state(new) == _state(old)
    else:
        event("every batch compared")


def test_the_same_on_known_and_new_ids_in_one_batch() -> None:
    # a store with history, then a batch mixing returning, new, linked and merging ids
    first: list[Row] = [
        ("u1", "a1", None, 0),
        (None, "a2", None, 1),
        (None, "a3", None, 2),
        ("u2", None, None, 3),
    ]
    second: list[Row] = [
        (None, "a2", None, 5),  # known, no link
        ("u3", "a2", None, 6),  # known anonymous -> new user: merge
        ("u2", None, "a3", 7),  # alias: known anonymous -> known user: merge
        ("u4", "a4", None, 8),  # new anonymous -> new user: no person of its own
        (None, "a5", None, 9),  # new anonymous, no link
        ("u1", "a6", None, 4),  # new anonymous -> known user
    ]
    old, new = _connect(), _connect()
    for rows in (first, second):
        assert not _apply(old, rows, frozen=True)
        _apply(new, rows, frozen=False)
        assert _state(new) == _state(old)
    identities, person_map = _state(new)
    person: dict[str, int] = {i[0]: dict(person_map)[i[2]] for i in identities}
    # worked out by hand: persons by first time then id: u1 a1 a2 a3 u2 | a5 u3 u4 (a4, a6 join)
    # worked out by hand. First batch: persons by first time then id, u1 0 (a1 joins it), a2 1,
    # a3 2, u2 3. Second: u3 4, u4 5 (a4 joins it), a5 6 (a6 joins u1); a2's person 1 merges
    # into u3's 4, a3's 2 into u2's 3.
    assert person == {
        **{"u1": 0, "a1": 0, "a6": 0, "a2": 4, "u3": 4, "a3": 3, "u2": 3},
        **{"u4": 5, "a4": 5, "a5": 6},
    }
    assert [c for _, c in person_map] == [0, 4, 3, 3, 4, 5, 6]


def test_chains_end_at_the_last_person() -> None:
    t = T0
    # 1 -> 2 -> 3, and 4 -> 2: all end in 3
    assert _resolve_chains([(1, 2, t, "x"), (2, 3, t, "y"), (4, 2, t, "z")]) == {1: 3, 2: 3, 4: 3}
    # a cycle 1 -> 2 -> 1 (ids first seen anonymous, later sent as user ids): the latest link
    # (2 -> 1 at t + 1) finds both in one person and does nothing, so 2 is the end
    later = t + timedelta(minutes=1)
    assert _resolve_chains([(1, 2, t, "x"), (2, 1, later, "y")]) == {1: 2}
    # the same with a tail into the cycle: 5 -> 1
    assert _resolve_chains([(1, 2, later, "x"), (2, 1, t, "y"), (5, 1, t, "z")]) == {
        2: 1,
        5: 1,
    }
    # a tie in time: the least user id is the earlier link, so the greater one does nothing
    assert _resolve_chains([(1, 2, t, "b"), (2, 1, t, "a")]) == {2: 1}
    assert _resolve_chains([]) == {}
