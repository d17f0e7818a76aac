"""The demo shop's catalog, its pages, and the small lookup tables events index into."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from funnelscope.simulate.model import ADJECTIVES, BRANDS, CATEGORIES, SHOP_URL

__all__ = ["Catalog", "Interned", "Pages", "build_catalog", "build_pages", "sample_products"]

#: The catalog grows with the shop: one product per this many customers, within the bounds.
CUSTOMERS_PER_PRODUCT = 40
MIN_PRODUCTS = 200
MAX_PRODUCTS = 2000
#: Zipf exponent of product popularity within a category.
POPULARITY_EXPONENT = 1.1
BRANDS_PER_CATEGORY = 6


class Interned:
    """Distinct strings (JSON properties) -> small ints, so events carry an index, not text."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}

    def add(self, value: str) -> int:
        return self._index.setdefault(value, len(self._index))

    def json(self, obj: dict[str, Any]) -> int:
        return self.add(json.dumps(obj, separators=(",", ":"), sort_keys=True))

    def to_arrow(self) -> pa.Array:
        return pa.array(list(self._index), pa.string())


@dataclass(frozen=True)
class Catalog:
    """Products sorted by category; ``cdf`` is category index + cumulative popularity share."""

    product_id: list[str]
    sku: list[str]
    name: list[str]
    category: np.ndarray  # int8 category index
    brand: list[str]
    price_cents: np.ndarray  # int64, USD
    cdf: np.ndarray  # float64, increasing: category + within-category cumulative popularity
    popularity: np.ndarray  # float64, global shares

    @property
    def size(self) -> int:
        return len(self.product_id)

    def to_arrow(self) -> pa.Table:
        from funnelscope.simulate.assemble import decimal_from_cents

        return pa.table(
            {
                "product_id": pa.array(self.product_id, pa.string()),
                "sku": pa.array(self.sku, pa.string()),
                "name": pa.array(self.name, pa.string()),
                "category": pa.array([CATEGORIES[c].name for c in self.category], pa.string()),
                "brand": pa.array(self.brand, pa.string()),
                "price": decimal_from_cents(self.price_cents),
                "currency": pa.array(["USD"] * self.size, pa.string()),
            }
        )


def build_catalog(rng: np.random.Generator, customers: int) -> Catalog:
    n = int(np.clip(customers // CUSTOMERS_PER_PRODUCT, MIN_PRODUCTS, MAX_PRODUCTS))
    shares = np.array([c.share for c in CATEGORIES])
    per_cat = np.floor(shares / shares.sum() * n).astype(np.int64)
    per_cat[0] += n - per_cat.sum()
    category = np.repeat(np.arange(len(CATEGORIES), dtype=np.int8), per_cat)
    medians = np.array([c.median_price for c in CATEGORIES])[category]
    sigmas = np.array([c.price_sigma for c in CATEGORIES])[category]
    dollars = np.maximum(np.floor(medians * np.exp(rng.normal(0.0, sigmas))), 2.0)
    price_cents = (dollars * 100 + 99).astype(np.int64)  # charm prices: 34.99
    brand_of_cat = [rng.choice(len(BRANDS), BRANDS_PER_CATEGORY, replace=False) for _ in CATEGORIES]
    brand_pick = rng.integers(0, BRANDS_PER_CATEGORY, n)
    noun_pick = rng.integers(0, 100, n)
    adj_pick = rng.integers(0, len(ADJECTIVES), n)
    product_id, sku, name, brand = [], [], [], []
    for i in range(n):  # a catalog is at most 2,000 rows: plain Python is fine here
        cat = CATEGORIES[int(category[i])]
        b = BRANDS[int(brand_of_cat[int(category[i])][brand_pick[i]])]
        noun = cat.nouns[int(noun_pick[i]) % len(cat.nouns)]
        product_id.append(f"P{i:05d}")
        sku.append(f"{cat.name[:3].upper()}-{i:05d}")
        name.append(f"{b} {ADJECTIVES[adj_pick[i]]} {noun}")
        brand.append(b)
    # Zipf popularity within each category, in a random order of products
    weights = np.empty(n)
    cdf = np.empty(n)
    start = 0
    for c, count in enumerate(per_cat):
        ranks = rng.permutation(int(count)) + 1
        w = ranks.astype(np.float64) ** -POPULARITY_EXPONENT
        weights[start : start + count] = w * shares[c] / w.sum()
        cdf[start : start + count] = c + np.cumsum(w) / w.sum()
        cdf[start + count - 1] = c + 1.0  # exact block ends: a draw never leaks to a neighbour
        start += int(count)
    return Catalog(product_id, sku, name, category, brand, price_cents, cdf, weights)


def sample_products(rng: np.random.Generator, catalog: Catalog, category: np.ndarray) -> np.ndarray:
    """One product per entry of ``category`` (its category index), by popularity."""
    target = category.astype(np.float64) + rng.random(category.size)
    idx = np.searchsorted(catalog.cdf, target, side="right")
    return np.minimum(idx, catalog.size - 1).astype(np.int32)


@dataclass(frozen=True)
class Pages:
    """Every page of the shop: the fixed pages, then one per category, then one per product."""

    path: list[str]
    title: list[str]
    home: int = 0
    search: int = 1
    cart: int = 2
    checkout: int = 3
    confirmation: int = 4
    signup: int = 5
    sale: int = 6
    first_category: int = 7
    first_product: int = field(default=0)

    def category_page(self, category: np.ndarray) -> np.ndarray:
        return (self.first_category + category.astype(np.int32)).astype(np.int32)

    def product_page(self, product: np.ndarray) -> np.ndarray:
        return (self.first_product + product.astype(np.int32)).astype(np.int32)

    def to_arrow(self) -> tuple[pa.Array, pa.Array, pa.Array]:
        urls = pa.array([SHOP_URL + p for p in self.path], pa.string())
        return urls, pa.array(self.path, pa.string()), pa.array(self.title, pa.string())


def build_pages(catalog: Catalog) -> Pages:
    path = ["/", "/search", "/cart", "/checkout", "/checkout/complete", "/account/signup", "/sale"]
    title = [
        "Funnelshop",
        "Search results",
        "Your cart",
        "Checkout",
        "Thank you",
        "Create your account",
        "Sale",
    ]
    for c in CATEGORIES:
        path.append("/c/" + c.name.lower())
        title.append(c.name)
    first_product = len(path)
    for pid, name in zip(catalog.product_id, catalog.name, strict=True):
        path.append(f"/p/{pid.lower()}")
        title.append(name)
    return Pages(path, title, first_product=first_product)
