"""Field converters shared by the SDK record mappers: text, ids, time, context, commerce, row.

:mod:`funnelscope.ingest.records` (Segment / RudderStack, PostHog, native) and
:mod:`funnelscope.ingest.snowplow` (the Snowplow tracker protocol) turn one wire message into one
staging row. What they have in common lives here, so that a field means the same whichever SDK
sent it:

* scalars: :func:`as_text`, :func:`as_ident` (PostHog's id rules), :func:`compact_json`,
  :func:`content_id` (the id of a message that came without one);
* time: :func:`parse_time`, :func:`iso_utc`, :func:`corrected_time` (device clock skew, with the
  per-request memo the collector's hot path relies on);
* context: :func:`url_parts` (path and UTM tags of a page URL), :func:`user_agent_parts`,
  :func:`as_device_type`, :func:`country_of_locale`;
* commerce: :func:`lift_commerce` moves revenue, currency, order, cart and line items out of the
  properties; :func:`put_commerce` writes them into a dict row;
* the row: :func:`empty_row`, :func:`utm_columns`, :func:`finish_row`, :func:`row_values`.

The names are public to the ingest package (the mappers import them); the package's public
entry points stay in :mod:`funnelscope.ingest.records`. Several converters are cached
(``lru_cache``) or inlined by the mappers for speed: benchmarks/collector_cpu.py measures them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from pydantic_core import to_json

from funnelscope.errors import InvalidEventError, Problem
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.events.vocabulary import normalise_items

__all__ = [
    "MAX_DISTINCT_ID",
    "NO_COMMERCE",
    "NO_UTM",
    "UTM_COLUMNS",
    "UTM_COLUMN_SET",
    "StagingValues",
    "as_device_type",
    "as_ident",
    "as_text",
    "compact_json",
    "content_id",
    "corrected_time",
    "country_of_locale",
    "country_of_locale_text",
    "empty_row",
    "finish_row",
    "invalid_event",
    "iso_utc",
    "lenient_b64decode",
    "lift_commerce",
    "parse_time",
    "put_commerce",
    "row_values",
    "url_parts",
    "user_agent_parts",
    "utm_columns",
]

#: PostHog truncates distinct ids to this many characters; so do we.
MAX_DISTINCT_ID: Final = 200

#: The five UTM columns, in :data:`STAGING_COLUMNS` order.
UTM_COLUMNS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


#: One staging row as a tuple, in :data:`STAGING_COLUMNS` order (the collector's row shape).
StagingValues = tuple[str | None, ...]


def invalid_event(code: str, location: str, message: str) -> InvalidEventError:
    """The error for a message that cannot be mapped at all (one problem, a stable code)."""
    return InvalidEventError([Problem(code, location, message)])


# -- small converters ---------------------------------------------------------------------------


def as_text(value: Any) -> str | None:
    """A scalar as text; None, empty strings and containers become None."""
    if type(value) is str:  # the common case first: this runs ~20 times per event
        return value.strip() or None
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


def as_ident(value: Any) -> str | None:
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


def compact_json(value: Any) -> str:
    """Compact JSON text. pydantic-core's encoder (Rust, installed with FastAPI) is ~4x faster
    than the standard library's; the two differ only in how they spell some floats (``1e-7``
    vs ``1e-07``). What it refuses (lone surrogates) the standard library writes."""
    try:
        return to_json(value, fallback=str).decode()
    except (ValueError, TypeError, UnicodeError):
        return _ENCODER.encode(value)


def content_id(kind: str, message: Any) -> str:
    """A stable id for a message that came without one: a retry of it hashes the same."""
    digest = hashlib.sha1(  # a content fingerprint, not a security boundary
        json.dumps(message, sort_keys=True, default=str).encode("utf-8", "surrogatepass")
    ).hexdigest()
    return f"{kind}:sha1:{digest}"


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


# -- time ------------------------------------------------------------------------------------------


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


def iso_utc(value: datetime) -> str:
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
    """An aware datetime as naive UTC (only for arithmetic and :func:`iso_utc`)."""
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


def corrected_time(timestamp: Any, sent_at: Any, now: datetime | None) -> str | None:
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
            return as_text(timestamp)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
    else:
        parsed = parse_time(timestamp)
        if parsed is None:
            return as_text(timestamp)
        ts = parsed
    sent = _parse_sent_at(sent_at) if type(sent_at) is str else parse_time(sent_at)
    if sent is not None and now is not None:
        try:
            # naive UTC now + an aware difference: a naive UTC result, fast to format
            return (_naive_utc(now) + (ts - sent)).isoformat() + "+00:00"
        except OverflowError:
            return iso_utc(ts)
    return iso_utc(ts)


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
def url_parts(url: str | None) -> tuple[str | None, dict[str, str], tuple[str | None, ...]]:
    """:func:`_path_and_utm` and its tags as the five UTM columns (what :func:`utm_columns` answers
    when the message names no campaign and has no ``utm_*`` properties), computed once per
    URL. The cache is keyed by the exact text, so it is exact."""
    path, utm = _path_and_utm(url)
    return path, utm, tuple(utm.get(column) for column in UTM_COLUMNS)


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


def as_device_type(value: Any) -> str | None:
    """An SDK's device type in our words (``ios`` -> ``mobile``, ``pc`` -> ``desktop``)."""
    text = as_text(value)
    if text is None:
        return None
    lowered = text.lower()
    return _DEVICE_TYPES.get(lowered, lowered)


def country_of_locale(locale: Any) -> str | None:
    """'de-DE' -> 'DE'; a bare language ('de') tells nothing about the country."""
    return country_of_locale_text(as_text(locale))


@lru_cache(maxsize=1024)
def country_of_locale_text(text: str | None) -> str | None:
    """:func:`country_of_locale` of text already stripped (cached: locales repeat)."""
    if not text:
        return None
    parts = re.split(r"[-_]", text)
    if len(parts) >= 2 and len(parts[-1]) == 2 and parts[-1].isalpha():
        return parts[-1].upper()
    return None


# -- commerce --------------------------------------------------------------------------------------

#: The product fields of a line item, as :func:`~funnelscope.events.vocabulary.normalise_items`
#: names them.
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
#: Keys :func:`lift_commerce` looks at: a message with none of them skips it in one set test.
_COMMERCE_KEYS: Final = frozenset(
    {"revenue", "value", "total", "currency", "order_id", "transaction_id", "cart_id"}
    | {"products", "items", "item_id", *_PRODUCT_FIELDS}
)
_MONEY_KEYS: Final = frozenset(
    {"revenue", "value", "total", "currency", "order_id", "transaction_id", "cart_id"}
)
_CONTAINERS: Final = (dict, list)
#: (revenue, currency, order_id, cart_id, items, product_id) when nothing is lifted.
NO_COMMERCE: Final[tuple[str | None, ...]] = (None,) * 6


def lift_commerce(props: dict[str, Any], *, lift_product: bool) -> tuple[str | None, ...]:
    """Move revenue, currency, order, cart and line items out of ``props``.

    Returns the columns (revenue, currency, order_id, cart_id, items, product_id)."""
    keys = props.keys()
    if keys.isdisjoint(_COMMERCE_KEYS):
        return NO_COMMERCE
    revenue = currency = order = cart = items_json = product_id = None
    if not keys.isdisjoint(_MONEY_KEYS):
        for key in ("revenue", "value", "total"):
            value = props.get(key)
            if value is not None and not isinstance(value, _CONTAINERS):
                revenue = as_text(props.pop(key))
                break
        if "currency" in props and (currency := as_text(props["currency"])) is not None:
            del props["currency"]
        for key in ("order_id", "transaction_id"):
            if key in props and (order := as_text(props[key])) is not None:
                del props[key]
                break
        if "cart_id" in props and (cart := as_text(props["cart_id"])) is not None:
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
        product_id = (None if pid is None else as_text(pid)) or as_text(item.get("sku"))
        return revenue, currency, order, cart, compact_json([item]), product_id
    if items is not None:
        items_json = compact_json(items)
        if len(items) == 1:
            first = items[0]
            product_id = as_text(first.get("product_id")) or as_text(first.get("sku"))
    return revenue, currency, order, cart, items_json, product_id


def put_commerce(row: dict[str, str | None], found: tuple[str | None, ...]) -> None:
    """Write :func:`lift_commerce`'s columns into ``row`` (nothing when none was found)."""
    if found is not NO_COMMERCE:
        (
            row["revenue"],
            row["currency"],
            row["order_id"],
            row["cart_id"],
            row["items"],
            row["product_id"],
        ) = found


# -- the row ---------------------------------------------------------------------------------------

#: A fresh row is a copy of this (copying beats ``dict.fromkeys`` by a third).
_EMPTY_ROW: Final[dict[str, str | None]] = dict.fromkeys(STAGING_COLUMNS)
#: For the mappers' one set test "has the message any ``utm_*`` property?".
UTM_COLUMN_SET: Final = frozenset(UTM_COLUMNS)
#: The UTM columns of a message with no campaign context.
NO_UTM: Final[tuple[str | None, ...]] = (None,) * 5


def empty_row() -> dict[str, str | None]:
    """A dict row: every :data:`STAGING_COLUMNS` key, in order, each None."""
    return _EMPTY_ROW.copy()


def row_values(row: dict[str, str | None]) -> StagingValues:
    """A dict row of the mappers as :data:`StagingValues`.

    Every dict row is a copy of :func:`empty_row`'s dict, whose keys are :data:`STAGING_COLUMNS`
    in order, and the mappers never add a key: the row's values are already in column order.

    Examples
    --------
    >>> row_values({**empty_row(), "event_id": "e1"})[:2]
    ('e1', None)
    """
    return tuple(row.values())


def utm_columns(
    props: dict[str, Any], url_utm: dict[str, str], explicit: tuple[str | None, ...]
) -> tuple[str | None, ...]:
    """The five UTM columns: ``explicit`` (campaign context) first, then the ``utm_*``
    properties (which leave ``props``), then the page URL's query."""
    if props.keys().isdisjoint(UTM_COLUMN_SET):  # the common case: no utm_* properties
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
    for column, value in zip(UTM_COLUMNS, explicit, strict=True):
        prop = props.pop(column, None)
        from_props = None if prop is None else as_text(prop)
        out.append(value if value is not None else from_props or url_utm.get(column))
    return tuple(out)


def finish_row(row: dict[str, str | None], props: dict[str, Any]) -> dict[str, str | None]:
    """The last step of a dict row: path and UTM columns from the page URL where the message
    gave none (:func:`utm_columns`), then what is left of ``props`` as ``properties``."""
    url_path, url_utm = _path_and_utm(row["page_url"])
    if row["page_path"] is None:
        row["page_path"] = url_path
    (
        row["utm_source"],
        row["utm_medium"],
        row["utm_campaign"],
        row["utm_term"],
        row["utm_content"],
    ) = utm_columns(
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
    row["properties"] = compact_json(props)
    return row
