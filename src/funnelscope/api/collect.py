"""Ingestion routes: the wire formats of Segment, RudderStack, PostHog and Snowplow, and our own.

Every route does the same five things (docs/collector.md describes them per SDK):

1. read the body, refusing more than ``max_body_bytes`` (413), and undo compression and
   encodings (:mod:`funnelscope.ingest.wire`; gzip bombs stop at ``max_decoded_bytes``, 413);
2. find the write key where that SDK puts it (401 when missing or unknown) and take a token from
   the key's bucket (429 + Retry-After when empty);
3. map each message to a staging row (:mod:`funnelscope.ingest.records`); a message that cannot
   be mapped is rejected on its own, with its index and reason code;
4. hand the rows to the ack stage (:mod:`funnelscope.api.writer`) and wait until they are
   fsynced to the journal (503 + Retry-After when the queue or the journal's backlog is full,
   while a crash's journal is replayed at startup, or when the write does not come in time);
5. answer as that SDK expects: 200 with the rejected indices and reasons (a 4xx would make the
   SDK drop the whole batch), ``{"status": 1}`` for PostHog, a 1x1 GIF for Snowplow's GET.

The verdict on each event is the ingest pipeline's own validation SQL, run by the ack stage;
quarantine, deduplication by event id (messageId / uuid / eid) and identity stitching happen
when the journal is loaded into the store (within a second), so an acknowledged event is
durable and a retried batch is stored once.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from funnelscope.api.auth import check_write_key, key_from_headers, require_write_key
from funnelscope.api.limits import TokenBuckets
from funnelscope.api.problems import ApiError, to_api_error
from funnelscope.api.writer import BatchOutcome, QueueFullError
from funnelscope.errors import InvalidEventError, InvalidInputError
from funnelscope.ingest.pipeline import Rejection
from funnelscope.ingest.records import (
    StagingValues,
    from_native,
    from_snowplow,
    parse_time,
    posthog_row,
    row_values,
    segment_row,
    segment_values,
)
from funnelscope.ingest.wire import decode_body, parse_json
from funnelscope.keys import ApiKey

__all__ = ["HOT_ROUTES", "router"]

router = APIRouter(tags=["collect"])
log = logging.getLogger("funnelscope.api.collect")

#: A transparent 1x1 GIF, the answer to pixel requests.
PIXEL_GIF: Final = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
#: Quarantine keeps at most this much of a message that could not even be mapped.
MAX_QUARANTINED_PAYLOAD: Final = 64 * 1024
#: Batches with more events than this are mapped off the event loop.
_MAP_IN_THREAD: Final = 1000
#: PostHog ignores ``_`` / ``sent_at`` query values that parse to a year <= 2020.
_POSTHOG_MIN_SENT_AT: Final = datetime(2021, 1, 1, tzinfo=UTC)

#: One message -> one staging row as values in STAGING_COLUMNS order (source left None: the
#: ack stage fills in the route's).
Mapper = Callable[[Any], StagingValues]


def _json_schema(schema: dict[str, Any], *content_types: str) -> dict[str, Any]:
    types = content_types or ("application/json",)
    return {"requestBody": {"required": True, "content": {t: {"schema": schema} for t in types}}}


_ANY_OBJECT: Final = {"type": "object", "additionalProperties": True}
_SEGMENT_MESSAGE: Final = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "event": {"type": "string"},
        "messageId": {"type": "string"},
        "userId": {"type": "string"},
        "anonymousId": {"type": "string"},
        "timestamp": {"type": "string"},
        "properties": _ANY_OBJECT,
        "context": _ANY_OBJECT,
        "traits": _ANY_OBJECT,
    },
}
_SEGMENT_BATCH: Final = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {"type": "array", "items": _SEGMENT_MESSAGE},
        "writeKey": {"type": "string"},
        "sentAt": {"type": "string"},
        "context": _ANY_OBJECT,
    },
}
_POSTHOG_EVENT: Final = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "distinct_id": {"type": "string"},
        "uuid": {"type": "string"},
        "timestamp": {"type": "string"},
        "properties": _ANY_OBJECT,
        "api_key": {"type": "string"},
    },
}
_POSTHOG_BODY: Final = {
    "oneOf": [
        {
            "type": "object",
            "required": ["batch"],
            "properties": {
                "api_key": {"type": "string"},
                "sent_at": {"type": "string"},
                "batch": {"type": "array", "items": _POSTHOG_EVENT},
            },
        },
        {"type": "array", "items": _POSTHOG_EVENT},
        _POSTHOG_EVENT,
    ]
}
_SNOWPLOW_BODY: Final = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "schema": {"type": "string"},
        "data": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}
_NATIVE_BODY: Final = {
    "oneOf": [
        {
            "type": "object",
            "required": ["events"],
            "properties": {"events": {"type": "array", "items": _ANY_OBJECT}},
        },
        {"type": "array", "items": _ANY_OBJECT},
    ]
}
_AD_SPEND_BODY: Final = {
    "type": "object",
    "required": ["rows"],
    "properties": {
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "date": {"type": "string"},
                    "channel": {"type": "string"},
                    "source": {"type": "string"},
                    "campaign": {"type": "string"},
                    "impressions": {"type": "integer"},
                    "clicks": {"type": "integer"},
                    "spend": {"type": "number"},
                    "currency": {"type": "string"},
                },
            },
        }
    },
}


# -- plumbing shared by every route ---------------------------------------------------------------


async def _read_body(request: Request) -> bytes:
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body.too_large", f"the body is larger than {limit} bytes")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise ApiError(413, "body.too_large", f"the body is larger than {limit} bytes")
    return bytes(chunks)


def _decode(request: Request, raw: bytes) -> Any:
    settings = request.app.state.settings
    try:
        decoded = decode_body(
            raw,
            content_type=request.headers.get("content-type", ""),
            content_encoding=request.headers.get("content-encoding", ""),
            # most requests have no query string: don't parse one
            compression=request.query_params.get("compression")
            if request.scope["query_string"]
            else None,
            max_bytes=settings.max_decoded_bytes,
        )
        return parse_json(decoded.data)
    except InvalidInputError as exc:
        raise to_api_error(exc) from None


def _check_rate(request: Request, key: ApiKey) -> None:
    buckets: TokenBuckets = request.app.state.rate_limits
    wait = buckets.take(key.key_id, now=time.monotonic())
    if wait > 0:
        request.app.state.metrics.rate_limited.inc()
        seconds = TokenBuckets.retry_after_header(wait)
        raise ApiError(
            429,
            "rate.limited",
            f"too many requests for this key: retry in {seconds} s",
            headers={"Retry-After": seconds, "X-RateLimit-Reset": seconds},
        )


def _payload(message: Any) -> bytes:
    try:
        text = json.dumps(message, default=str)
    except (ValueError, RecursionError):
        text = repr(message)
    return text.encode("utf-8", "replace")[:MAX_QUARANTINED_PAYLOAD]


def _map_all(
    messages: Sequence[Any], mapper: Mapper
) -> tuple[list[StagingValues], list[int], list[Rejection]]:
    # Almost every batch maps whole: one comprehension, no per-event try, appends or index.
    # The mappers are pure, so when one message fails the loop below maps the batch again
    # and answers exactly as if it had run alone.
    try:
        return [mapper(message) for message in messages], list(range(len(messages))), []
    except Exception:  # handled message by message below
        pass
    rows: list[StagingValues] = []
    indices: list[int] = []
    rejected: list[Rejection] = []
    for index, message in enumerate(messages):
        try:
            row = mapper(message)
        except InvalidEventError as exc:
            rejected.append(
                Rejection(index, exc.code, str(exc.problems[0].message), _payload(message))
            )
            continue
        except Exception as exc:  # a mapping bug must not fail (and re-send) the whole batch
            log.exception("message could not be mapped", extra={"index": index})
            rejected.append(
                Rejection(
                    index,
                    "event.unmappable",
                    f"the message could not be mapped: {exc!r}",
                    _payload(message),
                )
            )
            continue
        rows.append(row)
        indices.append(index)
    return rows, indices, rejected


def _check_size(request: Request, messages: Any, what: str) -> list[Any]:
    if not isinstance(messages, list):
        raise ApiError(400, "batch.invalid", f"{what} must be a JSON array of events")
    if not messages:
        raise ApiError(400, "batch.empty", f"{what} is empty: send at least one event")
    limit: int = request.app.state.settings.max_batch_events
    if len(messages) > limit:
        raise ApiError(
            413,
            "batch.too_many_events",
            f"{what} has {len(messages)} events; at most {limit} per request",
        )
    return messages


async def _ingest(
    request: Request, family: str, key: ApiKey, messages: Sequence[Any], mapper: Mapper
) -> BatchOutcome:
    """Map, queue, wait for the journal; count the outcome. Raises ApiError 503 on overload."""
    state = request.app.state
    source = f"{family}:{key.source}"
    refusal = state.writer.refusal(len(messages))
    if refusal is not None:
        raise _overloaded(state, refusal)
    if len(messages) > _MAP_IN_THREAD:
        # a big batch would hold the event loop for tens of milliseconds: map it in a thread
        # so small requests keep being answered in between (the GIL is shared either way)
        rows, indices, rejected = await run_in_threadpool(_map_all, messages, mapper)
    else:
        rows, indices, rejected = _map_all(messages, mapper)
    try:
        outcome: BatchOutcome = await state.writer.write_values(
            rows,
            indices,
            rejected,
            len(messages),
            timeout=state.settings.commit_timeout_seconds,
            source=source,
        )
    except QueueFullError as exc:
        raise _overloaded(state, str(exc)) from None
    except TimeoutError:
        raise ApiError(
            503,
            "server.commit_timeout",
            "the events were not journaled in time: retry (retries are deduplicated)",
            headers={"Retry-After": "2"},
        ) from None
    except Exception as exc:  # the journal write failed; nothing was acknowledged
        raise ApiError(
            503,
            "server.write_failed",
            f"the journal could not be written: {exc}",
            headers={"Retry-After": "5"},
        ) from exc
    metrics = state.metrics
    if outcome.accepted:
        metrics.accepted.labels(family).inc(outcome.accepted)
    for rejection in outcome.rejected:
        metrics.rejected.labels(family, rejection.code).inc()
    return outcome


def _native_values(event: Any) -> StagingValues:
    return row_values(from_native(event))


def _overloaded(state: Any, why: str) -> ApiError:
    state.metrics.overloaded.inc()
    return ApiError(
        503,
        "server.overloaded",
        f"the collector is busy ({why}): retry later",
        headers={"Retry-After": "1", "X-RateLimit-Reset": "1"},
    )


def _rejected(outcome: BatchOutcome) -> list[dict[str, Any]]:
    return [{"index": r.row, "code": r.code, "message": r.message} for r in outcome.rejected]


def _now() -> datetime:
    return datetime.now(UTC)


# -- funnelscope's own batch ----------------------------------------------------------------------


@router.post(
    "/api/v1/events",
    openapi_extra=_json_schema(_NATIVE_BODY),
    summary="Append events in funnelscope's own shape",
)
async def native_events(request: Request) -> dict[str, Any]:
    """A batch of events named by the canonical columns (docs/data-model.md).

    Body ``{"events": [...]}`` or a bare array. Write key as ``Authorization: Bearer``.
    """
    key = require_write_key(request)
    _check_rate(request, key)
    payload = _decode(request, await _read_body(request))
    events = payload.get("events") if isinstance(payload, dict) else payload
    events = _check_size(request, events, "events")
    outcome = await _ingest(request, "native", key, events, _native_values)
    return {"accepted": outcome.accepted, "rejected": _rejected(outcome)}


# -- Segment and RudderStack ----------------------------------------------------------------------

_SEGMENT_ROUTES: Final = {
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    "merge": "merge",  # RudderStack: two identifiers of one person, stored as an alias
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}


def _segment_key(request: Request, payload: Any) -> ApiKey:
    token = key_from_headers(request)
    if token is None and isinstance(payload, dict):
        token = payload.get("writeKey") if isinstance(payload.get("writeKey"), str) else None
    token = token or request.query_params.get("writeKey")
    return check_write_key(request, token)


async def _segment_batch(request: Request) -> dict[str, Any]:
    payload = _decode(request, await _read_body(request))
    if not isinstance(payload, dict):
        raise ApiError(400, "batch.invalid", "the body must be an object with a batch array")
    key = _segment_key(request, payload)
    _check_rate(request, key)
    messages = _check_size(request, payload.get("batch"), "batch")
    now = _now()
    envelope = {k: payload[k] for k in ("context", "integrations", "sentAt") if k in payload}
    outcome = await _ingest(
        request,
        "segment",
        key,
        messages,
        # a partial (C) with positional arguments: no Python frame, no keywords dict per event
        partial(segment_row, envelope, now, None),
    )
    return {"success": True, "accepted": outcome.accepted, "rejected": _rejected(outcome)}


@router.post(
    "/v1/batch",
    openapi_extra=_json_schema(_SEGMENT_BATCH, "application/json", "text/plain"),
    summary="Segment / RudderStack batch",
)
async def segment_batch(request: Request) -> dict[str, Any]:
    """``{"batch": [...], "sentAt", "writeKey"?, "context"?}``; key as Basic auth or writeKey."""
    return await _segment_batch(request)


@router.post("/v1/import", openapi_extra=_json_schema(_SEGMENT_BATCH), include_in_schema=False)
async def rudder_import(request: Request) -> dict[str, Any]:
    return await _segment_batch(request)


@router.post(
    "/v1/b",
    openapi_extra=_json_schema(_SEGMENT_BATCH, "text/plain"),
    summary="analytics.js batching mode",
)
async def segment_browser_batch(request: Request) -> dict[str, Any]:
    """analytics.js ``deliveryStrategy: batching``: ``text/plain`` body with writeKey inside."""
    return await _segment_batch(request)


@router.post(
    "/beacon/v1/batch",
    openapi_extra=_json_schema(_SEGMENT_BATCH, "text/plain"),
    include_in_schema=False,
)
async def rudder_beacon(request: Request) -> dict[str, Any]:
    return await _segment_batch(request)


def _nested(params: Mapping[str, str]) -> dict[str, Any]:
    """Dotted query keys as a message: ``context.page.path=/x`` -> ``{"context": {"page": ...}}``.
    A key that is both a value and a parent (``a=1&a.b=2``) keeps the value."""
    out: dict[str, Any] = {}
    for dotted, value in params.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.setdefault(leaf, value)
    return out


@router.get(
    "/pixel/v1/{call}",
    summary="RudderStack pixel API: a page or track call in the query string",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}}},
)
async def rudder_pixel(request: Request, call: str) -> Response:
    """``GET /pixel/v1/page|track?writeKey=...&anonymousId=...&properties.x=...``: answered with
    a 1x1 GIF. Dotted keys nest (``context.page.url``); each load is one event (an image loaded
    twice is two opens), so a message without ``messageId`` gets a fresh one."""
    if call not in ("page", "track"):
        raise ApiError(404, "route.not_found", f"unknown pixel call {call!r}: use page or track")
    params = {k: v for k, v in request.query_params.items() if k != "writeKey"}
    key = _segment_key(request, None)
    _check_rate(request, key)
    message = _nested(params)
    message["type"] = call
    message.setdefault("messageId", f"pixel-{uuid.uuid4()}")
    now = _now()
    outcome = await _ingest(
        request, "segment", key, [message], lambda m: segment_values(m, received_at=now)
    )
    headers = {"Cache-Control": "no-store"}
    if outcome.rejected:
        headers["X-Funnelscope-Rejected"] = outcome.rejected[0].code
    return Response(PIXEL_GIF, media_type="image/gif", headers=headers)


@router.post(
    "/v1/{call}",
    openapi_extra=_json_schema(_SEGMENT_MESSAGE, "application/json", "text/plain"),
    summary="Segment single call: track, identify, page, screen, group, alias",
)
async def segment_single(request: Request, call: str) -> dict[str, Any]:
    """One message; ``call`` is the type (or analytics.js's one-letter route)."""
    kind = _SEGMENT_ROUTES.get(call)
    if kind is None:
        raise ApiError(
            404,
            "route.not_found",
            f"unknown call {call!r}: use one of {', '.join(_SEGMENT_ROUTES)} or batch",
        )
    payload = _decode(request, await _read_body(request))
    key = _segment_key(request, payload)
    _check_rate(request, key)
    now = _now()
    outcome = await _ingest(
        request,
        "segment",
        key,
        [payload],
        lambda m: segment_values(m, received_at=now, default_type=kind),
    )
    return {"success": True, "accepted": outcome.accepted, "rejected": _rejected(outcome)}


@router.get("/v1/projects/{write_key}/settings", summary="analytics.js settings (CDN)")
async def segment_settings(request: Request, write_key: str) -> dict[str, Any]:
    """What analytics.js fetches at load: points its Segment.io integration at this server."""
    check_write_key(request, write_key)
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{host}/v1",
                "protocol": request.url.scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


# -- PostHog --------------------------------------------------------------------------------------


def _posthog_token(payload: Any, events: list[Any]) -> str | None:
    """PostHog's rule: a batch-level token wins, else every event must carry the same one."""
    if isinstance(payload, dict):
        for name in ("api_key", "token", "$token"):
            if isinstance(payload.get(name), str) and payload[name]:
                return str(payload[name])
    found: set[str] = set()
    for event in events:
        if not isinstance(event, dict):
            continue
        props = event.get("properties")
        candidates = [
            event.get("api_key"),
            event.get("token"),
            event.get("$token"),
            props.get("token") if isinstance(props, dict) else None,
        ]
        token = next((c for c in candidates if isinstance(c, str) and c), None)
        if token is not None:
            found.add(token)
    if len(found) > 1:
        raise ApiError(
            401, "auth.multiple_keys", "events of one request carry different project keys"
        )
    return found.pop() if found else None


def _posthog_sent_at(request: Request, payload: Any) -> datetime | None:
    if isinstance(payload, dict) and payload.get("sent_at"):
        return parse_time(payload["sent_at"])
    for name in ("_", "sent_at"):
        value = request.query_params.get(name)
        if value and value.isdigit():
            parsed = parse_time(value)
            if parsed is not None and parsed >= _POSTHOG_MIN_SENT_AT:
                return parsed
    return None


async def _posthog_raw(request: Request) -> bytes:
    if request.method == "GET" or request.query_params.get("data"):
        data = request.query_params.get("data")
        if data is not None:
            return data.encode("utf-8")
    return await _read_body(request)


async def posthog_capture(request: Request) -> Response:
    """Events as an array, a ``{"batch": [...]}`` object or one event; gzip/base64/lz64 allowed.

    Success is ``{"status": 1}`` (204 with ``?beacon=1``); rejected events are listed.
    """
    payload = _decode(request, await _posthog_raw(request))
    if isinstance(payload, list):
        events = payload
    elif isinstance(payload, dict) and "batch" in payload:
        events = payload["batch"]
    elif isinstance(payload, dict):
        events = [payload]
    else:
        raise ApiError(
            400,
            "batch.invalid",
            "the body must be an event, an array of events or an object with a batch array",
        )
    events = _check_size(request, events, "batch")
    key = check_write_key(request, _posthog_token(payload, events))
    _check_rate(request, key)
    sent_at, now = _posthog_sent_at(request, payload), _now()
    outcome = await _ingest(
        request,
        "posthog",
        key,
        events,
        partial(posthog_row, sent_at, now),
    )
    if request.query_params.get("beacon") == "1":
        return Response(status_code=204)
    body: dict[str, Any] = {"status": 1}
    if outcome.rejected:
        body["rejected"] = _rejected(outcome)
    return JSONResponse(body)


_POSTHOG_ROUTES: Final = (  # (path, methods, in the OpenAPI schema)
    ("/batch/", ("POST",), True),
    ("/batch", ("POST",), False),
    ("/e/", ("GET", "POST"), True),
    ("/e", ("GET", "POST"), False),
    ("/i/v0/e/", ("GET", "POST"), True),
    ("/i/v0/e", ("GET", "POST"), False),
    ("/capture/", ("GET", "POST"), True),
    ("/capture", ("GET", "POST"), False),
    # legacy aliases older posthog-js / mixpanel-style clients still call: same payloads
    ("/track/", ("GET", "POST"), False),
    ("/track", ("GET", "POST"), False),
    ("/engage/", ("GET", "POST"), False),
    ("/engage", ("GET", "POST"), False),
)
_DATA_PARAMETER: Final = {
    "parameters": [
        {
            "name": "data",
            "in": "query",
            "required": True,
            "description": "the event(s) as JSON, base64 or LZ-string (see `compression`)",
            "schema": {"type": "string"},
        },
        {
            "name": "compression",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["gzip-js", "base64", "lz64"]},
        },
    ]
}
for _path, _methods, _listed in _POSTHOG_ROUTES:
    for _method in _methods:
        router.add_api_route(
            _path,
            posthog_capture,
            methods=[_method],
            include_in_schema=_listed,
            operation_id=f"posthog_{_method.lower()}_{_path.strip('/').replace('/', '_')}",
            summary=f"PostHog capture ({_path})",
            openapi_extra=(
                _json_schema(_POSTHOG_BODY, "application/json", "text/plain")
                if _method == "POST"
                else _DATA_PARAMETER
            ),
        )


@router.post(
    "/i/v1/analytics/events",
    openapi_extra=_json_schema(_POSTHOG_BODY),
    summary="PostHog capture v1 (posthog-python capture_mode='v1')",
)
async def posthog_v1(request: Request) -> dict[str, Any]:
    """``{"created_at", "batch": [...]}`` with ``Authorization: Bearer <project key>``.

    Answers ``{"results": {uuid: {"result": "ok" | "drop"}}}``, as the v1 SDKs require.
    """
    key = check_write_key(request, key_from_headers(request))
    _check_rate(request, key)
    payload = _decode(request, await _read_body(request))
    events = payload.get("batch") if isinstance(payload, dict) else None
    events = _check_size(request, events, "batch")
    created = payload.get("created_at") if isinstance(payload, dict) else None
    now = _now()
    outcome = await _ingest(
        request,
        "posthog",
        key,
        events,
        partial(posthog_row, created, now),
    )
    dropped = {r.row: r for r in outcome.rejected}
    results: dict[str, Any] = {}
    for index, event in enumerate(events):
        uuid = event.get("uuid") if isinstance(event, dict) else None
        if isinstance(uuid, str) and uuid:
            rejection = dropped.get(index)
            results[uuid] = (
                {"result": "drop", "code": rejection.code, "message": rejection.message}
                if rejection
                else {"result": "ok"}
            )
    return {"results": results}


@router.api_route("/flags/", methods=["GET", "POST"], include_in_schema=False)
@router.api_route("/flags", methods=["GET", "POST"], include_in_schema=False)
@router.api_route("/decide/", methods=["GET", "POST"], include_in_schema=False)
@router.api_route("/decide", methods=["GET", "POST"], include_in_schema=False)
async def posthog_flags() -> dict[str, Any]:
    """Feature flags are not funnelscope's business: answer "no flags" so SDKs carry on."""
    return {
        "flags": {},
        "featureFlags": {},
        "featureFlagPayloads": {},
        "errorsWhileComputingFlags": False,
        "sessionRecording": False,
        "supportedCompression": ["gzip", "gzip-js", "lz64"],
    }


# -- Snowplow -------------------------------------------------------------------------------------


def _snowplow_keys(request: Request, events: list[Any]) -> list[ApiKey]:
    """The write key of each event: a header key for all, else each event's app id (``aid``)."""
    if not request.app.state.settings.require_auth:
        return [check_write_key(request, None)] * len(events)
    token = key_from_headers(request)
    if token is not None:
        return [check_write_key(request, token)] * len(events)
    ring = request.app.state.keys
    found: list[ApiKey] = []
    for event in events:
        aid = event.get("aid") if isinstance(event, dict) else None
        key = ring.app_key(aid if isinstance(aid, str) else None)
        if key is None:
            raise ApiError(
                401,
                "auth.unknown_app_id",
                f"app id {aid!r} is not a write key's source: set the tracker's "
                "appId to a source created with `funnelscope keys create`",
            )
        found.append(key)
    return found


async def _snowplow(request: Request, events: list[Any]) -> BatchOutcome:
    keys = _snowplow_keys(request, events)
    for key in {k.key_id: k for k in keys}.values():
        _check_rate(request, key)
    now = _now()
    # one source per event, consumed in order whether or not the event maps
    sources = iter([f"snowplow:{k.source}" for k in keys])

    def mapper(params: Any) -> StagingValues:
        source = next(sources)
        row = from_snowplow(params, received_at=now)
        row["source"] = source
        return row_values(row)

    return await _ingest(request, "snowplow", keys[0], events, mapper)


@router.post(
    "/com.snowplowanalytics.snowplow/tp2",
    openapi_extra=_json_schema(_SNOWPLOW_BODY),
    summary="Snowplow tracker protocol, POST",
)
async def snowplow_post(request: Request) -> dict[str, Any]:
    """``{"schema": "iglu:.../payload_data/...", "data": [{"e": ..., ...}, ...]}``."""
    payload = _decode(request, await _read_body(request))
    data = payload.get("data") if isinstance(payload, dict) else None
    events = _check_size(request, data, "data")
    outcome = await _snowplow(request, events)
    return {"accepted": outcome.accepted, "rejected": _rejected(outcome)}


@router.get(
    "/i",
    summary="Snowplow tracker protocol, GET pixel",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}}},
)
async def snowplow_pixel(request: Request) -> Response:
    """One event in the query string; answered with a 1x1 GIF."""
    params = dict(request.query_params)
    if not params:
        raise ApiError(400, "batch.empty", "the query string carries no event")
    outcome = await _snowplow(request, [params])
    headers = {"Cache-Control": "no-store"}
    if outcome.rejected:
        headers["X-Funnelscope-Rejected"] = outcome.rejected[0].code
    return Response(PIXEL_GIF, media_type="image/gif", headers=headers)


# -- the short path ----------------------------------------------------------------------------

#: The routes SDKs send their bulk traffic to, by exact path: the coroutine FastAPI's route
#: runs for a POST there. :class:`funnelscope.api.app.CollectorApp` calls it directly for a
#: POST without an ``Origin`` header (server SDKs), skipping the framework's routing,
#: dependency and middleware layers (~80-100 us per request); everything else, browsers' CORS
#: requests included, goes through FastAPI.
HOT_ROUTES: Final[Mapping[str, Callable[[Request], Awaitable[Any]]]] = {
    "/api/v1/events": native_events,
    "/v1/batch": segment_batch,
    "/v1/import": rudder_import,
    "/v1/b": segment_browser_batch,
    "/beacon/v1/batch": rudder_beacon,
    **{path: posthog_capture for path, methods, _ in _POSTHOG_ROUTES if "POST" in methods},
}


# -- ad spend -------------------------------------------------------------------------------------


@router.post(
    "/api/v1/ad_spend",
    openapi_extra=_json_schema(_AD_SPEND_BODY),
    summary="Append or replace ad spend rows",
)
async def ad_spend(request: Request) -> dict[str, Any]:
    """``{"rows": [{date, channel, source, campaign, impressions, clicks, spend, currency}]}``.

    Rows replace stored rows with the same (date, channel, source, campaign).
    """
    import pyarrow as pa

    from funnelscope.ingest.facts import append_facts

    key = require_write_key(request)
    _check_rate(request, key)
    payload = _decode(request, await _read_body(request))
    rows = payload.get("rows") if isinstance(payload, dict) else payload
    rows = _check_size(request, rows, "rows")
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
    if bad:
        raise ApiError(400, "batch.invalid", f"rows {bad[:10]} are not JSON objects")
    columns = sorted({str(k) for r in rows for k in r})
    table = pa.table({c: pa.array([_cell(r.get(c)) for r in rows], pa.string()) for c in columns})
    store = request.app.state.workspace.store
    try:
        report = await run_in_threadpool(
            append_facts, store, "ad_spend", table, source=f"api:{key.source}", received_at=_now()
        )
    except InvalidInputError as exc:
        raise to_api_error(exc) from None
    return {
        "accepted": report.accepted,
        "inserted": report.inserted,
        "rejected": [
            {"index": r.row, "code": r.code, "message": r.message} for r in report.rejections
        ],
    }


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
