"""Managing API keys while the server runs: list, create and revoke over HTTP.

The server holds the store open (DuckDB allows one writing process), so ``funnelscope keys``
cannot open the file while a collector runs; these routes do the same work inside the server,
and ``funnelscope keys ... --server URL`` and the dashboard's Keys page call them.

Routes (all need ``Authorization: Bearer <key>``; semantics in docs/keys.md)::

    GET    /api/v1/keys/me          the calling key (any read key): kind, label, is_admin
    GET    /api/v1/keys             every key; write keys in full, read keys by prefix only
    POST   /api/v1/keys             {"kind", "source", "is_admin"} -> 201, the key shown once
    DELETE /api/v1/keys/{key_id}    revoke; ingestion with a revoked write key is 401 at once

Managing keys needs an **admin key** (a read key created with ``is_admin``, prefix ``fsa_``):
a plain read key gets 403 ``auth.not_admin``, a write key or no key 401. A leaked read key
therefore cannot mint its own replacement. Invalid input is 422 in FastAPI's shape, an unknown
key id 404, revoking the last active admin key 409 (``key.last_admin``).

Revocation is immediate: after the write, the route reloads the app's
:class:`~funnelscope.api.auth.KeyRing` (which otherwise re-reads the keys table only every
``ApiSettings.key_refresh_seconds``), so the next request with the revoked key is refused.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from funnelscope.api.auth import ReadKey
from funnelscope.api.problems import ApiError, problem_detail
from funnelscope.errors import InvalidInputError
from funnelscope.keys import ApiKey, create_key, list_keys, revoke_key
from funnelscope.workspace import Workspace

__all__ = ["KeyCreate", "require_admin_key", "router"]

log = logging.getLogger("funnelscope.api.keys")

router = APIRouter(prefix="/api/v1", tags=["keys"])

#: HTTP status of an input error, by its problem code (everything else is 422).
_STATUS = {"key.not_found": 404, "key.last_admin": 409}


def require_admin_key(request: Request, key: ReadKey) -> ApiKey:
    """FastAPI dependency: an admin key (a read key with ``is_admin``), else 403."""
    if request.app.state.settings.require_auth and not key.is_admin:
        raise ApiError(
            403,
            "auth.not_admin",
            "managing keys needs an admin key (fsa_...): create one with "
            "`funnelscope keys create --kind read --admin --source NAME`",
        )
    return key


AdminKey = Annotated[ApiKey, Depends(require_admin_key)]


class KeyCreate(BaseModel):
    """The body of ``POST /api/v1/keys``."""

    kind: str = Field(description="write (public, one per source) or read (secret)")
    source: str = Field(description="write: the source name events are tagged with; read: a label")
    is_admin: bool = Field(
        default=False, description="read keys only: may also manage keys (prefix fsa_)"
    )


def _workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


def _http(exc: InvalidInputError, prefix: str) -> HTTPException:
    status = max((_STATUS.get(p.code, 422) for p in exc.problems), default=422)
    return HTTPException(status, [problem_detail(p, prefix) for p in exc.problems])


def _key_json(key: ApiKey) -> dict[str, Any]:
    # Write keys are public and shown in full (the same as `funnelscope keys list`); a read
    # key's secret is not stored, so only its prefix can be shown.
    return key.to_dict()


@router.get("/keys/me", summary="The key this request is made with (any read key)")
def whoami(request: Request, key: ReadKey) -> dict[str, Any]:
    can_manage = key.is_admin or not request.app.state.settings.require_auth
    return {**_key_json(key), "write_key": None, "can_manage_keys": can_manage}


@router.get("/keys", summary="Every API key (read keys by prefix only; needs an admin key)")
def keys_list(
    request: Request,
    _: AdminKey,
    include_revoked: Annotated[bool, Query(description="Also list revoked keys.")] = True,
) -> dict[str, Any]:
    keys = list_keys(_workspace(request).store, include_revoked=include_revoked)
    return {"keys": [_key_json(k) for k in keys]}


@router.post(
    "/keys",
    status_code=201,
    summary="Create a key; the answer holds the key itself, shown this once (needs an admin key)",
)
def keys_create(
    request: Request, caller: AdminKey, body: Annotated[KeyCreate, Body()]
) -> dict[str, Any]:
    store = _workspace(request).store
    try:
        created = create_key(
            store, body.kind, body.source, now=datetime.now(UTC), is_admin=body.is_admin
        )
    except InvalidInputError as exc:
        raise _http(exc, "body") from exc
    request.app.state.keys.reload()  # the new key works on the very next request
    log.info(
        "key created",
        extra={"key_id": created.key.key_id, "kind": created.key.kind, "by": caller.key_id},
    )
    return created.to_dict()


@router.delete(
    "/keys/{key_id}", summary="Revoke a key: requests with it get 401 from now on (admin key)"
)
def keys_revoke(request: Request, caller: AdminKey, key_id: str) -> dict[str, Any]:
    store = _workspace(request).store
    try:
        key = revoke_key(store, key_id, now=datetime.now(UTC), keep_last_admin=True)
    except InvalidInputError as exc:
        raise _http(exc, "path") from exc
    # Without this the key ring would accept the key until its next periodic refresh.
    request.app.state.keys.reload()
    log.info("key revoked", extra={"key_id": key.key_id, "kind": key.kind, "by": caller.key_id})
    return {"key": _key_json(key)}
