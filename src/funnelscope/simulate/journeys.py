"""Sessions -> their events, vectorised: every session expands into blocks of events.

A session is a fixed sequence of blocks (landing page, search, category pages, product views,
adds, a removal, the cart, a sign-up, checkout, the order); each block has a per-session count
that depends on the session's depth. Events are written straight to their final position in
the session (session offset + block offset + index in block), so no Python loop runs per event.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from funnelscope.simulate.catalog import Catalog, Interned, Pages, sample_products
from funnelscope.simulate.model import CATEGORIES, Behaviour
from funnelscope.simulate.population import Lookups, Persons, Sessions, choice

__all__ = ["EVENT_TYPES", "EventColumns", "ItemStore", "expand_sessions"]

#: Event type codes (index) -> canonical event name.
EVENT_TYPES = (
    "page_viewed",
    "products_searched",
    "product_list_viewed",
    "product_viewed",
    "product_added",
    "product_removed",
    "cart_viewed",
    "signed_up",
    "checkout_started",
    "order_completed",
    "order_refunded",
    "product_returned",
    "nps_answered",
    "email_opened",
    "email_clicked",
    "ad_impression",
    "social_engaged",
)
CODE = {name: np.int16(i) for i, name in enumerate(EVENT_TYPES)}
SIGNUP_METHODS = ("email", "google", "apple")
PAYMENT_METHODS = ("card", "card", "card", "paypal", "apple_pay")
US_PER_DAY = 86_400 * 1_000_000


@dataclass
class EventColumns:
    """Events as parallel index arrays (-1 = none); text is attached only when assembled."""

    ts: np.ndarray  # int64 microseconds since the simulation start
    etype: np.ndarray  # int16 code into EVENT_TYPES
    person: np.ndarray  # int32
    session: np.ndarray  # int32, -1
    page: np.ndarray  # int32, -1
    touch: np.ndarray  # int32, -1
    combo: np.ndarray  # int32 device combination, -1 = the person's main device
    props: np.ndarray  # int32 into the interned JSON properties, -1
    product: np.ndarray  # int32, -1
    order: np.ndarray  # int32, -1
    cart: np.ndarray  # int32 (the session's cart), -1
    item_start: np.ndarray  # int64 first row in the item store
    item_count: np.ndarray  # int32, 0 = no items
    revenue: np.ndarray  # int64 cents in the person's currency, -1 = none
    both_ids: np.ndarray  # bool: carries the anonymous id and the user id (the sign-up)

    @property
    def size(self) -> int:
        return int(self.ts.size)

    @staticmethod
    def empty(n: int) -> EventColumns:
        minus = {"ts": np.int64, "etype": np.int16, "item_start": np.int64, "revenue": np.int64}
        cols = {}
        for f in fields(EventColumns):
            if f.name == "both_ids":
                cols[f.name] = np.zeros(n, bool)
            elif f.name == "item_count":
                cols[f.name] = np.zeros(n, np.int32)
            else:
                cols[f.name] = np.full(n, -1, minus.get(f.name, np.int32))
        return EventColumns(**cols)

    @staticmethod
    def concat(parts: list[EventColumns]) -> EventColumns:
        return EventColumns(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(EventColumns)
            }
        )

    def slice(self, lo: int, hi: int) -> EventColumns:
        return EventColumns(**{f.name: getattr(self, f.name)[lo:hi] for f in fields(self)})

    def take(self, index: np.ndarray) -> EventColumns:
        return EventColumns(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


class ItemStore:
    """Line items shared by events: an event points at ``count`` rows from ``start``."""

    def __init__(self) -> None:
        self._product: list[np.ndarray] = []
        self._quantity: list[np.ndarray] = []
        self._price: list[np.ndarray] = []
        self.size = 0

    def add(self, product: np.ndarray, quantity: np.ndarray, price_cents: np.ndarray) -> int:
        """Append rows; returns the first row's index."""
        first = self.size
        self._product.append(product.astype(np.int32))
        self._quantity.append(quantity.astype(np.int32))
        self._price.append(price_cents.astype(np.int64))
        self.size += int(product.size)
        return first

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._product:
            empty = np.zeros(0, np.int32)
            return empty, empty, np.zeros(0, np.int64)
        return (
            np.concatenate(self._product),
            np.concatenate(self._quantity),
            np.concatenate(self._price),
        )


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Exclusive prefix sums: where each group starts."""
    out = np.zeros(counts.size, np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def _rank_in_group(counts: np.ndarray) -> np.ndarray:
    """0..count-1 for each group, concatenated."""
    total = int(counts.sum())
    out: np.ndarray = np.arange(total, dtype=np.int64) - np.repeat(_offsets(counts), counts)
    return out


def local_price(
    usd_cents: np.ndarray, currency: np.ndarray, day: np.ndarray, rates: np.ndarray
) -> np.ndarray:
    """USD list prices in the buyer's currency on that day (``rates[currency, day]`` USD/unit)."""
    rate = rates[currency, np.clip(day, 0, rates.shape[1] - 1)]
    out: np.ndarray = np.round(usd_cents / rate).astype(np.int64)
    return out


def expand_sessions(
    rng: np.random.Generator,
    sessions: Sessions,
    persons: Persons,
    lk: Lookups,
    catalog: Catalog,
    pages: Pages,
    props: Interned,
    items: ItemStore,
    rates: np.ndarray,
) -> EventColumns:
    """All events of all sessions, grouped by session, in time order within each session."""
    b: Behaviour = lk.behaviour
    S = sessions.size
    d = sessions.depth
    browsing = d >= 1
    carting = d >= 2
    k_search = (browsing & (rng.random(S) < b.searches)).astype(np.int64)
    k_cat = np.where(browsing, rng.poisson(b.category_views, S), 0)
    k_view = np.where(browsing, 1 + rng.poisson(b.product_views + 0.5 * carting, S), 0)
    k_add = np.where(carting, np.minimum(k_view, 1 + rng.poisson(b.extra_adds, S)), 0)
    k_remove = (carting & (rng.random(S) < b.remove) & ((d == 2) | (k_add >= 2))).astype(np.int64)
    k_cartview = (carting & (rng.random(S) < b.cart_view)).astype(np.int64)
    counts = np.stack(
        [
            np.ones(S, np.int64),
            k_search,
            k_cat,
            2 * k_view,
            k_add,
            k_remove,
            k_cartview,
            sessions.signup.astype(np.int64),
            (d >= 3).astype(np.int64),
            (d == 4).astype(np.int64),
        ],
        axis=1,
    )
    per_session = counts.sum(axis=1)
    session_start = _offsets(per_session)
    block_start = np.cumsum(counts, axis=1) - counts
    ev = EventColumns.empty(int(per_session.sum()))
    sid = np.repeat(np.arange(S, dtype=np.int32), per_session)
    ev.session[:] = sid
    person = sessions.person
    currency = lk.country_currency[persons.country[person]]
    day = sessions.start.astype(np.int64)

    def block(b_idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = counts[:, b_idx]
        s = np.repeat(np.arange(S), c)
        j = _rank_in_group(c)
        return s, j, session_start[s] + block_start[s, b_idx] + j

    # landing page
    s, _, pos = block(0)
    landing = sessions.landing
    landing_product = sample_products(rng, catalog, sessions.topic)
    page = np.select(
        [landing == 0, landing == 1, landing == 2],
        [pages.home, pages.category_page(sessions.topic), pages.product_page(landing_product)],
        pages.sale,
    )
    ev.etype[pos] = CODE["page_viewed"]
    ev.page[pos] = page
    # search
    s, _, pos = block(1)
    queries = np.array(
        [props.json({"query": noun.lower()}) for c in CATEGORIES for noun in c.nouns], np.int32
    )
    first_noun = np.cumsum([0] + [len(c.nouns) for c in CATEGORIES])
    n_nouns = np.diff(first_noun)
    topic = sessions.topic[s]
    q = first_noun[topic] + (rng.random(s.size) * n_nouns[topic]).astype(np.int64)
    ev.etype[pos] = CODE["products_searched"]
    ev.page[pos] = pages.search
    ev.props[pos] = queries[q]
    # category pages
    s, _, pos = block(2)
    cat_props = np.array([props.json({"category": c.name}) for c in CATEGORIES], np.int32)
    cat = np.where(
        rng.random(s.size) < 0.8, sessions.topic[s], choice(rng, lk.category_share, s.size)
    )
    ev.etype[pos] = CODE["product_list_viewed"]
    ev.page[pos] = pages.category_page(cat)
    ev.props[pos] = cat_props[cat]
    # product views: page_viewed + product_viewed per product
    view_sess = np.repeat(np.arange(S), k_view)
    view_cat = np.where(
        rng.random(view_sess.size) < 0.75,
        sessions.topic[view_sess],
        choice(rng, lk.category_share, view_sess.size),
    )
    view_product = sample_products(rng, catalog, view_cat)
    view_price = local_price(
        catalog.price_cents[view_product], currency[view_sess], day[view_sess], rates
    )
    view_first = items.add(view_product, np.ones(view_product.size, np.int32), view_price)
    s, j, pos = block(3)
    v = _offsets(k_view)[s] + j // 2  # the view this event belongs to
    is_detail = (j % 2) == 1
    ev.etype[pos] = np.where(is_detail, CODE["product_viewed"], CODE["page_viewed"])
    ev.page[pos] = pages.product_page(view_product[v])
    ev.product[pos[is_detail]] = view_product[v[is_detail]]
    ev.item_start[pos[is_detail]] = view_first + v[is_detail]
    ev.item_count[pos[is_detail]] = 1
    # adds: the first k_add viewed products, with quantities; the cart is a prefix of the adds
    s, j, pos = block(4)
    add_view = _offsets(k_view)[s] + j
    add_product = view_product[add_view]
    qty = 1 + (rng.random(s.size) < b.multi_quantity) * (1 + rng.poisson(0.3, s.size))
    add_first = items.add(add_product, qty, view_price[add_view])
    add_row = add_first + _offsets(k_add)  # first add row of each session
    ev.etype[pos] = CODE["product_added"]
    ev.page[pos] = pages.product_page(add_product)
    ev.product[pos] = add_product
    ev.cart[pos] = s
    ev.item_start[pos] = add_row[s] + j
    ev.item_count[pos] = 1
    # removal of the last added product
    cart_size = k_add - k_remove
    s, _, pos = block(5)
    last = add_row[s] + k_add[s] - 1
    ev.etype[pos] = CODE["product_removed"]
    ev.page[pos] = pages.cart
    ev.product[pos] = add_product[last - add_first]
    ev.cart[pos] = s
    ev.item_start[pos] = last
    ev.item_count[pos] = 1
    # cart page, sign-up, checkout, order: the cart's items
    for b_idx, name, pg in (
        (6, "cart_viewed", pages.cart),
        (7, "signed_up", pages.signup),
        (8, "checkout_started", pages.checkout),
        (9, "order_completed", pages.confirmation),
    ):
        s, _, pos = block(b_idx)
        ev.etype[pos] = CODE[name]
        ev.page[pos] = pg
        if name == "signed_up":
            methods = np.array([props.json({"method": m}) for m in SIGNUP_METHODS], np.int32)
            ev.props[pos] = methods[choice(rng, (0.6, 0.3, 0.1), s.size)]
            ev.both_ids[pos] = True
            continue
        ev.cart[pos] = s
        has_items = cart_size[s] > 0
        ev.item_start[pos[has_items]] = add_row[s[has_items]]
        ev.item_count[pos[has_items]] = cart_size[s[has_items]]
    # order ids and revenue: sum of the cart's line items
    s, _, pos = block(9)
    _, quantity, price = items.arrays()
    line = quantity.astype(np.int64) * price
    line_sum = np.concatenate([[0], np.cumsum(line)])
    start_row = ev.item_start[pos]
    ev.revenue[pos] = line_sum[start_row + ev.item_count[pos]] - line_sum[start_row]
    ev.order[pos] = np.arange(s.size, dtype=np.int32)
    payments = np.array([props.json({"payment_method": m}) for m in PAYMENT_METHODS], np.int32)
    ev.props[pos] = payments[rng.integers(0, len(PAYMENT_METHODS), s.size)]
    # timestamps: log-normal gaps after the session start; paying takes longer
    gaps = b.event_gap_seconds * np.exp(rng.normal(0.0, 0.8, ev.size))
    gaps[ev.etype == CODE["order_completed"]] *= 3.0
    gaps[session_start] = 0.0
    clock = np.cumsum(gaps)
    clock -= np.repeat(clock[session_start], per_session)
    ev.ts[:] = (np.repeat(sessions.start, per_session) * US_PER_DAY + clock * 1e6).astype(np.int64)
    ev.person[:] = person[sid]
    ev.touch[:] = sessions.touch[sid]
    ev.combo[:] = sessions.combo[sid]
    return ev
