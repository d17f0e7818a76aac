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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from pydantic_core import to_json

from funnelscope.errors import InvalidEventError, Problem
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.events.vocabulary import normalise_items

__all__ = [
    "SEGMENT_TYPES",
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
#: PostHog truncates distinct ids to this many characters; so do we.
MAX_DISTINCT_ID: Final = 200

_PRODUCT_FIELDS: Final = (
    "product_id",
    "sku",
    "name",
    "category",
    "brand",
    "variant",
    "price",
    "quantity",
)
_UTM_KEYS: Final = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "campaign": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}
_UTM_COLUMNS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


#: One staging row as a tuple, in :data:`STAGING_COLUMNS` order (the collector's row shape).
StagingValues = tuple[str | None, ...]


def _invalid(code: str, location: str, message: str) -> InvalidEventError:
    return InvalidEventError([Problem(code, location, message)])


# -- small converters ---------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A scalar as text; None, empty strings and containers become None."""
    if type(value) is str:  # the common case first: this runs ~20 times per event
        return value.strip() or None
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


def _ident(value: Any) -> str | None:
    """An id as PostHog treats it: any JSON value stringified, NUL replaced, 200 chars at most."""
    if type(value) is str:  # 3 per event: skip the general path (NUL is not whitespace)
        text = value.strip()
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd")
        return text[:MAX_DISTINCT_ID] or None
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = text.replace("\x00", "\ufffd").strip()
    return text[:MAX_DISTINCT_ID] or None


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def _dumps(value: Any) -> str:
    """Compact JSON text. pydantic-core's encoder (Rust, installed with FastAPI) is ~4x faster
    than the standard library's; the two differ only in how they spell some floats (``1e-7``
    vs ``1e-07``). What it refuses (lone surrogates) the standard library writes."""
    try:
        return to_json(value, fallback=str).decode()
    except (ValueError, TypeError, UnicodeError):
        return _ENCODER.encode(value)


def _content_id(kind: str, message: Any) -> str:
    """A stable id for a message that came without one: a retry of it hashes the same."""
    digest = hashlib.sha1(  # a content fingerprint, not a security boundary
        json.dumps(message, sort_keys=True, default=str).encode("utf-8", "surrogatepass")
    ).hexdigest()
    return f"{kind}:sha1:{digest}"


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 text or epoch seconds / milliseconds as an aware UTC datetime; None if neither."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool) or value is None:
        return None
    # ISO text always has a '-': the epoch pattern is only tried on text without one
    if isinstance(value, int | float) or (
        isinstance(value, str) and "-" not in value and _EPOCH.fullmatch(value)
    ):
        try:
            number = float(value)
            return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_EPOCH = re.compile(r"\s*[0-9]{9,13}(\.[0-9]+)?\s*")


#: A batch's messages share one sentAt: parse each distinct one once.
_parse_sent_at: Final = lru_cache(maxsize=256)(parse_time)


def _iso(value: datetime) -> str:
    """ISO text in UTC (``...+00:00``). A naive value is UTC already (see :func:`_naive_utc`):
    formatting a naive datetime is twice as fast as an aware one."""
    if value.tzinfo is None:
        return value.isoformat() + "+00:00"
    if value.tzinfo is UTC:
        return value.replace(tzinfo=None).isoformat() + "+00:00"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00"


#: Every message of a request shares its receive time: convert it once.
@lru_cache(maxsize=64)
def _naive_utc(value: datetime) -> datetime:
    """An aware datetime as naive UTC (only for arithmetic and :func:`_iso`)."""
    return value.astimezone(UTC).replace(tzinfo=None)


@lru_cache(maxsize=256)
def _skew(sent_at: str, now: datetime) -> timedelta | None:
    """``now - sent_at`` for a batch's messages (they share both); None when not computable."""
    sent = _parse_sent_at(sent_at)
    if sent is None:
        return None
    try:
        return _naive_utc(now) - sent.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return None


#: The last (sent_at, now, skew) :func:`_request_skew` answered. A request's messages share
#: the same two objects, so an identity test finds it (exact: the same objects give the same
#: skew) where the lru_cache would hash an aware datetime per event. One tuple, replaced
#: whole: a thread mapping a big batch at the same time reads either the old or the new one.
_last_skew: tuple[object, object, timedelta | None] = (None, None, None)


def _request_skew(sent_at: str, now: datetime) -> timedelta | None:
    """:func:`_skew`, remembered for the last pair of objects."""
    global _last_skew
    last = _last_skew
    if last[0] is sent_at and last[1] is now:
        return last[2]
    skew = _skew(sent_at, now)
    _last_skew = (sent_at, now, skew)
    return skew


def _corrected(timestamp: Any, sent_at: Any, now: datetime | None) -> str | None:
    """Event time corrected for the device's clock skew: ``now + (timestamp - sent_at)``."""
    if (
        type(timestamp) is str
        and type(sent_at) is str
        and now is not None
        # the SDKs' shape, 2024-05-01T10:00:00[.123]Z: parsed without its Z it is naive UTC,
        # and naive UTC + the batch's skew is the answer (no time zone arithmetic per event)
        and len(timestamp) in (20, 24)
        and timestamp[10] == "T"
        and timestamp[-1] == "Z"
        and (skew := _request_skew(sent_at, now)) is not None
    ):
        try:
            naive = datetime.fromisoformat(timestamp[:-1])
            if naive.tzinfo is None:
                return (naive + skew).isoformat() + "+00:00"
        except (ValueError, OverflowError):
            pass  # the general path below decides
    if type(timestamp) is str and "-" in timestamp:  # ISO text, as every SDK sends it
        try:
            ts = datetime.fromisoformat(timestamp.strip())
        except ValueError:
            return _text(timestamp)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
    else:
        parsed = parse_time(timestamp)
        if parsed is None:
            return _text(timestamp)
        ts = parsed
    sent = _parse_sent_at(sent_at) if type(sent_at) is str else parse_time(sent_at)
    if sent is not None and now is not None:
        try:
            # naive UTC now + an aware difference: a naive UTC result, fast to format
            return (_naive_utc(now) + (ts - sent)).isoformat() + "+00:00"
        except OverflowError:
            return _iso(ts)
    return _iso(ts)


def lenient_b64decode(text: str | bytes) -> bytes:
    """Base64 in either alphabet (standard or URL-safe), padding optional, whitespace ignored.

    Raises ``ValueError`` when the text is not base64 at all.

    Examples
    --------
    >>> lenient_b64decode("eyJhIjoxfQ")
    b'{"a":1}'
    """
    raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    compact = "".join(raw.split()).replace("-", "+").replace("_", "/").rstrip("=")
    if len(compact) % 4 == 1:
        raise ValueError("not base64: impossible length")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from exc


# -- context: page, campaign, device --------------------------------------------------------------


@lru_cache(maxsize=4096)  # pages and campaigns repeat: parse each URL once
def _path_and_utm(url: str | None) -> tuple[str | None, dict[str, str]]:
    """(path, utm tags) of a URL. The dict is shared by the cache: callers must not change it."""
    if not url:
        return None, {}
    try:
        parts = urlsplit(url)
    except ValueError:
        return None, {}
    query = parse_qs(parts.query)
    utm = {
        f"utm_{k}": v[0]
        for k in ("source", "medium", "campaign", "term", "content")
        if (v := query.get(f"utm_{k}")) and v[0]
    }
    return parts.path or None, utm


@lru_cache(maxsize=4096)
def _url_parts(url: str | None) -> tuple[str | None, dict[str, str], tuple[str | None, ...]]:
    """:func:`_path_and_utm` and its tags as the five UTM columns (what :func:`_utm` answers
    when the message names no campaign and has no ``utm_*`` properties), computed once per
    URL. The cache is keyed by the exact text, so it is exact."""
    path, utm = _path_and_utm(url)
    return path, utm, tuple(utm.get(column) for column in _UTM_COLUMNS)


_BROWSERS: Final = (  # order matters: Edge and Opera also say Chrome, Chrome also says Safari
    ("Edg", "Edge"),
    ("OPR", "Opera"),
    ("Opera", "Opera"),
    ("SamsungBrowser", "Samsung Internet"),
    ("Firefox", "Firefox"),
    ("FxiOS", "Firefox"),
    ("CriOS", "Chrome"),
    ("Chrome", "Chrome"),
    ("Safari", "Safari"),
    ("MSIE", "Internet Explorer"),
    ("Trident", "Internet Explorer"),
)
_SYSTEMS: Final = (
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Macintosh", "macOS"),
    ("CrOS", "Chrome OS"),
    ("Linux", "Linux"),
)


@lru_cache(maxsize=4096)
def user_agent_parts(ua: str | None) -> tuple[str | None, str | None, str | None]:
    """(browser, os, device_type) guessed from a user-agent string; None where unknown."""
    if not ua:
        return None, None, None
    browser = next((name for token, name in _BROWSERS if token in ua), None)
    system = next((name for token, name in _SYSTEMS if token in ua), None)
    if "iPad" in ua or "Tablet" in ua or ("Android" in ua and "Mobile" not in ua):
        device = "tablet"
    elif "Mobi" in ua or "iPhone" in ua:
        device = "mobile"
    elif system in ("Windows", "macOS", "Linux", "Chrome OS"):
        device = "desktop"
    else:
        device = None
    return browser, system, device


_DEVICE_TYPES: Final = {
    "ios": "mobile",
    "android": "mobile",
    "phone": "mobile",
    "smartphone": "mobile",
    "mob": "mobile",
    "pc": "desktop",
    "web": None,
    "srv": None,
}


def _device_type(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    lowered = text.lower()
    return _DEVICE_TYPES.get(lowered, lowered)


def _country_of_locale(locale: Any) -> str | None:
    """'de-DE' -> 'DE'; a bare language ('de') tells nothing about the country."""
    return _country(_text(locale))


@lru_cache(maxsize=1024)
def _country(text: str | None) -> str | None:
    if not text:
        return None
    parts = re.split(r"[-_]", text)
    if len(parts) >= 2 and len(parts[-1]) == 2 and parts[-1].isalpha():
        return parts[-1].upper()
    return None


# -- commerce --------------------------------------------------------------------------------------

#: Keys :func:`_commerce` looks at: a message with none of them skips it in one set test.
_COMMERCE_KEYS: Final = frozenset(
    {"revenue", "value", "total", "currency", "order_id", "transaction_id", "cart_id"}
    | {"products", "items", "item_id", *_PRODUCT_FIELDS}
)
_MONEY_KEYS: Final = frozenset(
    {"revenue", "value", "total", "currency", "order_id", "transaction_id", "cart_id"}
)
_CONTAINERS: Final = (dict, list)
#: (revenue, currency, order_id, cart_id, items, product_id) when nothing is lifted.
_NO_COMMERCE: Final[tuple[str | None, ...]] = (None,) * 6


def _commerce(props: dict[str, Any], *, lift_product: bool) -> tuple[str | None, ...]:
    """Move revenue, currency, order, cart and line items out of ``props``.

    Returns the columns (revenue, currency, order_id, cart_id, items, product_id)."""
    keys = props.keys()
    if keys.isdisjoint(_COMMERCE_KEYS):
        return _NO_COMMERCE
    revenue = currency = order = cart = items_json = product_id = None
    if not keys.isdisjoint(_MONEY_KEYS):
        for key in ("revenue", "value", "total"):
            value = props.get(key)
            if value is not None and not isinstance(value, _CONTAINERS):
                revenue = _text(props.pop(key))
                break
        if "currency" in props and (currency := _text(props["currency"])) is not None:
            del props["currency"]
        for key in ("order_id", "transaction_id"):
            if key in props and (order := _text(props[key])) is not None:
                del props[key]
                break
        if "cart_id" in props and (cart := _text(props["cart_id"])) is not None:
            del props["cart_id"]
    items: list[dict[str, Any]] | None = None
    if isinstance(props.get("products"), list):
        items = normalise_items(props.pop("products"))
    elif isinstance(props.get("items"), list):
        items = normalise_items(props.pop("items"))
    if (
        items is None
        and lift_product
        and (
            props.get("product_id") is not None
            or props.get("sku") is not None
            or props.get("item_id") is not None
        )
    ):
        # normalise_item() of the product fields, in one pass: each field keeps its name,
        # and item_id stands for product_id when that is missing
        # (pop with a default: a field present with None leaves props and is not kept)
        pop = props.pop
        item: dict[str, Any] = {}
        for key in _PRODUCT_FIELDS:
            if (value := pop(key, None)) is not None:
                item[key] = value
        if (value := pop("item_id", None)) is not None:
            item.setdefault("product_id", value)
        pid = item.get("product_id")
        product_id = (None if pid is None else _text(pid)) or _text(item.get("sku"))
        return revenue, currency, order, cart, _dumps([item]), product_id
    if items is not None:
        items_json = _dumps(items)
        if len(items) == 1:
            first = items[0]
            product_id = _text(first.get("product_id")) or _text(first.get("sku"))
    return revenue, currency, order, cart, items_json, product_id


def _put_commerce(row: dict[str, str | None], found: tuple[str | None, ...]) -> None:
    """Write :func:`_commerce`'s columns into ``row`` (nothing when none was found)."""
    if found is not _NO_COMMERCE:
        (
            row["revenue"],
            row["currency"],
            row["order_id"],
            row["cart_id"],
            row["items"],
            row["product_id"],
        ) = found


def _commerce_into(props: dict[str, Any], row: dict[str, str | None], lift_product: bool) -> None:
    _put_commerce(row, _commerce(props, lift_product=lift_product))


#: A fresh row is a copy of this (copying beats ``dict.fromkeys`` by a third).
_EMPTY_ROW: Final[dict[str, str | None]] = dict.fromkeys(STAGING_COLUMNS)
_UTM_SET: Final = frozenset(_UTM_COLUMNS)
_NO_UTM: Final[tuple[str | None, ...]] = (None,) * 5


def _empty_row() -> dict[str, str | None]:
    return _EMPTY_ROW.copy()


def row_values(row: dict[str, str | None]) -> StagingValues:
    """A row of this module's mappers as :data:`StagingValues`.

    Every mapper fills a copy of one dict whose keys are :data:`STAGING_COLUMNS` in order and
    never adds a key, so the row's values are already in column order.

    Examples
    --------
    >>> row_values(from_native({"event_id": "e1"}))[:2]
    ('e1', None)
    """
    return tuple(row.values())


def _utm(
    props: dict[str, Any], url_utm: dict[str, str], explicit: tuple[str | None, ...]
) -> tuple[str | None, ...]:
    """The five UTM columns: ``explicit`` (campaign context) first, then the ``utm_*``
    properties (which leave ``props``), then the page URL's query."""
    if props.keys().isdisjoint(_UTM_SET):  # the common case: no utm_* properties
        if not url_utm:
            return explicit
        source, medium, campaign, term, content = explicit
        get = url_utm.get
        return (
            source if source is not None else get("utm_source"),
            medium if medium is not None else get("utm_medium"),
            campaign if campaign is not None else get("utm_campaign"),
            term if term is not None else get("utm_term"),
            content if content is not None else get("utm_content"),
        )
    out: list[str | None] = []
    for column, value in zip(_UTM_COLUMNS, explicit, strict=True):
        prop = props.pop(column, None)
        from_props = None if prop is None else _text(prop)
        out.append(value if value is not None else from_props or url_utm.get(column))
    return tuple(out)


def _finish(row: dict[str, str | None], props: dict[str, Any]) -> dict[str, str | None]:
    url_path, url_utm = _path_and_utm(row["page_url"])
    if row["page_path"] is None:
        row["page_path"] = url_path
    (
        row["utm_source"],
        row["utm_medium"],
        row["utm_campaign"],
        row["utm_term"],
        row["utm_content"],
    ) = _utm(
        props,
        url_utm,
        (
            row["utm_source"],
            row["utm_medium"],
            row["utm_campaign"],
            row["utm_term"],
            row["utm_content"],
        ),
    )
    row["properties"] = _dumps(props)
    return row


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
    values = [_text(p.get("value")) for p in pairs]
    if len(values) != 2 or values[0] is None or values[1] is None:
        raise _invalid(
            "event.bad_merge",
            "mergeProperties",
            "mergeProperties must be two objects {type, value}, each with a value: "
            "the two identifiers to merge",
        )
    alias = {k: v for k, v in msg.items() if k != "mergeProperties"}
    own = alias.get("properties")
    props: dict[str, Any] = own if isinstance(own, dict) else {}
    types = [_text(p.get("type")) for p in pairs]
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
            raise _invalid("event.not_an_object", "", "each message must be a JSON object")
        msg = dict(msg)
    get = msg.get
    kind = get("type")
    if type(kind) is not str or kind not in _SEGMENT_KINDS:
        kind = _text(kind) or default_type or ("track" if "event" in msg else None)
        kind = kind.lower() if kind else None
        if kind == "merge":
            return _from_merge(msg, envelope=envelope, received_at=received_at)
        if kind not in _SEGMENT_KINDS:
            raise _invalid(
                "event.unknown_type",
                "type",
                f"type must be one of {', '.join(SEGMENT_TYPES)} (got {kind!r})",
            )
    raw_props = get("properties")
    if raw_props is not None and not isinstance(raw_props, dict):
        raise _invalid("event.invalid_properties", "properties", "properties must be an object")
    props: dict[str, Any] = dict(raw_props) if raw_props else {}

    env_context = envelope.get("context") if envelope else None
    own_context = get("context")
    context: Mapping[str, Any]
    if isinstance(env_context, dict):
        context = _merged(env_context, own_context)
    else:
        context = own_context if isinstance(own_context, dict) else _EMPTY
    ctx = context.get

    # _ident() and _text() inlined for text without NUL (three ids and the name per event)
    v = get("messageId")
    event_id = (
        (v.strip()[:MAX_DISTINCT_ID] or None) if type(v) is str and "\x00" not in v else _ident(v)
    ) or _content_id("segment", dict(msg))
    if kind == "track":
        v = get("event")
        event = v.strip() or None if type(v) is str else _text(v)
    else:
        event = kind
    v = get("userId")
    user_id = (
        (v.strip()[:MAX_DISTINCT_ID] or None) if type(v) is str and "\x00" not in v else _ident(v)
    )
    v = get("anonymousId")
    anonymous_id = (
        (v.strip()[:MAX_DISTINCT_ID] or None) if type(v) is str and "\x00" not in v else _ident(v)
    )
    timestamp = get("timestamp") or get("originalTimestamp")
    ts_text: str | None
    if timestamp is None and received_at is not None:
        ts_text = _iso(received_at)
    else:
        sent_at = get("sentAt") or (envelope.get("sentAt") if envelope else None)
        ts_text = _corrected(timestamp, sent_at, received_at)
    session = ctx("sessionId")
    session_prop = props.pop("session_id", None)
    session_id = (None if session is None else _text(session)) or (
        None if session_prop is None else _text(session_prop)
    )

    if kind == "group":
        props["group_id"] = _ident(get("groupId"))
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
        name = _text(get("name"))
        if name:
            props["name"] = name
            page.setdefault("title", name)
        if (category := _text(get("category"))) is not None:
            props["category"] = category
    elif not isinstance(page, dict):
        page = _EMPTY
    if page:
        # _text() inlined for the common case (str or absent): four calls saved per event
        page_get = page.get
        v = page_get("url")
        page_url = None if v is None else v.strip() or None if type(v) is str else _text(v)
        v = page_get("path")
        page_path = None if v is None else v.strip() or None if type(v) is str else _text(v)
        v = page_get("title")
        page_title = None if v is None else v.strip() or None if type(v) is str else _text(v)
        v = page_get("referrer")
        referrer = None if v is None else v.strip() or None if type(v) is str else _text(v)
    else:
        page_url = page_path = page_title = referrer = None

    campaign = ctx("campaign")
    if isinstance(campaign, dict):
        explicit_utm: tuple[str | None, ...] = (
            _text(campaign.get("source")),
            _text(campaign.get("medium")),
            _text(campaign.get("name")) or _text(campaign.get("campaign")),
            _text(campaign.get("term")),
            _text(campaign.get("content")),
        )
    else:
        explicit_utm = _NO_UTM

    v = ctx("userAgent")
    ua = None if v is None else v.strip() or None if type(v) is str else _text(v)
    browser, system, device = user_agent_parts(ua)
    dev = ctx("device")
    device_type = (_device_type(dev.get("type")) if isinstance(dev, dict) else None) or device
    os_ctx = ctx("os")
    os_name = (_text(os_ctx.get("name")) if isinstance(os_ctx, dict) else None) or system
    location = ctx("location")
    country = (_text(location.get("country")) if isinstance(location, dict) else None) or (
        _country(v.strip()) if type(v := ctx("locale")) is str else _country_of_locale(v)
    )

    commerce = _commerce(props, lift_product=True) if kind == "track" else _NO_COMMERCE
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

    url_path, url_utm, url_columns = _url_parts(page_url)
    if explicit_utm is _NO_UTM and props.keys().isdisjoint(_UTM_SET):
        utm = url_columns  # no campaign context, no utm_* properties: the URL's tags
    else:
        utm = _utm(props, url_utm, explicit_utm)
    utm_source, utm_medium, utm_campaign, utm_term, utm_content = utm
    revenue, currency, order_id, cart_id, items, product_id = commerce
    # STAGING_COLUMNS order (tests/unit/test_record_columns.py checks it against the dict rows);
    # properties last-but-not-least: _utm() above removes the utm_* properties it lifts
    return (
        event_id,
        ts_text,
        event,
        user_id,
        anonymous_id,
        session_id,
        _dumps(props),
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
        _ident(get("previousId")) if kind == "alias" else None,
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
            raise _invalid("event.not_an_object", "", "each event must be a JSON object")
        event = dict(event)
    get = event.get
    raw_props = get("properties")
    if raw_props is not None and not isinstance(raw_props, dict):
        raise _invalid("event.invalid_properties", "properties", "properties must be an object")
    props: dict[str, Any] = dict(raw_props or {})
    pop = props.pop
    name = _text(get("event"))
    uuid = _text(get("uuid"))
    event_id = uuid[:MAX_DISTINCT_ID] if uuid else _content_id("posthog", dict(event))

    distinct = _ident(
        event["distinct_id"]
        if get("distinct_id") is not None
        else get("$distinct_id", props.get("distinct_id"))
    )
    for key in ("token", "distinct_id", "$token", "api_key"):
        pop(key, None)
    device = _ident(pop("$device_id", None))
    anon_before = _ident(pop("$anon_distinct_id", None))
    state = pop("$user_state", None)
    profile = pop("$process_person_profile", None)
    user_id = anonymous_id = previous_id = None
    if name == "$create_alias":
        user_id = _ident(pop("alias", None))
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
            timestamp = _iso(now - timedelta(milliseconds=float(offset)))
        except OverflowError:
            timestamp = None
    elif get("timestamp") is not None:
        skew_ref = None if pop("$ignore_sent_at", False) else sent_at
        timestamp = _corrected(get("timestamp"), skew_ref, now)
    else:
        timestamp = _iso(now)

    # most events carry neither: no merged dicts built for nothing
    set_props, set_event = pop("$set", None), get("$set")
    traits = _merged(set_props, set_event) if set_props or set_event else None
    once_props, once_event = pop("$set_once", None), get("$set_once")
    traits_once = _merged(once_props, once_event) if once_props or once_event else None
    if name == "$groupidentify":
        props["group_type"] = pop("$group_type", None)
        props["group_id"] = _ident(pop("$group_key", None))
        if isinstance(group_set := pop("$group_set", None), dict):
            props["group_traits"] = dict(group_set)
    if traits:
        props["traits"] = traits
    if traits_once:
        props["traits_once"] = traits_once

    session_id = _text(pop("$session_id", None))
    page_url = _text(pop("$current_url", None))
    page_path = _text(pop("$pathname", None))
    page_title = _text(pop("title", None)) if name == "$pageview" else None
    referrer = _text(pop("$referrer", None))
    if referrer == "$direct":
        referrer = None
    ua = _text(props.get("$raw_user_agent"))
    ua_browser, ua_os, ua_device = user_agent_parts(ua)
    # server SDKs report the *server's* platform as $os: not the visitor's, so not kept
    is_server = props.get("$is_server") is True
    browser = _text(props.get("$browser")) or ua_browser
    os_name = (None if is_server else _text(props.get("$os"))) or ua_os
    device_type = _device_type(props.get("$device_type")) or ua_device
    country = _text(props.get("$geoip_country_code")) or _country_of_locale(
        props.get("$locale") or props.get("$browser_language")
    )
    context: dict[str, Any] = {}
    if (ip := _text(props.get("$ip"))) is not None:
        context["ip"] = ip
    if ua:
        context["user_agent"] = ua
    if (lib := _text(props.get("$lib"))) is not None:
        context["library"] = {"name": lib, "version": _text(props.get("$lib_version"))}
    revenue, currency, order_id, cart_id, items, product_id = _commerce(props, lift_product=True)
    # what is left of PostHog's own $-properties is SDK bookkeeping ($lib, $geoip_disable, ...)
    props = {k: v for k, v in props.items() if not k.startswith("$")}
    if context:
        props["context"] = context
    # _finish(), on locals: the URL's path and tags fill in, utm_* properties win over them
    url_path, url_utm, url_columns = _url_parts(page_url)
    if page_path is None:
        page_path = url_path
    utm = url_columns if props.keys().isdisjoint(_UTM_SET) else _utm(props, url_utm, _NO_UTM)
    return (
        event_id,
        timestamp,
        name,
        user_id,
        anonymous_id,
        session_id,
        _dumps(props),
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


# -- Snowplow ------------------------------------------------------------------------------------

_SNOWPLOW_NAMES: Final = {
    "pv": "page_view",
    "pp": "page_ping",
    "tr": "transaction",
    "ti": "transaction_item",
}
_ECOMMERCE = "com.snowplowanalytics.snowplow.ecommerce/"


def _snowplow_json(params: Mapping[str, str], encoded: str, plain: str) -> Any:
    """The self-describing JSON in ``encoded`` (base64) or ``plain``; None when absent."""
    if params.get(encoded):
        try:
            text = lenient_b64decode(params[encoded]).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _invalid(
                "snowplow.bad_base64", encoded, f"{encoded} is not base64 JSON: {exc}"
            ) from None
    elif params.get(plain):
        text = params[plain]
    else:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = encoded if params.get(encoded) else plain
        raise _invalid("snowplow.bad_json", where, f"{where} is not JSON: {exc}") from None


def _schema_name(schema: Any) -> str:
    """'iglu:com.acme/link_click/jsonschema/1-0-0' -> 'link_click'."""
    parts = str(schema).split("/")
    return parts[-3] if len(parts) >= 3 else str(schema)


def _ms_time(value: Any) -> datetime | None:
    text = _text(value)
    if text is None or not text.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def from_snowplow(
    params: Mapping[str, str], *, received_at: datetime | None = None
) -> dict[str, str | None]:
    """One Snowplow tracker-protocol event (GET ``/i`` query or one ``tp2`` ``data[]`` item).

    The event name: ``pv`` -> ``page_view``, ``se`` -> its action (``se_ac``), ``ue`` -> the
    ecommerce action type (``snowplow_ecommerce_action.type``) or the event schema's name,
    ``tr``/``ti`` -> ``transaction`` / ``transaction_item``. Event time: ``ttm`` (true
    timestamp), else ``received_at - (stm - dtm)`` (Snowplow's derived timestamp), else ``dtm``,
    else ``received_at``.

    Raises
    ------
    InvalidEventError
        ``event.not_an_object``, ``snowplow.missing_event_type``, ``snowplow.bad_base64``,
        ``snowplow.bad_json``.

    Examples
    --------
    >>> row = from_snowplow({"e": "se", "se_ca": "shop", "se_ac": "add-to-cart", "eid": "e1",
    ...                      "duid": "d1", "dtm": "1714557600000"})
    >>> row["event"], row["anonymous_id"], row["timestamp"]
    ('add-to-cart', 'd1', '2024-05-01T10:00:00+00:00')
    """
    if not isinstance(params, Mapping):
        raise _invalid("event.not_an_object", "", "each event must be a JSON object")
    p = {str(k): (v if isinstance(v, str) else _text(v) or "") for k, v in params.items()}
    kind = p.get("e", "").strip()
    if not kind:
        raise _invalid(
            "snowplow.missing_event_type", "e", "e (event type: pv, pp, se, ue, tr, ti) is required"
        )
    row = _empty_row()
    props: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    name: str | None = _SNOWPLOW_NAMES.get(kind, kind)
    if kind == "se":
        name = _text(p.get("se_ac"))
        for short, long in (
            ("ca", "category"),
            ("ac", "action"),
            ("la", "label"),
            ("pr", "property"),
            ("va", "value"),
        ):
            if (value := _text(p.get(f"se_{short}"))) is not None:
                props[f"se_{long}"] = value
    elif kind == "ue":
        wrapper = _snowplow_json(p, "ue_px", "ue_pr")
        inner = wrapper.get("data") if isinstance(wrapper, dict) else None
        if isinstance(inner, dict):
            data = inner.get("data")
            schema = str(inner.get("schema", ""))
            props["schema"] = schema
            if isinstance(data, dict):
                is_action = _schema_name(schema) == "snowplow_ecommerce_action"
                name = _text(data.get("type")) if is_action else _schema_name(schema)
                props.update({k: v for k, v in data.items() if not (is_action and k == "type")})
            else:
                name = _schema_name(schema)
        else:
            name = None
    elif kind == "tr":
        for short, long in (
            ("id", "order_id"),
            ("tt", "total"),
            ("tx", "tax"),
            ("sh", "shipping"),
            ("cu", "currency"),
            ("af", "affiliation"),
        ):
            if (value := _text(p.get(f"tr_{short}"))) is not None:
                props[long] = value
    elif kind == "ti":
        props["order_id"] = _text(p.get("ti_id"))
        items.append(
            {
                k: v
                for k, v in (
                    ("sku", _text(p.get("ti_sk"))),
                    ("name", _text(p.get("ti_nm"))),
                    ("category", _text(p.get("ti_ca"))),
                    ("price", _text(p.get("ti_pr"))),
                    ("quantity", _text(p.get("ti_qu"))),
                )
                if v is not None
            }
        )
        if (currency := _text(p.get("ti_cu"))) is not None:
            props["currency"] = currency
    row["event"] = name

    contexts = _snowplow_json(p, "cx", "co")
    other: list[Any] = []
    for entity in contexts.get("data", []) if isinstance(contexts, dict) else []:
        if not isinstance(entity, dict) or not isinstance(entity.get("data"), dict):
            other.append(entity)
            continue
        schema, data = str(entity.get("schema", "")), dict(entity["data"])
        entity_name = _schema_name(schema) if _ECOMMERCE in schema else None
        if entity_name == "product":
            items.append(data)
        elif entity_name == "transaction":
            props.setdefault("order_id", data.pop("transaction_id", None))
            props.setdefault("revenue", data.pop("revenue", None))
            props.setdefault("currency", data.pop("currency", None))
            props["transaction"] = data
        elif entity_name == "cart":
            props.setdefault("cart_id", data.pop("cart_id", None))
            props.setdefault("value", data.pop("total_value", None))
            props.setdefault("currency", data.pop("currency", None))
        elif entity_name == "user":
            props["traits"] = data
        else:
            other.append(dict(entity))
    if other:
        props["contexts"] = other
    props = {k: v for k, v in props.items() if v is not None}
    if items:
        props["items"] = items
    _commerce_into(props, row, False)

    row["event_id"] = _ident(p.get("eid")) or _content_id("snowplow", p)
    row["user_id"] = _ident(p.get("uid"))
    row["anonymous_id"] = _ident(p.get("duid")) or _ident(p.get("nuid"))
    row["session_id"] = _text(p.get("sid"))
    true_ts, created, sent = _ms_time(p.get("ttm")), _ms_time(p.get("dtm")), _ms_time(p.get("stm"))
    if true_ts is not None:
        row["timestamp"] = _iso(true_ts)
    elif created is not None and sent is not None and received_at is not None:
        row["timestamp"] = _iso(received_at - (sent - created))
    elif created is not None:
        row["timestamp"] = _iso(created)
    elif received_at is not None:
        row["timestamp"] = _iso(received_at)
    else:
        row["timestamp"] = _text(p.get("dtm"))
    row["page_url"] = _text(p.get("url"))
    row["page_title"] = _text(p.get("page"))
    row["referrer"] = _text(p.get("refr"))
    ua = _text(p.get("ua"))
    row["browser"], row["os"], ua_device = user_agent_parts(ua)
    # the python tracker's default platform is "pc" whatever the user agent: the UA wins
    row["device_type"] = ua_device or _device_type(p.get("p"))
    row["country"] = _country_of_locale(p.get("lang"))
    context = {
        key: value
        for key, value in (
            ("ip", _text(p.get("ip"))),
            ("user_agent", ua),
            ("locale", _text(p.get("lang"))),
            ("app_id", _text(p.get("aid"))),
            ("namespace", _text(p.get("tna"))),
            ("platform", _text(p.get("p"))),
            ("resolution", _text(p.get("res"))),
            ("viewport", _text(p.get("vp"))),
            ("timezone", _text(p.get("tz"))),
            (
                "library",
                {"name": "snowplow", "version": _text(p.get("tv"))} if p.get("tv") else None,
            ),
        )
        if value is not None
    }
    if context:
        props["context"] = context
    return _finish(row, props)


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
        raise _invalid("event.not_an_object", "", "each event must be a JSON object")
    raw_props = event.get("properties")
    if raw_props is not None and not isinstance(raw_props, dict | str):
        raise _invalid("event.invalid_properties", "properties", "properties must be an object")
    row = _empty_row()
    extra: dict[str, Any] = {}
    for key, value in event.items():
        if key == "properties":
            continue
        if key in row:
            if key == "items" and isinstance(value, list):
                row[key] = _dumps(normalise_items(value))
            else:
                row[key] = _text(value) if not isinstance(value, dict | list) else _dumps(value)
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
                row["properties"] = _dumps(merged)
            else:
                row["properties"] = raw_props
        else:
            row["properties"] = raw_props
    elif raw_props or extra:
        row["properties"] = _dumps({**(raw_props or {}), **extra})
    return row
