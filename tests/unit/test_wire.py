"""Body decoding: gzip (header, hint or magic), base64, LZ-string, form data=, bombs."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from urllib.parse import quote

import lzstring
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnelscope.errors import InvalidInputError
from funnelscope.ingest.wire import decode_body, lz64_decode, parse_json

PAYLOAD = json.dumps([{"event": "$pageview", "properties": {"token": "phc", "q": "a+b/c?"}}])
RAW = PAYLOAD.encode()
B64 = base64.b64encode(RAW)
LZ = lzstring.LZString().compressToBase64(PAYLOAD).encode()


@pytest.mark.parametrize(
    ("body", "kwargs", "steps"),
    [
        pytest.param(RAW, {"content_type": "application/json"}, (), id="plain-json"),
        pytest.param(RAW, {"content_type": "text/plain"}, (), id="text-plain"),
        pytest.param(
            gzip.compress(RAW),
            {"content_encoding": "gzip"},
            ("gunzip",),
            id="content-encoding-gzip",
        ),
        pytest.param(
            zlib.compress(RAW),
            {"content_encoding": "deflate"},
            ("gunzip",),
            id="content-encoding-deflate",
        ),
        pytest.param(
            gzip.compress(RAW),
            {"compression": "gzip-js", "content_type": "text/plain"},
            ("gunzip",),
            id="posthog-js-gzip-js",
        ),
        pytest.param(gzip.compress(RAW), {}, ("gunzip",), id="gzip-sniffed-by-magic"),
        pytest.param(
            gzip.compress(RAW) + gzip.compress(b""), {}, ("gunzip",), id="two-gzip-members"
        ),
        pytest.param(B64, {"compression": "base64"}, ("base64",), id="base64-hint"),
        pytest.param(B64, {}, ("base64",), id="base64-sniffed"),
        pytest.param(
            base64.urlsafe_b64encode(RAW).rstrip(b"="),
            {},
            ("base64",),
            id="base64-urlsafe-unpadded",
        ),
        pytest.param(LZ, {"compression": "lz64"}, ("lz64",), id="lz64"),
        pytest.param(
            b"data=" + quote(B64.decode()).encode(),
            {"content_type": "application/x-www-form-urlencoded"},
            ("form", "base64"),
            id="form-data-quoted",
        ),
        pytest.param(
            b"data=" + B64.replace(b"+", b" ") + b"&compression=base64",
            {"content_type": "application/x-www-form-urlencoded"},
            ("form", "base64"),
            id="form-data-plus-as-space",
        ),
        pytest.param(
            b"data=" + quote(LZ.decode()).encode() + b"&compression=lz64",
            {"content_type": "application/x-www-form-urlencoded"},
            ("form", "lz64"),
            id="form-lz64",
        ),
        pytest.param(
            base64.b64encode(gzip.compress(RAW)),
            {"compression": "base64"},
            ("base64", "gunzip"),
            id="base64-of-gzip",
        ),
    ],
)
def test_decodes(body: bytes, kwargs: dict[str, str], steps: tuple[str, ...]) -> None:
    decoded = decode_body(body, **kwargs)
    assert parse_json(decoded.data) == json.loads(PAYLOAD)
    assert decoded.steps == steps


@pytest.mark.parametrize(
    ("body", "kwargs", "code"),
    [
        pytest.param(b"", {}, "body.empty", id="empty"),
        pytest.param(b"   ", {}, "body.empty", id="blank"),
        pytest.param(b"\x1f\x8bnot-gzip-at-all", {}, "body.bad_gzip", id="bad-gzip"),
        pytest.param(gzip.compress(RAW)[:-12], {}, "body.bad_gzip", id="truncated-gzip"),
        pytest.param(b"{}", {"compression": "br"}, "body.unsupported_encoding", id="brotli"),
        pytest.param(b"@@@", {"compression": "base64"}, "body.bad_base64", id="bad-base64"),
        pytest.param(b"@@@", {"compression": "lz64"}, "body.bad_lz64", id="bad-lz64"),
        pytest.param(b"x" * 2000, {"max_bytes": 1000}, "body.too_large", id="plain-too-large"),
    ],
)
def test_rejects(body: bytes, kwargs: dict[str, object], code: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        decode_body(body, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == code


def test_gzip_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000  # 64 MiB of zeros in well under 100 KB
    with pytest.raises(InvalidInputError) as info:
        decode_body(bomb, content_encoding="gzip", max_bytes=1024 * 1024)
    assert info.value.code == "body.too_large"


def test_base64_wrapped_gzip_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"{" * (8 * 1024 * 1024))
    with pytest.raises(InvalidInputError) as info:
        decode_body(base64.b64encode(bomb), max_bytes=1024 * 1024)
    assert info.value.code == "body.too_large"


def test_lz64_quadratic_bomb_stops_at_the_cap() -> None:
    # one repeated character: each dictionary entry is one longer than the last
    bomb = lzstring.LZString().compressToBase64("a" * 200_000)
    assert len(bomb) < 2_000
    with pytest.raises(OverflowError):
        lz64_decode(bomb, 10_000)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=300))
def test_lz64_matches_the_lzstring_package(text: str) -> None:
    # the package (like LZ-string in JS) works on UTF-16 code units: BMP text round-trips
    encoded = lzstring.LZString().compressToBase64(text)
    assert lz64_decode(encoded, 10_000) == text


@pytest.mark.parametrize(
    "data",
    [b"{", b"\xff\xfe", b"[1,", b"[" * 100_000 + b"]" * 100_000],
    ids=["unclosed", "not-utf8", "truncated", "deep-nesting"],
)
def test_parse_json_rejects(data: bytes) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_json(data)
    assert info.value.code == "body.bad_json"


def test_lz64_joins_utf16_surrogate_pairs() -> None:
    # JS compresses UTF-16 code units: an emoji arrives as two surrogates, joined on decode
    encoded = lzstring.LZString().compressToBase64('{"e": "\ud83d\ude00"}')
    assert parse_json(decode_body(encoded.encode(), compression="lz64").data) == {"e": "😀"}


def test_parse_json_tolerates_bom() -> None:
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
