"""Marketing: currency rates, the email program, and the daily ad-spend rows of each channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow as pa

from funnelscope.simulate.catalog import Interned
from funnelscope.simulate.journeys import CODE, US_PER_DAY, EventColumns
from funnelscope.simulate.model import CHANNEL_PROFILES, RATES, Touch
from funnelscope.simulate.population import (
    EMAIL,
    Lookups,
    Persons,
    Sessions,
    describe_sessions,
)

__all__ = ["EmailProgram", "ad_spend_table", "currency_rates", "email_program"]

EMAIL_THEMES = ("new-arrivals", "weekend-sale", "bestsellers", "back-in-stock", "style-guide")
#: A person receives newsletters from this long after their sign-up session.
SUBSCRIBE_DELAY_DAYS = 1.0 / 24.0


def currency_rates(
    rng: np.random.Generator, lk: Lookups, start: date
) -> tuple[np.ndarray, pa.Table]:
    """Daily rates (USD per unit) as a geometric random walk; row i = ``lk.currencies[i]``."""
    rates = np.ones((len(lk.currencies), lk.days))
    rows_date: list[np.ndarray] = []
    rows_cur: list[str] = []
    rows_rate: list[np.ndarray] = []
    epoch_day = (start - date(1970, 1, 1)).days
    for code, base, vol in RATES:
        steps = rng.normal(0.0, vol, lk.days)
        steps[0] = 0.0
        walk = base * np.exp(np.cumsum(steps))
        rates[lk.currencies.index(code)] = np.round(walk, 6)
        rows_date.append(np.arange(lk.days, dtype=np.int32) + epoch_day)
        rows_cur += [code] * lk.days
        rows_rate.append(np.round(walk, 6))
    table = pa.table(
        {
            "date": pa.array(np.concatenate(rows_date), pa.date32()),
            "currency": pa.array(rows_cur, pa.string()),
            "rate": pa.array(np.concatenate(rows_rate), pa.float64()),
        }
    )
    return rates, table


@dataclass
class EmailProgram:
    events: EventColumns  # email_opened and email_clicked
    sessions: Sessions  # the visits that follow the clicks
    campaigns: pa.Table  # email_campaigns facts
    send_day: np.ndarray  # per campaign
    delivered: np.ndarray
    clicks: np.ndarray
    touch: np.ndarray  # per campaign


def email_program(
    rng: np.random.Generator,
    persons: Persons,
    lk: Lookups,
    props: Interned,
    *,
    start: date,
    id_prefix: str,
) -> EmailProgram:
    """Newsletters on the configured weekdays to opted-in accounts; opens, clicks and visits."""
    b = lk.behaviour
    send_days = [d for d in range(lk.days) if (lk.first_weekday + d) % 7 in b.email_weekdays]
    parts: list[EventColumns] = []
    visit_person: list[np.ndarray] = []
    visit_time: list[np.ndarray] = []
    visit_touch: list[np.ndarray] = []
    ids, names, sent, recipients, delivered, clicks, touches = [], [], [], [], [], [], []
    for k, day in enumerate(send_days):  # one iteration per campaign (two a week)
        send = day + b.email_hour / 24.0
        name = f"{EMAIL_THEMES[k % len(EMAIL_THEMES)]}-{start + timedelta(days=day)}"
        campaign_id = f"{id_prefix}e{k}"
        touch = lk.add_touch(Touch("newsletter", "email", name, None), EMAIL)
        prop = props.json({"campaign_id": campaign_id, "campaign": name})
        to = np.flatnonzero(
            persons.email_opt_in & (persons.signup_session_at + SUBSCRIBE_DELAY_DAYS <= send)
        )
        got = to[rng.random(to.size) < b.email_delivery]
        appeal = rng.uniform(0.8, 1.2)
        opened = got[rng.random(got.size) < np.minimum(persons.email_open[got] * appeal, 1.0)]
        open_at = send + np.maximum(rng.lognormal(np.log(3.0), 1.0, opened.size), 0.1) / 24.0
        is_click = rng.random(opened.size) < b.email_click
        click_at = open_at[is_click] + rng.uniform(5, 120, int(is_click.sum())) / 86_400.0
        clicked = opened[is_click]
        n_open, n_click = opened.size, clicked.size
        ev = EventColumns.empty(n_open + n_click)
        ev.ts[:] = (np.concatenate([open_at, click_at]) * US_PER_DAY).astype(np.int64)
        ev.etype[:n_open] = CODE["email_opened"]
        ev.etype[n_open:] = CODE["email_clicked"]
        ev.person[:] = np.concatenate([opened, clicked])
        ev.touch[:] = touch
        ev.props[:] = prop
        parts.append(ev)
        visit_person.append(clicked)
        visit_time.append(click_at + rng.uniform(2, 8, n_click) / 86_400.0)
        visit_touch.append(np.full(n_click, touch, np.int32))
        ids.append(campaign_id)
        names.append(name)
        sent.append(send)
        recipients.append(to.size)
        delivered.append(got.size)
        clicks.append(n_click)
        touches.append(touch)
    person = np.concatenate(visit_person) if visit_person else np.zeros(0, np.int64)
    t = np.concatenate(visit_time) if visit_time else np.zeros(0)
    sessions = describe_sessions(
        rng,
        persons,
        lk,
        person,
        t,
        np.full(person.size, EMAIL, np.int8),
        np.concatenate(visit_touch) if visit_touch else np.zeros(0, np.int32),
        first_new=np.zeros(person.size, bool),
        alive=t < persons.alive_until[person],
    )
    epoch_us = (start - date(1970, 1, 1)).days * US_PER_DAY
    campaigns = pa.table(
        {
            "campaign_id": pa.array(ids, pa.string()),
            "name": pa.array(names, pa.string()),
            "sent_at": pa.array(
                (np.array(sent) * US_PER_DAY).astype(np.int64) + epoch_us,
                pa.timestamp("us", tz="UTC"),
            ),
            "recipients": pa.array(recipients, pa.int64()),
            "delivered": pa.array(delivered, pa.int64()),
        }
    )
    return EmailProgram(
        events=EventColumns.concat(parts) if parts else EventColumns.empty(0),
        sessions=sessions,
        campaigns=campaigns,
        send_day=np.array(send_days, np.int64),
        delivered=np.array(delivered, np.int64),
        clicks=np.array(clicks, np.int64),
        touch=np.array(touches, np.int64),
    )


def _spend_source(touch: Touch) -> str | None:
    """The platform of a touch: its utm_source, else the referrer's site name."""
    if touch.source:
        return touch.source
    if touch.referrer:
        host = touch.referrer.split("/")[2].split(".")
        return host[-2] if len(host) >= 2 else host[0]
    return None


def ad_spend_table(
    rng: np.random.Generator,
    sessions: Sessions,
    lk: Lookups,
    email: EmailProgram,
    *,
    start: date,
) -> pa.Table:
    """One row per day and campaign of every channel with impressions (not referral, direct).

    Clicks are the tracked visits plus the clicks lost before tracking; impressions follow from
    a click-through rate drawn in the channel's range; spend from a cost per click (per mille
    for display) drawn in its range; unpaid channels cost nothing.
    """
    b = lk.behaviour
    n_touch = len(lk.touches)
    day = np.minimum(sessions.start.astype(np.int64), lk.days - 1)
    visits = np.bincount(day * n_touch + sessions.touch, minlength=lk.days * n_touch)
    visits = visits.reshape(lk.days, n_touch)
    names = ("day", "touch", "impressions", "clicks", "spend", "reach")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for ch_idx, profile in enumerate(CHANNEL_PROFILES):
        if profile.ctr is None or ch_idx == EMAIL:
            continue
        lo, hi = profile.ctr
        for t in range(
            int(lk.touch_start[ch_idx]), int(lk.touch_start[ch_idx] + lk.touch_count[ch_idx])
        ):
            v = visits[:, t]
            clicks = v + rng.poisson(v * b.tracking_loss / (1 - b.tracking_loss))
            ctr = rng.uniform(lo, hi, lk.days)
            impressions = np.round(np.maximum(clicks, 0.3) / ctr).astype(np.int64)
            if profile.cost is None:
                spend = np.zeros(lk.days)
            elif profile.is_cpm:
                spend = impressions / 1000.0 * rng.uniform(*profile.cost, lk.days)
            else:
                spend = clicks * rng.uniform(*profile.cost, lk.days)
            reach = (
                np.round(impressions / rng.uniform(1.5, 3.0, lk.days)).astype(np.int64)
                if profile.name in ("paid_social", "display")
                else np.full(lk.days, -1)
            )
            cols["day"].append(np.arange(lk.days))
            cols["touch"].append(np.full(lk.days, t))
            cols["impressions"].append(impressions)
            cols["clicks"].append(clicks.astype(np.int64))
            cols["spend"].append(spend)
            cols["reach"].append(reach)
    # email: one row per send; impressions are delivered emails
    email_cost = CHANNEL_PROFILES[EMAIL].cost or (0.0, 0.0)
    cols["day"].append(email.send_day)
    cols["touch"].append(email.touch)
    cols["impressions"].append(email.delivered)
    cols["clicks"].append(email.clicks)
    cols["spend"].append(email.delivered * rng.uniform(*email_cost, email.send_day.size))
    cols["reach"].append(email.delivered)
    arr = {k: np.concatenate(v) for k, v in cols.items()}
    touch = arr["touch"].astype(np.int64)
    from funnelscope.simulate.assemble import decimal_from_cents

    epoch_day = (start - date(1970, 1, 1)).days
    reach = arr["reach"]
    return pa.table(
        {
            "date": pa.array((arr["day"] + epoch_day).astype(np.int32), pa.date32()),
            "channel": pa.array([CHANNEL_PROFILES[lk.touch_channel[t]].name for t in touch]),
            "source": pa.array([_spend_source(lk.touches[t]) for t in touch], pa.string()),
            "campaign": pa.array([lk.touches[t].campaign for t in touch], pa.string()),
            "impressions": pa.array(arr["impressions"], pa.int64()),
            "clicks": pa.array(arr["clicks"], pa.int64()),
            "spend": decimal_from_cents(np.round(arr["spend"] * 100).astype(np.int64)),
            "currency": pa.array(["USD"] * touch.size, pa.string()),
            "reach": pa.array(reach, pa.int64(), mask=reach < 0),
        }
    )
