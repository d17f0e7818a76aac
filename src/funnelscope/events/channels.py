"""Derived marketing channel of an event, from its UTM tags and referrer.

The rules, first match wins (docs/data-model.md shows the same table):

1. medium is paid (cpc, ppc, paid, ...) and the source is a social network -> ``paid_social``
2. medium is paid social (paid_social, paidsocial, ...)                     -> ``paid_social``
3. medium is paid (cpc, ppc, paid, sem, ...)                               -> ``paid_search``
4. medium is display, banner, cpm, programmatic                            -> ``display``
5. medium is affiliate or partner                                          -> ``affiliate``
6. medium or source is email / newsletter                                  -> ``email``
7. medium is social, or source or referrer host is a social network        -> ``organic_social``
8. medium is organic, or the referrer host is a search engine             -> ``organic_search``
9. any other referrer from another host than the page's                    -> ``referral``
10. otherwise                                                              -> ``direct``

Channel is computed once, in SQL at ingest, so every engine reads the same stored value.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHANNELS", "channel_sql"]

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

PAID_MEDIUMS: Final = ("cpc", "ppc", "paid", "paidsearch", "paid_search", "sem", "cpv", "cpa")
PAID_SOCIAL_MEDIUMS: Final = (
    "paid_social",
    "paidsocial",
    "social_paid",
    "paid-social",
    "social-paid",
)
DISPLAY_MEDIUMS: Final = ("display", "banner", "cpm", "programmatic", "video")
AFFILIATE_MEDIUMS: Final = ("affiliate", "affiliates", "partner")
EMAIL_WORDS: Final = ("email", "e-mail", "e_mail", "newsletter", "mail")
SOCIAL_MEDIUMS: Final = (
    "social",
    "social-media",
    "social_media",
    "sm",
    "social-network",
    "organic_social",
)
SOCIAL_HOSTS: Final = (
    "facebook",
    "instagram",
    "tiktok",
    "twitter",
    "x",
    "t",
    "linkedin",
    "pinterest",
    "youtube",
    "reddit",
    "snapchat",
    "whatsapp",
    "threads",
    "fb",
    "lnkd",
)
SEARCH_HOSTS: Final = (
    "google",
    "bing",
    "yahoo",
    "duckduckgo",
    "baidu",
    "yandex",
    "ecosia",
    "search",
)


def _in(expr: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{expr} IN ({quoted})"


def _host_is(host_expr: str, names: tuple[str, ...]) -> str:
    # 'www.google.co.uk' -> any dot-separated label equal to a known name
    return f"list_has_any(string_split({host_expr}, '.'), [{', '.join(repr(n) for n in names)}])"


def channel_sql(source: str, medium: str, referrer: str, page_url: str) -> str:
    """A DuckDB SQL CASE expression deriving the channel from the four given column expressions."""
    src = f"lower(coalesce({source}, ''))"
    med = f"lower(coalesce({medium}, ''))"
    ref_host = f"lower(coalesce(regexp_extract({referrer}, '^[a-zA-Z]+://([^/:?#]+)', 1), ''))"
    page_host = f"lower(coalesce(regexp_extract({page_url}, '^[a-zA-Z]+://([^/:?#]+)', 1), ''))"
    src_social = f"({_in(src, SOCIAL_HOSTS)} OR {_host_is(src, SOCIAL_HOSTS)})"
    return (
        "CASE"
        f" WHEN {_in(med, PAID_MEDIUMS)} AND {src_social} THEN 'paid_social'"
        f" WHEN {_in(med, PAID_SOCIAL_MEDIUMS)} THEN 'paid_social'"
        f" WHEN {_in(med, PAID_MEDIUMS)} THEN 'paid_search'"
        f" WHEN {_in(med, DISPLAY_MEDIUMS)} THEN 'display'"
        f" WHEN {_in(med, AFFILIATE_MEDIUMS)} THEN 'affiliate'"
        f" WHEN {_in(med, EMAIL_WORDS)} OR {_in(src, EMAIL_WORDS)} THEN 'email'"
        f" WHEN {_in(med, SOCIAL_MEDIUMS)} OR {src_social} OR {_host_is(ref_host, SOCIAL_HOSTS)}"
        " THEN 'organic_social'"
        f" WHEN med_is_organic OR {_host_is(ref_host, SEARCH_HOSTS)} THEN 'organic_search'"
        f" WHEN {ref_host} <> '' AND {ref_host} <> {page_host} THEN 'referral'"
        " ELSE 'direct' END"
    ).replace("med_is_organic", f"{med} = 'organic'")
