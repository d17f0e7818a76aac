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
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelscope.api import collect
from funnelscope.api.writer import GroupWriter, _Job
from funnelscope.errors import InvalidEventError
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest import records
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


def reference_segment(
    msg: Any,
    *,
    envelope: Mapping[str, Any] | None = None,
    received_at: datetime | None = None,
    default_type: str | None = None,
) -> Row:
    """The dict-building Segment mapper as it was before the values path (same helpers)."""
    r = records
    if type(msg) is not dict:
        if not isinstance(msg, Mapping):
            raise r._invalid("event.not_an_object", "", "each message must be a JSON object")
        msg = dict(msg)
    get = msg.get
    kind = get("type")
    if type(kind) is not str or kind not in r._SEGMENT_KINDS:
        kind = r._text(kind) or default_type or ("track" if "event" in msg else None)
        kind = kind.lower() if kind else None
        if kind == "merge":
            values = r._from_merge(msg, envelope=envelope, received_at=received_at)
            return dict(zip(STAGING_COLUMNS, values, strict=True))
        if kind not in r._SEGMENT_KINDS:
            raise r._invalid("event.unknown_type", "type", "unknown type")
    raw_props = get("properties")
    if raw_props is not None and not isinstance(raw_props, dict):
        raise r._invalid("event.invalid_properties", "properties", "properties must be an object")
    props: dict[str, Any] = dict(raw_props) if raw_props else {}
    env_context = envelope.get("context") if envelope else None
    own_context = get("context")
    context: Mapping[str, Any]
    if isinstance(env_context, dict):
        context = r._merged(env_context, own_context)
    else:
        context = own_context if isinstance(own_context, dict) else r._EMPTY
    ctx = context.get
    event_id = r._ident(get("messageId")) or r._content_id("segment", dict(msg))
    event = r._str(get("event")) if kind == "track" else kind
    timestamp = get("timestamp") or get("originalTimestamp")
    ts_text: str | None
    if timestamp is None and received_at is not None:
        ts_text = r._iso(received_at)
    else:
        sent_at = get("sentAt") or (envelope.get("sentAt") if envelope else None)
        ts_text = r._corrected(timestamp, sent_at, received_at)
    session, session_prop = ctx("sessionId"), props.pop("session_id", None)
    session_id = (None if session is None else r._text(session)) or (
        None if session_prop is None else r._text(session_prop)
    )
    if kind == "group":
        props["group_id"] = r._ident(get("groupId"))
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
        name = r._text(get("name"))
        if name:
            props["name"] = name
            page.setdefault("title", name)
        if (category := r._text(get("category"))) is not None:
            props["category"] = category
    elif not isinstance(page, dict):
        page = r._EMPTY
    page_url, page_path, page_title, referrer = (
        r._text(page.get(k)) for k in ("url", "path", "title", "referrer")
    )
    campaign = ctx("campaign")
    explicit_utm: tuple[str | None, ...] = r._NO_UTM
    if isinstance(campaign, dict):
        explicit_utm = (
            r._text(campaign.get("source")),
            r._text(campaign.get("medium")),
            r._text(campaign.get("name")) or r._text(campaign.get("campaign")),
            r._text(campaign.get("term")),
            r._text(campaign.get("content")),
        )
    ua = r._text(ctx("userAgent"))
    browser, system, device = r.user_agent_parts(ua)
    dev = ctx("device")
    device_type = (r._device_type(dev.get("type")) if isinstance(dev, dict) else None) or device
    os_ctx = ctx("os")
    os_name = (r._text(os_ctx.get("name")) if isinstance(os_ctx, dict) else None) or system
    location = ctx("location")
    country = (
        r._text(location.get("country")) if isinstance(location, dict) else None
    ) or r._country_of_locale(ctx("locale"))
    commerce = r._commerce(props, lift_product=True) if kind == "track" else r._NO_COMMERCE
    keep = {k: v for k, v in context.items() if v is not None and k not in r._SEGMENT_LIFTED}
    if ua:
        keep["user_agent"] = ua
    if isinstance(dev, dict) and dev:
        keep["device"] = dict(dev)
    if keep:
        props["context"] = keep
    url_path, url_utm = r._path_and_utm(page_url)
    utm = r._utm(props, url_utm, explicit_utm)
    row: Row = dict.fromkeys(STAGING_COLUMNS)
    row.update(
        event_id=event_id,
        timestamp=ts_text,
        event=event,
        user_id=r._ident(get("userId")),
        anonymous_id=r._ident(get("anonymousId")),
        session_id=session_id,
        properties=r._dumps(props),
        page_url=page_url,
        page_path=page_path if page_path is not None else url_path,
        page_title=page_title,
        referrer=referrer,
        device_type=device_type,
        os=os_name,
        browser=browser,
        country=country,
    )
    for column, value in zip(r._UTM_COLUMNS, utm, strict=True):
        row[column] = value
    r._put_commerce(row, commerce)
    if kind == "alias":
        row["previous_id"] = r._ident(get("previousId"))
    return row


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
        lambda m: segment_values(m, envelope=envelope, received_at=NOW),
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
    expected = row_path(messages, lambda e: from_posthog(e, sent_at=sent, now=NOW), "posthog:app")
    got = column_path(
        messages, lambda e: row_values(from_posthog(e, sent_at=sent, now=NOW)), "posthog:app"
    )
    assert got == expected


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
