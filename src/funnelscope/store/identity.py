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
* an event's person is its user id's person when it has a user id, else its anonymous id's;
* when one batch links an anonymous-only person to several users (two of its anonymous ids
  linked to different users), the person joins the user of the earliest link: least event
  time, then least user id; the other links leave it alone, as a later batch's would;
* merges within a batch resolve as if the links came one at a time in event order: a person
  merged into a person that is itself merged in the same batch ends in the last one
  (``_resolve_chains``).
"""

from __future__ import annotations

from datetime import datetime

import duckdb

__all__ = ["PERSON_KEY", "assign_persons", "canonical_person_ids"]

#: The id whose identity gives an event its person.
PERSON_KEY = "coalesce(user_id, anonymous_id)"

#: ``_st``: one row per distinct id of the batch (``{table}``: user_id, anonymous_id,
#: previous_id, "timestamp"): whether it acts as a user id, its first time, its person if it is
#: known (``known``), its first link to a user (``link_user`` at ``link_ts``: least time, then
#: least user id) and, for a new id that needs a person of its own (a user id, or an anonymous
#: id with no link), its new person (``new_person``: dense, numbered by first time then id).
#: One statement and one aggregation over the rows' three id columns (a separate link query
#: joined back, or first reducing the rows to distinct id triples, measured slower).
_STAGE = """
CREATE OR REPLACE TEMP TABLE _st AS
WITH ids AS (
    -- each id's roles in one aggregation; a link (anonymous or previous id -> user id) as a
    -- struct, whose least value is the earliest link, then the least user id
    SELECT id, bool_or(is_user) AS is_user, min(ts) AS first_seen, min(link) AS link FROM (
        SELECT user_id AS id, TRUE AS is_user, "timestamp" AS ts, NULL AS link
        FROM {table} WHERE user_id IS NOT NULL
        UNION ALL
        SELECT anonymous_id, FALSE, "timestamp",
               CASE WHEN user_id <> anonymous_id THEN {{'ts': "timestamp", 'user_id': user_id}} END
        FROM {table} WHERE anonymous_id IS NOT NULL
        UNION ALL
        SELECT previous_id, FALSE, "timestamp",
               CASE WHEN user_id <> previous_id THEN {{'ts': "timestamp", 'user_id': user_id}} END
        FROM {table} WHERE previous_id IS NOT NULL
    )
    GROUP BY id
), st AS (
    -- the stored identities are probed with the batch's ids (one scan of identities, the hash
    -- table on the batch's side)
    SELECT b.id, b.is_user, b.first_seen, i.person_id AS known,
           b.link.user_id AS link_user, b.link.ts AS link_ts,
           i.person_id IS NULL AND (b.is_user OR b.link IS NULL) AS needs_person
    FROM ids b LEFT JOIN identities i ON i.distinct_id = b.id
)
SELECT id, is_user, first_seen, known, link_user, link_ts,
       CASE WHEN needs_person THEN
           (SELECT coalesce(max(person_id) + 1, 0) FROM person_map)
           + row_number() OVER (PARTITION BY needs_person ORDER BY first_seen, id) - 1
       END AS new_person
FROM st
"""

#: New ids into ``identities``: their own new person, or (an anonymous id whose first link is
#: to a user) the user's person, which is known or new in this batch: links always point at
#: user ids, and a user id of the batch always has a person by now.
_INSERT_IDENTITIES = """
INSERT INTO identities
SELECT id, is_user, new_person, first_seen FROM _st WHERE new_person IS NOT NULL
UNION ALL
SELECT s.id, FALSE, coalesce(u.known, u.new_person), s.first_seen
FROM _st s JOIN _st u ON u.id = s.link_user
WHERE s.known IS NULL AND s.new_person IS NULL
"""

#: Candidate merges: a known anonymous id's first link joins its person (``from_id``, a
#: canonical person with no user id) to the linked user's canonical person (``to_id``); per
#: ``from_id`` the earliest link wins (least time, then least user id).
_MERGES = """
WITH l AS (
    SELECT a.link_ts, a.link_user, a.known AS a_person,
           coalesce(u.known, u.new_person) AS u_person
    FROM _st a JOIN _st u ON u.id = a.link_user
    WHERE a.known IS NOT NULL AND a.link_user IS NOT NULL
), c AS (
    SELECT ma.canonical_id AS from_id, mu.canonical_id AS to_id, l.link_ts, l.link_user
    FROM l
    JOIN person_map ma ON ma.person_id = l.a_person
    JOIN person_map mu ON mu.person_id = l.u_person
    WHERE ma.canonical_id <> mu.canonical_id
), users_of AS (  -- which of the candidates' persons have a user id (read by person, no text)
    SELECT DISTINCT m.canonical_id FROM person_map m JOIN identities i USING (person_id)
    WHERE i.is_user AND m.canonical_id IN (SELECT from_id FROM c)
)
SELECT from_id, to_id, link_ts, link_user FROM c
WHERE from_id NOT IN (SELECT canonical_id FROM users_of)
QUALIFY row_number() OVER (PARTITION BY from_id ORDER BY link_ts, link_user, to_id) = 1
"""


def assign_persons(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Register every id of ``table`` (staged events) in ``identities`` and apply its links.

    Runs inside the caller's transaction. Afterwards each row's person is
    ``identities.person_id`` of ``coalesce(user_id, anonymous_id)`` (see :data:`PERSON_KEY`).
    ``table`` (a trusted table or view name, never user input) needs the columns user_id,
    anonymous_id, previous_id and "timestamp".

    Examples
    --------
    >>> import duckdb
    >>> from datetime import datetime, UTC
    >>> con = duckdb.connect()
    >>> _ = con.execute(
    ...     "CREATE TABLE identities (distinct_id VARCHAR, is_user BOOLEAN, person_id INTEGER,"
    ...     " first_seen TIMESTAMPTZ); CREATE TABLE person_map (person_id INTEGER,"
    ...     " canonical_id INTEGER); CREATE TABLE b (user_id VARCHAR, anonymous_id VARCHAR,"
    ...     ' previous_id VARCHAR, "timestamp" TIMESTAMPTZ)')
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> _ = con.execute("INSERT INTO b VALUES (NULL, 'a', NULL, $1)", [t0])
    >>> assign_persons(con, "b")
    >>> _ = con.execute("DELETE FROM b; INSERT INTO b VALUES ('u', 'a', NULL, $1)", [t0])
    >>> assign_persons(con, "b")
    >>> canonical_person_ids(con)  # the anonymous person 0 joined the user's person 1
    [1, 1]
    """
    con.execute(_STAGE.format(table=table))
    stats = con.execute(
        "SELECT count(*) FILTER (WHERE known IS NULL), "
        "count(*) FILTER (WHERE known IS NOT NULL AND link_user IS NOT NULL) FROM _st"
    ).fetchall()
    fresh, linked_known = stats[0] if stats else (0, 0)
    if fresh:
        con.execute(_INSERT_IDENTITIES)
        con.execute(
            "INSERT INTO person_map SELECT new_person, new_person FROM _st "
            "WHERE new_person IS NOT NULL"
        )
    # Only a link of an id known before this batch can merge two persons: a new anonymous id
    # was given its user's person above, and a new id that is also a user has a user.
    if linked_known:
        merges = _resolve_chains(con.execute(_MERGES).fetchall())
        if merges:
            # one statement for the batch's merges: after _resolve_chains no to_id is a from_id,
            # so the order in which rows are updated cannot matter
            con.execute(
                "UPDATE person_map SET canonical_id = m.to_id FROM ("
                "SELECT unnest($1::INTEGER[]) AS from_id, unnest($2::INTEGER[]) AS to_id) m "
                "WHERE person_map.canonical_id = m.from_id",
                [list(merges), list(merges.values())],
            )
    con.execute("DROP TABLE IF EXISTS _st")


def _resolve_chains(
    candidates: list[tuple[int, int, datetime, str]],
) -> dict[int, int]:
    """``from_id -> final canonical id`` of a batch's merges (one candidate per ``from_id``).

    A ``to_id`` is a canonical person but not always one with a user id: an id first seen as an
    anonymous id and later sent as a user id keeps ``is_user`` false, so its person can be
    merged in the same batch (A -> X and X -> U). Applied one link at a time in event order,
    both end in U whatever the order, so each chain is followed to its end. A cycle (A -> X
    and X -> A, possible the same way) is what event order makes of it: the cycle's latest
    link finds both ids already in one person and does nothing, so its ``from_id`` is the end.
    """
    edge = {int(f): (int(t), (ts, user)) for f, t, ts, user in candidates}
    end: dict[int, int] = {}
    for start in edge:
        path: list[int] = []
        on_path: set[int] = set()
        node = start
        while node in edge and node not in end and node not in on_path:
            path.append(node)
            on_path.add(node)
            node = edge[node][0]
        if node in on_path:  # a cycle: its latest link is the one that does nothing
            cycle = path[path.index(node) :]
            node = max(cycle, key=lambda n: edge[n][1])
            end[node] = node
        final = end.get(node, node)
        for n in path:
            end.setdefault(n, final)
    return {f: t for f, t in end.items() if f != t}


def canonical_person_ids(con: duckdb.DuckDBPyConnection) -> list[int]:
    """person_id -> canonical person id, as a dense list (index = person id)."""
    rows = con.execute(
        "SELECT person_id, canonical_id FROM person_map ORDER BY person_id"
    ).fetchall()
    return [int(c) for _, c in rows]
