"""Prove staging rows valid in Python, so the validation SQL runs only on the rows in doubt.

The ingest pipeline's validation (:func:`funnelscope.ingest.pipeline._checks` over the typed
columns of :func:`~funnelscope.ingest.pipeline._typed_columns`) is the only definition of a
valid row. Planning that SQL costs milliseconds per call, which the collector's ack stage pays on
every group. :func:`prove_valid` answers, per row, True ("every check passes, for certain, under
DuckDB's semantics") or False ("not proven: let the SQL decide"). It is *sound*, never complete:
each rule accepts only inputs whose DuckDB result is known exactly (the shapes the wire mappers of
:mod:`funnelscope.ingest.records` emit), and anything else is left to the SQL. A row proven here is
one the SQL gives no reason; tests/unit/test_fastcheck.py checks that with adversarial rows.

The rules, each mirroring one SQL expression:

* text ``x`` read through ``NULLIF(trim(x), '')``: only when ``x == x.strip()`` (Python strips a
  superset of what DuckDB's ``trim`` removes), so the SQL sees ``x`` itself;
* ``event_id`` at most ``MAX_ID_LENGTH`` code points (DuckDB's ``length``);
* ``timestamp``: exactly ``YYYY-MM-DDTHH:MM:SS[.f to .ffffff]`` then ``+00:00`` or ``Z`` (the
  records mappers' and the native route's shapes), a real calendar time, from
  2000-01-02 (a day of margin for the session time zone) to ``received_at + MAX_FUTURE_SKEW``;
* ``properties``: a JSON object (pydantic-core's parser, which accepts a subset of what DuckDB's
  ``json_valid`` does: no NaN, no trailing commas, no escaped lone surrogates) within
  ``MAX_PROPERTIES_BYTES`` UTF-8 bytes;
* ``revenue``: ``-?[0-9]{1,14}(.[0-9]{1,4})?``, which ``DECIMAL(18, 4)`` holds exactly;
  ``currency`` three ASCII letters naming an ISO 4217 code (or the store's, for revenue alone);
* ``items``: a JSON array of objects with only the line-item fields, each key once, ``price`` a
  finite number under 1e14, ``quantity`` an integer in 32 bits, the rest strings, numbers or null.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, TypeVar

from pydantic_core import from_json

from funnelscope.events.currency import ISO_CURRENCIES
from funnelscope.events.schema import MAX_PROPERTIES_BYTES
from funnelscope.ingest.pipeline import MAX_FUTURE_SKEW, MAX_ID_LENGTH

__all__ = ["prove_valid"]

#: The earliest timestamp proven in range: a day after the pipeline's ``EARLIEST_TIMESTAMP``,
#: whose SQL literal is read in the connection's time zone (UTC or not, a day covers it).
_EARLIEST_PROVEN: Final = datetime(2000, 1, 2, tzinfo=UTC)
_TIMESTAMP: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:\+00:00|Z)", re.ASCII
)
_REVENUE: Final = re.compile(r"-?[0-9]{1,14}(?:\.[0-9]{1,4})?", re.ASCII)
_CURRENCY: Final = re.compile(r"[A-Za-z]{3}", re.ASCII)
#: A \\u escape of a UTF-16 surrogate: the two JSON parsers may disagree on lone ones.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_ITEM_TEXT_FIELDS: Final = frozenset({"product_id", "sku", "name", "category", "brand", "variant"})
#: Below DECIMAL(18, 4)'s 1e14 with room for a double's rounding.
_MAX_PRICE: Final = 1e13
_INT32: Final = range(-(2**31), 2**31)


def prove_valid(
    columns: Mapping[str, Sequence[str | None]],
    *,
    received_at: datetime,
    currency: str,
) -> list[bool]:
    """Per row, whether the ingest pipeline's validation certainly accepts it.

    Parameters
    ----------
    columns
        Staging columns as text (name -> one value per row, None for NULL); a column left out
        is NULL in every row. All given columns have the same length.
    received_at
        The reference time of the validation (tz-aware).
    currency
        The store's currency, the default of rows with revenue and no currency.

    Returns
    -------
    list of bool
        True: the validation gives this row no reason. False: not proven (it may be valid).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> cols = {"event_id": ["e1", " e2"], "event": ["Order Completed"] * 2,
    ...         "user_id": ["u1", "u2"], "timestamp": ["2024-05-01T10:00:00+00:00"] * 2}
    >>> prove_valid(cols, received_at=datetime(2024, 5, 1, tzinfo=UTC), currency="EUR")
    [True, False]
    """
    n = len(next(iter(columns.values()), ()))
    latest = received_at + MAX_FUTURE_SKEW
    default_currency_ok = currency in ISO_CURRENCIES
    # column by column (a comprehension per column costs less than a call per row), the
    # distinct texts of a column checked once where a group repeats them (names, times,
    # product lists); the conditions are exactly those of _row_ok, spelled per row below
    ids = columns.get("event_id")
    if ids is None or (columns.get("user_id") is None and columns.get("anonymous_id") is None):
        return [False] * n
    proven = [v is not None and v != "" and v == v.strip() and len(v) <= MAX_ID_LENGTH for v in ids]
    proven = _and(proven, _distinct(columns.get("event"), _present, False))
    nulls: list[str | None] = [None] * n
    identified = [
        (u is not None and u != "" and u == u.strip())
        or (a is not None and a != "" and a == a.strip())
        for u, a in zip(
            columns.get("user_id", nulls), columns.get("anonymous_id", nulls), strict=True
        )
    ]
    proven = _and(proven, identified)
    proven = _and(
        proven,
        _distinct(
            columns.get("timestamp"), lambda t: t is not None and _timestamp_ok(t, latest), False
        ),
    )
    proven = _and(
        proven,
        _distinct(columns.get("properties"), lambda p: p is None or p == "" or _object_ok(p), True),
    )
    revenues, currencies = columns.get("revenue"), columns.get("currency")
    if revenues is not None or currencies is not None:
        pairs = list(zip(revenues or nulls, currencies or nulls, strict=True))
        proven = _and(
            proven,
            _distinct(pairs, lambda p: _money_ok(p[0], p[1], default_currency_ok), True),
        )
    return _and(
        proven,
        _distinct(columns.get("items"), lambda i: i is None or i == "" or _items_ok(i), True),
    )


def _row_ok(row: Mapping[str, str | None], latest: datetime, default_currency_ok: bool) -> bool:
    """:func:`prove_valid` of one row, spelled per row: the definition the columns follow."""
    event_id, ts = row.get("event_id"), row.get("timestamp")
    props, items = row.get("properties"), row.get("items")
    return (
        event_id is not None
        and _present(event_id)
        and len(event_id) <= MAX_ID_LENGTH
        and _present(row.get("event"))
        and (_present(row.get("user_id")) or _present(row.get("anonymous_id")))
        and ts is not None
        and _timestamp_ok(ts, latest)
        and (props is None or props == "" or _object_ok(props))
        and _money_ok(row.get("revenue"), row.get("currency"), default_currency_ok)
        and (items is None or items == "" or _items_ok(items))
    )


_T = TypeVar("_T")


def _distinct(
    values: Sequence[_T] | None, check: Callable[[_T], bool], if_absent: bool
) -> list[bool] | bool:
    """``check`` of each value, computed once per distinct value; ``if_absent`` (the check of
    NULL) for a column left out; a bool when every value has the same verdict."""
    if values is None:
        return if_absent
    verdict = {value: check(value) for value in set(values)}
    if all(verdict.values()):  # the common case: no list to build, nothing to combine
        return True
    if not any(verdict.values()):
        return False
    return [verdict[value] for value in values]


def _and(proven: list[bool], column: list[bool] | bool) -> list[bool]:
    if column is True:
        return proven
    if column is False:
        return [False] * len(proven)
    return [a and b for a, b in zip(proven, column, strict=True)]


def _present(value: str | None) -> bool:
    """``NULLIF(trim(value), '')`` is certainly ``value`` and not NULL."""
    return value is not None and value != "" and value == value.strip()


def _timestamp_ok(text: str, latest: datetime) -> bool:
    if _TIMESTAMP.fullmatch(text) is None:
        return False
    try:
        at = datetime.fromisoformat(text)
    except ValueError:  # no such day or time (2024-02-30, 24:00, :60)
        return False
    return _EARLIEST_PROVEN <= at < latest


def _object_ok(text: str) -> bool:
    """``text`` is a JSON object that DuckDB's ``json_valid`` accepts, within the size limit."""
    if text[0] != "{" or text[-1] != "}":  # also: nothing for trim() to remove
        return False
    # 4 bytes per code point at most: encode only texts that might be too large (surrogatepass:
    # never raise here; a lone surrogate cannot reach DuckDB anyway, Arrow refuses it first)
    if (
        len(text) * 4 > MAX_PROPERTIES_BYTES
        and len(text.encode("utf-8", "surrogatepass")) > MAX_PROPERTIES_BYTES
    ):
        return False
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None:
        return False
    try:
        value = from_json(text, allow_inf_nan=False)
    except (ValueError, TypeError):  # TypeError: a lone surrogate in the text
        return False
    return type(value) is dict


def _money_ok(revenue: str | None, currency: str | None, default_ok: bool) -> bool:
    has_revenue = revenue is not None and revenue != ""
    # the pattern has no whitespace, so a match is also what trim() leaves alone
    if revenue is not None and has_revenue and _REVENUE.fullmatch(revenue) is None:
        return False
    if currency is None or currency == "":
        return default_ok or not has_revenue
    return _CURRENCY.fullmatch(currency) is not None and currency.upper() in ISO_CURRENCIES


def _items_ok(text: str) -> bool:
    """``text`` is a list of line items whose price and quantity DuckDB certainly casts."""
    # no backslash: every key is spelled literally, so counting '"price"' finds duplicates
    if text[0] != "[" or text[-1] != "]" or "\\" in text:
        return False
    try:
        value = from_json(text, allow_inf_nan=False)
    except (ValueError, TypeError):  # TypeError: a lone surrogate in the text
        return False
    if type(value) is not list:
        return False
    prices = quantities = 0
    for item in value:
        if type(item) is not dict:
            return False
        for key, field in item.items():
            if key == "price":
                prices += 1
                if not _price_ok(field):
                    return False
            elif key == "quantity":
                quantities += 1
                if field is not None and (type(field) is not int or field not in _INT32):
                    return False
            elif key not in _ITEM_TEXT_FIELDS or not (
                field is None or type(field) in (str, int, float)
            ):
                return False
    # a key twice in one object: the parsers may keep different ones
    return text.count('"price"') == prices and text.count('"quantity"') == quantities


def _price_ok(value: object) -> bool:
    if value is None:
        return True
    if type(value) is int:
        return abs(value) < _MAX_PRICE
    return type(value) is float and math.isfinite(value) and abs(value) < _MAX_PRICE
