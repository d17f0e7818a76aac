"""Identity stitching: distinct ids -> dense person ids, merged when identify or alias links them.

Rules (docs/data-model.md, "Identity"):

* every distinct id (a user id or an anonymous id) gets a person id the first time it is seen;
  person ids are dense integers from 0, so a person-level lookup is an array index;
* an event carrying both a user id and an anonymous id, an ``identify``, or an ``alias``
  (``previous_id`` -> ``user_id``) *links* the anonymous id to the user;
* a link whose anonymous id already has an anonymous-only person merges that person into the
  user's: ``person_map`` points the old person at the user's canonical person, so its earlier
  events (from before the link) count as the user's;
* an anonymous id belongs to the first user it is linked to: a later link to another user (a
  shared device) does not merge two users;
* an event's person is its user id's person when it has a user id, else its anonymous id's.
"""

from __future__ import annotations

import duckdb

__all__ = ["PERSON_KEY", "assign_persons", "canonical_person_ids"]

#: The id whose identity gives an event its person.
PERSON_KEY = "coalesce(user_id, anonymous_id)"


def assign_persons(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Register every id of ``table`` (staged events) in ``identities`` and apply its links.

    Runs inside the caller's transaction. Afterwards each row's person is
    ``identities.person_id`` of ``coalesce(user_id, anonymous_id)`` (see :data:`PERSON_KEY`).
    """
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
    # Every id first seen in this batch, and whether it acts as a user id here.
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
        -- the batch's ids already known, found by probing identities with the batch's few ids
        -- (a NOT IN would build a hash table of every stored id: ~140 ms at 1M identities)
        WHERE id NOT IN (
            SELECT distinct_id FROM identities WHERE distinct_id IN (SELECT id FROM ids)
        )
        GROUP BY id
        """
    )
    # New users, and new anonymous ids with no link, get fresh persons.
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
    # New anonymous ids linked to a user: the user's person. (A user linked only to another
    # new anonymous id is not a chain: links always point at user ids, which are now known.)
    con.execute(
        """
        INSERT INTO identities
        SELECT f.id, FALSE, i.person_id, f.first_seen
        FROM _fresh f JOIN _links l ON l.anon = f.id JOIN identities i ON i.distinct_id = l.user_id
        WHERE NOT f.is_user
        """
    )
    # Links whose anonymous id was known before, with an anonymous-only person: merge.
    has_links = con.execute("SELECT count(*) FROM _links").fetchone()
    merges = (
        []
        if not has_links or not has_links[0]
        else con.execute(
            """
        WITH ends AS (SELECT anon AS id FROM _links UNION SELECT user_id FROM _links),
        canon AS (  -- the links' ids only, not every stored identity
            SELECT i.distinct_id, i.is_user, m.canonical_id
            FROM identities i JOIN person_map m USING (person_id)
            WHERE i.distinct_id IN (SELECT id FROM ends)
        ), users_of AS (  -- which of the links' persons have a user (read by person, no text)
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


def canonical_person_ids(con: duckdb.DuckDBPyConnection) -> list[int]:
    """person_id -> canonical person id, as a dense list (index = person id)."""
    rows = con.execute(
        "SELECT person_id, canonical_id FROM person_map ORDER BY person_id"
    ).fetchall()
    return [int(c) for _, c in rows]
