"""The optimised SDK mappings return exactly what the straightforward ones do.

``records_reference`` is the mapping code as it was before the hot-path rewrite. Hypothesis
generates messages that hit every branch the rewrite touched (ids with NUL and blanks, every
timestamp shape, context and envelope merging, page calls, campaign tags, commerce fields in
any order, non-object values where objects belong) and both mappings must agree on the row,
key order included, or raise the same error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelscope.errors import InvalidEventError
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest import records
from tests.unit import records_reference as reference

SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "x",
            " u1 ",
            "a\x00b",
            "de-DE",
            "de",
            "EUR",
            "ios",
            "Desktop",
            "anonymous",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile Safari/604.1",
            "https://s.example/p?utm_source=g&utm_campaign=c",
            "/p",
            "p1",
        ]
    ),
    st.text(max_size=6),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**13),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    TEXT,
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
TIMES = st.sampled_from(
    [
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00.123Z",
        "2024-05-01T10:00:00+0Z",
        "2024-05-01T10:00+02:00Z",
        "0001-01-01T00:00:00.000Z",
        "2024-05-01T10:00:00,12Z",
        "2024-05-01 10:00:00.123Z",
        "2024-05-01T10:00:00.123+02:00",
        "2024-05-01T10:00:00",
        " 2024-05-01 10:00:00.5Z ",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        1714557600,
        1714557600123,
        "1714557600000",
        "nope",
        "",
        True,
        1.5e20,
        None,
    ]
)
#: Receive times as the collector passes them (aware, UTC), and none.
NOW = st.sampled_from([None, datetime(2026, 11, 22, 18, 3, 40, 250000, tzinfo=UTC)])


def _object(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts over ``keys`` (any subset, any order) plus an unknown key now and then."""
    return st.lists(
        st.tuples(st.sampled_from([*keys, "extra"]), values),
        max_size=len(keys),
        unique_by=lambda kv: kv[0],
    ).map(dict)


def _value_or(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``, sometimes a scalar where it does not belong."""
    return st.one_of(strategy, strategy, strategy, SCALAR)


ITEMS = st.lists(
    _object(
        ["product_id", "item_id", "id", "sku", "name", "item_name", "price", "quantity"],
        _value_or(TEXT),
    ),
    max_size=2,
)
COMMERCE_KEYS = [
    "revenue", "value", "total", "currency", "order_id", "transaction_id", "cart_id",
    "product_id", "sku", "item_id", "name", "category", "brand", "variant", "price",
    "quantity", "session_id", "url", "path", "title", "referrer", "search", "traits",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "context",
]  # fmt: skip
PROPERTIES = st.one_of(
    _object(COMMERCE_KEYS, _value_or(TEXT)),
    _object(COMMERCE_KEYS, JSON),
    st.tuples(
        _object(COMMERCE_KEYS, _value_or(TEXT)), st.sampled_from(["products", "items"]), ITEMS
    ).map(lambda t: {**t[0], t[1]: t[2]}),
)
PAGE = _object(["url", "path", "title", "referrer", "search"], _value_or(TEXT))
CAMPAIGN = _object(["source", "medium", "name", "campaign", "term", "content"], _value_or(TEXT))
CONTEXT = st.fixed_dictionaries(
    {},
    optional={
        "sessionId": JSON,
        "traits": _value_or(st.dictionaries(TEXT, JSON, max_size=2)),
        "page": _value_or(PAGE),
        "campaign": _value_or(CAMPAIGN),
        "userAgent": _value_or(TEXT),
        "device": _value_or(_object(["type", "model"], _value_or(TEXT))),
        "os": _value_or(_object(["name"], _value_or(TEXT))),
        "location": _value_or(_object(["country"], _value_or(TEXT))),
        "locale": _value_or(TEXT),
        "integrations": JSON,
        "ip": JSON,
        "library": JSON,
    },
)
SEGMENT_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            [*records.SEGMENT_TYPES, "Track", " page ", "bogus", "", None, 3, ["track"]]
        ),
        "event": _value_or(TEXT),
        "messageId": JSON,
        "userId": JSON,
        "anonymousId": JSON,
        "previousId": JSON,
        "groupId": JSON,
        "timestamp": TIMES,
        "originalTimestamp": TIMES,
        "sentAt": TIMES,
        "name": _value_or(TEXT),
        "category": _value_or(TEXT),
        "traits": _value_or(st.dictionaries(TEXT, JSON, max_size=2)),
        "properties": st.one_of(PROPERTIES, st.none(), st.just([1])),
        "context": _value_or(CONTEXT),
    },
)
ENVELOPE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {}, optional={"context": _value_or(CONTEXT), "sentAt": TIMES, "integrations": JSON}
    ),
)


def _named(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy`` behind a short repr (Hypothesis warns when it prints a 100 kB one)."""

    @st.composite
    def draw(draw_from: Any) -> Any:
        return draw_from(strategy)

    return draw()


def _same(fast: Callable[[], Any], slow: Callable[[], Any]) -> None:
    """Both return the same row (same key order) or both raise the same error."""
    try:
        expected = slow()
    except InvalidEventError as exc:
        try:
            fast()
        except InvalidEventError as fast_exc:
            assert fast_exc.code == exc.code
            return
        raise AssertionError(f"expected {exc.code}") from None
    except Exception as exc:  # the reference's own failures (e.g. a datetime overflow)
        try:
            fast()
        except type(exc):
            return
        raise AssertionError(f"expected {type(exc).__name__}") from None
    row = fast()
    assert list(row.items()) == list(expected.items())
    assert list(row) == list(STAGING_COLUMNS)


@SETTINGS
@given(
    msg=_named(SEGMENT_MESSAGE),
    envelope=_named(ENVELOPE),
    now=NOW,
    default=st.sampled_from([None, "page"]),
)
def test_segment_matches_the_reference(
    msg: dict[str, Any], envelope: dict[str, Any] | None, now: datetime | None, default: str | None
) -> None:
    before = copy.deepcopy((msg, envelope))
    _same(
        lambda: records.from_segment(msg, envelope=envelope, received_at=now, default_type=default),
        lambda: reference.from_segment(
            msg, envelope=envelope, received_at=now, default_type=default
        ),
    )
    assert (msg, envelope) == before  # the input is read, never changed


POSTHOG_PROPS = _object(
    [
        *COMMERCE_KEYS,
        "$device_id", "$anon_distinct_id", "$user_state", "$process_person_profile",
        "$set", "$set_once", "$session_id", "$current_url", "$pathname", "$referrer",
        "$raw_user_agent", "$browser", "$os", "$device_type", "$is_server",
        "$geoip_country_code", "$locale", "$ip", "$lib", "$lib_version", "alias",
        "distinct_id", "token", "$group_type", "$group_key", "$group_set", "$ignore_sent_at",
    ],
    JSON,
)  # fmt: skip
POSTHOG_EVENT = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(
            ["$pageview", "$identify", "$create_alias", "$groupidentify", "Order Completed", ""]
        ),
        "uuid": JSON,
        "distinct_id": JSON,
        "$distinct_id": JSON,
        "timestamp": TIMES,
        "offset": st.one_of(st.integers(-(10**6), 10**6), st.just(True), st.just(1e30)),
        "$set": JSON,
        "$set_once": JSON,
        "properties": st.one_of(POSTHOG_PROPS, st.none()),
    },
)


@SETTINGS
@given(event=_named(POSTHOG_EVENT), sent_at=TIMES, now=NOW)
def test_posthog_matches_the_reference(
    event: dict[str, Any], sent_at: Any, now: datetime | None
) -> None:
    now = now or datetime(2026, 1, 1, tzinfo=UTC)
    sent = sent_at if isinstance(sent_at, str | type(None)) else None
    _same(
        lambda: records.from_posthog(event, sent_at=sent, now=now),
        lambda: reference.from_posthog(event, sent_at=sent, now=now),
    )


NATIVE_EVENT = _object(
    [*STAGING_COLUMNS, "plan", "items"],
    st.one_of(JSON, ITEMS, st.just('{"a": 1}'), st.just("not json")),
)


@SETTINGS
@given(event=_named(NATIVE_EVENT))
def test_native_matches_the_reference(event: dict[str, Any]) -> None:
    _same(lambda: records.from_native(event), lambda: reference.from_native(event))


SNOWPLOW_EVENT = _object(
    [
        "e", "eid", "uid", "duid", "nuid", "sid", "url", "page", "refr", "ua", "lang", "p",
        "dtm", "stm", "ttm", "tr_id", "tr_tt", "tr_cu", "ti_id", "ti_sk", "ti_pr", "ti_qu",
        "se_ac", "se_ca", "aid", "tv",
    ],
    st.one_of(TEXT, st.sampled_from(["pv", "se", "tr", "ti", "1714557600123"])),
)  # fmt: skip


@SETTINGS
@given(params=_named(SNOWPLOW_EVENT), now=NOW)
def test_snowplow_matches_the_reference(params: dict[str, Any], now: datetime | None) -> None:
    _same(
        lambda: records.from_snowplow(params, received_at=now),
        lambda: reference.from_snowplow(params, received_at=now),
    )


def test_a_lifted_product_equals_normalise_item() -> None:
    """The one-pass product lift builds what normalise_item() of the same fields builds."""
    msg = {
        "type": "track",
        "event": "Product Added",
        "messageId": "m1",
        "properties": {"price": 5, "item_id": "i1", "sku": "S", "name": None, "quantity": 2},
    }
    row = records.from_segment(msg)
    assert row["items"] == '[{"sku":"S","price":5,"quantity":2,"product_id":"i1"}]'
    assert row["product_id"] == "i1"
    assert row == reference.from_segment(msg)


def test_campaign_name_wins_over_campaign_and_utm_properties_fill_in() -> None:
    msg = {
        "type": "track",
        "event": "x",
        "messageId": "m1",
        "properties": {"utm_medium": " cpc ", "utm_term": "t"},
        "context": {"campaign": {"name": "spring", "campaign": "other", "term": ""}},
    }
    row = records.from_segment(msg)
    assert (row["utm_campaign"], row["utm_medium"], row["utm_term"]) == ("spring", "cpc", "t")
    assert row == reference.from_segment(msg)


def test_product_id_wins_over_item_id() -> None:
    msg = {"type": "track", "event": "x", "messageId": "m1",
           "properties": {"item_id": "i1", "product_id": "p1", "price": 1}}  # fmt: skip
    row = records.from_segment(msg)
    assert row["items"] == '[{"product_id":"p1","price":1}]' and row["product_id"] == "p1"
    assert row == reference.from_segment(msg)
