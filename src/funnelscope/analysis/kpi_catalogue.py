"""The KPI catalogue: every stage KPI defined once, as numerator / denominator over named bases.

A KPI's value is ``scale * numerator / denominator`` (or ``scale * numerator`` without a
denominator), where numerator and denominator are :class:`Measure` s: a SQL aggregate expression
over one **base relation** (one row per session, order, cart, ...; see :data:`BASES`), or the
value of another KPI. The relations are written once, in SQL, by :class:`BasePlan`; the
queries are assembled and run on any engine by :mod:`funnelscope.analysis.kpis`. docs/kpis.md
is rendered from this module by :func:`render_markdown`, so the docs and the code cannot drift.

Rules shared by every KPI:

* a zero or missing denominator gives ``None`` (not 0, not an error);
* money is in the store currency; each amount is converted at the rate valid on its date; a
  group with an amount that has no rate gives ``None`` and a note, never a raw sum;
* additive KPIs (counts and sums) add up over the values of any breakdown; the others do not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from funnelscope.analysis.sessions import SessionSpec, bounce_sql
from funnelscope.events.stages import Stage

__all__ = [
    "BASES",
    "CATALOGUE",
    "DIMENSIONS",
    "MAIN_KPIS",
    "BaseInfo",
    "BasePlan",
    "Kpi",
    "Measure",
    "Unit",
    "kpi_by_name",
    "render_markdown",
]

Unit = Literal["count", "ratio", "percent", "currency", "seconds", "days", "score", "multiple"]

#: Breakdown dimensions, and what each means.
DIMENSIONS: Final[dict[str, str]] = {
    "channel": "marketing channel (sessions: of the first event; orders: of the order's session, "
    "i.e. last touch; customers: of the first order, i.e. acquisition channel)",
    "campaign": "UTM campaign (ad spend: the campaign column; email: the campaign id)",
    # email KPIs have the single channel `email`
    "device": "device type of the session's first event",
    "country": "country of the session's first event",
    "new_vs_returning": "sessions: `new` for a person's first session ever, else `returning`; "
    "orders: `new` for a customer's first order ever, else `returning`",
    "product": "product id (events: the event's product; orders: each line item)",
    "page": "page path (sessions: the landing page; events: the event's page)",
}


@dataclass(frozen=True)
class BaseInfo:
    """A base relation: one row per ``grain``, counted at time ``ts``, with these dimensions."""

    name: str
    grain: str
    ts: str
    dimensions: tuple[str, ...]


_SESSION_DIMS = ("channel", "campaign", "device", "country", "new_vs_returning")

#: The base relations KPIs are aggregated over.
BASES: Final[dict[str, BaseInfo]] = {
    b.name: b
    for b in (
        BaseInfo("traffic", "session", "session start", (*_SESSION_DIMS, "page")),
        BaseInfo(
            "site_events",
            "tracked event (impressions, social, product views, engagement, page loads)",
            "event time",
            ("channel", "campaign", "device", "country", "product", "page"),
        ),
        BaseInfo(
            "spend", "ad_spend row (day x channel x campaign)", "its date", ("channel", "campaign")
        ),
        BaseInfo("email_sends", "email campaign", "its send time", ("channel", "campaign")),
        BaseInfo(
            "email_engagement",
            "person x email campaign with an open or click",
            "the campaign's send time",
            ("channel", "campaign"),
        ),
        BaseInfo(
            "orders",
            "order (order_completed, deduplicated by order_id)",
            "order time",
            _SESSION_DIMS,
        ),
        BaseInfo("order_items", "order line item", "order time", (*_SESSION_DIMS, "product")),
        BaseInfo("carts", "session with an add-to-cart", "its first add-to-cart", _SESSION_DIMS),
        BaseInfo(
            "checkouts", "session with a checkout start", "its first checkout start", _SESSION_DIMS
        ),
        BaseInfo(
            "customers",
            "customer x period with at least one order in it",
            "the period",
            ("channel", "country"),
        ),
        BaseInfo(
            "retention",
            "customer x period who ordered in the period before",
            "the period",
            ("channel", "country"),
        ),
        BaseInfo(
            "surveys", "NPS survey response (survey_responses, survey = 'nps')", "answer time", ()
        ),
    )
}


@dataclass(frozen=True)
class Measure:
    """An aggregate over one base relation.

    ``expr`` is a SQL aggregate in the DuckDB dialect over the base's columns (trusted code, never
    user input). With ``quantile`` set, ``expr`` is a per-row value instead and the measure is its
    exact quantile (linear interpolation between closest ranks), over rows where it is not null.
    ``money`` measures sum amounts in the store currency and are ``None`` when one has no rate.
    ``events`` narrows the ``site_events`` base to the event names the measure reads.
    """

    base: str
    expr: str
    money: bool = False
    quantile: float | None = None
    events: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.base}|{self.expr}|{self.quantile}|{self.money}"

    @property
    def is_sum(self) -> bool:
        """Counts and sums: an empty group is 0 (quantiles of nothing are None)."""
        return self.quantile is None


@dataclass(frozen=True)
class Kpi:
    """One KPI of the catalogue (see the module docstring for the shared rules)."""

    name: str
    stage: Stage
    unit: Unit
    description: str
    numerator: Measure | str
    denominator: Measure | str | None = None
    scale: float = 1.0
    #: converts the numerator's unit (microseconds -> seconds, ...) before it is reported
    numerator_scale: float = 1.0
    higher_is_better: bool = True
    additive: bool = False
    #: allowed breakdowns; by default the dimensions every base it reads has in common
    only: tuple[str, ...] | None = None
    #: used instead when the numerator is 0 or empty over the whole window (e.g. reach)
    fallback: Measure | None = None
    fallback_note: str = ""
    notes: str = ""
    measures: tuple[Measure, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        found = tuple(
            m for m in (self.numerator, self.denominator, self.fallback) if isinstance(m, Measure)
        )
        object.__setattr__(self, "measures", found)

    @property
    def breakdowns(self) -> tuple[str, ...]:
        if self.only is not None:
            return self.only
        allowed: set[str] | None = None
        for m in self.measures:
            dims = set(BASES[m.base].dimensions)
            allowed = dims if allowed is None else allowed & dims
        for ref in (self.numerator, self.denominator):
            if isinstance(ref, str):
                dims = set(kpi_by_name(ref).breakdowns)
                allowed = dims if allowed is None else allowed & dims
        return tuple(d for d in DIMENSIONS if d in (allowed or set()))


def _m(base: str, expr: str, **kw: object) -> Measure:
    return Measure(base, expr, **kw)  # type: ignore[arg-type]


def _count(event: str) -> Measure:
    return _m("site_events", f"count(*) FILTER (WHERE event = '{event}')", events=(event,))


def _social(action: str) -> Measure:
    return _m(
        "site_events",
        f"count(*) FILTER (WHERE event = 'social_engaged' AND social_action = '{action}')",
        events=("social_engaged",),
    )


def _load(q: float) -> Measure:
    return _m(
        "site_events",
        "CASE WHEN event = 'page_viewed' THEN load_ms END",
        quantile=q,
        events=("page_viewed",),
    )


A, INT, D, ACT, R = Stage.AWARENESS, Stage.INTEREST, Stage.DECISION, Stage.ACTION, Stage.RETENTION
SESSIONS = _m("traffic", "count(*)")
VISITORS = _m("traffic", "count(DISTINCT person_id)")
ORDERS = _m("orders", "count(*)")
REVENUE = _m("orders", "sum(revenue)", money=True)
SPEND = _m("spend", "sum(spend)", money=True)
IMPRESSIONS = _m("spend", "sum(impressions)")
CLICKS = _m("spend", "sum(clicks)")
PURCHASERS = _m("orders", "count(DISTINCT person_id)")
CUSTOMERS = _m("customers", "count(*)")
NEW_CUSTOMERS = _m("orders", "count(*) FILTER (WHERE is_first)")
DELIVERED = _m("email_sends", "sum(delivered)")
_NO_VISITOR_TYPE = ("channel", "campaign", "device", "country")
_LOAD_DIMS = ("channel", "device", "country", "page")

CATALOGUE: Final[tuple[Kpi, ...]] = (
    # -- Awareness ---------------------------------------------------------------------------
    Kpi(
        "impressions",
        A,
        "count",
        "Ad impressions reported by the ad platforms (ad_spend); "
        "without ad spend rows in the window, person-level ad_impression events.",
        IMPRESSIONS,
        additive=True,
        fallback=_count("ad_impression"),
        fallback_note="no ad_spend rows: counted from ad_impression events",
    ),
    Kpi(
        "reach",
        A,
        "count",
        "Unique persons shown an ad (ad_impression events); without "
        "person-level impressions in the window, the platforms' reach from ad_spend (summed, so "
        "not de-duplicated across days, channels or campaigns).",
        _m(
            "site_events",
            "count(DISTINCT person_id) FILTER (WHERE event = 'ad_impression')",
            events=("ad_impression",),
        ),
        fallback=_m("spend", "sum(reach)"),
        fallback_note="no ad_impression events: summed ad_spend.reach (not de-duplicated)",
    ),
    Kpi(
        "sessions",
        A,
        "count",
        "Sessions started in the period (docs/sessions.md).",
        SESSIONS,
        additive=True,
    ),
    Kpi("visitors", A, "count", "Unique persons with a session started in the period.", VISITORS),
    Kpi(
        "new_visitors",
        A,
        "count",
        "Persons whose first session ever started in the period.",
        _m("traffic", "count(*) FILTER (WHERE is_new_visitor)"),
        additive=True,
    ),
    Kpi(
        "social_likes",
        A,
        "count",
        "Likes: social_engaged events with action `like`.",
        _social("like"),
        additive=True,
    ),
    Kpi(
        "social_comments",
        A,
        "count",
        "Comments: social_engaged events with action `comment`.",
        _social("comment"),
        additive=True,
    ),
    Kpi(
        "social_shares",
        A,
        "count",
        "Shares: social_engaged events with action `share`.",
        _social("share"),
        additive=True,
    ),
    Kpi(
        "social_follows",
        A,
        "count",
        "Follows: social_engaged events with action `follow`.",
        _social("follow"),
        additive=True,
    ),
    Kpi(
        "cpm",
        A,
        "currency",
        "Cost per thousand impressions: spend / impressions x 1000.",
        SPEND,
        IMPRESSIONS,
        scale=1000.0,
        higher_is_better=False,
    ),
    # -- Interest ----------------------------------------------------------------------------
    Kpi(
        "ctr",
        INT,
        "ratio",
        "Click-through rate: ad clicks / ad impressions (ad_spend).",
        CLICKS,
        IMPRESSIONS,
    ),
    Kpi(
        "cpc",
        INT,
        "currency",
        "Cost per click: spend / ad clicks (ad_spend).",
        SPEND,
        CLICKS,
        higher_is_better=False,
    ),
    Kpi(
        "product_views",
        INT,
        "count",
        "Product detail views (product_viewed events).",
        _count("product_viewed"),
        additive=True,
    ),
    Kpi(
        "product_views_per_session",
        INT,
        "count",
        "product_viewed events / sessions.",
        _m("traffic", "sum(product_views)"),
        SESSIONS,
    ),
    Kpi(
        "time_on_page",
        INT,
        "seconds",
        "Average time on page: from a page_viewed event to the "
        "next event of the same session; the last page of a session has no known time and is "
        "left out.",
        _m("traffic", "sum(timed_page_us)"),
        _m("traffic", "sum(timed_pages)"),
        numerator_scale=1e-6,
    ),
    Kpi(
        "scroll_depth",
        INT,
        "percent",
        "Average scroll depth (properties.scroll_depth, 0-100) of "
        "content_engaged events that track it.",
        _m(
            "site_events",
            "sum(scroll_depth) FILTER (WHERE event = 'content_engaged')",
            events=("content_engaged",),
        ),
        _m(
            "site_events",
            "count(scroll_depth) FILTER (WHERE event = 'content_engaged')",
            events=("content_engaged",),
        ),
    ),
    Kpi(
        "email_open_rate",
        INT,
        "ratio",
        "Unique opens / delivered emails, per campaign sent in "
        "the period (a click counts as an open).",
        _m("email_engagement", "sum(opened)"),
        DELIVERED,
    ),
    Kpi(
        "email_click_rate",
        INT,
        "ratio",
        "Unique clicks / delivered emails, per campaign sent in the period.",
        _m("email_engagement", "sum(clicked)"),
        DELIVERED,
    ),
    Kpi(
        "email_click_to_open_rate",
        INT,
        "ratio",
        "Unique clicks / unique opens.",
        _m("email_engagement", "sum(clicked)"),
        _m("email_engagement", "sum(opened)"),
    ),
    Kpi(
        "bounce_rate",
        INT,
        "ratio",
        "Bounced sessions / sessions (bounce rule: docs/sessions.md).",
        _m("traffic", "count(*) FILTER (WHERE is_bounce)"),
        SESSIONS,
        higher_is_better=False,
    ),
    Kpi(
        "avg_session_duration",
        INT,
        "seconds",
        "Average session duration (first to last event).",
        _m("traffic", "sum(duration_us)"),
        SESSIONS,
        numerator_scale=1e-6,
    ),
    Kpi(
        "pages_per_session",
        INT,
        "count",
        "page_viewed events / sessions.",
        _m("traffic", "sum(page_count)"),
        SESSIONS,
    ),
    Kpi(
        "page_load_p50",
        INT,
        "seconds",
        "Median page load time (page_viewed properties.load_time_ms), where tracked.",
        _load(0.5),
        numerator_scale=1e-3,
        higher_is_better=False,
        only=_LOAD_DIMS,
    ),
    Kpi(
        "page_load_p75",
        INT,
        "seconds",
        "75th percentile page load time, where tracked.",
        _load(0.75),
        numerator_scale=1e-3,
        higher_is_better=False,
        only=_LOAD_DIMS,
    ),
    Kpi(
        "page_load_p95",
        INT,
        "seconds",
        "95th percentile page load time, where tracked.",
        _load(0.95),
        numerator_scale=1e-3,
        higher_is_better=False,
        only=_LOAD_DIMS,
    ),
    # -- Decision ----------------------------------------------------------------------------
    Kpi(
        "conversion_rate",
        D,
        "ratio",
        "Visitors -> purchasers: persons with an order / persons with a session, in the period.",
        PURCHASERS,
        VISITORS,
        only=_NO_VISITOR_TYPE,
    ),
    Kpi(
        "session_conversion_rate",
        D,
        "ratio",
        "Sessions -> orders: orders / sessions.",
        ORDERS,
        SESSIONS,
        only=_NO_VISITOR_TYPE,
    ),
    Kpi(
        "add_to_cart_rate",
        D,
        "ratio",
        "Sessions with an add-to-cart / sessions.",
        _m("traffic", "count(*) FILTER (WHERE cart_adds > 0)"),
        SESSIONS,
    ),
    Kpi(
        "cart_abandonment_rate",
        D,
        "ratio",
        "Carts (sessions with an add-to-cart) with no order "
        "by the person within the cart window (default 24 h) of the first add / carts.",
        _m("carts", "count(*) FILTER (WHERE is_abandoned)"),
        _m("carts", "count(*)"),
        higher_is_better=False,
    ),
    Kpi(
        "checkout_abandonment_rate",
        D,
        "ratio",
        "Checkouts (sessions with a checkout start) with "
        "no order by the person within the cart window of the first start / checkouts.",
        _m("checkouts", "count(*) FILTER (WHERE is_abandoned)"),
        _m("checkouts", "count(*)"),
        higher_is_better=False,
    ),
    # -- Action ------------------------------------------------------------------------------
    Kpi(
        "orders",
        ACT,
        "count",
        "Orders placed (order_completed, one per order_id).",
        ORDERS,
        additive=True,
    ),
    Kpi(
        "revenue",
        ACT,
        "currency",
        "Gross order revenue in the store currency (refunds are not subtracted; see refund_rate).",
        REVENUE,
        additive=True,
    ),
    Kpi("aov", ACT, "currency", "Average order value: revenue / orders.", REVENUE, ORDERS),
    Kpi(
        "units_per_order",
        ACT,
        "count",
        "Units (sum of line item quantities) / orders that list their items.",
        _m("orders", "sum(units) FILTER (WHERE has_items)"),
        _m("orders", "count(*) FILTER (WHERE has_items)"),
    ),
    Kpi(
        "units_sold",
        ACT,
        "count",
        "Units sold: sum of line item quantities (1 when missing).",
        _m("order_items", "sum(quantity)"),
        additive=True,
    ),
    Kpi(
        "product_revenue",
        ACT,
        "currency",
        "Line item revenue (price x quantity) in the store currency.",
        _m("order_items", "sum(line_revenue)", money=True),
        additive=True,
    ),
    Kpi(
        "sales_conversion_rate",
        ACT,
        "ratio",
        "Deciders -> buyers: persons with an order / persons with a cart, in the period.",
        PURCHASERS,
        _m("carts", "count(DISTINCT person_id)"),
        only=_NO_VISITOR_TYPE,
    ),
    Kpi(
        "roas",
        ACT,
        "multiple",
        "Return on ad spend: revenue attributed last touch (the channel "
        "and campaign of the order's session) / ad spend.",
        REVENUE,
        SPEND,
    ),
    Kpi(
        "cac",
        ACT,
        "currency",
        "Customer acquisition cost: ad spend / new customers (first "
        "orders ever, by the channel and campaign of that order's session).",
        SPEND,
        NEW_CUSTOMERS,
        higher_is_better=False,
    ),
    Kpi(
        "refund_rate",
        ACT,
        "ratio",
        "Orders placed in the period with an order_refunded event (any time) / orders.",
        _m("orders", "count(*) FILTER (WHERE is_refunded)"),
        ORDERS,
        higher_is_better=False,
    ),
    Kpi(
        "return_rate",
        ACT,
        "ratio",
        "Orders placed in the period with a product_returned event (any time) / orders.",
        _m("orders", "count(*) FILTER (WHERE is_returned)"),
        ORDERS,
        higher_is_better=False,
    ),
    # -- Retention ---------------------------------------------------------------------------
    Kpi(
        "repeat_purchase_rate",
        R,
        "ratio",
        "Customers of the period with two or more orders ever "
        "(up to the period's end) / customers of the period.",
        _m("customers", "count(*) FILTER (WHERE lifetime_orders >= 2)"),
        CUSTOMERS,
    ),
    Kpi(
        "customer_retention_rate",
        R,
        "ratio",
        "Customers of the previous period (bucket) who "
        "ordered again in this one / customers of the previous period.",
        _m("retention", "sum(retained)"),
        _m("retention", "count(*)"),
    ),
    Kpi(
        "churn_rate",
        R,
        "ratio",
        "Customers of the previous period (bucket) with no order in "
        "this one / customers of the previous period (= 1 - retention).",
        _m("retention", "count(*) FILTER (WHERE retained = 0)"),
        _m("retention", "count(*)"),
        higher_is_better=False,
    ),
    Kpi(
        "purchase_frequency",
        R,
        "count",
        "Orders / customers, in the period.",
        _m("customers", "sum(period_orders)"),
        CUSTOMERS,
    ),
    Kpi(
        "avg_customer_lifespan",
        R,
        "days",
        "Average time from a customer's first order to their "
        "last order up to the period's end, over the period's customers.",
        _m("customers", "sum(lifespan_us)"),
        CUSTOMERS,
        numerator_scale=1 / 86_400e6,
    ),
    Kpi(
        "historical_clv",
        R,
        "currency",
        "Historical customer lifetime value: revenue of the "
        "period's customers from their first order to the period's end / customers.",
        _m("customers", "sum(lifetime_revenue)", money=True),
        CUSTOMERS,
    ),
    Kpi(
        "nps",
        R,
        "score",
        "Net Promoter Score: % promoters (9-10) - % detractors (0-6); the "
        "denominator is the response count.",
        _m("surveys", "count(*) FILTER (WHERE score >= 9) - count(*) FILTER (WHERE score <= 6)"),
        _m("surveys", "count(*)"),
        scale=100.0,
    ),
    Kpi(
        "clv_cac",
        R,
        "multiple",
        "Historical CLV / CAC (by acquisition channel).",
        "historical_clv",
        "cac",
        only=("channel",),
    ),
)

_BY_NAME: Final = {k.name: k for k in CATALOGUE}

#: The KPIs the stage report shows for each stage.
MAIN_KPIS: Final[dict[Stage, tuple[str, ...]]] = {
    A: ("sessions", "visitors", "new_visitors", "impressions", "reach"),
    INT: ("bounce_rate", "avg_session_duration", "pages_per_session", "ctr", "email_open_rate"),
    D: ("add_to_cart_rate", "cart_abandonment_rate", "conversion_rate"),
    ACT: ("orders", "revenue", "aov", "roas", "cac"),
    R: ("repeat_purchase_rate", "customer_retention_rate", "nps"),
}


def kpi_by_name(name: str) -> Kpi:
    """The catalogue entry called ``name`` (KeyError when there is none)."""
    return _BY_NAME[name]


def _formula(ref: Measure | str | None) -> str:
    if ref is None:
        return ""
    if isinstance(ref, str):
        return f"KPI `{ref}`"
    if ref.quantile is not None:
        return f"p{round(ref.quantile * 100)} of `{ref.expr}` over `{ref.base}`"
    return f"`{ref.expr}` over `{ref.base}`"


def render_markdown() -> str:
    """docs/kpis.md, generated from the catalogue (a test keeps the file equal to this)."""
    lines = [
        "# KPIs",
        "",
        "<!-- Generated by funnelscope.analysis.kpi_catalogue.render_markdown(); do not edit. -->",
        "",
        "Every KPI is defined once in `funnelscope/analysis/kpi_catalogue.py` as a numerator and "
        "a denominator, each an aggregate over a named base relation, and runs unchanged on "
        "every engine. value = scale x numerator / denominator.",
        "",
        "- A zero or missing denominator gives no value (null), never 0 and never an error.",
        "- Money is in the store currency (`meta.store_currency`). Each amount is converted with "
        "the `currency_rates` rate valid on its date: the latest rate at or before that date. An "
        "amount without such a rate makes the whole group's value null, with a note; currencies "
        "are never summed raw.",
        "- Additive KPIs add up over the values of any breakdown; the others do not (a person "
        "can visit through two channels).",
        '- `compare="previous_period"` runs the same KPIs over the window of the same length '
        "just before; with a granularity, the k-th bucket of the window is compared with the "
        "k-th bucket of the previous window. change = value / previous_value - 1 (null when the "
        "previous value is 0 or null).",
        "- Sessions are defined in [sessions.md](sessions.md).",
        "",
        "## What counts",
        "",
        "- **Orders** are `order_completed` events, one per `order_id` (the first by time, then "
        "event_id); an order counts at its own time, also when its session started the day "
        "before. Refunds and returns are separate events matched by `order_id`.",
        "- **Attribution is last touch**: an order, cart or checkout has the channel and campaign "
        "of the session it happened in, and a session starts anew when the UTM campaign changes. "
        "`ad_spend.channel` uses the same channel names (docs/data-model.md), so ROAS and CAC "
        "divide attributed revenue and new customers by the spend of the same channel.",
        "- **New customers** are persons whose first order ever (stitched persons) falls in the "
        "period; a customer's acquisition channel is the channel of that first order.",
        "- **Carts and checkouts** are sessions with an add-to-cart (a checkout start); one is "
        "abandoned when the person places no order within the cart window (24 hours by "
        "default, inclusive) after its first add-to-cart (checkout start), even after the "
        "period ends.",
        "- **Email** rates are per campaign sent in the period; opens and clicks are matched to "
        "the campaign by `properties.campaign_id` (else `utm_campaign`), counted once per person "
        "and campaign, and a click counts as an open.",
        "- **Tracked properties**: `social_engaged` `properties.action` (like, comment, share, "
        "follow), `content_engaged` `properties.scroll_depth` (0-100), `page_viewed` "
        "`properties.load_time_ms`.",
        "- **Customers and retention** with a granularity: each day, week or month is its own "
        "period, and retention compares it with the bucket just before.",
        "- **Units**: `ratio` is a fraction (0.25 = 25%), `percent` is 0-100, `multiple` is x "
        "times, `score` is NPS points (-100..100), `currency` is the store currency.",
        "",
        "## Base relations",
        "",
        "| base | one row per | counted at | breakdowns |",
        "|---|---|---|---|",
    ]
    for b in BASES.values():
        dims = ", ".join(b.dimensions) or "none"
        lines.append(f"| `{b.name}` | {b.grain} | {b.ts} | {dims} |")
    lines += ["", "## Breakdowns", "", "| breakdown | meaning |", "|---|---|"]
    lines += [f"| `{d}` | {text} |" for d, text in DIMENSIONS.items()]
    for stage in Stage:
        lines += ["", f"## {stage.label}", ""]
        lines += [
            "| KPI | unit | better | additive | definition | numerator | denominator | "
            "scale | breakdowns |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for k in CATALOGUE:
            if k.stage != stage:
                continue
            definition = k.description
            if k.fallback is not None:
                definition += f" Fallback: {_formula(k.fallback)}."
            scale = " ".join(
                ([f"value x {k.scale:g}"] if k.scale != 1.0 else [])
                + ([f"numerator x {k.numerator_scale:g}"] if k.numerator_scale != 1.0 else [])
            )
            lines.append(
                f"| `{k.name}` | {k.unit} | {'higher' if k.higher_is_better else 'lower'} | "
                f"{'yes' if k.additive else 'no'} | {definition} | {_formula(k.numerator)} | "
                f"{_formula(k.denominator)} | {scale} | {', '.join(k.breakdowns) or 'none'} |"
            )
    return "\n".join(lines) + "\n"


# -- base relations, written once as SQL -------------------------------------------------------

_RATES = """
    SELECT currency, valid_from, rate,
           lead(valid_from) OVER (PARTITION BY currency ORDER BY valid_from) AS valid_to
    FROM (SELECT currency, CAST("date" AS TIMESTAMPTZ) AS valid_from, max(rate) AS rate
          FROM currency_rates GROUP BY currency, "date")
"""
_RATE_JOIN = """LEFT JOIN _rates r ON r.currency = {a}.currency
    AND {a}.currency <> $store_currency AND {ts} >= r.valid_from
    AND (r.valid_to IS NULL OR {ts} < r.valid_to)"""
_RATE = (
    "CASE WHEN {a}.currency = $store_currency THEN CAST(1 AS DECIMAL(18, 8)) "
    "ELSE CAST(r.rate AS DECIMAL(18, 8)) END"
)
_IN_WINDOW = "{ts} >= $start AND {ts} < $end"
_SESSION_COLS = """s.channel, s.utm_campaign AS campaign, s.device_type AS device, s.country"""


# Money: an amount (DECIMAL(18, 4)) times a rate (DECIMAL(18, 8)) is exact in DECIMAL(37, 12) on
# every engine, then rounded once to 4 places; wider intermediates would make engines round
# differently (DuckDB falls back to DOUBLE, Spark drops scale).
class BasePlan:
    """The SQL of the base relations: collects the CTEs one query needs, dependencies first.

    ``need(name)`` adds base ``name`` (and what it reads); ``sql(select)`` prefixes a SELECT
    with them. ``bucket(col)`` is the period of a timestamp column for the granularity.
    Queries bind ``$start``, ``$end``, ``$lookback``, ``$store_currency``, ``$cart_window_us``.
    """

    def __init__(
        self,
        *,
        granularity: str | None,
        session: SessionSpec,
        session_ctes: list[tuple[str, str]],
        site_events: Sequence[str],
    ) -> None:
        self.granularity = granularity
        self.session = session
        self.ctes: dict[str, str] = {}
        self._have: set[str] = set()
        self._session_ctes = session_ctes
        self._event_names = tuple(sorted(set(site_events)))

    def need(self, name: str) -> None:
        if name in self._have:
            return
        self._have.add(name)
        # the relations of sessions.journey_ctes: inline CTEs, or nothing when materialised
        if name == "sessions":
            self.ctes.update(self._session_ctes)
            return
        build: Callable[[], None] = getattr(self, f"_{name.lstrip('_')}")
        build()

    def bucket(self, col: str) -> str:
        """The period of timestamp column ``col`` (a trusted column reference)."""
        if self.granularity is None:
            return "CAST($start AS TIMESTAMPTZ)"
        return f"date_trunc('{self.granularity}', {col})"

    def _add(self, name: str, body: str, *deps: str) -> None:
        for dep in deps:
            self.need(dep)
        self.ctes[name] = body

    def sql(self, select: str) -> str:
        if not self.ctes:
            return select
        return "WITH " + ",\n".join(f"{n} AS ({b})" for n, b in self.ctes.items()) + "\n" + select

    # shared pieces
    def _rates(self) -> None:
        self._add("_rates", _RATES)

    def _orders_all(self) -> None:
        # attributed_orders: one row per order with its session's channel... and order rank
        # (materialised with the sessions on the embedded engine; sessions.order_ctes)
        body = f"""
            SELECT o.person_id, o.event_id, o.ts, o.order_key, o.currency, o.items,
                   {_RATE.format(a="o")} AS rate,
                   CASE WHEN o.currency <> $store_currency AND r.rate IS NULL THEN 1 ELSE 0 END
                     AS rate_missing,
                   CAST(o.revenue * {_RATE.format(a="o")} AS DECIMAL(18, 4)) AS revenue,
                   CASE WHEN o.revenue IS NOT NULL AND o.currency <> $store_currency
                        AND r.rate IS NULL THEN 1 ELSE 0 END AS unconverted,
                   o.order_rank, o.channel, o.campaign, o.device, o.country
            FROM attributed_orders o
            {_RATE_JOIN.format(a="o", ts="o.ts")}
        """
        self._add("_orders_all", body, "_rates", "sessions")

    def _first_orders(self) -> None:
        self._add(
            "_first_orders",
            "SELECT person_id, channel, country FROM _orders_all WHERE order_rank = 1",
            "_orders_all",
        )

    # the bases of kpi_catalogue.BASES
    def _traffic(self) -> None:
        body = f"""
            SELECT started_at AS ts, person_id, channel, utm_campaign AS campaign,
                   device_type AS device, country, landing_page AS page,
                   CASE WHEN is_new_visitor THEN 'new' ELSE 'returning' END AS new_vs_returning,
                   is_new_visitor, {bounce_sql(self.session)} AS is_bounce, duration_us,
                   page_count, interactions, product_views, cart_adds, timed_page_us, timed_pages
            FROM sessions WHERE {_IN_WINDOW.format(ts="started_at")}
        """
        self._add("traffic", body, "sessions")

    def _site_events(self) -> None:
        # site_facts: the events of SITE_FACT_EVENTS, properties extracted (sessions.py)
        events = ", ".join("'" + e.replace("'", "''") + "'" for e in self._event_names) or "''"
        body = f"""
            SELECT ts, person_id, event, channel, campaign, device, country, product, page,
                   social_action, scroll_depth, load_ms
            FROM site_facts
            WHERE {_IN_WINDOW.format(ts="ts")} AND event IN ({events})
        """
        self._add("site_events", body, "sessions")

    def _spend(self) -> None:
        body = f"""
            SELECT CAST(a."date" AS TIMESTAMPTZ) AS ts, a.channel, a.campaign, a.impressions,
                   a.clicks, a.reach,
                   CAST(a.spend * {_RATE.format(a="a")} AS DECIMAL(18, 4)) AS spend,
                   CASE WHEN a.currency <> $store_currency AND r.rate IS NULL THEN 1 ELSE 0 END
                     AS unconverted
            FROM ad_spend a {_RATE_JOIN.format(a="a", ts='CAST(a."date" AS TIMESTAMPTZ)')}
            WHERE {_IN_WINDOW.format(ts='CAST(a."date" AS TIMESTAMPTZ)')}
        """
        self._add("spend", body, "_rates")

    def _email_campaigns(self) -> None:
        self._add(
            "_email_campaigns",
            "SELECT campaign_id, min(sent_at) AS sent_at, "
            "sum(delivered) AS delivered FROM email_campaigns GROUP BY campaign_id",
        )

    def _email_sends(self) -> None:
        body = f"""SELECT sent_at AS ts, 'email' AS channel, campaign_id AS campaign, delivered
                   FROM _email_campaigns
                   WHERE {_IN_WINDOW.format(ts="sent_at")}"""
        self._add("email_sends", body, "_email_campaigns")

    def _email_engagement(self) -> None:
        # email_touches: one row per person and campaign key opened or clicked (sessions.py)
        body = f"""
            SELECT c.sent_at AS ts, 'email' AS channel, c.campaign_id AS campaign, t.person_id,
                   1 AS opened, t.clicked
            FROM email_touches t JOIN _email_campaigns c ON c.campaign_id = t.campaign_key
            WHERE {_IN_WINDOW.format(ts="c.sent_at")}
        """
        self._add("email_engagement", body, "_email_campaigns", "sessions")

    def _orders(self) -> None:
        body = f"""
            SELECT o.ts, o.person_id, o.order_key, o.revenue, o.unconverted, o.channel,
                   o.campaign, o.device, o.country, o.order_rank = 1 AS is_first,
                   CASE WHEN o.order_rank = 1 THEN 'new' ELSE 'returning' END AS new_vs_returning,
                   coalesce(u.units, 0) AS units, u.order_key IS NOT NULL AS has_items,
                   f.order_id IS NOT NULL AS is_refunded, t.order_id IS NOT NULL AS is_returned
            FROM _orders_all o
            LEFT JOIN (SELECT order_key, sum(coalesce(i.quantity, 1)) AS units
                       FROM (SELECT order_key, unnest(items) AS i FROM _orders_all
                             WHERE {_IN_WINDOW.format(ts="ts")})
                       GROUP BY order_key) u ON u.order_key = o.order_key
            LEFT JOIN (SELECT DISTINCT order_id FROM events WHERE event = 'order_refunded')
                 f ON f.order_id = o.order_key
            LEFT JOIN (SELECT DISTINCT order_id FROM events WHERE event = 'product_returned')
                 t ON t.order_id = o.order_key
            WHERE {_IN_WINDOW.format(ts="o.ts")}
        """
        self._add("orders", body, "_orders_all")

    def _order_items(self) -> None:
        body = f"""
            SELECT ts, person_id, channel, campaign, device, country, new_vs_returning,
                   coalesce(i.product_id, i.sku) AS product, coalesce(i.quantity, 1) AS quantity,
                   CAST(CAST(i.price * coalesce(i.quantity, 1) AS DECIMAL(18, 4)) * rate
                        AS DECIMAL(18, 4)) AS line_revenue,
                   CASE WHEN i.price IS NOT NULL THEN rate_missing ELSE 0 END AS unconverted
            FROM (SELECT o.*, unnest(o.items) AS i,
                         CASE WHEN o.order_rank = 1 THEN 'new' ELSE 'returning' END
                           AS new_vs_returning
                  FROM _orders_all o WHERE {_IN_WINDOW.format(ts="o.ts")})
        """
        self._add("order_items", body, "_orders_all")

    def _abandonment(self, name: str, at: str, order_at: str) -> None:
        # cart_sessions: each cart session with the person's first order at or after its first
        # add (checkout start); abandoned = no such order within the cart window (sessions.py)
        body = f"""
            SELECT {at} AS ts, person_id, channel, campaign, device, country,
                   CASE WHEN is_new_visitor THEN 'new' ELSE 'returning' END AS new_vs_returning,
                   ({order_at} IS NULL OR date_diff('microsecond', {at}, {order_at})
                                          > $cart_window_us) AS is_abandoned
            FROM cart_sessions WHERE {_IN_WINDOW.format(ts=at)}
        """
        self._add(name, body, "sessions")

    def _carts(self) -> None:
        self._abandonment("carts", "first_add_at", "add_order_at")

    def _checkouts(self) -> None:
        self._abandonment("checkouts", "first_checkout_at", "checkout_order_at")

    def _customers(self) -> None:
        order = "PARTITION BY person_id ORDER BY ts, order_key"
        history = f"""
            SELECT person_id, ts,
                   row_number() OVER ({order}) AS cum_orders,
                   sum(coalesce(revenue, 0)) OVER ({order} ROWS BETWEEN UNBOUNDED PRECEDING
                                                   AND CURRENT ROW) AS cum_revenue,
                   sum(unconverted) OVER ({order} ROWS BETWEEN UNBOUNDED PRECEDING
                                          AND CURRENT ROW) AS cum_unconverted,
                   min(ts) OVER (PARTITION BY person_id) AS first_order_at
            FROM _orders_all WHERE ts < $end
        """
        self._add("_order_history", history, "_orders_all")
        body = f"""
            SELECT c.*, f.channel, f.country FROM (
                SELECT person_id, min(ts) AS ts, count(*) AS period_orders,
                       max(cum_orders) AS lifetime_orders,
                       arg_max(cum_revenue, cum_orders) AS lifetime_revenue,
                       CASE WHEN max(cum_unconverted) > 0 THEN 1 ELSE 0 END AS unconverted,
                       date_diff('microsecond', min(first_order_at), max(ts)) AS lifespan_us
                FROM _order_history WHERE {_IN_WINDOW.format(ts="ts")}
                GROUP BY person_id, {self.bucket("ts")}
            ) c LEFT JOIN _first_orders f ON f.person_id = c.person_id
        """
        self._add("customers", body, "_first_orders")

    def _retention(self) -> None:
        g = self.granularity
        if g is None:
            bucket_any = (
                "CASE WHEN ts < $start THEN CAST($lookback AS TIMESTAMPTZ) "
                "ELSE CAST($start AS TIMESTAMPTZ) END"
            )
            following = (
                "CASE WHEN a.period < CAST($start AS TIMESTAMPTZ) "
                "THEN CAST($start AS TIMESTAMPTZ) END"
            )
            first = "CAST($start AS TIMESTAMPTZ)"
        else:
            bucket_any = f"date_trunc('{g}', ts)"
            step = {"day": "INTERVAL 1 DAY", "week": "INTERVAL 7 DAY", "month": "INTERVAL 1 MONTH"}
            following = f"a.period + {step[g]}"
            first = f"date_trunc('{g}', CAST($start AS TIMESTAMPTZ))"
        active = f"""SELECT DISTINCT person_id, {bucket_any} AS period FROM _orders_all
                     WHERE ts >= $lookback AND ts < $end"""
        self._add("_active", active, "_orders_all")
        body = f"""
            SELECT a.person_id, {following} AS ts,
                   CASE WHEN b.person_id IS NULL THEN 0 ELSE 1 END AS retained,
                   f.channel, f.country
            FROM _active a
            LEFT JOIN _active b ON b.person_id = a.person_id AND b.period = {following}
            LEFT JOIN _first_orders f ON f.person_id = a.person_id
            WHERE {following} >= {first} AND {following} < $end
        """
        self._add("retention", body, "_first_orders")

    def _surveys(self) -> None:
        body = f"""SELECT answered_at AS ts, score FROM survey_responses
                   WHERE survey = 'nps' AND score BETWEEN 0 AND 10
                   AND {_IN_WINDOW.format(ts="answered_at")}"""
        self._add("surveys", body)
