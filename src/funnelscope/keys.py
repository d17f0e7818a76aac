"""API keys: public write keys (one per source) for ingestion, secret read keys for queries.

* A **write key** (``fsw_...``) ships inside web pages and apps, so it is not a secret: it names
  the source the events come from and can be revoked when abused. It is stored as is.
* A **read key** (``fsr_...``) opens the query API and the dashboard. It is shown once, at
  creation; the store keeps only its SHA-256 (the key is 32 random bytes, so a plain hash
  cannot be brute-forced and a slow KDF would only cost time on every request).
* An **admin key** (``fsa_...``) is a read key that may also manage keys over HTTP
  (``/api/v1/keys``, :mod:`funnelscope.api.keys`). It is stored as a read key (``kind`` is
  ``read``); its prefix carries the scope, so no schema change was needed and every read key
  created before admin keys existed keeps reading, without the right to mint or revoke keys:
  a leaked read key must not be able to create its own replacement.

Keys are managed with ``funnelscope keys create|list|revoke`` (on the store, or through a
running server with ``--server``) and checked by the HTTP API (:mod:`funnelscope.api.auth`).
Times are passed in (``now=``); nothing here reads the clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final, Literal

from funnelscope.errors import InvalidInputError, Problem
from funnelscope.store.store import Store

__all__ = [
    "ADMIN_PREFIX",
    "KEY_KINDS",
    "ApiKey",
    "CreatedKey",
    "KeyKind",
    "active_keys",
    "create_key",
    "find_key",
    "hash_token",
    "list_keys",
    "revoke_key",
]

KeyKind = Literal["write", "read"]
KEY_KINDS: Final = ("write", "read")
_PREFIX: Final = {"write": "fsw_", "read": "fsr_"}
#: The prefix of a read key that may also manage keys (the scope lives in the key's prefix).
ADMIN_PREFIX: Final = "fsa_"
_SOURCE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_DISPLAYED: Final = 8


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    kind: KeyKind
    source: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    write_key: str | None = None

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def is_admin(self) -> bool:
        """A read key that may also create, list and revoke keys over HTTP."""
        return self.kind == "read" and self.prefix.startswith(ADMIN_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        out["revoked_at"] = self.revoked_at.isoformat() if self.revoked_at else None
        out["is_active"] = self.is_active
        out["is_admin"] = self.is_admin
        return out


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A key just created: ``token`` is the full key (for a read key, the only time it is seen)."""

    key: ApiKey
    token: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.key.to_dict(), "token": self.token}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _problem(code: str, location: str, message: str) -> InvalidInputError:
    return InvalidInputError([Problem(code, location, message)])


def create_key(
    store: Store, kind: str, source: str, *, now: datetime, is_admin: bool = False
) -> CreatedKey:
    """Create a write key for ``source`` or a read key labelled ``source``.

    ``is_admin=True`` (read keys only) makes a read key that may also manage keys over HTTP.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from funnelscope.store.store import Store
    >>> store = Store(":memory:")
    >>> created = create_key(store, "write", "web-shop", now=datetime(2024, 5, 1, tzinfo=UTC))
    >>> created.token.startswith("fsw_"), find_key(store, created.token).source
    (True, 'web-shop')
    """
    problems = []
    if kind not in KEY_KINDS:
        problems.append(
            Problem(
                "key.unknown_kind",
                "kind",
                f"kind must be one of {', '.join(KEY_KINDS)} (got {kind!r})",
            )
        )
    if not _SOURCE.fullmatch(source):
        problems.append(
            Problem(
                "key.bad_source",
                "source",
                "source must be 1-64 characters: letters, digits, _ . : - "
                "(starting with a letter or digit)",
            )
        )
    if is_admin and kind == "write":
        problems.append(
            Problem(
                "key.admin_needs_read",
                "is_admin",
                "only a read key can be an admin key (write keys are public)",
            )
        )
    if problems:
        raise InvalidInputError(problems)
    prefix = ADMIN_PREFIX if is_admin else _PREFIX[kind]
    token = prefix + secrets.token_urlsafe(32 if kind == "read" else 18)
    key = ApiKey(
        key_id="key_" + secrets.token_hex(6),
        kind=kind,  # type: ignore[arg-type]  # checked above
        source=source,
        prefix=token[: len(prefix) + _DISPLAYED],
        created_at=now,
        revoked_at=None,
        write_key=token if kind == "write" else None,
    )
    with store.write() as con:
        con.execute(
            "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            [
                key.key_id,
                kind,
                source,
                key.prefix,
                key.write_key,
                _hash(token) if kind == "read" else None,
                now,
            ],
        )
    return CreatedKey(key, token)


_COLUMNS: Final = "key_id, kind, source, prefix, created_at, revoked_at, write_key"


def _row(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(*row)


def list_keys(store: Store, *, include_revoked: bool = True) -> list[ApiKey]:
    """Every key, oldest first (secrets of read keys are never stored, so never listed)."""
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    rows = store.query(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at, key_id")
    return [_row(r) for r in rows]


def revoke_key(
    store: Store, key_id: str, *, now: datetime, keep_last_admin: bool = False
) -> ApiKey:
    """Revoke a key by its id; revoking twice keeps the first revocation time.

    With ``keep_last_admin`` (the HTTP API), the last active admin key cannot be revoked
    (``key.last_admin``): that would leave no way to manage keys without stopping the server.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from funnelscope.store.store import Store
    >>> store = Store(":memory:")
    >>> at = datetime(2024, 5, 1, tzinfo=UTC)
    >>> key = create_key(store, "write", "web-shop", now=at).key
    >>> revoke_key(store, key.key_id, now=at).is_active
    False
    """
    with store.write() as con:
        found = con.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", [key_id]
        ).fetchall()
        if not found:
            raise _problem(
                "key.not_found", "key_id", f"no key with id {key_id!r}: see `funnelscope keys list`"
            )
        target = _row(found[0])
        if keep_last_admin and target.is_admin and target.is_active:
            # checked inside the write transaction, so two concurrent revocations cannot both pass
            (others,) = con.execute(
                "SELECT count(*) FROM api_keys WHERE kind = 'read' AND starts_with(prefix, ?) "
                "AND revoked_at IS NULL AND key_id <> ?",
                [ADMIN_PREFIX, key_id],
            ).fetchall()[0]
            if not others:
                raise _problem(
                    "key.last_admin",
                    "key_id",
                    f"{key_id} is the last active admin key: create another admin key first",
                )
        con.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?",
            [now, key_id],
        )
        row = con.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", [key_id]).fetchall()[
            0
        ]
    return _row(row)


def find_key(store: Store, token: str) -> ApiKey | None:
    """The active key ``token`` is, or None (unknown, revoked, or not a key at all)."""
    if token.startswith(_PREFIX["write"]):
        rows = store.query(
            f"SELECT {_COLUMNS} FROM api_keys WHERE kind = 'write' AND write_key = ? "
            "AND revoked_at IS NULL",
            [token],
        )
    elif token.startswith((_PREFIX["read"], ADMIN_PREFIX)):
        rows = store.query(
            f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE kind = 'read' "
            "AND secret_hash = ? AND revoked_at IS NULL",
            [_hash(token)],
        )
        rows = [r[:-1] for r in rows if hmac.compare_digest(r[-1], _hash(token))]
    else:
        return None
    return _row(rows[0]) if rows else None


def active_keys(store: Store) -> tuple[dict[str, ApiKey], dict[str, ApiKey]]:
    """(write key -> key, read-key hash -> key) of every active key: the API's in-memory ring."""
    rows = store.query(f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE revoked_at IS NULL")
    writes: dict[str, ApiKey] = {}
    reads: dict[str, ApiKey] = {}
    for row in rows:
        key = _row(row[:-1])
        if key.kind == "write" and key.write_key:
            writes[key.write_key] = key
        elif key.kind == "read" and row[-1]:
            reads[row[-1]] = key
    return writes, reads


def hash_token(token: str) -> str:
    """The stored form of a read key (hex SHA-256)."""
    return _hash(token)
