"""The collector's column path stores exactly the rows of the dict row path, for every wire format.

The routes map each message to a tuple of values (``segment_values``, ``row_values(from_...)``),
and the ack stage turns a group's tuples into columns with one transposition, filling in each
request's source. The reference is the dict path the collector used before: ``from_*`` rows,
``row["source"]`` set by the route, one list per column read with ``row.get(column)``. For
Segment the reference is the session-3 ``from_segment`` itself (kept below, verbatim in what it
computes), since ``from_segment`` now wraps ``segment_values``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelscope.api import collect
from funnelscope.api.writer import GroupWriter, _Job
from funnelscope.errors import InvalidEventError
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.events.vocabulary import normalise_items
from funnelscope.ingest import record_fields, records
from funnelscope.ingest.records import (
    from_native,
    from_posthog,
    from_snowplow,
    row_values,
    segment_values,
)
from funnelscope.store.store import Store

NOW = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
Row = dict[str, str | None]


# -- the reference: session 3's from_segment, building the dict row ----------------------------
#
# With the two helpers session 4's second round rewrote (the skew remembered per request, the
# product lifted in one pass) frozen as they were, so the comparison covers them too.


def reference_corrected(timestamp: Any, sent_at: Any, now: datetime | None) -> str | None:
    """``record_fields.corrected_time`` before the per-request skew memo."""
    f = record_fields
    if (
        type(timestamp) is str
        and type(sent_at) is str
        and now is not None
        and len(timestamp) in (20, 24)
        and timestamp[10] == "T"
        and timestamp[-1] == "Z"
        and (skew := f._skew(sent_at, now)) is not None
    ):
        try:
            naive = datetime.fromisoformat(timestamp[:-1])
            if naive.tzinfo is None:
                return (naive + skew).isoformat() + "+00:00"
        except (ValueError, OverflowError):
            pass
    if type(timestamp) is str and "-" in timestamp:
        try:
            ts = datetime.fromisoformat(timestamp.strip())
        except ValueError:
            return f.as_text(timestamp)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
    else:
        parsed = f.parse_time(timestamp)
        if parsed is None:
            return f.as_text(timestamp)
        ts = parsed
    sent = f._parse_sent_at(sent_at) if type(sent_at) is str else f.parse_time(sent_at)
    if sent is not None and now is not None:
        try:
            return (f._naive_utc(now) + (ts - sent)).isoformat() + "+00:00"
        except OverflowError:
            return f.iso_utc(ts)
    return f.iso_utc(ts)


def reference_commerce(props: dict[str, Any]) -> tuple[str | None, ...]:
    """``record_fields.lift_commerce(props, lift_product=True)`` before the one-pass product
    lift."""
    f = record_fields
    keys = props.keys()
    if keys.isdisjoint(f._COMMERCE_KEYS):
        return f.NO_COMMERCE
    revenue = currency = order = cart = items_json = product_id = None
    if not keys.isdisjoint(f._MONEY_KEYS):
        for key in ("revenue", "value", "total"):
            value = props.get(key)
            if value is not None and not isinstance(value, dict | list):
                revenue = f.as_text(props.pop(key))
                break
        if "currency" in props and (currency := f.as_text(props["currency"])) is not None:
            del props["currency"]
        for key in ("order_id", "transaction_id"):
            if key in props and (order := f.as_text(props[key])) is not None:
                del props[key]
                break
        if "cart_id" in props and (cart := f.as_text(props["cart_id"])) is not None:
            del props["cart_id"]
    items: list[dict[str, Any]] | None = None
    if isinstance(props.get("products"), list):
        items = normalise_items(props.pop("products"))
    elif isinstance(props.get("items"), list):
        items = normalise_items(props.pop("items"))
    if items is None and (
        props.get("product_id") is not None
        or props.get("sku") is not None
        or props.get("item_id") is not None
    ):
        item: dict[str, Any] = {}
        for key in f._PRODUCT_FIELDS:
            if key in props and (value := props.pop(key)) is not None:
                item[key] = value
        if "item_id" in props and (value := props.pop("item_id")) is not None:
            item.setdefault("product_id", value)
        items = [item]
    if items is not None:
        items_json = f.compact_json(items)
        if len(items) == 1:
            first = items[0]
            product_id = f.as_text(first.get("product_id")) or f.as_text(first.get("sku"))
    return revenue, currency, order, cart, items_json, product_id


def reference_segment(
    msg: Any,
    *,
    envelope: Mapping[str, Any] | None = None,
    received_at: datetime | None = None,
    default_type: str | None = None,
) -> Row:
    """The dict-building Segment mapper as it was before the values path (same helpers)."""
    r, f = records, record_fields
    if type(msg) is not dict:
        if not isinstance(msg, Mapping):
            raise f.invalid_event("event.not_an_object", "", "each message must be a JSON object")
        msg = dict(msg)
    get = msg.get
    kind = get("type")
    if type(kind) is not str or kind not in r._SEGMENT_KINDS:
        kind = f.as_text(kind) or default_type or ("track" if "event" in msg else None)
        kind = kind.lower() if kind else None
        if kind == "merge":
            values = r._from_merge(msg, envelope=envelope, received_at=received_at)
            return dict(zip(STAGING_COLUMNS, values, strict=True))
        if kind not in r._SEGMENT_KINDS:
            raise f.invalid_event("event.unknown_type", "type", "unknown type")
    raw_props = get("properties")
    if raw_props is not None and not isinstance(raw_props, dict):
        raise f.invalid_event(
            "event.invalid_properties", "properties", "properties must be an object"
        )
    props: dict[str, Any] = dict(raw_props) if raw_props else {}
    env_context = envelope.get("context") if envelope else None
    own_context = get("context")
    context: Mapping[str, Any]
    if isinstance(env_context, dict):
        context = r._merged(env_context, own_context)
    else:
        context = own_context if isinstance(own_context, dict) else r._EMPTY
    ctx = context.get
    event_id = f.as_ident(get("messageId")) or f.content_id("segment", dict(msg))
    event = f.as_text(get("event")) if kind == "track" else kind
    timestamp = get("timestamp") or get("originalTimestamp")
    ts_text: str | None
    if timestamp is None and received_at is not None:
        ts_text = f.iso_utc(received_at)
    else:
        sent_at = get("sentAt") or (envelope.get("sentAt") if envelope else None)
        ts_text = reference_corrected(timestamp, sent_at, received_at)
    session, session_prop = ctx("sessionId"), props.pop("session_id", None)
    session_id = (None if session is None else f.as_text(session)) or (
        None if session_prop is None else f.as_text(session_prop)
    )
    if kind == "group":
        props["group_id"] = f.as_ident(get("groupId"))
        if isinstance(own_traits := get("traits"), dict):
            props["group_traits"] = dict(own_traits)
    else:
        ctx_traits, own_traits = ctx("traits"), get("traits")
        if ctx_traits or own_traits:
            traits = r._merged(ctx_traits, own_traits)
            if traits:
                props["traits"] = traits
    page = ctx("page")
    if kind in ("page", "screen"):
        page = dict(page) if isinstance(page, dict) else {}
        for key in ("url", "path", "title", "referrer", "search"):
            value = props.pop(key, None)
            if value is not None and page.get(key) is None:
                page[key] = value
        name = f.as_text(get("name"))
        if name:
            props["name"] = name
            page.setdefault("title", name)
        if (category := f.as_text(get("category"))) is not None:
            props["category"] = category
    elif not isinstance(page, dict):
        page = r._EMPTY
    page_url, page_path, page_title, referrer = (
        f.as_text(page.get(k)) for k in ("url", "path", "title", "referrer")
    )
    campaign = ctx("campaign")
    explicit_utm: tuple[str | None, ...] = f.NO_UTM
    if isinstance(campaign, dict):
        explicit_utm = (
            f.as_text(campaign.get("source")),
            f.as_text(campaign.get("medium")),
            f.as_text(campaign.get("name")) or f.as_text(campaign.get("campaign")),
            f.as_text(campaign.get("term")),
            f.as_text(campaign.get("content")),
        )
    ua = f.as_text(ctx("userAgent"))
    browser, system, device = f.user_agent_parts(ua)
    dev = ctx("device")
    device_type = (f.as_device_type(dev.get("type")) if isinstance(dev, dict) else None) or device
    os_ctx = ctx("os")
    os_name = (f.as_text(os_ctx.get("name")) if isinstance(os_ctx, dict) else None) or system
    location = ctx("location")
    country = (
        f.as_text(location.get("country")) if isinstance(location, dict) else None
    ) or f.country_of_locale(ctx("locale"))
    commerce = reference_commerce(props) if kind == "track" else f.NO_COMMERCE
    keep = {k: v for k, v in context.items() if v is not None and k not in r._SEGMENT_LIFTED}
    if ua:
        keep["user_agent"] = ua
    if isinstance(dev, dict) and dev:
        keep["device"] = dict(dev)
    if keep:
        props["context"] = keep
    url_path, url_utm = f._path_and_utm(page_url)
    utm = f.utm_columns(props, url_utm, explicit_utm)
    row: Row = dict.fromkeys(STAGING_COLUMNS)
    row.update(
        event_id=event_id,
        timestamp=ts_text,
        event=event,
        user_id=f.as_ident(get("userId")),
        anonymous_id=f.as_ident(get("anonymousId")),
        session_id=session_id,
        properties=f.compact_json(props),
        page_url=page_url,
        page_path=page_path if page_path is not None else url_path,
        page_title=page_title,
        referrer=referrer,
        device_type=device_type,
        os=os_name,
        browser=browser,
        country=country,
    )
    for column, value in zip(f.UTM_COLUMNS, utm, strict=True):
        row[column] = value
    f.put_commerce(row, commerce)
    if kind == "alias":
        row["previous_id"] = f.as_ident(get("previousId"))
    return row


def reference_posthog(event: Any, *, sent_at: Any = None, now: datetime) -> Row:
    """``records.from_posthog`` as it was before ``posthog_values`` (dict row, same helpers)."""
    r, f = records, record_fields
    if not isinstance(event, dict):
        if not isinstance(event, Mapping):
            raise f.invalid_event("event.not_an_object", "", "each event must be a JSON object")
        event = dict(event)
    raw_props = event.get("properties")
    if raw_props is not None and not isinstance(raw_props, dict):
        raise f.invalid_event(
            "event.invalid_properties", "properties", "properties must be an object"
        )
    props: dict[str, Any] = dict(raw_props or {})
    name = f.as_text(event.get("event"))
    row = f.empty_row()
    row["event"] = name
    uuid = f.as_text(event.get("uuid"))
    row["event_id"] = uuid[: f.MAX_DISTINCT_ID] if uuid else f.content_id("posthog", dict(event))

    distinct = f.as_ident(
        event["distinct_id"]
        if event.get("distinct_id") is not None
        else event.get("$distinct_id", props.get("distinct_id"))
    )
    for key in ("token", "distinct_id", "$token", "api_key"):
        props.pop(key, None)
    device = f.as_ident(props.pop("$device_id", None))
    anon_before = f.as_ident(props.pop("$anon_distinct_id", None))
    state = props.pop("$user_state", None)
    profile = props.pop("$process_person_profile", None)
    if name == "$create_alias":
        row["user_id"] = f.as_ident(props.pop("alias", None))
        row["previous_id"] = distinct
    elif name == "$identify":
        row["user_id"] = distinct
        row["anonymous_id"] = anon_before or (device if device != distinct else None)
    elif (
        state == "anonymous"
        or profile is False
        or name == "$groupidentify"
        or (device is not None and device == distinct)
    ):
        row["anonymous_id"] = distinct
    else:
        row["user_id"] = distinct
        row["anonymous_id"] = device if device != distinct else None

    offset = event.get("offset")
    if isinstance(offset, int | float) and not isinstance(offset, bool):
        try:
            row["timestamp"] = f.iso_utc(now - timedelta(milliseconds=float(offset)))
        except OverflowError:
            row["timestamp"] = None
    elif event.get("timestamp") is not None:
        skew_ref = None if props.pop("$ignore_sent_at", False) else sent_at
        row["timestamp"] = f.corrected_time(event.get("timestamp"), skew_ref, now)
    else:
        row["timestamp"] = f.iso_utc(now)

    # most events carry neither: no merged dicts built for nothing
    set_props, set_event = props.pop("$set", None), event.get("$set")
    traits = r._merged(set_props, set_event) if set_props or set_event else None
    once_props, once_event = props.pop("$set_once", None), event.get("$set_once")
    traits_once = r._merged(once_props, once_event) if once_props or once_event else None
    if name == "$groupidentify":
        props["group_type"] = props.pop("$group_type", None)
        props["group_id"] = f.as_ident(props.pop("$group_key", None))
        if isinstance(group_set := props.pop("$group_set", None), dict):
            props["group_traits"] = dict(group_set)
    if traits:
        props["traits"] = traits
    if traits_once:
        props["traits_once"] = traits_once

    row["session_id"] = f.as_text(props.pop("$session_id", None))
    row["page_url"] = f.as_text(props.pop("$current_url", None))
    row["page_path"] = f.as_text(props.pop("$pathname", None))
    row["page_title"] = f.as_text(props.pop("title", None)) if name == "$pageview" else None
    referrer = f.as_text(props.pop("$referrer", None))
    row["referrer"] = None if referrer == "$direct" else referrer
    ua = f.as_text(props.get("$raw_user_agent"))
    ua_browser, ua_os, ua_device = f.user_agent_parts(ua)
    # server SDKs report the *server's* platform as $os: not the visitor's, so not kept
    is_server = props.get("$is_server") is True
    row["browser"] = f.as_text(props.get("$browser")) or ua_browser
    row["os"] = (None if is_server else f.as_text(props.get("$os"))) or ua_os
    row["device_type"] = f.as_device_type(props.get("$device_type")) or ua_device
    row["country"] = f.as_text(props.get("$geoip_country_code")) or f.country_of_locale(
        props.get("$locale") or props.get("$browser_language")
    )
    context: dict[str, Any] = {}
    if (ip := f.as_text(props.get("$ip"))) is not None:
        context["ip"] = ip
    if ua:
        context["user_agent"] = ua
    if (lib := f.as_text(props.get("$lib"))) is not None:
        context["library"] = {"name": lib, "version": f.as_text(props.get("$lib_version"))}
    f.put_commerce(row, reference_commerce(props))
    # what is left of PostHog's own $-properties is SDK bookkeeping ($lib, $geoip_disable, ...)
    props = {k: v for k, v in props.items() if not k.startswith("$")}
    if context:
        props["context"] = context
    return f.finish_row(row, props)


# -- generated messages ---------------------------------------------------------------------------

TEXT = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "a", " b ", "user_1", "x\x00y", "Ω", "42"]),
    st.text(max_size=8),
)
SCALAR = st.one_of(TEXT, st.integers(-5, 10**6), st.floats(allow_nan=False), st.booleans())
TIMES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "2026-01-01T12:00:00Z",
            "2026-01-01T12:00:00.123Z",
            "2026-01-01T11:59:58+02:00",
            "2026-01-01 12:00:00",
            "1767268800000",
            "1767268800",
            "yesterday",
            "",
        ]
    ),
    st.integers(0, 2 * 10**12),
)
URLS = st.sampled_from(
    [None, "https://s.example/p?utm_source=g&utm_medium=cpc", "https://s.example/", "not a url"]
)
UAS = st.sampled_from([None, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile Safari", "curl/8", 7])
ITEM = st.dictionaries(
    st.sampled_from(["product_id", "item_id", "sku", "name", "price", "quantity", "extra"]),
    SCALAR,
    max_size=5,
)
PROPERTIES = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(
            [
                "revenue",
                "value",
                "total",
                "currency",
                "order_id",
                "transaction_id",
                "cart_id",
                "product_id",
                "sku",
                "item_id",
                "name",
                "price",
                "utm_source",
                "utm_campaign",
                "session_id",
                "url",
                "title",
                "other",
            ]
        ),
        SCALAR,
        max_size=6,
    ).flatmap(
        lambda base: st.fixed_dictionaries(
            {}, optional={"products": st.lists(ITEM, max_size=3), "items": st.lists(ITEM)}
        ).map(lambda extra: {**base, **extra})
    ),
    st.sampled_from(["a string", [1, 2]]),
)
CONTEXT = st.fixed_dictionaries(
    {},
    optional={
        "page": st.fixed_dictionaries(
            {}, optional={"url": URLS, "path": TEXT, "title": TEXT, "referrer": TEXT}
        ),
        "campaign": st.fixed_dictionaries(
            {}, optional={"source": TEXT, "name": TEXT, "medium": TEXT, "campaign": TEXT}
        ),
        "userAgent": UAS,
        "locale": st.sampled_from([None, "de-DE", "en", "pt_BR", 3]),
        "device": st.fixed_dictionaries({}, optional={"type": st.sampled_from(["ios", "pc"])}),
        "os": st.fixed_dictionaries({}, optional={"name": TEXT}),
        "location": st.fixed_dictionaries({}, optional={"country": TEXT}),
        "sessionId": SCALAR,
        "traits": st.dictionaries(st.sampled_from(["email", "plan"]), TEXT, max_size=2),
        "ip": TEXT,
    },
)
SEGMENT = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                ["track", "page", "screen", "identify", "group", "alias", "merge", "Track", "x"]
            ),
            "event": TEXT,
            "name": TEXT,
            "category": TEXT,
            "messageId": SCALAR,
            "userId": SCALAR,
            "anonymousId": SCALAR,
            "previousId": SCALAR,
            "groupId": SCALAR,
            "timestamp": TIMES,
            "originalTimestamp": TIMES,
            "sentAt": TIMES,
            "properties": PROPERTIES,
            "traits": st.dictionaries(st.sampled_from(["email", "plan"]), TEXT, max_size=2),
            "context": CONTEXT,
            "mergeProperties": st.lists(
                st.fixed_dictionaries({"type": TEXT, "value": SCALAR}), max_size=3
            ),
        },
    ),
    st.sampled_from([None, "text", [1]]),
)
ENVELOPE = st.fixed_dictionaries(
    {}, optional={"sentAt": TIMES, "context": CONTEXT, "integrations": st.just({"All": True})}
)
POSTHOG = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "event": st.sampled_from(
                ["$pageview", "$identify", "$create_alias", "$groupidentify", "added", None]
            ),
            "uuid": TEXT,
            "distinct_id": SCALAR,
            "timestamp": TIMES,
            "offset": st.one_of(st.integers(0, 10**6), st.just(True)),
            "$set": st.dictionaries(st.sampled_from(["email"]), TEXT, max_size=1),
            "properties": st.one_of(
                st.none(),
                st.just("text"),
                st.dictionaries(
                    st.sampled_from(
                        [
                            "$device_id",
                            "$anon_distinct_id",
                            "$current_url",
                            "$referrer",
                            "$session_id",
                            "$raw_user_agent",
                            "$os",
                            "$is_server",
                            "$locale",
                            "$set_once",
                            "alias",
                            "title",
                            "revenue",
                            "currency",
                            "product_id",
                            "token",
                            "plain",
                        ]
                    ),
                    SCALAR,
                    max_size=8,
                ),
            ),
        },
    ),
    st.just(7),
)
SNOWPLOW = st.one_of(
    st.fixed_dictionaries(
        {"e": st.sampled_from(["pv", "pp", "se", "tr", "ti", "ue", "", "zz"])},
        optional={
            "eid": TEXT,
            "uid": TEXT,
            "duid": TEXT,
            "nuid": TEXT,
            "sid": TEXT,
            "url": URLS,
            "page": TEXT,
            "ua": st.sampled_from(["", "Mozilla/5.0 (Windows NT 10.0) Chrome/1 Safari"]),
            "lang": st.sampled_from(["de-DE", "en", ""]),
            "dtm": st.sampled_from(["1767268800000", "x", ""]),
            "stm": st.sampled_from(["1767268801000", ""]),
            "ttm": st.sampled_from(["1767268700000", ""]),
            "se_ac": TEXT,
            "se_va": TEXT,
            "tr_id": TEXT,
            "tr_tt": st.sampled_from(["12.5", "x", ""]),
            "tr_cu": st.sampled_from(["EUR", ""]),
            "ti_id": TEXT,
            "ti_pr": st.sampled_from(["3", ""]),
            "ue_pr": st.sampled_from(
                ["{not json", '{"data": {"schema": "iglu:a/b/c/1", "data": {}}}']
            ),
            "cx": st.sampled_from(["!!!", "e30"]),
        },
    ),
    st.just("not an object"),
)
NATIVE = st.one_of(
    st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "event",
                "user_id",
                "timestamp",
                "source",
                "items",
                "revenue",
                "unknown",
                "properties",
            ]
        ),
        st.one_of(SCALAR, st.just({"a": 1}), st.just([{"price": 1}]), st.just('{"p": 1}')),
        max_size=7,
    ),
    st.just([1]),
)


# -- the comparison -------------------------------------------------------------------------------


def row_path(
    messages: list[Any], mapper: Callable[[Any], Row], source: str | Callable[[int], str]
) -> tuple[dict[str, list[str | None]], list[tuple[int, str]]]:
    """Columns and (index, code) rejections the dict path gives, as the route did before."""
    rows: list[Row] = []
    rejected: list[tuple[int, str]] = []
    for index, message in enumerate(messages):
        try:
            row = mapper(message)
        except InvalidEventError as exc:
            rejected.append((index, exc.code))
            continue
        if row["source"] is None:
            row["source"] = source if isinstance(source, str) else source(index)
        rows.append(row)
    return {c: [row.get(c) for row in rows] for c in STAGING_COLUMNS}, rejected


@functools.cache
def _writer() -> GroupWriter:
    """One ack stage (never started: ``_ack`` is called directly) on an in-memory journal."""
    return GroupWriter(Store(":memory:"), max_queue_events=10**6, max_group_events=10**6)


def column_path(
    messages: list[Any],
    mapper: Callable[[Any], tuple[str | None, ...]],
    source: str,
) -> tuple[dict[str, list[str | None]], list[tuple[int, str]]]:
    """Columns of the journal batch the ack stage writes for the route's values."""
    values, indices, rejected = collect._map_all(messages, mapper)
    writer = _writer()
    # two jobs: rows of several requests are concatenated, each request's source filled in
    half = len(values) // 2
    jobs = [
        _Job(values[:half], indices[:half], [], half, lambda o: None, source),
        _Job(
            values[half:],
            list(range(len(values) - half)),
            [],
            len(values) - half,
            lambda o: None,
            source,
        ),
    ]
    writer._ack(jobs)
    segment = writer.journal._open
    assert segment is not None
    batch = segment.batches[-1]
    columns = {c: batch.column(c).to_pylist() for c in STAGING_COLUMNS}
    return columns, [(r.row, r.code) for r in rejected]


SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(st.lists(SEGMENT, min_size=1, max_size=6), ENVELOPE)
def test_segment_values_match_the_dict_rows(messages: list[Any], envelope: dict[str, Any]) -> None:
    expected = row_path(
        messages,
        lambda m: reference_segment(m, envelope=envelope, received_at=NOW),
        "segment:web",
    )
    got = column_path(
        messages,
        # the route's call: positional partial of segment_row (segment_values is a wrapper)
        functools.partial(records.segment_row, envelope, NOW, None),
        "segment:web",
    )
    assert got == expected
    # and from_segment, the dict API everything else uses, is the reference's row
    for message in messages:
        try:
            want = reference_segment(message, envelope=envelope, received_at=NOW)
        except InvalidEventError:
            continue
        assert records.from_segment(message, envelope=envelope, received_at=NOW) == want


@SETTINGS
@given(st.lists(SEGMENT, min_size=1, max_size=3), st.sampled_from(["track", "page", "alias"]))
def test_segment_single_call_values_match(messages: list[Any], kind: str) -> None:
    expected = row_path(
        messages, lambda m: reference_segment(m, received_at=NOW, default_type=kind), "segment:s"
    )
    got = column_path(
        messages, lambda m: segment_values(m, received_at=NOW, default_type=kind), "segment:s"
    )
    assert got == expected


@SETTINGS
@given(st.lists(POSTHOG, min_size=1, max_size=6), TIMES)
def test_posthog_values_match_the_dict_rows(messages: list[Any], sent_at: Any) -> None:
    sent = sent_at if isinstance(sent_at, str) else None
    expected = row_path(
        messages, lambda e: reference_posthog(e, sent_at=sent, now=NOW), "posthog:app"
    )
    got = column_path(messages, functools.partial(records.posthog_row, sent, NOW), "posthog:app")
    assert got == expected
    # and from_posthog, the dict API, is the reference's row
    for message in messages:
        try:
            want = reference_posthog(message, sent_at=sent, now=NOW)
        except InvalidEventError:
            continue
        assert from_posthog(message, sent_at=sent, now=NOW) == want


@SETTINGS
@given(st.lists(SNOWPLOW, min_size=1, max_size=6))
def test_snowplow_values_match_the_dict_rows(messages: list[Any]) -> None:
    # the route sets each event's own source (its app id's key) before the ack stage
    def with_source(params: Any) -> Row:
        row = from_snowplow(params, received_at=NOW)
        row["source"] = "snowplow:web"
        return row

    expected = row_path(messages, with_source, "unused")
    got = column_path(messages, lambda p: row_values(with_source(p)), "snowplow:other")
    assert got == expected


@SETTINGS
@given(st.lists(NATIVE, min_size=1, max_size=6))
def test_native_values_match_the_dict_rows(messages: list[Any]) -> None:
    expected = row_path(messages, from_native, "native:api")
    got = column_path(messages, collect._native_values, "native:api")
    assert got == expected


@pytest.mark.parametrize(
    "row",
    [
        from_native({"event_id": "e1", "source": "mine", "unknown": 1}),
        from_posthog({"event": "$pageview", "distinct_id": "u"}, now=NOW),
        from_snowplow({"e": "pv", "eid": "e"}, received_at=NOW),
        records.from_segment({"type": "alias", "userId": "u", "previousId": "p"}),
    ],
)
def test_row_values_are_in_staging_column_order(row: Row) -> None:
    assert list(row) == list(STAGING_COLUMNS)
    assert row_values(row) == tuple(row[c] for c in STAGING_COLUMNS)
