"""Ecommerce vocabularies (Segment Ecommerce v2, its v1 aliases, GA4 recommended events, PostHog
and Snowplow names) normalised to one canonical set of snake_case event names.

Names are matched case-, space-, dash- and underscore-insensitively: "Order Completed",
"order_completed" and GA4's ``purchase`` are the same event. An unknown name is kept, snake-cased:
custom events are first-class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["CANONICAL_EVENTS", "canonical_event", "normalise_item", "normalise_items", "slug"]

#: Canonical event name -> one-line meaning. docs/data-model.md renders this table.
CANONICAL_EVENTS: Final[dict[str, str]] = {
    "ad_impression": "an ad was shown to the person (pixel or ad platform export)",
    "social_impression": "an organic social post was shown to the person",
    "promotion_viewed": "an on-site promotion was shown",
    "product_list_viewed": "a product list or category page was shown",
    "page_viewed": "a page or screen view",
    "products_searched": "a site search",
    "product_list_filtered": "a list was filtered or sorted",
    "promotion_clicked": "an on-site promotion was clicked",
    "product_clicked": "a product in a list was clicked",
    "product_viewed": "a product detail view",
    "product_added_to_wishlist": "a product was added to a wishlist",
    "product_shared": "a product was shared",
    "content_engaged": "content engagement: scroll depth, video play, time on page",
    "social_engaged": "a like, comment, share or follow on social media",
    "email_opened": "a marketing email was opened",
    "email_clicked": "a link in a marketing email was clicked",
    "product_added": "a product was added to the cart",
    "product_removed": "a product was removed from the cart",
    "cart_viewed": "the cart was viewed",
    "checkout_started": "checkout began",
    "checkout_step_completed": "a checkout step (shipping, payment) was completed",
    "payment_info_entered": "payment details were entered",
    "coupon_applied": "a coupon was applied",
    "order_completed": "an order was placed (the conversion)",
    "order_refunded": "an order was refunded, wholly or partly",
    "order_cancelled": "an order was cancelled",
    "product_returned": "an ordered product was returned",
    "product_reviewed": "a product review was written",
    "referral_sent": "the customer referred someone",
    "nps_answered": "a Net Promoter Score survey was answered (score 0-10)",
    "signed_up": "an account was created",
    "logged_in": "the person logged in",
    "identify": "identify call: links an anonymous id to a user id, sets traits",
    "alias": "alias call: links a previous id to a user id",
    "group": "group call: associates the person with an account",
}

# Aliases: slug -> canonical. Segment v2 names map to themselves through `slug`.
_ALIASES: Final[dict[str, str]] = {
    # Segment v1 names that Segment still maps
    "viewed_product": "product_viewed",
    "added_product": "product_added",
    "removed_product": "product_removed",
    "completed_order": "order_completed",
    "started_order": "checkout_started",
    "viewed_product_category": "product_list_viewed",
    "viewed_checkout_step": "checkout_step_completed",
    "completed_checkout_step": "checkout_step_completed",
    "checkout_step_viewed": "checkout_step_completed",
    "refunded_order": "order_refunded",
    # GA4 recommended events
    "view_promotion": "promotion_viewed",
    "view_item_list": "product_list_viewed",
    "search": "products_searched",
    "site_search": "products_searched",
    "select_promotion": "promotion_clicked",
    "select_item": "product_clicked",
    "view_item": "product_viewed",
    "add_to_wishlist": "product_added_to_wishlist",
    "share": "product_shared",
    "add_to_cart": "product_added",
    "remove_from_cart": "product_removed",
    "view_cart": "cart_viewed",
    "begin_checkout": "checkout_started",
    "add_shipping_info": "checkout_step_completed",
    "add_payment_info": "payment_info_entered",
    "purchase": "order_completed",
    "refund": "order_refunded",
    "sign_up": "signed_up",
    "login": "logged_in",
    "page_view": "page_viewed",
    # Segment spec names with other verbs
    "coupon_entered": "coupon_applied",
    "products_searched": "products_searched",
    "product_list_filtered": "product_list_filtered",
    "cart_shared": "product_shared",
    "email_link_clicked": "email_clicked",
    "signed_in": "logged_in",
    # Segment call types, PostHog and Snowplow names
    "page": "page_viewed",
    "screen": "page_viewed",
    "pageview": "page_viewed",
    "pv": "page_viewed",
    "screen_view": "page_viewed",
    "identify": "identify",
    "create_alias": "alias",
    "groupidentify": "group",
    "product_view": "product_viewed",
    "list_view": "product_list_viewed",
    "list_click": "product_clicked",
    "promo_view": "promotion_viewed",
    "promo_click": "promotion_clicked",
    "checkout_step": "checkout_step_completed",
    "transaction": "order_completed",
    "survey_sent": "nps_answered",
    "nps": "nps_answered",
    "nps_submitted": "nps_answered",
}

_NON_WORD = re.compile(r"[^0-9a-z]+")


def slug(name: str) -> str:
    """Lower-case snake_case, ignoring a leading ``$`` (PostHog's reserved events)."""
    return _NON_WORD.sub("_", name.strip().lstrip("$").lower()).strip("_")


def canonical_event(name: str) -> str:
    """The canonical name for ``name``; unknown names are kept, snake-cased."""
    key = slug(name)
    return _ALIASES.get(key, key)


# Item field aliases: Segment ``products[]`` and GA4 ``items[]`` -> canonical line item.
_ITEM_FIELDS: Final[dict[str, str]] = {
    "product_id": "product_id",
    "item_id": "product_id",
    "id": "product_id",
    "sku": "sku",
    "name": "name",
    "item_name": "name",
    "category": "category",
    "item_category": "category",
    "brand": "brand",
    "item_brand": "brand",
    "variant": "variant",
    "item_variant": "variant",
    "price": "price",
    "quantity": "quantity",
}


def normalise_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """One Segment product or GA4 item as a canonical line item (unknown fields dropped)."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        target = _ITEM_FIELDS.get(key)
        if target is not None and value is not None and target not in out:
            out[target] = value
    return out


def normalise_items(items: Any) -> list[dict[str, Any]] | None:
    """``products[]`` / ``items[]`` as canonical line items; None when absent."""
    if not isinstance(items, list):
        return None
    return [normalise_item(i) for i in items if isinstance(i, Mapping)]
