"""Index arrays -> typed Arrow, without a Python loop per value.

* Every text column but ``event_id`` repeats values (event names, pages, UTM tags, device,
  country, currency, properties, product ids, and the ids of persons, sessions, carts and
  orders, one array per entity) and becomes ``dictionary<int32, string>``: the index arrays the
  simulator already has plus the dictionary, zero-copy. DuckDB, Parquet and pandas read it as
  text; cast to ``string`` if plain strings are needed (:func:`plain_text`).
* Event ids are unique: written straight into the string buffers, fixed width.
* Work is done in chunks of :data:`CHUNK_ROWS` rows, which keeps every string column below
  Arrow's 2 GiB offset limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa

from funnelscope.events.schema import ITEM_TYPE, STAGING_COLUMNS
from funnelscope.simulate.catalog import Catalog, Pages
from funnelscope.simulate.journeys import EVENT_TYPES, EventColumns, ItemStore
from funnelscope.simulate.model import CATEGORIES, COUNTRIES
from funnelscope.simulate.population import Lookups, Persons

__all__ = [
    "CHUNK_ROWS",
    "EventText",
    "categorical",
    "decimal_from_cents",
    "events_table",
    "id_strings",
    "lookup",
    "plain_text",
]

CHUNK_ROWS: Final = 2_000_000
#: Event ids are zero-padded to at least this many digits, so they sort in time order.
EVENT_ID_DIGITS: Final = 10
_UTC_US: Final = pa.timestamp("us", tz="UTC")
_DECIMAL: Final = pa.decimal128(18, 4)


def _validity(valid: np.ndarray | None) -> pa.Buffer | None:
    if valid is None or valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def decimal_from_cents(cents: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """decimal128(18, 4) from integer cents, built from buffers (no per-value Python)."""
    value = np.asarray(cents, dtype=np.int64) * 100
    words = np.empty(2 * value.size, np.int64)
    words[0::2] = value
    words[1::2] = value >> 63  # sign extension: two's complement 128-bit, little-endian
    return pa.Array.from_buffers(_DECIMAL, value.size, [_validity(valid), pa.py_buffer(words)])


def _indices(index: np.ndarray) -> pa.Array:
    """int32 Arrow indices, null where ``index`` is negative (no slow masked conversion)."""
    values = np.ascontiguousarray(index, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.int32(), values.size, [_validity(values >= 0), pa.py_buffer(values)]
    )


def lookup(values: pa.Array, index: np.ndarray) -> pa.Array:
    """``values[index]``, null where ``index`` is negative."""
    return values.take(_indices(index))


def categorical(values: pa.Array, index: np.ndarray) -> pa.Array:
    """``values[index]`` dictionary-encoded: zero-copy, for text with few distinct values."""
    return pa.DictionaryArray.from_arrays(_indices(index), values)


def id_strings(prefix: str, number: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + ``number`` zero-padded to ``width`` digits, written straight into buffers.

    Digits are computed a row per digit (contiguous, in int32 pieces of 9 digits) and then
    transposed into the fixed-width string buffer; no per-value Python.
    """
    head = np.frombuffer(prefix.encode(), np.uint8)
    n = int(number.size)
    row = head.size + width
    digit_rows = np.empty((width, n), np.uint8)
    x = np.asarray(number, dtype=np.int64)
    for lo in range(0, width, 9):  # digits lo .. lo+8 counted from the right
        piece = ((x // 10**lo) % 10**9).astype(np.int32)
        for d in range(lo, min(lo + 9, width)):
            q = piece // 10
            digit_rows[width - 1 - d] = piece - q * 10 + 48
            piece = q
    buf = np.empty((n, row), np.uint8)
    buf[:, : head.size] = head
    buf[:, head.size :] = digit_rows.T
    offsets = np.arange(0, (n + 1) * row, row, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(buf)])


def digits(count: int) -> int:
    """Width that numbers 0..count-1 need."""
    return max(len(str(max(count - 1, 0))), 1)


@dataclass(frozen=True)
class EventText:
    """The lookup arrays events index into."""

    id_prefix: str  # sim7-: users, anonymous ids, sessions, carts, orders
    event_prefix: str  # sim-7-: event ids
    epoch_us: int  # the simulation start, microseconds since 1970
    lookups: Lookups
    persons: Persons
    catalog: Catalog
    pages: Pages
    properties: pa.Array
    items: ItemStore
    signup_at: np.ndarray  # per person, us since start; int64 min = before, max = never


def plain_text(table: pa.Table) -> pa.Table:
    """``table`` with dictionary-encoded text decoded to plain ``string`` columns."""
    fields = [
        pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def _items(
    start: np.ndarray,
    count: np.ndarray,
    item_arrays: tuple[np.ndarray, ...],
    product_text: tuple[pa.Array, ...],
) -> pa.Array:
    product, quantity, price = item_arrays
    offsets = np.zeros(count.size + 1, np.int32)
    np.cumsum(count, out=offsets[1:])
    total = int(offsets[-1])
    rows = np.repeat(start - offsets[:-1], count) + np.arange(total, dtype=np.int64)
    p = product[rows]
    values = pa.StructArray.from_arrays(
        [
            *(lookup(t, p) for t in product_text),
            pa.nulls(total, pa.string()),
            decimal_from_cents(price[rows]),
            pa.array(quantity[rows], pa.int32()),
        ],
        fields=list(ITEM_TYPE),
    )
    return pa.ListArray.from_arrays(
        pa.array(offsets), values, type=pa.list_(ITEM_TYPE), mask=pa.array(count == 0)
    )


def events_table(ev: EventColumns, text: EventText) -> pa.Table:
    """The staging table (typed columns named as ``STAGING_COLUMNS``) of time-sorted events."""
    lk = text.lookups
    persons = text.persons
    touch_cols = {
        name: pa.array([getattr(t, attr) for t in lk.touches], pa.string())
        for name, attr in (
            ("utm_source", "source"),
            ("utm_medium", "medium"),
            ("utm_campaign", "campaign"),
            ("utm_term", "term"),
            ("utm_content", "content"),
            ("referrer", "referrer"),
        )
    }
    url, path, title = text.pages.to_arrow()
    cat = text.catalog
    product_text = (
        pa.array(cat.product_id, pa.string()),
        pa.array(cat.sku, pa.string()),
        pa.array(cat.name, pa.string()),
        pa.array([CATEGORIES[c].name for c in cat.category], pa.string()),
        pa.array(cat.brand, pa.string()),
    )
    # ids of persons, sessions and orders: built once, then looked up per event
    n_person = persons.size
    n_session = int(ev.session.max(initial=-1)) + 1
    n_order = int(ev.order.max(initial=-1)) + 1
    p_width, s_width = digits(n_person), digits(n_session)
    user_ids = id_strings(text.id_prefix + "u", np.arange(n_person), p_width)
    anonymous_ids = id_strings(text.id_prefix + "a", np.arange(n_person), p_width)
    session_ids = id_strings(text.id_prefix + "s", np.arange(n_session), s_width)
    cart_ids = id_strings(text.id_prefix + "c", np.arange(n_session), s_width)
    order_ids = id_strings(text.id_prefix + "o", np.arange(n_order), digits(n_order))
    event_width = max(digits(ev.size), EVENT_ID_DIGITS)
    static = {
        "event": pa.array(EVENT_TYPES, pa.string()),
        "device_type": pa.array([lk.device_names[d] for d in lk.combo_device], pa.string()),
        "os": pa.array(lk.combo_os, pa.string()),
        "browser": pa.array(lk.combo_browser, pa.string()),
        "country": pa.array([c[0] for c in COUNTRIES], pa.string()),
        "currency": pa.array(lk.currencies, pa.string()),
    }
    item_arrays = text.items.arrays()
    batches = []
    for lo in range(0, max(ev.size, 1), CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, ev.size)
        n = hi - lo
        e = ev.slice(lo, hi)
        person = e.person
        is_user = e.ts >= text.signup_at[person]
        is_anon = ~is_user | e.both_ids
        combo = np.where(e.combo >= 0, e.combo, persons.combo[person])
        has_money = (e.item_count > 0) | (e.revenue >= 0)
        country = persons.country[person]
        cols: dict[str, pa.Array] = {
            "event_id": id_strings(text.event_prefix, np.arange(lo, hi), event_width),
            "timestamp": pa.array(e.ts + text.epoch_us, _UTC_US),
            "event": categorical(static["event"], e.etype),
            "user_id": categorical(user_ids, np.where(is_user, person, -1)),
            "anonymous_id": categorical(anonymous_ids, np.where(is_anon, person, -1)),
            "session_id": categorical(session_ids, e.session),
            "properties": categorical(text.properties, e.props),
            "page_url": categorical(url, e.page),
            "page_path": categorical(path, e.page),
            "page_title": categorical(title, e.page),
            "device_type": categorical(static["device_type"], combo),
            "os": categorical(static["os"], combo),
            "browser": categorical(static["browser"], combo),
            "country": categorical(static["country"], country),
            "revenue": decimal_from_cents(np.maximum(e.revenue, 0), e.revenue >= 0),
            "currency": categorical(
                static["currency"], np.where(has_money, lk.country_currency[country], -1)
            ),
            "order_id": categorical(order_ids, e.order),
            "cart_id": categorical(cart_ids, e.cart),
            "product_id": categorical(product_text[0], e.product),
            "items": _items(e.item_start, e.item_count, item_arrays, product_text),
            "source": pa.nulls(n, pa.string()),
            "previous_id": pa.nulls(n, pa.string()),
        }
        for name, values in touch_cols.items():
            cols[name] = categorical(values, e.touch)
        batches.append(
            pa.record_batch([cols[c] for c in STAGING_COLUMNS], names=list(STAGING_COLUMNS))
        )
    return pa.Table.from_batches(batches)
