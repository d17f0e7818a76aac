from __future__ import annotations

import pytest

from funnelscope.events.vocabulary import CANONICAL_EVENTS, canonical_event, normalise_items


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        pytest.param("Order Completed", "order_completed", id="segment-v2"),
        pytest.param("order_completed", "order_completed", id="snake"),
        pytest.param("purchase", "order_completed", id="ga4"),
        pytest.param("Completed Order", "order_completed", id="segment-v1-alias"),
        pytest.param("add_to_cart", "product_added", id="ga4-cart"),
        pytest.param("Product Added", "product_added", id="segment-cart"),
        pytest.param("begin_checkout", "checkout_started", id="ga4-checkout"),
        pytest.param("$pageview", "page_viewed", id="posthog-pageview"),
        pytest.param("view_item", "product_viewed", id="ga4-view-item"),
        pytest.param("  Products-Searched ", "products_searched", id="dashes-and-spaces"),
        pytest.param("My Custom Thing", "my_custom_thing", id="custom-kept"),
    ],
)
def test_names_normalise_to_one_canonical_set(raw: str, canonical: str) -> None:
    assert canonical_event(raw) == canonical


def test_every_alias_target_is_canonical() -> None:
    from funnelscope.events.vocabulary import _ALIASES

    assert set(_ALIASES.values()) <= set(CANONICAL_EVENTS)


def test_segment_products_and_ga4_items_normalise_to_one_shape() -> None:
    segment = [
        {
            "product_id": "p1",
            "name": "Shoe",
            "category": "Running",
            "price": 50,
            "quantity": 1,
            "coupon": "X",
        }
    ]
    ga4 = [
        {
            "item_id": "p1",
            "item_name": "Shoe",
            "item_category": "Running",
            "price": 50,
            "quantity": 1,
            "item_list_id": "l",
        }
    ]
    assert (
        normalise_items(segment)
        == normalise_items(ga4)
        == [{"product_id": "p1", "name": "Shoe", "category": "Running", "price": 50, "quantity": 1}]
    )
    assert normalise_items(None) is None


def test_data_model_doc_lists_every_canonical_event() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "data-model.md").read_text()
    missing = [name for name in CANONICAL_EVENTS if f"| `{name}` |" not in doc]
    assert missing == []
