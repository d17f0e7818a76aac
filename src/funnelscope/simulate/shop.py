"""simulate(): the whole demo shop, and the SimulatedShop it returns (events + facts).

Order of generation (one numpy Generator, so a seed fixes everything): catalog, currency rates,
persons, their visits, the email program and its visits, session events, then what follows
orders (returns, refunds, NPS), ad impressions, social engagement and the ad-spend rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from funnelscope.errors import InvalidInputError, Problem
from funnelscope.ingest.pipeline import IngestReport
from funnelscope.simulate.assemble import (
    CHUNK_ROWS,
    EventText,
    digits,
    events_table,
    id_strings,
    lookup,
)
from funnelscope.simulate.catalog import Interned, build_catalog, build_pages
from funnelscope.simulate.journeys import CODE, US_PER_DAY, EventColumns, ItemStore, expand_sessions
from funnelscope.simulate.marketing import ad_spend_table, currency_rates, email_program
from funnelscope.simulate.model import BEHAVIOUR, Behaviour
from funnelscope.simulate.population import Lookups, Sessions, draw_persons, visit_sessions
from funnelscope.simulate.touchpoints import (
    COMMENTS,
    ad_impressions,
    after_orders,
    social_engagement,
)
from funnelscope.store.store import Store

__all__ = ["DEFAULT_START", "MAX_DAYS", "SimulatedShop", "simulate"]

#: The first simulated day when none is given (library code never reads the clock).
DEFAULT_START: Final = date(2024, 1, 1)
MAX_DAYS: Final = 3650
MAX_CUSTOMERS: Final = 20_000_000
#: Fact tables in load order: survey responses last, so their respondents are known.
FACT_ORDER: Final = (
    "products",
    "currency_rates",
    "ad_spend",
    "email_campaigns",
    "survey_responses",
)
FILE_FORMATS: Final = (".parquet", ".csv", ".jsonl")


@dataclass(frozen=True)
class SimulatedShop:
    """A simulated shop: person events and the fact tables, as Arrow tables.

    ``events`` has the staging columns (``events.schema.STAGING_COLUMNS``), typed: timestamps
    ``timestamp[us, UTC]``, revenue ``decimal128(18, 4)``, items ``list<ITEM_TYPE>``,
    properties JSON text; sorted by timestamp. Text columns other than ``event_id`` are
    dictionary-encoded (``dictionary<int32, string>``, zero-copy from the generator's index
    arrays); ``assemble.plain_text(shop.events)`` decodes them.

    Examples
    --------
    >>> shop = simulate(customers=200, days=14, seed=1)
    >>> shop.events.num_rows > 1000, shop.summary()["customers"]
    (True, 200)
    """

    customers: int
    days: int
    seed: int
    start: date
    events: pa.Table
    ad_spend: pa.Table
    email_campaigns: pa.Table
    survey_responses: pa.Table
    products: pa.Table
    currency_rates: pa.Table
    sessions: int

    @property
    def end(self) -> date:
        """The first day after the simulated period."""
        return self.start + timedelta(days=self.days)

    @property
    def facts(self) -> dict[str, pa.Table]:
        return {name: getattr(self, name) for name in FACT_ORDER}

    def summary(self) -> dict[str, Any]:
        """Counts of what was generated (JSON-serialisable)."""
        import pyarrow.compute as pc

        names = pc.value_counts(self.events.column("event")).to_pylist()
        by_event = {str(r["values"]): int(r["counts"]) for r in names}
        return {
            "customers": self.customers,
            "days": self.days,
            "seed": self.seed,
            "start": self.start.isoformat(),
            "events": self.events.num_rows,
            "sessions": self.sessions,
            "orders": by_event.get("order_completed", 0),
            "events_by_name": dict(sorted(by_event.items())),
            **{name: table.num_rows for name, table in self.facts.items()},
        }

    def write_store(
        self,
        store: Store,
        *,
        received_at: datetime,
        source: str = "simulator",
        progress: Callable[[int, int], None] | None = None,
    ) -> IngestReport:
        """Append the events (in chunks of ~2M rows) and the facts; one merged report.

        ``progress(done_rows, total_rows)`` is called after each chunk and each fact table.
        """
        from funnelscope.ingest.facts import append_facts
        from funnelscope.ingest.pipeline import append_events

        total = self.events.num_rows + sum(t.num_rows for t in self.facts.values())
        report = IngestReport(source=source)
        done = 0
        for lo in range(0, self.events.num_rows, CHUNK_ROWS):
            chunk = self.events.slice(lo, CHUNK_ROWS)
            report.merge(
                append_events(store, chunk, source=source, received_at=received_at, row_offset=lo)
            )
            done += chunk.num_rows
            if progress:
                progress(done, total)
        for name, table in self.facts.items():
            report.merge(
                append_facts(store, name, table, source=f"{source}:{name}", received_at=received_at)
            )
            done += table.num_rows
            if progress:
                progress(done, total)
        return report

    def write_files(self, path: str | Path) -> dict[str, Path]:
        """Write the events to ``path`` (.parquet, .csv or .jsonl) and each fact table to a
        sibling ``<stem>.<kind>.csv``. CSV and JSON Lines carry ``properties`` and ``items`` as
        JSON text and timestamps as ISO 8601 with microseconds and ``Z``.
        """
        from funnelscope.simulate.files import write_events, write_fact_csv

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in FILE_FORMATS:
            raise InvalidInputError(
                [
                    Problem(
                        "simulate.bad_format",
                        str(path),
                        f"unknown file extension {path.suffix!r}; "
                        f"allowed: {', '.join(FILE_FORMATS)}",
                    )
                ]
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        written = {"events": write_events(self.events, path, suffix)}
        for name, table in self.facts.items():
            written[name] = write_fact_csv(table, path.with_name(f"{path.stem}.{name}.csv"))
        return written


def validate(customers: int, days: int, seed: int) -> None:
    """Raise one InvalidInputError naming every out-of-range argument."""
    problems = []
    if not 1 <= customers <= MAX_CUSTOMERS:
        problems.append(
            Problem(
                "simulate.bad_customers",
                "customers",
                f"customers must be in 1..{MAX_CUSTOMERS:,}, got {customers}",
            )
        )
    if not 1 <= days <= MAX_DAYS:
        problems.append(
            Problem("simulate.bad_days", "days", f"days must be in 1..{MAX_DAYS}, got {days}")
        )
    if seed < 0:
        problems.append(
            Problem("simulate.bad_seed", "seed", f"seed must be a whole number >= 0, got {seed}")
        )
    if problems:
        raise InvalidInputError(problems)


def simulate(
    customers: int,
    days: int,
    seed: int,
    start: date | None = None,
    *,
    behaviour: Behaviour = BEHAVIOUR,
) -> SimulatedShop:
    """Simulate an online shop: ``customers`` persons over ``days`` days from ``start``.

    Deterministic for a seed (and start and behaviour). docs/simulator.md describes the model.

    Parameters
    ----------
    customers
        Persons who visit at least once (1..20,000,000): every one appears in the events, as a
        user id, an anonymous id or both.
    days
        Length of the period, 1..3650.
    seed
        Seed of the numpy Generator; the same seed gives identical tables.
    start
        The first day (UTC); default :data:`DEFAULT_START`.
    behaviour
        The behaviour parameters (``model.Behaviour``).

    Examples
    --------
    >>> a = simulate(100, 7, seed=3)
    >>> a.events.equals(simulate(100, 7, seed=3).events)
    True
    """
    validate(customers, days, seed)
    start = start or DEFAULT_START
    rng = np.random.default_rng(seed)
    id_prefix = f"sim{seed}-"
    lk = Lookups(behaviour, days, start.weekday())
    catalog = build_catalog(rng, customers)
    pages = build_pages(catalog)
    rates, rates_table = currency_rates(rng, lk, start)
    persons = draw_persons(rng, customers, lk)
    organic = visit_sessions(rng, persons, lk)
    props = Interned()
    email = email_program(rng, persons, lk, props, start=start, id_prefix=id_prefix)
    sessions = Sessions.concat([organic, email.sessions])
    items = ItemStore()
    visits = expand_sessions(rng, sessions, persons, lk, catalog, pages, props, items, rates)
    end_us = days * US_PER_DAY
    orders = visits.take(
        np.flatnonzero((visits.etype == CODE["order_completed"]) & (visits.ts < end_us))
    )
    after = after_orders(rng, orders, catalog, items, props, lk)
    ads = ad_impressions(rng, persons, lk, props)
    social = social_engagement(rng, persons, lk, props)
    spend = ad_spend_table(rng, sessions, lk, email, start=start)
    parts = [visits, email.events, ads, social, after.events]
    everything = EventColumns.concat(parts)
    nps_at = sum(p.size for p in parts[:-1]) + after.nps_first + np.arange(after.score.size)
    kept = np.flatnonzero((everything.ts >= 0) & (everything.ts < end_us))
    order = kept[np.argsort(everything.ts[kept], kind="stable")]
    events = everything.take(order)
    position = np.full(everything.size, -1, np.int64)
    position[order] = np.arange(order.size)
    # sign-ups: identity switches from the anonymous id to the user id at this instant
    signup_at = np.where(persons.is_existing, np.iinfo(np.int64).min, np.iinfo(np.int64).max)
    is_signup = events.etype == CODE["signed_up"]
    signup_at[events.person[is_signup]] = events.ts[is_signup]
    text = EventText(
        id_prefix=id_prefix,
        event_prefix=f"sim-{seed}-",
        epoch_us=(start - date(1970, 1, 1)).days * US_PER_DAY,
        lookups=lk,
        persons=persons,
        catalog=catalog,
        pages=pages,
        properties=props.to_arrow(),
        items=items,
        signup_at=signup_at,
    )
    table = events_table(events, text)
    surveys = _survey_table(table, position[nps_at], after.score, after.comment, id_prefix)
    return SimulatedShop(
        customers=customers,
        days=days,
        seed=seed,
        start=start,
        events=table,
        ad_spend=spend,
        email_campaigns=email.campaigns,
        survey_responses=surveys,
        products=catalog.to_arrow(),
        currency_rates=rates_table,
        sessions=sessions.size,
    )


def _survey_table(
    events: pa.Table, position: np.ndarray, score: np.ndarray, comment: np.ndarray, prefix: str
) -> pa.Table:
    """survey_responses rows of the NPS events that fall in the period, same respondent ids."""
    kept = position >= 0
    order = np.argsort(position[kept], kind="stable")
    rows = pa.array(position[kept][order])
    n = len(rows)
    return pa.table(
        {
            "response_id": id_strings(prefix + "r", np.arange(n), digits(n)),
            "answered_at": events.column("timestamp").take(rows),
            "user_id": events.column("user_id").take(rows),
            "anonymous_id": events.column("anonymous_id").take(rows),
            "score": pa.array(score[kept][order], pa.int64()),
            "comment": lookup(pa.array(COMMENTS, pa.string()), comment[kept][order]),
            "survey": pa.array(["nps"] * len(rows), pa.string()),
        }
    )
