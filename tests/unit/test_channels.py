from __future__ import annotations

import duckdb
import pytest

from funnelscope.events.channels import CHANNELS, channel_sql


def channel(
    source: str | None = None,
    medium: str | None = None,
    referrer: str | None = None,
    page_url: str | None = "https://shop.example/p",
) -> str:
    con = duckdb.connect()
    expr = channel_sql("$s", "$m", "$r", "$p")
    row = con.execute(f"SELECT {expr}", {"s": source, "m": medium, "r": referrer, "p": page_url})
    return str(row.fetchone()[0])  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"source": "google", "medium": "cpc"}, "paid_search", id="google-cpc"),
        pytest.param({"source": "facebook", "medium": "cpc"}, "paid_social", id="facebook-cpc"),
        pytest.param(
            {"source": "ig", "medium": "paid_social"}, "paid_social", id="paid-social-medium"
        ),
        pytest.param({"source": "criteo", "medium": "display"}, "display", id="display"),
        pytest.param({"source": "awin", "medium": "affiliate"}, "affiliate", id="affiliate"),
        pytest.param({"source": "newsletter", "medium": "email"}, "email", id="email"),
        pytest.param({"source": "instagram", "medium": "social"}, "organic_social", id="social"),
        pytest.param(
            {"referrer": "https://www.facebook.com/"}, "organic_social", id="social-referrer"
        ),
        pytest.param(
            {"referrer": "https://www.google.co.uk/search?q=x"},
            "organic_search",
            id="search-referrer",
        ),
        pytest.param(
            {"source": "google", "medium": "organic"}, "organic_search", id="organic-medium"
        ),
        pytest.param({"referrer": "https://blog.example/post"}, "referral", id="referral"),
        pytest.param({"referrer": "https://shop.example/cart"}, "direct", id="internal-referrer"),
        pytest.param({}, "direct", id="nothing"),
        pytest.param({"source": "GOOGLE", "medium": "CPC"}, "paid_search", id="case-insensitive"),
    ],
)
def test_channel_rules(kwargs: dict[str, str], expected: str) -> None:
    assert channel(**kwargs) == expected
    assert expected in CHANNELS
