"""Request bodies as the SDKs send them -> JSON: gzip, base64, LZ-string, form ``data=``.

The order follows PostHog's capture service, which is the most permissive of the four SDK
families (Segment and RudderStack only ever send JSON, optionally with ``Content-Encoding:
gzip``; Snowplow sends plain JSON):

1. a form body (``application/x-www-form-urlencoded``) is replaced by its ``data`` field, with
   spaces turned back into ``+`` (the form encoding ate them);
2. the compression hint is the first of: query ``compression``, form ``compression``,
   ``Content-Encoding``. ``gzip``/``gzip-js``/``deflate`` -> gunzip, ``lz64``/``lz-string`` ->
   LZ-string in base64, ``base64``/``b64`` -> base64;
3. gzip is also recognised by its magic bytes ``1f 8b`` (posthog-js sends ``text/plain`` with the
   hint only in the query, some versions not even there);
4. a payload that is still base64 (not starting with ``{`` or ``[``) is unwrapped once.

Every decompression stops at ``max_bytes`` of output: a gzip bomb (a few KB that inflate to GB)
costs at most ``max_bytes`` of memory and fails with ``body.too_large`` (HTTP 413).

Errors are :class:`~funnelscope.errors.InvalidInputError` with one problem whose code is one of
``body.empty``, ``body.too_large``, ``body.bad_gzip``, ``body.bad_base64``, ``body.bad_lz64``,
``body.unsupported_encoding``, ``body.bad_json``.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

from pydantic_core import from_json

from funnelscope.errors import InvalidInputError, Problem
from funnelscope.ingest.records import lenient_b64decode

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "Decoded",
    "decode_body",
    "lz64_decode",
    "parse_json",
]

#: Default cap on a decoded body (PostHog's batch limit is 20 MB).
DEFAULT_MAX_DECODED_BYTES: Final = 20 * 1024 * 1024
_GZIP_MAGIC: Final = b"\x1f\x8b"
_BASE64ISH: Final = re.compile(rb"[A-Za-z0-9+/_\-=\s]+")
_GZIP_HINTS: Final = frozenset({"gzip", "gzip-js", "x-gzip", "deflate"})
_LZ_HINTS: Final = frozenset({"lz64", "lz-string", "lzstring"})
_B64_HINTS: Final = frozenset({"base64", "b64"})


def _error(code: str, message: str) -> InvalidInputError:
    return InvalidInputError([Problem(code, "body", message)])


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded body and the steps taken, in order (``("form", "gunzip")``) for logs and tests."""

    data: bytes
    steps: tuple[str, ...]


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """gzip or zlib data, inflated to at most ``max_bytes`` (several gzip members allowed)."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
        try:
            out += inflater.decompress(rest, max_bytes + 1 - len(out))
        except zlib.error as exc:
            raise _error("body.bad_gzip", f"the body is not valid gzip: {exc}") from None
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise _error(
                "body.too_large", f"the decompressed body is larger than {max_bytes} bytes"
            )
        if not inflater.eof:
            raise _error("body.bad_gzip", "the gzip body is truncated")
        rest = inflater.unused_data.lstrip(b"\x00")
    return bytes(out)


_LZ_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_LZ_VALUES: Final = {c: i for i, c in enumerate(_LZ_ALPHABET)} | {"-": 62, "_": 63}


def lz64_decode(text: str, max_chars: int) -> str:
    """LZ-string ``compressToBase64`` output, decompressed to at most ``max_chars``.

    A capped decoder of our own rather than ``lzstring.LZString.decompressFromBase64``: the
    format lets each dictionary entry be one character longer than the last, so a small input
    can expand quadratically, and the package has no way to stop early. The package is the
    oracle in the tests. Raises ``ValueError`` on malformed input or when over the cap.

    Examples
    --------
    >>> import lzstring
    >>> lz64_decode(lzstring.LZString().compressToBase64('{"a": [1, 2, 3]}'), 100)
    '{"a": [1, 2, 3]}'
    """
    values = [_LZ_VALUES.get(c, -1) for c in text if not c.isspace()]
    if not values or -1 in values:
        raise ValueError("not LZ-string base64")
    position, index, current = 32, 1, values[0]

    def read(count: int) -> int:
        nonlocal position, index, current
        bits = 0
        for shift in range(count):
            if current & position:
                bits |= 1 << shift
            position >>= 1
            if position == 0:
                if index >= len(values):
                    raise ValueError("LZ-string input ends early")
                position, current = 32, values[index]
                index += 1
        return bits

    dictionary: dict[int, str] = {}
    first = read(2)
    if first == 2:
        return ""
    if first > 2:
        raise ValueError("LZ-string input does not start with a literal")
    w = chr(read(8 if first == 0 else 16))
    dictionary[3] = w
    out = [w]
    size, enlarge_in, num_bits, total = 4, 4, 3, 1
    while True:
        code = read(num_bits)
        if code in (0, 1):
            dictionary[size] = chr(read(8 if code == 0 else 16))
            code, size, enlarge_in = size, size + 1, enlarge_in - 1
        elif code == 2:
            return "".join(out)
        if enlarge_in == 0:
            enlarge_in, num_bits = 1 << num_bits, num_bits + 1
        if code in dictionary:
            entry = dictionary[code]
        elif code == size:
            entry = w + w[0]
        else:
            raise ValueError("LZ-string input refers to an unknown code")
        total += len(entry)
        if total > max_chars:
            raise OverflowError(f"LZ-string output is larger than {max_chars} characters")
        out.append(entry)
        dictionary[size] = w + entry[0]
        size, enlarge_in, w = size + 1, enlarge_in - 1, entry
        if enlarge_in == 0:
            enlarge_in, num_bits = 1 << num_bits, num_bits + 1


def _apply(data: bytes, hint: str, max_bytes: int, steps: list[str]) -> bytes:
    if hint in _GZIP_HINTS:
        steps.append("gunzip")
        return _gunzip(data, max_bytes)
    if hint in _LZ_HINTS:
        steps.append("lz64")
        try:
            text = lz64_decode(data.decode("ascii"), max_bytes)
        except OverflowError as exc:
            raise _error("body.too_large", str(exc)) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise _error("body.bad_lz64", f"the body is not LZ-string base64: {exc}") from None
        # LZ-string works on UTF-16 code units: join surrogate pairs, replace lone halves
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()
    if hint in _B64_HINTS:
        steps.append("base64")
        try:
            return lenient_b64decode(data)
        except ValueError as exc:
            raise _error("body.bad_base64", f"the body is not base64: {exc}") from None
    if hint in ("", "identity", "none", "text/plain"):
        return data
    raise _error(
        "body.unsupported_encoding",
        f"compression {hint!r} is not supported: use gzip, gzip-js, base64 or lz64",
    )


def _looks_like_json(data: bytes) -> bool:
    head = data[:1]
    if head in (b"{", b"["):  # the common case, without copying the body to strip it
        return True
    return data.lstrip()[:1] in (b"{", b"[")


def decode_body(
    raw: bytes,
    *,
    content_type: str = "",
    content_encoding: str = "",
    compression: str | None = None,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Decoded:
    """Undo every layer an SDK may wrap a JSON payload in (see the module docstring).

    Parameters
    ----------
    raw
        The request body, or the ``data`` query parameter of a GET (as bytes).
    content_type, content_encoding
        The request headers (empty when absent).
    compression
        The ``compression`` query parameter, if any.
    max_bytes
        Cap on the decoded size; beyond it ``body.too_large``.

    Examples
    --------
    >>> import gzip
    >>> decode_body(gzip.compress(b'[{"event": "x"}]'), content_type="text/plain").data
    b'[{"event": "x"}]'
    """
    steps: list[str] = []
    data = raw
    form_hint = ""
    if "application/x-www-form-urlencoded" in content_type.lower():
        try:
            form = parse_qs(data.decode("latin-1"), keep_blank_values=True)
        except ValueError as exc:
            raise _error("body.bad_form", f"the form body cannot be parsed: {exc}") from None
        if "data" in form:
            steps.append("form")
            # base64 '+' arrive as spaces after form decoding: turn them back
            data = form["data"][0].replace(" ", "+").encode("latin-1")
            form_hint = form.get("compression", [""])[0]
    hint = (compression or form_hint or content_encoding or "").strip().lower()
    if not data or (data[:1].isspace() and not data.strip()):  # strip() copies the body
        raise _error("body.empty", "the body is empty: send a JSON object or array")
    if data[:2] == _GZIP_MAGIC and hint not in _GZIP_HINTS:
        hint = "gzip"  # sniffed: posthog-js may omit the hint
    data = _apply(data, hint, max_bytes, steps)
    if data[:2] == _GZIP_MAGIC:
        data = _apply(data, "gzip", max_bytes, steps)
    if not _looks_like_json(data) and _BASE64ISH.fullmatch(data):
        data = _apply(data, "base64", max_bytes, steps)
        if data[:2] == _GZIP_MAGIC:
            data = _apply(data, "gzip", max_bytes, steps)
    if len(data) > max_bytes:
        raise _error("body.too_large", f"the body is larger than {max_bytes} bytes")
    return Decoded(data, tuple(steps))


def parse_json(data: bytes) -> Any:
    """JSON from bytes (UTF-8, BOM tolerated); ``body.bad_json`` when it is not JSON.

    Examples
    --------
    >>> parse_json(b'{"batch": []}')
    {'batch': []}
    """
    try:
        # pydantic-core's parser (Rust) is ~30% faster; what it refuses (a BOM, lone surrogate
        # escapes, malformed JSON) goes to the standard library, whose verdict and message count
        return from_json(data)
    except ValueError:
        pass
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _error("body.bad_json", f"the body is not JSON: {exc}") from None
