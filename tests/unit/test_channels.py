from __future__ import annotations

import duckdb
import pytest

from funnelscope.events.channels import CHANNELS, derive_channel, host_sql


@pytest.mark.parametrize(
    ("source", "medium", "referrer_host", "internal", "expected"),
    [
        pytest.param("google", "cpc", None, False, "paid_search", id="google-cpc"),
        pytest.param("facebook", "cpc", None, False, "paid_social", id="facebook-cpc"),
        pytest.param("ig", "paid_social", None, False, "paid_social", id="paid-social-medium"),
        pytest.param("criteo", "display", None, False, "display", id="display"),
        pytest.param("awin", "affiliate", None, False, "affiliate", id="affiliate"),
        pytest.param("newsletter", "email", None, False, "email", id="email"),
        pytest.param("instagram", "social", None, False, "organic_social", id="social"),
        pytest.param(None, None, "www.facebook.com", False, "organic_social", id="social-ref"),
        pytest.param(None, None, "www.google.co.uk", False, "organic_search", id="search-ref"),
        pytest.param("google", "organic", None, False, "organic_search", id="organic-medium"),
        pytest.param(None, None, "blog.example", False, "referral", id="referral"),
        pytest.param(None, None, "shop.example", True, "direct", id="internal-referrer"),
        pytest.param(None, None, None, False, "direct", id="nothing"),
        pytest.param("GOOGLE", "CPC", None, False, "paid_search", id="case-insensitive"),
    ],
)
def test_channel_rules(
    source: str | None, medium: str | None, referrer_host: str | None, internal: bool, expected: str
) -> None:
    assert derive_channel(source, medium, referrer_host, internal) == expected
    assert expected in CHANNELS


@pytest.mark.parametrize(
    ("url", "host"),
    [
        pytest.param("https://www.google.co.uk/search?q=x", "www.google.co.uk", id="path"),
        pytest.param("http://Shop.Example:8080/cart", "shop.example", id="port-and-case"),
        pytest.param("https://blog.example?x=1", "blog.example", id="query-no-path"),
        pytest.param("not a url", None, id="no-scheme"),
        pytest.param(None, None, id="null"),
    ],
)
def test_host_extraction(url: str | None, host: str | None) -> None:
    row = duckdb.connect().execute(f"SELECT {host_sql('$u')}", {"u": url}).fetchone()
    assert row is not None and row[0] == host


def test_channel_is_derived_at_ingest(workspace: object) -> None:
    from funnelscope.workspace import Workspace
    from tests.conftest import load_journeys

    assert isinstance(workspace, Workspace)
    load_journeys(
        workspace,
        {
            "a": [(0, "page_viewed", {"utm_source": "google", "utm_medium": "cpc"})],
            "b": [
                (
                    0,
                    "page_viewed",
                    {"referrer": "https://www.bing.com/", "page_url": "https://s.example/"},
                )
            ],
            "c": [
                (
                    0,
                    "page_viewed",
                    {"referrer": "https://s.example/a", "page_url": "https://s.example/b"},
                )
            ],
            "d": [
                (
                    0,
                    "page_viewed",
                    {"referrer": "https://blog.example/", "page_url": "https://s.example/b"},
                )
            ],
        },
    )
    rows = dict(workspace.store.query("SELECT user_id, channel FROM events"))
    assert rows == {"a": "paid_search", "b": "organic_search", "c": "direct", "d": "referral"}
