"""One SDK message -> one staging row: Segment / RudderStack, PostHog and Snowplow.

Each function takes one decoded message (a dict, or Snowplow's string parameters) and returns a
dict with exactly the keys of :data:`~funnelscope.events.schema.STAGING_COLUMNS` (text or None),
ready for :func:`funnelscope.ingest.pipeline.append_events`. The functions are pure: the receive
time (``now`` / ``received_at``) is passed in, nothing reads the clock.

What is lifted into columns (docs/collector.md has the full table):

* ids: ``messageId`` / ``uuid`` / ``eid`` -> ``event_id``; a message without one gets a
  content hash (``sha1:...``) so that a retried copy still deduplicates;
* identity: ``userId`` / ``anonymousId`` / ``previousId`` (alias), PostHog ``distinct_id`` with
  ``$device_id`` / ``$anon_distinct_id`` / ``alias``, Snowplow ``uid`` / ``duid`` / ``nuid``;
* page (``context.page``, PostHog ``$current_url``, Snowplow ``url`` / ``page`` / ``refr``), UTM
  (``context.campaign``, ``utm_*`` properties, else the page URL's query), device, OS, browser
  (from the user agent when not given), country (explicit, else the locale's region);
* commerce: revenue from ``revenue``, then ``value``, then ``total``; ``currency``; ``order_id``
  (or ``transaction_id``); ``cart_id``; ``products[]`` / ``items[]`` as canonical line items;
  a product-level event (``product_id`` or ``sku`` with no list) becomes a one-item list.

Lifted fields leave ``properties``; person traits land in ``properties.traits`` (Segment
``traits``, Rudder ``context.traits``, PostHog ``$set``, Snowplow's user entity) and the rest of
the SDK context in ``properties.context``. A message that cannot be mapped at all raises
:class:`~funnelscope.errors.InvalidEventError` with a stable code; everything else (missing ids,
bad timestamps, bad money) is left to the pipeline's SQL validation, so codes stay the same
whichever route an event came by.

Where things are: this module holds the JSON message mappers (Segment / RudderStack, PostHog,
funnelscope's own shape) and is the public entry point for all of them;
:mod:`funnelscope.ingest.snowplow` holds the Snowplow tracker protocol (:func:`from_snowplow`,
re-exported here); :mod:`funnelscope.ingest.record_fields` holds the field converters they
share (text and ids, time and clock skew, page / UTM / device context, commerce, the row).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.events.vocabulary import normalise_items
from funnelscope.ingest.record_fields import (
    MAX_DISTINCT_ID,
    NO_COMMERCE,
    NO_UTM,
    UTM_COLUMN_SET,
    StagingValues,
    as_device_type,
    as_ident,
    as_text,
    compact_json,
    content_id,
    corrected_time,
    country_of_locale,
    country_of_locale_text,
    empty_row,
    invalid_event,
    iso_utc,
    lenient_b64decode,
    lift_commerce,
    parse_time,
    row_values,
    url_parts,
    user_agent_parts,
    utm_columns,
)
from funnelscope.ingest.snowplow import from_snowplow

# The package's entry points for SDK records: the ones defined in snowplow.py and
# record_fields.py (from_snowplow, row_values, parse_time, ...) are re-exported here, so callers
# import every mapper from one place.
__all__ = [
    "SEGMENT_TYPES",
    "StagingValues",
    "from_native",
    "from_posthog",
    "from_segment",
    "from_snowplow",
    "lenient_b64decode",
    "parse_time",
    "posthog_row",
    "posthog_values",
    "row_values",
    "segment_row",
    "segment_values",
    "user_agent_parts",
]

#: Segment call types and the event name each one is stored under (track uses ``event``).
SEGMENT_TYPES: Final = ("track", "page", "screen", "identify", "group", "alias")


# -- Segment / RudderStack ------------------------------------------------------------------


def _merged(envelope_part: Any, own: Any) -> dict[str, Any]:
    base = dict(envelope_part) if isinstance(envelope_part, dict) else {}
    if isinstance(own, dict):
        base.update(own)
    return base


_SEGMENT_KINDS: Final = frozenset(SEGMENT_TYPES)
#: Context fields lifted into columns or traits (``integrations`` is dropped); the rest is kept
#: in ``properties.context``.
_SEGMENT_LIFTED: Final = frozenset(
    {"sessionId", "traits", "page", "campaign", "userAgent", "device", "os", "location"}
    | {"integrations"}
)
_EMPTY: Final[Mapping[str, Any]] = {}


def _from_merge(
    msg: dict[str, Any], *, envelope: Mapping[str, Any] | None, received_at: datetime | None
) -> StagingValues:
    """RudderStack's ``merge`` call (``/v1/merge``, or ``type: merge`` in a batch) as an alias.

    ``mergeProperties`` names two identifiers of one person (``[{type, value}, {type, value}]``,
    e.g. an anonymous id and a user id, or an email and a phone number used as user ids); the
    first is linked to the second like ``alias(previousId=first, userId=second)``, so identity
    stitching counts them as one person. Their types are kept in ``properties.merge_types``.
    """
    raw = msg.get("mergeProperties")
    pairs: list[dict[str, Any]] = (
        [p for p in raw if isinstance(p, dict)] if isinstance(raw, list) and len(raw) == 2 else []
    )
    values = [as_text(p.get("value")) for p in pairs]
    if len(values) != 2 or values[0] is None or values[1] is None:
        raise invalid_event(
            "event.bad_merge",
            "mergeProperties",
            "mergeProperties must be two objects {type, value}, each with a value: "
            "the two identifiers to merge",
        )
    alias = {k: v for k, v in msg.items() if k != "mergeProperties"}
    own = alias.get("properties")
    props: dict[str, Any] = own if isinstance(own, dict) else {}
    types = [as_text(p.get("type")) for p in pairs]
    alias.update(
        type="alias",
        previousId=values[0],
        userId=values[1],
        properties={**props, "merge_types": types},
    )
    return segment_values(alias, envelope=envelope, received_at=received_at)


def from_segment(
    msg: Mapping[str, Any],
    *,
    envelope: Mapping[str, Any] | None = None,
    received_at: datetime | None = None,
    default_type: str | None = None,
) -> dict[str, str | None]:
    """One Segment (or RudderStack) message as a staging row.

    The row is :func:`segment_values` named by :data:`STAGING_COLUMNS` (the collector uses the
    values; files, tests and scripts use this).

    Parameters
    ----------
    msg
        A message of a ``/v1/batch`` ``batch[]`` or the body of ``/v1/track`` and friends.
    envelope
        The batch object around ``msg``: its ``context`` and ``integrations`` are merged under
        the message's own, and its ``sentAt`` is used for clock-skew correction.
    received_at
        When the collector received the message. With a ``sentAt`` (the message's or the
        envelope's) the event time becomes ``received_at - (sentAt - timestamp)``, which cancels
        a device clock that is off; without it the timestamp is taken as sent.
    default_type
        The call type implied by the route (``/v1/track`` -> ``"track"``) for messages that
        carry no ``type``.

    Raises
    ------
    InvalidEventError
        ``event.not_an_object``, ``event.unknown_type``, ``event.invalid_properties``.

    Examples
    --------
    >>> row = from_segment({"type": "track", "event": "Order Completed", "userId": "u1",
    ...                     "messageId": "m1", "timestamp": "2024-05-01T10:00:00Z",
    ...                     "properties": {"order_id": "o1", "revenue": 30, "currency": "EUR"}})
    >>> row["event"], row["order_id"], row["revenue"], row["currency"]
    ('Order Completed', 'o1', '30', 'EUR')
    """
    return dict(
        zip(
            STAGING_COLUMNS,
            segment_values(
                msg, envelope=envelope, received_at=received_at, default_type=default_type
            ),
            strict=True,
        )
    )


def segment_values(
    msg: Mapping[str, Any],
    *,
    envelope: Mapping[str, Any] | None = None,
    received_at: datetime | None = None,
    default_type: str | None = None,
) -> StagingValues:
    """:func:`from_segment` as a tuple of values in :data:`STAGING_COLUMNS` order.

    The collector's hot path: a tuple costs a fifth of a 28-key dict, and the ack stage turns a
    group's tuples into columns with one ``zip(*values)`` (see :mod:`funnelscope.api.writer`).

    Examples
    --------
    >>> values = segment_values({"type": "page", "anonymousId": "a1", "messageId": "m1"})
    >>> dict(zip(STAGING_COLUMNS, values))["event"]
    'page'
    """
    return segment_row(envelope, received_at, default_type, msg)


def segment_row(
    envelope: Mapping[str, Any] | None,
    received_at: datetime | None,
    default_type: str | None,
    msg: Mapping[str, Any],
) -> StagingValues:
    """:func:`segment_values` with positional parameters, the message last.

    The collector maps a batch with ``partial(segment_row, envelope, received_at, None)``:
    a partial with positional arguments only is called in ~60 ns, one with keywords in
    ~175 ns (it builds a dict of keywords per call).

    Examples
    --------
    >>> values = segment_row(None, None, None, {"type": "page", "anonymousId": "a1"})
    >>> dict(zip(STAGING_COLUMNS, values))["anonymous_id"]
    'a1'
    """
    # One pass, locals only, the row filled at the end: this runs once per event on the
    # collector's hot path (benchmarks/collector_cpu.py measures it). The context is read,
    # never copied: what is not lifted is kept by one filtering comprehension.
    if type(msg) is not dict:
        if not isinstance(msg, Mapping):
            raise invalid_event("event.not_an_object", "", "each message must be a JSON object")
        msg = dict(msg)
    get = msg.get
    kind = get("type")
    if type(kind) is not str or kind not in _SEGMENT_KINDS:
        kind = as_text(kind) or default_type or ("track" if "event" in msg else None)
        kind = kind.lower() if kind else None
        if kind == "merge":
            return _from_merge(msg, envelope=envelope, received_at=received_at)
        if kind not in _SEGMENT_KINDS:
            raise invalid_event(
                "event.unknown_type",
                "type",
                f"type must be one of {', '.join(SEGMENT_TYPES)} (got {kind!r})",
            )
    raw_props = get("properties")
    if raw_props is not None and not isinstance(raw_props, dict):
        raise invalid_event(
            "event.invalid_properties", "properties", "properties must be an object"
        )
    props: dict[str, Any] = dict(raw_props) if raw_props else {}

    env_context = envelope.get("context") if envelope else None
    own_context = get("context")
    context: Mapping[str, Any]
    if isinstance(env_context, dict):
        context = _merged(env_context, own_context)
    else:
        context = own_context if isinstance(own_context, dict) else _EMPTY
    ctx = context.get

    # as_ident() and as_text() inlined for text without NUL (three ids and the name per event)
    v = get("messageId")
    event_id = (
        (v.strip()[:MAX_DISTINCT_ID] or None) if type(v) is str and "\x00" not in v else as_ident(v)
    ) or content_id("segment", dict(msg))
    if kind == "track":
        v = get("event")
        event = v.strip() or None if type(v) is str else as_text(v)
    else:
        event = kind
    v = get("userId")
    user_id = (
        (v.strip()[:MAX_DISTINCT_ID] or None) if type(v) is str and "\x00" not in v else as_ident(v)
    )
    v = get("anonymousId")
    anonymous_id = (
        (v.strip()[:MAX_DISTINCT_ID] or None) if type(v) is str and "\x00" not in v else as_ident(v)
    )
    timestamp = get("timestamp") or get("originalTimestamp")
    ts_text: str | None
    if timestamp is None and received_at is not None:
        ts_text = iso_utc(received_at)
    else:
        sent_at = get("sentAt") or (envelope.get("sentAt") if envelope else None)
        ts_text = corrected_time(timestamp, sent_at, received_at)
    session = ctx("sessionId")
    session_prop = props.pop("session_id", None)
    session_id = (None if session is None else as_text(session)) or (
        None if session_prop is None else as_text(session_prop)
    )

    if kind == "group":
        props["group_id"] = as_ident(get("groupId"))
        if isinstance(own_traits := get("traits"), dict):
            props["group_traits"] = dict(own_traits)
    else:
        ctx_traits, own_traits = ctx("traits"), get("traits")
        if ctx_traits or own_traits:
            traits = _merged(ctx_traits, own_traits)
            if traits:
                props["traits"] = traits

    page = ctx("page")
    if kind in ("page", "screen"):
        # page calls repeat the page fields in properties; the context wins, properties fill in
        page = dict(page) if isinstance(page, dict) else {}
        for key in ("url", "path", "title", "referrer", "search"):
            value = props.pop(key, None)
            if value is not None and page.get(key) is None:
                page[key] = value
        name = as_text(get("name"))
        if name:
            props["name"] = name
            page.setdefault("title", name)
        if (category := as_text(get("category"))) is not None:
            props["category"] = category
    elif not isinstance(page, dict):
        page = _EMPTY
    if page:
        # as_text() inlined for the common case (str or absent): four calls saved per event
        page_get = page.get
        v = page_get("url")
        page_url = None if v is None else v.strip() or None if type(v) is str else as_text(v)
        v = page_get("path")
        page_path = None if v is None else v.strip() or None if type(v) is str else as_text(v)
        v = page_get("title")
        page_title = None if v is None else v.strip() or None if type(v) is str else as_text(v)
        v = page_get("referrer")
        referrer = None if v is None else v.strip() or None if type(v) is str else as_text(v)
    else:
        page_url = page_path = page_title = referrer = None

    campaign = ctx("campaign")
    if isinstance(campaign, dict):
        explicit_utm: tuple[str | None, ...] = (
            as_text(campaign.get("source")),
            as_text(campaign.get("medium")),
            as_text(campaign.get("name")) or as_text(campaign.get("campaign")),
            as_text(campaign.get("term")),
            as_text(campaign.get("content")),
        )
    else:
        explicit_utm = NO_UTM

    v = ctx("userAgent")
    ua = None if v is None else v.strip() or None if type(v) is str else as_text(v)
    browser, system, device = user_agent_parts(ua)
    dev = ctx("device")
    device_type = (as_device_type(dev.get("type")) if isinstance(dev, dict) else None) or device
    os_ctx = ctx("os")
    os_name = (as_text(os_ctx.get("name")) if isinstance(os_ctx, dict) else None) or system
    location = ctx("location")
    country = (as_text(location.get("country")) if isinstance(location, dict) else None) or (
        country_of_locale_text(v.strip())
        if type(v := ctx("locale")) is str
        else country_of_locale(v)
    )

    commerce = lift_commerce(props, lift_product=True) if kind == "track" else NO_COMMERCE
    if context:
        keep = {k: v for k, v in context.items() if v is not None and k not in _SEGMENT_LIFTED}
    else:
        keep = {}
    if ua:
        keep["user_agent"] = ua
    if isinstance(dev, dict) and dev:
        keep["device"] = dict(dev)
    if keep:
        props["context"] = keep

    url_path, url_utm, url_columns = url_parts(page_url)
    if explicit_utm is NO_UTM and props.keys().isdisjoint(UTM_COLUMN_SET):
        utm = url_columns  # no campaign context, no utm_* properties: the URL's tags
    else:
        utm = utm_columns(props, url_utm, explicit_utm)
    utm_source, utm_medium, utm_campaign, utm_term, utm_content = utm
    revenue, currency, order_id, cart_id, items, product_id = commerce
    # STAGING_COLUMNS order (tests/unit/test_record_columns.py checks it against the dict rows);
    # properties last-but-not-least: utm_columns() above removes the utm_* properties it lifts
    return (
        event_id,
        ts_text,
        event,
        user_id,
        anonymous_id,
        session_id,
        compact_json(props),
        page_url,
        page_path if page_path is not None else url_path,
        page_title,
        referrer,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
        device_type,
        os_name,
        browser,
        country,
        revenue,
        currency,
        order_id,
        cart_id,
        product_id,
        items,
        None,  # source: the route's
        as_ident(get("previousId")) if kind == "alias" else None,
    )


# -- PostHog -----------------------------------------------------------------------------------


def from_posthog(
    event: Mapping[str, Any],
    *,
    sent_at: datetime | str | None = None,
    now: datetime,
) -> dict[str, str | None]:
    """One PostHog event (posthog-js, posthog-python, v0 or v1 shape) as a staging row.

    The event time follows PostHog's capture: ``now - offset`` when ``offset`` (ms) is given,
    else ``now + (timestamp - sent_at)`` when both are known (unless ``$ignore_sent_at``), else
    ``timestamp``, else ``now``.

    Identity: ``$identify`` links ``$anon_distinct_id`` to ``distinct_id``; ``$create_alias``
    links ``distinct_id`` (previous) to ``properties.alias`` (user); an event whose
    ``distinct_id`` is its ``$device_id``, or marked ``$user_state: anonymous`` or
    ``$process_person_profile: false``, is anonymous; otherwise ``distinct_id`` is the user and
    ``$device_id`` its anonymous id.

    Raises
    ------
    InvalidEventError
        ``event.not_an_object``, ``event.invalid_properties``.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> now = datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC)
    >>> row = from_posthog({"event": "$pageview", "distinct_id": "u1", "uuid": "e1",
    ...                     "timestamp": "2024-05-01T09:00:00Z",
    ...                     "properties": {"$current_url": "https://s.example/?utm_source=x"}},
    ...                    sent_at="2024-05-01T09:00:01Z", now=now)
    >>> row["timestamp"], row["page_path"], row["utm_source"]
    ('2024-05-01T10:00:04+00:00', '/', 'x')
    """
    return dict(zip(STAGING_COLUMNS, posthog_values(event, sent_at=sent_at, now=now), strict=True))


def posthog_values(
    event: Mapping[str, Any],
    *,
    sent_at: datetime | str | None = None,
    now: datetime,
) -> StagingValues:
    """:func:`from_posthog` as a tuple of values in :data:`STAGING_COLUMNS` order (the
    collector's PostHog routes; see :func:`segment_values`).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> values = posthog_values({"event": "$pageview", "distinct_id": "u1", "uuid": "e1"},
    ...                         now=datetime(2024, 5, 1, 10, 0, tzinfo=UTC))
    >>> dict(zip(STAGING_COLUMNS, values))["user_id"]
    'u1'
    """
    return posthog_row(sent_at, now, event)


def posthog_row(
    sent_at: datetime | str | None, now: datetime, event: Mapping[str, Any]
) -> StagingValues:
    """:func:`posthog_values` with positional parameters, the event last (see
    :func:`segment_row`: the collector's ``partial(posthog_row, sent_at, now)``).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> values = posthog_row(None, datetime(2024, 5, 1, tzinfo=UTC), {"distinct_id": "u1"})
    >>> dict(zip(STAGING_COLUMNS, values))["user_id"]
    'u1'
    """
    if not isinstance(event, dict):
        if not isinstance(event, Mapping):
            raise invalid_event("event.not_an_object", "", "each event must be a JSON object")
        event = dict(event)
    get = event.get
    raw_props = get("properties")
    if raw_props is not None and not isinstance(raw_props, dict):
        raise invalid_event(
            "event.invalid_properties", "properties", "properties must be an object"
        )
    props: dict[str, Any] = dict(raw_props or {})
    pop = props.pop
    name = as_text(get("event"))
    uuid = as_text(get("uuid"))
    event_id = uuid[:MAX_DISTINCT_ID] if uuid else content_id("posthog", dict(event))

    distinct = as_ident(
        event["distinct_id"]
        if get("distinct_id") is not None
        else get("$distinct_id", props.get("distinct_id"))
    )
    for key in ("token", "distinct_id", "$token", "api_key"):
        pop(key, None)
    device = as_ident(pop("$device_id", None))
    anon_before = as_ident(pop("$anon_distinct_id", None))
    state = pop("$user_state", None)
    profile = pop("$process_person_profile", None)
    user_id = anonymous_id = previous_id = None
    if name == "$create_alias":
        user_id = as_ident(pop("alias", None))
        previous_id = distinct
    elif name == "$identify":
        user_id = distinct
        anonymous_id = anon_before or (device if device != distinct else None)
    elif (
        state == "anonymous"
        or profile is False
        or name == "$groupidentify"
        or (device is not None and device == distinct)
    ):
        anonymous_id = distinct
    else:
        user_id = distinct
        anonymous_id = device if device != distinct else None

    offset = get("offset")
    timestamp: str | None
    if isinstance(offset, int | float) and not isinstance(offset, bool):
        try:
            timestamp = iso_utc(now - timedelta(milliseconds=float(offset)))
        except OverflowError:
            timestamp = None
    elif get("timestamp") is not None:
        skew_ref = None if pop("$ignore_sent_at", False) else sent_at
        timestamp = corrected_time(get("timestamp"), skew_ref, now)
    else:
        timestamp = iso_utc(now)

    # most events carry neither: no merged dicts built for nothing
    set_props, set_event = pop("$set", None), get("$set")
    traits = _merged(set_props, set_event) if set_props or set_event else None
    once_props, once_event = pop("$set_once", None), get("$set_once")
    traits_once = _merged(once_props, once_event) if once_props or once_event else None
    if name == "$groupidentify":
        props["group_type"] = pop("$group_type", None)
        props["group_id"] = as_ident(pop("$group_key", None))
        if isinstance(group_set := pop("$group_set", None), dict):
            props["group_traits"] = dict(group_set)
    if traits:
        props["traits"] = traits
    if traits_once:
        props["traits_once"] = traits_once

    session_id = as_text(pop("$session_id", None))
    page_url = as_text(pop("$current_url", None))
    page_path = as_text(pop("$pathname", None))
    page_title = as_text(pop("title", None)) if name == "$pageview" else None
    referrer = as_text(pop("$referrer", None))
    if referrer == "$direct":
        referrer = None
    ua = as_text(props.get("$raw_user_agent"))
    ua_browser, ua_os, ua_device = user_agent_parts(ua)
    # server SDKs report the *server's* platform as $os: not the visitor's, so not kept
    is_server = props.get("$is_server") is True
    browser = as_text(props.get("$browser")) or ua_browser
    os_name = (None if is_server else as_text(props.get("$os"))) or ua_os
    device_type = as_device_type(props.get("$device_type")) or ua_device
    country = as_text(props.get("$geoip_country_code")) or country_of_locale(
        props.get("$locale") or props.get("$browser_language")
    )
    context: dict[str, Any] = {}
    if (ip := as_text(props.get("$ip"))) is not None:
        context["ip"] = ip
    if ua:
        context["user_agent"] = ua
    if (lib := as_text(props.get("$lib"))) is not None:
        context["library"] = {"name": lib, "version": as_text(props.get("$lib_version"))}
    revenue, currency, order_id, cart_id, items, product_id = lift_commerce(
        props, lift_product=True
    )
    # what is left of PostHog's own $-properties is SDK bookkeeping ($lib, $geoip_disable, ...)
    props = {k: v for k, v in props.items() if not k.startswith("$")}
    if context:
        props["context"] = context
    # finish_row(), on locals: the URL's path and tags fill in, utm_* properties win over them
    url_path, url_utm, url_columns = url_parts(page_url)
    if page_path is None:
        page_path = url_path
    utm = (
        url_columns
        if props.keys().isdisjoint(UTM_COLUMN_SET)
        else utm_columns(props, url_utm, NO_UTM)
    )
    return (
        event_id,
        timestamp,
        name,
        user_id,
        anonymous_id,
        session_id,
        compact_json(props),
        page_url,
        page_path,
        page_title,
        referrer,
        *utm,
        device_type,
        os_name,
        browser,
        country,
        revenue,
        currency,
        order_id,
        cart_id,
        product_id,
        items,
        None,  # source: the route's
        previous_id,
    )


# -- funnelscope's own shape -----------------------------------------------------------------------


def from_native(event: Mapping[str, Any]) -> dict[str, str | None]:
    """One event of ``POST /api/v1/events``: staging columns by name, ``properties`` an object.

    Columns left out stay empty; ``properties`` and ``items`` may be objects/lists (serialised
    here) or JSON text. Unknown top-level keys are kept in ``properties``.

    Examples
    --------
    >>> row = from_native({"event_id": "e1", "event": "Product Viewed", "user_id": "u1",
    ...                    "timestamp": "2024-05-01T10:00:00Z", "plan": "pro"})
    >>> row["properties"]
    '{"plan":"pro"}'
    """
    if not isinstance(event, Mapping):
        raise invalid_event("event.not_an_object", "", "each event must be a JSON object")
    raw_props = event.get("properties")
    if raw_props is not None and not isinstance(raw_props, dict | str):
        raise invalid_event(
            "event.invalid_properties", "properties", "properties must be an object"
        )
    row = empty_row()
    extra: dict[str, Any] = {}
    for key, value in event.items():
        if key == "properties":
            continue
        if key in row:
            if key == "items" and isinstance(value, list):
                row[key] = compact_json(normalise_items(value))
            else:
                row[key] = (
                    as_text(value) if not isinstance(value, dict | list) else compact_json(value)
                )
        else:
            extra[key] = value
    if isinstance(raw_props, str):
        if extra:
            try:
                merged = json.loads(raw_props)
            except ValueError:
                row["properties"] = raw_props  # the pipeline rejects it with its own code
                return row
            if isinstance(merged, dict):
                merged.update(extra)
                row["properties"] = compact_json(merged)
            else:
                row["properties"] = raw_props
        else:
            row["properties"] = raw_props
    elif raw_props or extra:
        row["properties"] = compact_json({**(raw_props or {}), **extra})
    return row
