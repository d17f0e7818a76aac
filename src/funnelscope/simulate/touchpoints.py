"""Touchpoints outside sessions: ad impressions, social engagement, returns, refunds and NPS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from funnelscope.simulate.catalog import Catalog, Interned
from funnelscope.simulate.journeys import CODE, US_PER_DAY, EventColumns, ItemStore
from funnelscope.simulate.model import CATEGORIES, CHANNEL_PROFILES, Touch
from funnelscope.simulate.population import Lookups, Persons, choice

__all__ = ["AfterOrders", "ad_impressions", "after_orders", "social_engagement"]

CHANNEL = {c.name: i for i, c in enumerate(CHANNEL_PROFILES)}
SOCIAL_ACTIONS = (("like", 0.6), ("comment", 0.15), ("share", 0.1), ("follow", 0.15))
SOCIAL_NETWORKS = (("instagram", 0.5), ("facebook", 0.3), ("tiktok", 0.2))
RETURN_REASONS = ("too small", "too large", "not as described", "damaged", "changed mind")
#: NPS score shares 0..10 after a kept order, and after a return.
NPS_KEPT = (0.02, 0.01, 0.01, 0.02, 0.02, 0.05, 0.06, 0.12, 0.17, 0.22, 0.30)
NPS_RETURNED = (0.08, 0.05, 0.06, 0.08, 0.08, 0.12, 0.12, 0.14, 0.12, 0.08, 0.07)
NPS_COMMENTS = {
    "promoter": ("Fast delivery, great quality", "Love it", "Will order again"),
    "passive": ("OK overall", "Delivery took a while", "Fine, nothing special"),
    "detractor": ("Arrived late", "Had to return it", "Poor quality for the price"),
}
COMMENTS = tuple(c for group in NPS_COMMENTS.values() for c in group)
COMMENT_SHARE = 0.5


def ad_impressions(
    rng: np.random.Generator, persons: Persons, lk: Lookups, props: Interned
) -> EventColumns:
    """Person-level ad impressions: before a new person's first visit, and retargeting later.

    Persons first reached by display or paid social saw their ads first (most of them); a
    share of other new persons saw ads too; some existing customers see retargeting ads.
    """
    b = lk.behaviour
    n = persons.size
    first_at = lk.time_of_day(persons.first_visit)
    by_ads = np.isin(persons.first_channel, [CHANNEL["display"], CHANNEL["paid_social"]])
    new = ~persons.is_existing
    share = np.where(
        new & by_ads, b.awareness_ad_share, np.where(new, b.awareness_other_share, 0.1)
    )
    who = np.flatnonzero(rng.random(n) < share)
    k = 1 + rng.poisson(1.5, who.size)
    p = np.repeat(who, k)
    channel = np.where(
        by_ads[p],
        persons.first_channel[p],
        np.where(rng.random(p.size) < 0.5, CHANNEL["display"], CHANNEL["paid_social"]),
    )
    touch = lk.sample_touch(rng, channel)
    before = first_at[p] - rng.random(p.size) * np.minimum(first_at[p], b.awareness_days)
    anytime = rng.random(p.size) * lk.days
    t = np.where(persons.is_existing[p], anytime, before)
    placement = {CHANNEL["display"]: "banner", CHANNEL["paid_social"]: "feed"}
    touch_props = np.full(len(lk.touches), -1, np.int32)
    for i, (tc, ch) in enumerate(zip(lk.touches, lk.touch_channel, strict=True)):
        if ch in placement:
            touch_props[i] = props.json({"network": tc.source, "placement": placement[ch]})
    ev = EventColumns.empty(p.size)
    ev.ts[:] = (t * US_PER_DAY).astype(np.int64)
    ev.etype[:] = CODE["ad_impression"]
    ev.person[:] = p
    ev.touch[:] = touch
    ev.props[:] = touch_props[touch]
    return ev


def social_engagement(
    rng: np.random.Generator, persons: Persons, lk: Lookups, props: Interned
) -> EventColumns:
    """Likes, comments, shares and follows by persons who follow the shop, after their 1st visit."""
    who = np.flatnonzero(persons.is_social)
    k = 1 + rng.poisson(2.0, who.size)
    p = np.repeat(who, k)
    first_at = lk.time_of_day(persons.first_visit[p])
    t = first_at + rng.random(p.size) * (lk.days - first_at)
    action = choice(rng, [s for _, s in SOCIAL_ACTIONS], p.size)
    network = choice(rng, [s for _, s in SOCIAL_NETWORKS], p.size)
    touches = np.array(
        [
            lk.add_touch(Touch(name, "social", None, None), CHANNEL["organic_social"])
            for name, _ in SOCIAL_NETWORKS
        ],
        np.int32,
    )
    combos = np.array(
        [
            [props.json({"action": a, "network": nw}) for nw, _ in SOCIAL_NETWORKS]
            for a, _ in SOCIAL_ACTIONS
        ],
        np.int32,
    )
    ev = EventColumns.empty(p.size)
    ev.ts[:] = (t * US_PER_DAY).astype(np.int64)
    ev.etype[:] = CODE["social_engaged"]
    ev.person[:] = p
    ev.touch[:] = touches[network]
    ev.props[:] = combos[action, network]
    return ev


@dataclass
class AfterOrders:
    events: EventColumns  # product_returned, order_refunded, nps_answered
    nps_first: int  # the NPS events are events[nps_first:]
    score: np.ndarray
    comment: np.ndarray  # index into COMMENTS, -1 = none


def after_orders(
    rng: np.random.Generator,
    orders: EventColumns,
    catalog: Catalog,
    items: ItemStore,
    props: Interned,
    lk: Lookups,
) -> AfterOrders:
    """Returns (first line item), refunds of the returned amount, and NPS answers after orders.

    The refund's ``revenue`` is the refunded amount as a positive number in the order's
    currency. Return probability is the first item's category return rate; returned orders get
    lower NPS scores.
    """
    b = lk.behaviour
    product, quantity, price = items.arrays()
    first_row = orders.item_start
    first_product = product[first_row]
    rate = np.array([c.return_rate for c in CATEGORIES])[catalog.category[first_product]]
    returned = rng.random(orders.size) < rate
    r = np.flatnonzero(returned)
    return_at = orders.ts[r] + (rng.uniform(4, 20, r.size) * US_PER_DAY).astype(np.int64)
    refund_at = return_at + (rng.uniform(1, 3, r.size) * US_PER_DAY).astype(np.int64)
    reasons = np.array([props.json({"reason": x}) for x in RETURN_REASONS], np.int32)
    ret = orders.take(np.concatenate([r, r]))
    n = r.size
    ret.ts[:] = np.concatenate([return_at, refund_at])
    ret.etype[:n] = CODE["product_returned"]
    ret.etype[n:] = CODE["order_refunded"]
    ret.session[:] = -1
    ret.page[:] = -1
    ret.touch[:] = -1
    ret.cart[:] = -1
    ret.combo[:] = -1
    ret.item_count[:] = 1  # the first line item, whole quantity
    ret.product[:n] = first_product[r]
    ret.product[n:] = -1
    ret.props[:n] = reasons[rng.integers(0, len(RETURN_REASONS), n)]
    ret.props[n:] = -1
    ret.revenue[:n] = -1
    ret.revenue[n:] = quantity[first_row[r]].astype(np.int64) * price[first_row[r]]
    # NPS
    s = np.flatnonzero(rng.random(orders.size) < b.nps_share)
    kept = choice(rng, NPS_KEPT, s.size)
    after_return = choice(rng, NPS_RETURNED, s.size)
    score = np.where(returned[s], after_return, kept).astype(np.int32)
    group = np.where(score >= 9, 0, np.where(score >= 7, 1, 2))
    has_comment = rng.random(s.size) < COMMENT_SHARE
    comment = np.where(has_comment, group * 3 + rng.integers(0, 3, s.size), -1)
    nps = EventColumns.empty(s.size)
    nps.ts[:] = orders.ts[s] + (rng.uniform(2, 10, s.size) * US_PER_DAY).astype(np.int64)
    nps.etype[:] = CODE["nps_answered"]
    nps.person[:] = orders.person[s]
    score_props = np.array([props.json({"score": v, "survey": "nps"}) for v in range(11)], np.int32)
    nps.props[:] = score_props[score]
    return AfterOrders(EventColumns.concat([ret, nps]), ret.size, score, comment.astype(np.int32))
