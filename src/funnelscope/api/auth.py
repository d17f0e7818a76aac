"""Keys on requests: write keys for ingestion, read keys for everything that reads.

Where each SDK puts its write key (docs/collector.md, "Keys"):

* ``Authorization: Basic base64(<key>:)`` (Segment, RudderStack; the key is the user name);
* ``Authorization: Bearer <key>`` (native API, PostHog v1);
* in the JSON body: ``writeKey`` (Segment, analytics.js), ``api_key`` / ``token`` (PostHog);
* in the query: ``writeKey`` (RudderStack beacon), ``api_key`` / ``token``;
* Snowplow sends no key: its app id (``aid``) must be a write key's source name or the key.

Read keys come as ``Authorization: Bearer <key>``, or as ``?key=`` for EventSource (the SSE
stream), which cannot set headers. A missing or unknown key is 401; a write key where a read key
is needed is 401 too, so a key shipped in a web page never opens the data.

Active keys live in memory (:class:`KeyRing`), re-read from the store every few seconds off the
event loop: a revocation takes effect within ``ApiSettings.key_refresh_seconds`` (at once when
made through the keys API, which reloads the ring).
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request

from funnelscope.api.problems import ApiError
from funnelscope.keys import ApiKey, active_keys, hash_token
from funnelscope.store.store import Store

__all__ = [
    "ANONYMOUS_KEY",
    "KeyRing",
    "ReadKey",
    "WriteKey",
    "key_from_headers",
    "require_read_key",
    "require_write_key",
]

log = logging.getLogger("funnelscope.api.auth")

#: The key every request runs as when ``ApiSettings.require_auth`` is off.
ANONYMOUS_KEY = ApiKey("anonymous", "write", "default", "", datetime(2000, 1, 1, tzinfo=UTC), None)


class KeyRing:
    """The active keys of a store, in memory, refreshed every ``refresh_seconds``.

    Requests only read dictionaries. When the ring is older than ``refresh_seconds`` the first
    request to notice starts a reload on a short-lived thread and carries on with the current
    keys, so the event loop never waits for the store (a reload is a DuckDB query, and reads
    may wait for the writer). A revoked key therefore stops working within ``refresh_seconds``
    plus one reload; the keys API reloads at once (:meth:`reload`). With ``refresh_seconds``
    <= 0 every lookup reloads first, synchronously (tests).
    """

    def __init__(self, store: Store, *, refresh_seconds: float = 5.0) -> None:
        self._store = store
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        # one reload at a time: a periodic reload that read the table before a revocation
        # must not finish after the keys API's reload and bring the revoked key back
        self._reload_lock = threading.Lock()
        self._loaded_at = -1e18
        self._reloading = False
        # its idle thread ends when the ring is garbage-collected
        self._reloader = ThreadPoolExecutor(1, thread_name_prefix="funnelscope-keyring")
        self._writes: dict[str, ApiKey] = {}
        self._reads: dict[str, ApiKey] = {}
        self._sources: dict[str, ApiKey] = {}

    def reload(self) -> None:
        """Re-read the keys table now (the keys API calls this after a create or revoke)."""
        with self._reload_lock:
            writes, reads = active_keys(self._store)
            sources: dict[str, ApiKey] = {}
            for key in writes.values():
                sources.setdefault(key.source, key)
            with self._lock:
                self._writes, self._reads, self._sources = writes, reads, sources
                self._loaded_at = time.monotonic()

    def _reload_in_background(self) -> None:
        try:
            self.reload()
        except Exception:  # the store is busy or closing: keep the keys, retry on the next look
            log.warning("the key ring could not be reloaded", exc_info=True)
            with self._lock:
                self._loaded_at = time.monotonic()
        finally:
            self._reloading = False

    def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at <= self._refresh:
            return
        if self._refresh <= 0 or self._loaded_at < 0:
            self.reload()  # asked for, or nothing loaded yet: there is nothing to serve from
            return
        with self._lock:
            if self._reloading:
                return
            self._reloading = True
        # one worker thread, kept between reloads: starting a thread per reload made the event
        # loop wait (Thread.start) until the new thread got the GIL, a few ms under load
        try:
            self._reloader.submit(self._reload_in_background)
        except RuntimeError:  # the interpreter is shutting down: keep the keys
            self._reloading = False

    def write_key(self, token: str | None) -> ApiKey | None:
        if not token:
            return None
        self._fresh()
        return self._writes.get(token.strip())

    def read_key(self, token: str | None) -> ApiKey | None:
        if not token:
            return None
        self._fresh()
        return self._reads.get(hash_token(token.strip()))

    def app_key(self, app_id: str | None) -> ApiKey | None:
        """The write key a Snowplow app id stands for: by source name, or the key itself."""
        if not app_id:
            return None
        self._fresh()
        return self._sources.get(app_id) or self._writes.get(app_id)


def key_from_headers(request: Request) -> str | None:
    """The key in ``Authorization`` (Basic user name or Bearer token), if any."""
    header = request.headers.get("authorization")
    return _key_from_authorization(header) if header else None


@lru_cache(maxsize=1024)  # a handful of keys send every request: decode each header once
def _key_from_authorization(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = decoded.partition(":")[0]
        return user or None
    return None


def _unauthorized(message: str, code: str = "auth.missing_key") -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="funnelscope"'})


def check_write_key(request: Request, token: str | None) -> ApiKey:
    """The active write key ``token`` names, or 401. Used by routes that find keys in bodies."""
    if not request.app.state.settings.require_auth:
        return ANONYMOUS_KEY
    if not token:
        raise _unauthorized(
            "a write key is required: Basic auth (key as user name), Bearer, "
            "writeKey/api_key in the body or the query"
        )
    key: ApiKey | None = request.app.state.keys.write_key(token)
    if key is None:
        raise _unauthorized("unknown or revoked write key", "auth.unknown_key")
    return key


def require_write_key(request: Request) -> ApiKey:
    """FastAPI dependency: a write key from the Authorization header or the query."""
    q = request.query_params
    token = key_from_headers(request) or q.get("writeKey") or q.get("api_key") or q.get("token")
    return check_write_key(request, token)


def require_read_key(request: Request) -> ApiKey:
    """FastAPI dependency: a read key as ``Authorization: Bearer`` (or ``?key=`` for SSE)."""
    if not request.app.state.settings.require_auth:
        return ANONYMOUS_KEY
    token = key_from_headers(request) or request.query_params.get("key")
    if not token:
        raise _unauthorized("a read key is required: Authorization: Bearer <key>")
    key: ApiKey | None = request.app.state.keys.read_key(token)
    if key is None:
        raise _unauthorized(
            "unknown or revoked read key (write keys cannot read)", "auth.unknown_key"
        )
    return key


WriteKey = Annotated[ApiKey, Depends(require_write_key)]
ReadKey = Annotated[ApiKey, Depends(require_read_key)]
