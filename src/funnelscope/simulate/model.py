"""The knobs of the demo shop: channels, devices, countries, catalog and behaviour parameters.

Every number here is documented in docs/simulator.md; change them together. The values are
plausible for a mid-sized online shop (industry-typical CTRs, CPCs, conversion and abandonment
rates), not fitted to any one shop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "BEHAVIOUR",
    "CATEGORIES",
    "CHANNEL_PROFILES",
    "COUNTRIES",
    "DEVICES",
    "SHOP_URL",
    "Behaviour",
    "Category",
    "ChannelProfile",
    "Touch",
]

#: The shop's own origin: internal pages never count as referrals.
SHOP_URL: Final = "https://www.funnelshop.example"


@dataclass(frozen=True, slots=True)
class Touch:
    """How a visit from one campaign looks: UTM tags and referrer (None = not sent)."""

    source: str | None
    medium: str | None
    campaign: str | None
    referrer: str | None
    term: str | None = None
    content: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelProfile:
    """One marketing channel.

    ``new_share`` / ``returning_share`` split first and later visits across channels;
    ``ctr`` is the range each (day, campaign) click-through rate of ``ad_spend`` is drawn from;
    ``cost`` the range of the price per click (per 1,000 impressions when ``is_cpm``), or None
    for unpaid channels; ``bounce`` the share of its sessions with one page; ``lift`` multiplies
    the person's purchase propensity in its sessions; ``landing`` the shares of landing pages
    (home, category, product, sale).
    """

    name: str
    new_share: float
    returning_share: float
    ctr: tuple[float, float] | None
    cost: tuple[float, float] | None
    bounce: float
    lift: float
    landing: tuple[float, float, float, float]
    touches: tuple[Touch, ...]
    is_cpm: bool = False


def _touches(
    source: str | None,
    medium: str | None,
    referrer: str | None,
    campaigns: tuple[str | None, ...],
    *,
    terms: tuple[str | None, ...] = (),
    content: str | None = None,
) -> tuple[Touch, ...]:
    terms = terms or (None,) * len(campaigns)
    return tuple(
        Touch(source, medium, c, referrer, t, content)
        for c, t in zip(campaigns, terms, strict=True)
    )


#: The nine channels. Email visits come only from campaign clicks (see Behaviour.email_*).
CHANNEL_PROFILES: Final = (
    ChannelProfile(
        "paid_search",
        0.20,
        0.10,
        (0.03, 0.06),
        (0.60, 2.20),
        0.35,
        1.25,
        (0.15, 0.40, 0.45, 0.0),
        _touches(
            "google",
            "cpc",
            "https://www.google.com/",
            ("brand", "generic-apparel", "generic-home", "shopping-all"),
            terms=("funnelshop", "buy clothes online", "home decor", None),
        )
        + _touches("bing", "cpc", "https://www.bing.com/", ("brand-bing",), terms=("funnelshop",)),
    ),
    ChannelProfile(
        "paid_social",
        0.14,
        0.06,
        (0.005, 0.015),
        (0.40, 1.40),
        0.55,
        0.70,
        (0.2, 0.2, 0.3, 0.3),
        _touches(
            "facebook",
            "paid_social",
            "https://m.facebook.com/",
            ("prospecting-broad", "retargeting-cart"),
            content="carousel",
        )
        + _touches(
            "instagram", "cpc", "https://l.instagram.com/", ("stories-spring",), content="story"
        )
        + _touches("tiktok", "paid_social", None, ("creator-collab",), content="video"),
    ),
    ChannelProfile(
        "display",
        0.05,
        0.03,
        (0.001, 0.005),
        (1.50, 6.00),
        0.60,
        0.60,
        (0.3, 0.1, 0.2, 0.4),
        _touches("gdn", "display", None, ("awareness-banners",), content="300x250")
        + _touches("criteo", "display", None, ("retargeting-dynamic",), content="dynamic"),
        is_cpm=True,
    ),
    ChannelProfile(
        "affiliate",
        0.05,
        0.03,
        (0.005, 0.020),
        (0.15, 0.60),
        0.30,
        1.30,
        (0.1, 0.2, 0.6, 0.1),
        _touches("awin", "affiliate", "https://www.dealfinder.example/", ("deals-network",))
        + _touches("cashback", "affiliate", "https://cashback.example.com/", ("cashback-5",)),
    ),
    ChannelProfile(
        "organic_search",
        0.28,
        0.20,
        (0.015, 0.040),
        None,
        0.40,
        1.00,
        (0.2, 0.3, 0.5, 0.0),
        _touches(None, None, "https://www.google.com/", (None,))
        + _touches(None, None, "https://duckduckgo.com/", (None,))
        + _touches(None, None, "https://www.bing.com/", (None,)),
    ),
    ChannelProfile(
        "organic_social",
        0.08,
        0.05,
        (0.005, 0.020),
        None,
        0.55,
        0.60,
        (0.3, 0.2, 0.4, 0.1),
        _touches(None, None, "https://www.instagram.com/", (None,))
        + _touches(None, None, "https://www.pinterest.com/", (None,))
        + _touches("facebook", "social", None, ("weekly-post",)),
    ),
    ChannelProfile(
        "referral",
        0.07,
        0.04,
        None,
        None,
        0.40,
        1.00,
        (0.2, 0.2, 0.6, 0.0),
        _touches(None, None, "https://www.gearreview.example/best-picks", (None,))
        + _touches(None, None, "https://news.example.net/gift-guide", (None,)),
    ),
    ChannelProfile(
        "direct",
        0.13,
        0.35,
        None,
        None,
        0.30,
        1.30,
        (0.8, 0.1, 0.1, 0.0),
        (Touch(None, None, None, None),),
    ),
    ChannelProfile(
        "email",
        0.0,
        0.0,
        (0.01, 0.08),
        (0.0008, 0.0015),
        0.30,
        1.40,
        (0.1, 0.2, 0.2, 0.5),
        (),  # one Touch per campaign, made by the email model
    ),
)


@dataclass(frozen=True, slots=True)
class Category:
    """A product category: share of the catalog, log-normal price (median, sigma), return rate."""

    name: str
    share: float
    median_price: float
    price_sigma: float
    return_rate: float
    nouns: tuple[str, ...]


CATEGORIES: Final = (
    Category("Apparel", 0.20, 35, 0.5, 0.18, ("T-Shirt", "Hoodie", "Jeans", "Dress", "Jacket")),
    Category("Shoes", 0.10, 75, 0.4, 0.15, ("Sneaker", "Boot", "Sandal", "Loafer")),
    Category("Accessories", 0.10, 25, 0.6, 0.06, ("Belt", "Cap", "Wallet", "Scarf")),
    Category("Home", 0.10, 45, 0.7, 0.05, ("Lamp", "Cushion", "Rug", "Vase")),
    Category("Kitchen", 0.10, 30, 0.6, 0.04, ("Pan", "Knife", "Mug", "Kettle")),
    Category("Beauty", 0.10, 20, 0.5, 0.03, ("Serum", "Lipstick", "Shampoo", "Cream")),
    Category("Electronics", 0.08, 120, 0.8, 0.07, ("Headphones", "Speaker", "Charger", "Watch")),
    Category("Sports", 0.07, 40, 0.6, 0.06, ("Yoga Mat", "Dumbbell", "Bottle", "Racket")),
    Category("Outdoor", 0.05, 60, 0.6, 0.06, ("Tent", "Backpack", "Lantern", "Chair")),
    Category("Toys", 0.05, 25, 0.5, 0.03, ("Puzzle", "Robot", "Blocks", "Plush")),
    Category("Books", 0.05, 15, 0.3, 0.02, ("Novel", "Cookbook", "Atlas", "Guide")),
)

BRANDS: Final = (
    "Northwind",
    "Altura",
    "Brightline",
    "Cobalt & Co",
    "Driftwood",
    "Evergreen",
    "Fable",
    "Granite",
    "Halcyon",
    "Ironleaf",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Meridian",
    "Nimbus",
    "Oakhurst",
    "Pinecrest",
    "Quartz",
    "Redwood",
    "Saltmarsh",
    "Tidewater",
    "Umbra",
    "Vantage",
    "Willow",
    "Yarrow",
    "Zephyr",
    "Arbor",
    "Bramble",
    "Cinder",
    "Dune",
)
ADJECTIVES: Final = (
    "Classic",
    "Essential",
    "Premium",
    "Everyday",
    "Urban",
    "Vintage",
    "Light",
    "Pro",
    "Soft",
    "Compact",
)

#: (device type, share of persons, purchase lift, ((os, browser, share within device), ...))
DEVICES: Final = (
    (
        "desktop",
        0.38,
        1.35,
        (
            ("Windows", "Chrome", 0.45),
            ("Windows", "Edge", 0.15),
            ("Windows", "Firefox", 0.07),
            ("macOS", "Safari", 0.12),
            ("macOS", "Chrome", 0.15),
            ("Linux", "Firefox", 0.03),
            ("Linux", "Chrome", 0.03),
        ),
    ),
    (
        "mobile",
        0.55,
        0.75,
        (
            ("iOS", "Safari", 0.42),
            ("iOS", "Chrome", 0.06),
            ("Android", "Chrome", 0.40),
            ("Android", "Samsung Internet", 0.12),
        ),
    ),
    ("tablet", 0.07, 1.00, (("iPadOS", "Safari", 0.65), ("Android", "Chrome", 0.35))),
)

#: (ISO country, share of persons, currency of their orders)
COUNTRIES: Final = (
    ("US", 0.64, "USD"),
    ("CA", 0.09, "USD"),
    ("AU", 0.06, "USD"),
    ("MX", 0.04, "USD"),
    ("GB", 0.06, "GBP"),
    ("DE", 0.04, "EUR"),
    ("FR", 0.03, "EUR"),
    ("NL", 0.02, "EUR"),
    ("IE", 0.01, "EUR"),
    ("ES", 0.01, "EUR"),
)

#: Foreign currencies: (code, rate in USD on the first day, daily log-volatility)
RATES: Final = (("EUR", 1.08, 0.003), ("GBP", 1.27, 0.003))


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Person and session behaviour; docs/simulator.md explains each parameter."""

    existing_share: float = 0.25  # persons with an account before the period
    existing_first_visit_days: int = 21  # their first visit falls in the period's first days
    visit_rate_shape: float = 0.6  # Gamma shape of sessions/day per person
    visit_rate_new: float = 0.06  # mean sessions/day, new visitors
    visit_rate_existing: float = 0.15  # mean sessions/day, existing customers
    max_visit_rate: float = 3.0
    min_gap_hours: float = 2.0  # between two sessions of one person
    stop_new: tuple[float, float] = (2.0, 3.0)  # Beta: P(stop visiting) after a session, no orders
    stop_buyer_factor: float = 0.3  # buyers stop browsing at this fraction of that rate
    propensity_new: tuple[float, float] = (0.5, 20.0)  # Beta: P(purchase) per session
    propensity_existing: tuple[float, float] = (1.0, 18.0)
    first_visit_lift: float = 0.5  # a new visitor's first session converts less
    dropout: tuple[float, float] = (1.0, 4.0)  # Beta: P(drop out for good) after each order
    max_purchase_probability: float = 0.9
    # depth of non-buying, non-bouncing sessions: browse only / cart / checkout
    browse_depth: tuple[float, float, float] = (0.78, 0.15, 0.07)
    signup_in_session: float = 0.06  # an anonymous visitor signs up in a non-bounce session
    signup_at_order: float = 0.8  # ... or at checkout (else a guest order)
    primary_device: float = 0.85  # sessions on the person's main device
    topic_is_favourite: float = 0.6  # a session browses the person's favourite category
    searches: float = 0.3  # P(a site search) in a non-bounce session
    category_views: float = 0.6  # Poisson mean of category pages per session
    product_views: float = 1.5  # 1 + Poisson mean of product detail views
    extra_adds: float = 0.4  # 1 + Poisson mean of products added, in cart sessions
    remove: float = 0.12  # P(removing a product) in a cart session
    cart_view: float = 0.7  # P(viewing the cart page) in a cart session
    multi_quantity: float = 0.12  # P(quantity above 1) of a line item
    weekday: tuple[float, ...] = (1.0, 0.98, 0.97, 1.0, 0.95, 1.30, 1.35)  # Mon..Sun traffic
    weekend_purchase_lift: float = 0.85  # weekend sessions convert less (more mobile browsing)
    trend: float = 0.15  # traffic grows by this share over the period
    # hour-of-day traffic shares (UTC), 0h..23h
    hourly: tuple[float, ...] = (
        1.5,
        1.0,
        0.7,
        0.5,
        0.5,
        0.7,
        1.2,
        2.2,
        3.3,
        4.0,
        4.4,
        4.7,
        5.0,
        5.1,
        5.0,
        5.0,
        5.2,
        5.7,
        6.3,
        6.9,
        7.0,
        6.2,
        4.6,
        2.9,
    )
    event_gap_seconds: float = 35.0  # median seconds between events in a session
    email_opt_in: float = 0.7  # share of accounts receiving newsletters
    email_weekdays: tuple[int, ...] = (1, 3)  # Tuesday and Thursday sends
    email_hour: int = 14
    email_delivery: float = 0.98
    email_open: tuple[float, float] = (1.2, 4.0)  # Beta: a person's open probability
    email_click: float = 0.12  # P(click | open)
    awareness_ad_share: float = 0.7  # persons acquired by display/paid social with ad impressions
    awareness_other_share: float = 0.15  # other new persons with ad impressions before visiting
    awareness_days: float = 5.0  # impressions fall in the days before the first visit
    social_share: float = 0.12  # persons engaging with the shop's social accounts
    nps_share: float = 0.15  # orders followed by an NPS answer
    tracking_loss: float = 0.15  # ad clicks that never become a tracked session


BEHAVIOUR: Final = Behaviour()
