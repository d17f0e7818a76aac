"""Persons and their visits: who comes, how often, what they do, when they stop.

The visit process is simulated in *rounds*: each round gives every still-active person their
next visit at once (vectorised over persons), so the Python loop runs once per visit rank, not
once per person or event. See docs/simulator.md for the model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from funnelscope.simulate.model import (
    CATEGORIES,
    CHANNEL_PROFILES,
    COUNTRIES,
    DEVICES,
    Behaviour,
    Touch,
)

__all__ = ["Lookups", "Persons", "Sessions", "describe_sessions", "draw_persons", "visit_sessions"]

EMAIL = next(i for i, c in enumerate(CHANNEL_PROFILES) if c.name == "email")
MINUTE = 1.0 / 1440.0


def choice(rng: np.random.Generator, p: Any, size: int) -> np.ndarray:
    """Indices drawn from the (unnormalised) probabilities ``p``; vectorised, int32."""
    cdf = np.cumsum(np.asarray(p, dtype=np.float64))
    idx = np.searchsorted(cdf / cdf[-1], rng.random(size), side="right")
    return np.minimum(idx, cdf.size - 1).astype(np.int32)


class Lookups:
    """Index tables derived from the model: channels, touches, device combos, countries."""

    def __init__(self, behaviour: Behaviour, days: int, first_weekday: int) -> None:
        self.behaviour = behaviour
        self.days = days
        self.first_weekday = first_weekday
        ch = CHANNEL_PROFILES
        self.channel_new = np.array([c.new_share for c in ch])
        self.channel_returning = np.array([c.returning_share for c in ch])
        self.channel_lift = np.array([c.lift for c in ch])
        self.channel_bounce = np.array([c.bounce for c in ch])
        self.landing_cdf = np.cumsum(np.array([c.landing for c in ch]), axis=1)
        self.landing_cdf /= self.landing_cdf[:, -1:]
        self.touches: list[Touch] = []
        self.touch_channel: list[int] = []
        self.touch_start = np.zeros(len(ch), np.int32)
        self.touch_count = np.zeros(len(ch), np.int32)
        for i, c in enumerate(ch):
            self.touch_start[i] = len(self.touches)
            self.touch_count[i] = len(c.touches)
            for t in c.touches:
                self.add_touch(t, i)
        combos = [
            (d, os, br, share * 1.0)
            for d, (_, _, _, rows) in enumerate(DEVICES)
            for os, br, share in rows
        ]
        self.combo_device = np.array([c[0] for c in combos], np.int8)
        self.combo_os = [c[1] for c in combos]
        self.combo_browser = [c[2] for c in combos]
        self.device_names = [d[0] for d in DEVICES]
        self.device_share = np.array([d[1] for d in DEVICES])
        self.device_lift = np.array([d[2] for d in DEVICES])
        share = np.array([c[3] for c in combos])
        # combo cdf within each device, offset by the device index (one searchsorted for all)
        self.combo_cdf = np.empty(len(combos))
        for d in range(len(DEVICES)):
            m = self.combo_device == d
            self.combo_cdf[m] = d + np.cumsum(share[m]) / share[m].sum()
            self.combo_cdf[np.flatnonzero(m)[-1]] = d + 1.0
        self.country_share = np.array([c[1] for c in COUNTRIES])
        self.currencies = sorted({c[2] for c in COUNTRIES}, key=lambda c: (c != "USD", c))
        self.country_currency = np.array([self.currencies.index(c[2]) for c in COUNTRIES], np.int8)
        self.category_share = np.array([c.share for c in CATEGORIES])
        weekday = np.asarray(behaviour.weekday)
        day = np.arange(days)
        self.day_season = weekday[(first_weekday + day) % 7] * (1 + behaviour.trend * day / days)
        self.season_max = float(weekday.max() * (1 + behaviour.trend))
        hourly = np.asarray(behaviour.hourly, np.float64)
        self.hour_cdf = np.concatenate([[0.0], np.cumsum(hourly) / hourly.sum()])

    def add_touch(self, touch: Touch, channel: int) -> int:
        self.touches.append(touch)
        self.touch_channel.append(channel)
        return len(self.touches) - 1

    def season(self, t: np.ndarray) -> np.ndarray:
        """Traffic multiplier at times ``t`` (days since the start): weekday x trend."""
        out: np.ndarray = self.day_season[np.minimum(t.astype(np.int64), self.days - 1)]
        return out

    def weekday(self, t: np.ndarray) -> np.ndarray:
        out: np.ndarray = (self.first_weekday + np.floor(t).astype(np.int64)) % 7
        return out

    def time_of_day(self, t: np.ndarray) -> np.ndarray:
        """Warp each day's uniform fraction through the hourly traffic curve (order-preserving)."""
        day = np.floor(t)
        out: np.ndarray = day + np.interp(t - day, self.hour_cdf, np.arange(25) / 24.0)
        return out

    def sample_combo(self, rng: np.random.Generator, device: np.ndarray) -> np.ndarray:
        target = device.astype(np.float64) + rng.random(device.size)
        idx = np.searchsorted(self.combo_cdf, target, side="right")
        return np.minimum(idx, self.combo_cdf.size - 1).astype(np.int32)

    def sample_touch(self, rng: np.random.Generator, channel: np.ndarray) -> np.ndarray:
        count = self.touch_count[channel]
        pick = np.floor(rng.random(channel.size) * np.maximum(count, 1)).astype(np.int32)
        out: np.ndarray = (self.touch_start[channel] + pick).astype(np.int32)
        return out

    def sample_landing(self, rng: np.random.Generator, channel: np.ndarray) -> np.ndarray:
        u = rng.random(channel.size)[:, None]
        out: np.ndarray = (u >= self.landing_cdf[channel]).sum(axis=1).clip(0, 3)
        return out.astype(np.int8)


@dataclass
class Persons:
    """Per-person traits (index = person number) and outcomes filled in by the visit process."""

    is_existing: np.ndarray
    first_visit: np.ndarray  # days since start, before the time-of-day warp
    visit_rate: np.ndarray  # sessions per day
    stop: np.ndarray  # P(no more visits) after a session without an order
    propensity: np.ndarray  # P(purchase) per session before lifts
    dropout: np.ndarray  # P(dropping out for good) after each order
    country: np.ndarray
    device: np.ndarray
    combo: np.ndarray
    favourite: np.ndarray
    email_opt_in: np.ndarray
    email_open: np.ndarray
    is_social: np.ndarray
    alive_until: np.ndarray  # days; inf while alive
    first_channel: np.ndarray
    signup_session_at: np.ndarray  # start (days) of the session with the sign-up; inf if none

    @property
    def size(self) -> int:
        return int(self.is_existing.size)


def draw_persons(rng: np.random.Generator, n: int, lk: Lookups) -> Persons:
    b = lk.behaviour
    existing = rng.random(n) < b.existing_share
    # first visits: seasonal day, uniform within the day (warped to hours later)
    day_p = lk.day_season / lk.day_season.sum()
    early = min(b.existing_first_visit_days, lk.days)
    early_p = lk.day_season[:early] / lk.day_season[:early].sum()
    day = np.where(existing, choice(rng, early_p, n), choice(rng, day_p, n))
    first_visit = day + rng.random(n)
    mean_rate = np.where(existing, b.visit_rate_existing, b.visit_rate_new)
    rate = rng.gamma(b.visit_rate_shape, mean_rate / b.visit_rate_shape)
    rate = np.clip(rate, 1e-4, b.max_visit_rate)
    stop = rng.beta(*b.stop_new, n)
    propensity = np.where(
        existing, rng.beta(*b.propensity_existing, n), rng.beta(*b.propensity_new, n)
    )
    device = choice(rng, lk.device_share, n).astype(np.int8)
    return Persons(
        is_existing=existing,
        first_visit=first_visit,
        visit_rate=rate,
        stop=stop,
        propensity=propensity,
        dropout=rng.beta(*b.dropout, n),
        country=choice(rng, lk.country_share, n).astype(np.int8),
        device=device,
        combo=lk.sample_combo(rng, device),
        favourite=choice(rng, lk.category_share, n).astype(np.int8),
        email_opt_in=rng.random(n) < b.email_opt_in,
        email_open=rng.beta(*b.email_open, n),
        is_social=rng.random(n) < b.social_share,
        alive_until=np.full(n, np.inf),
        first_channel=np.full(n, -1, np.int8),
        signup_session_at=np.where(existing, -np.inf, np.inf),
    )


@dataclass
class Sessions:
    """One row per session (a visit)."""

    person: np.ndarray  # int32
    start: np.ndarray  # float64 days since start, after the time-of-day warp
    channel: np.ndarray  # int8
    touch: np.ndarray  # int32
    combo: np.ndarray  # int32 device/os/browser combination
    depth: np.ndarray  # int8: 0 bounce, 1 browse, 2 cart, 3 checkout, 4 order
    topic: np.ndarray  # int8 category browsed
    landing: np.ndarray  # int8: 0 home, 1 category, 2 product, 3 sale
    signup: np.ndarray  # bool: the anonymous visitor creates an account in this session

    @property
    def size(self) -> int:
        return int(self.person.size)

    @staticmethod
    def concat(parts: list[Sessions]) -> Sessions:
        return Sessions(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(Sessions)
            }
        )


def describe_sessions(
    rng: np.random.Generator,
    persons: Persons,
    lk: Lookups,
    person: np.ndarray,
    t: np.ndarray,
    channel: np.ndarray,
    touch: np.ndarray,
    *,
    first_new: np.ndarray,
    alive: np.ndarray,
) -> Sessions:
    """Device, depth (did it convert?), topic and landing page of sessions starting at ``t``."""
    b = lk.behaviour
    n = person.size
    primary = rng.random(n) < b.primary_device
    device = np.where(primary, persons.device[person], choice(rng, lk.device_share, n))
    combo = np.where(primary, persons.combo[person], lk.sample_combo(rng, device))
    weekend = lk.weekday(t) >= 5
    lift = (
        lk.channel_lift[channel]
        * lk.device_lift[device]
        * np.where(weekend, b.weekend_purchase_lift, 1.0)
        * np.where(first_new, b.first_visit_lift, 1.0)
    )
    prob = np.minimum(persons.propensity[person] * lift, b.max_purchase_probability)
    converted = (rng.random(n) < prob) & alive
    bounce = rng.random(n) < lk.channel_bounce[channel]
    browse = choice(rng, b.browse_depth, n) + 1
    depth = np.where(converted, 4, np.where(bounce, 0, browse)).astype(np.int8)
    topic = np.where(
        rng.random(n) < b.topic_is_favourite,
        persons.favourite[person],
        choice(rng, lk.category_share, n),
    ).astype(np.int8)
    return Sessions(
        person=person.astype(np.int32),
        start=t,
        channel=channel.astype(np.int8),
        touch=touch.astype(np.int32),
        combo=combo.astype(np.int32),
        depth=depth,
        topic=topic,
        landing=lk.sample_landing(rng, channel),
        signup=np.zeros(n, bool),
    )


def visit_sessions(rng: np.random.Generator, persons: Persons, lk: Lookups) -> Sessions:
    """Every person's visits from their first visit until they stop, drop out or time ends.

    Visits follow a Poisson process of the person's rate, thinned by the weekday/trend
    multiplier, at least ``min_gap_hours`` apart. After a session with an order the person drops
    out with their dropout probability (BG/NBD-like); after one without, they stop visiting with
    their stop probability (lower once they have bought).
    """
    b = lk.behaviour
    n = persons.size
    t = persons.first_visit.copy()
    first = np.ones(n, bool)
    signed = persons.is_existing.copy()
    orders = np.zeros(n, np.int32)
    active = np.arange(n, dtype=np.int64)
    gap_min = b.min_gap_hours / 24.0
    new_cdf = np.cumsum(lk.channel_new) / lk.channel_new.sum()
    ret_cdf = np.cumsum(lk.channel_returning) / lk.channel_returning.sum()
    parts: list[Sessions] = []
    while active.size:
        ta = t[active]
        fa = first[active]
        accept = fa | (rng.random(active.size) < lk.season(ta) / lk.season_max)
        p = active[accept]
        ts = ta[accept]
        new_first = fa[accept] & ~persons.is_existing[p]
        u = rng.random(p.size)
        channel = np.where(
            new_first,
            np.searchsorted(new_cdf, u, side="right"),
            np.searchsorted(ret_cdf, u, side="right"),
        )
        channel = np.minimum(channel, len(CHANNEL_PROFILES) - 1)
        is_first = fa[accept]
        persons.first_channel[p[is_first]] = channel[is_first]
        start = lk.time_of_day(ts)
        s = describe_sessions(
            rng,
            persons,
            lk,
            p,
            start,
            channel,
            lk.sample_touch(rng, channel),
            first_new=new_first,
            alive=np.ones(p.size, bool),
        )
        converted = s.depth == 4
        u = rng.random(p.size)
        s.signup = ~signed[p] & (
            (converted & (u < b.signup_at_order))
            | ((s.depth >= 1) & ~converted & (u < b.signup_in_session))
        )
        signed[p[s.signup]] = True
        persons.signup_session_at[p[s.signup]] = start[s.signup]
        orders[p[converted]] += 1
        drop = converted & (rng.random(p.size) < persons.dropout[p])
        persons.alive_until[p[drop]] = start[drop]
        stop_p = persons.stop[p] * np.where(orders[p] > 0, b.stop_buyer_factor, 1.0)
        stop = ~converted & (rng.random(p.size) < stop_p)
        parts.append(s)
        gone = np.zeros(active.size, bool)
        gone[np.flatnonzero(accept)[drop | stop]] = True
        first[active] = False
        t[active] = ta + rng.exponential(1.0, active.size) / persons.visit_rate[active] + gap_min
        active = active[~gone & (t[active] < lk.days)]
    return Sessions.concat(parts)
