"""Derived marketing channel of an event, from its UTM tags and referrer.

The rules, first match wins (docs/data-model.md shows the same table):

1. medium is paid (cpc, ppc, paid, ...) and the source is a social network -> ``paid_social``
2. medium is paid social (paid_social, paidsocial, ...)                     -> ``paid_social``
3. medium is paid (cpc, ppc, paid, sem, ...)                               -> ``paid_search``
4. medium is display, banner, cpm, programmatic, video                    -> ``display``
5. medium is affiliate or partner                                          -> ``affiliate``
6. medium or source is email / newsletter                                  -> ``email``
7. medium is social, or source or referrer host is a social network        -> ``organic_social``
8. medium is organic, or the referrer host is a search engine             -> ``organic_search``
9. any other referrer from another host than the page's                    -> ``referral``
10. otherwise                                                              -> ``direct``

The rules run in Python once per distinct (source, medium, referrer host, internal) key of a
batch; SQL only extracts the hosts (:func:`host_sql`). Channel is stored at ingest, so every
engine reads the same value.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHANNELS", "derive_channel", "host_sql"]

CHANNELS: Final = (
    "organic_search",
    "paid_search",
    "organic_social",
    "paid_social",
    "email",
    "display",
    "affiliate",
    "referral",
    "direct",
)

PAID_MEDIUMS: Final = frozenset(
    {"cpc", "ppc", "paid", "paidsearch", "paid_search", "sem", "cpv", "cpa"}
)
PAID_SOCIAL_MEDIUMS: Final = frozenset(
    {"paid_social", "paidsocial", "social_paid", "paid-social", "social-paid"}
)
DISPLAY_MEDIUMS: Final = frozenset({"display", "banner", "cpm", "programmatic", "video"})
AFFILIATE_MEDIUMS: Final = frozenset({"affiliate", "affiliates", "partner"})
EMAIL_WORDS: Final = frozenset({"email", "e-mail", "e_mail", "newsletter", "mail"})
SOCIAL_MEDIUMS: Final = frozenset(
    {"social", "social-media", "social_media", "sm", "social-network", "organic_social"}
)
SOCIAL_HOSTS: Final = frozenset(
    {
        "facebook", "instagram", "tiktok", "twitter", "x", "t", "linkedin", "pinterest",
        "youtube", "reddit", "snapchat", "whatsapp", "threads", "fb", "lnkd", "ig",
    }
)  # fmt: skip
SEARCH_HOSTS: Final = frozenset(
    {"google", "bing", "yahoo", "duckduckgo", "baidu", "yandex", "ecosia", "search"}
)


def _names_in(value: str, names: frozenset[str]) -> bool:
    """'www.google.co.uk' or 'google': any dot-separated label is a known name."""
    return value in names or any(label in names for label in value.split("."))


def derive_channel(
    source: str | None, medium: str | None, referrer_host: str | None, is_internal: bool
) -> str:
    """The channel of one touchpoint (see the module docstring for the rules).

    Examples
    --------
    >>> derive_channel("google", "cpc", None, False)
    'paid_search'
    >>> derive_channel(None, None, "www.facebook.com", False)
    'organic_social'
    """
    src = (source or "").strip().lower()
    med = (medium or "").strip().lower()
    ref = (referrer_host or "").strip().lower()
    src_social = bool(src) and _names_in(src, SOCIAL_HOSTS)
    if med in PAID_MEDIUMS and src_social:
        return "paid_social"
    if med in PAID_SOCIAL_MEDIUMS:
        return "paid_social"
    if med in PAID_MEDIUMS:
        return "paid_search"
    if med in DISPLAY_MEDIUMS:
        return "display"
    if med in AFFILIATE_MEDIUMS:
        return "affiliate"
    if med in EMAIL_WORDS or src in EMAIL_WORDS:
        return "email"
    if med in SOCIAL_MEDIUMS or src_social or (ref and _names_in(ref, SOCIAL_HOSTS)):
        return "organic_social"
    if med == "organic" or (ref and _names_in(ref, SEARCH_HOSTS)):
        return "organic_search"
    if ref and not is_internal:
        return "referral"
    return "direct"


def host_sql(url: str) -> str:
    """SQL for the lower-cased host of a URL expression (NULL when there is none).

    One regular expression: ``split_part`` is a macro whose nesting multiplies its work.
    """
    return f"NULLIF(lower(regexp_extract({url}, '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#]+)', 1)), '')"
