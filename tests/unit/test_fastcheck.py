"""The ack's Python fast path: a row it proves valid is one the validation SQL gives no reason,
checked with adversarial rows against the SQL itself; the collector's real rows are all proven."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelscope.api.writer import validate_staging
from funnelscope.events.schema import STAGING_COLUMNS
from funnelscope.ingest.fastcheck import prove_valid
from funnelscope.ingest.records import from_native, from_segment
from funnelscope.simulate.shop import simulate

RECEIVED_AT = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
Row = dict[str, str | None]


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # as the ack stage's validator
    return con


def sql_reasons(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> dict[int, str]:
    """The SQL's reason for each rejected row, with the staging table built as the ack does."""
    columns = {c: [r.get(c) for r in rows] for c in STAGING_COLUMNS}
    used = [c for c in STAGING_COLUMNS if any(v is not None for v in columns[c])]
    staging = pa.table(
        {
            **{c: pa.array(columns[c], pa.string()) for c in used},
            "_row": pa.array(range(len(rows)), pa.int64()),
        }
    )
    verdicts = validate_staging(con, staging, received_at=RECEIVED_AT, currency="EUR")
    return {v.row: v.code for v in verdicts}


def proven(rows: list[Row], currency: str = "EUR") -> list[bool]:
    columns = {c: [r.get(c) for r in rows] for c in STAGING_COLUMNS}
    return prove_valid(columns, received_at=RECEIVED_AT, currency=currency)


# -- trim() ---------------------------------------------------------------------------------------


def test_python_strip_removes_everything_duckdb_trim_removes(
    con: duckdb.DuckDBPyConnection,
) -> None:
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    con.register("chars", pa.table({"c": pa.array([f"{ch}a{ch}" for ch in chars])}))
    trimmed = [r[0][0] for r in con.execute("SELECT c FROM chars WHERE trim(c) <> c").fetchall()]
    con.unregister("chars")
    assert "\u00a0" in trimmed and "\u3000" in trimmed  # DuckDB trims Unicode spaces too
    assert [c for c in trimmed if not c.isspace()] == []


# -- adversarial rows: proven implies no reason -------------------------------------------------

WHITESPACE = ["", " ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\u0085", "\u2028", "\x1f"]
INVISIBLE = ["\x00", "\x01", "\u200b", "\ufeff", "\u180e"]


def padded(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    edge = st.sampled_from(WHITESPACE + INVISIBLE + [""] * 8)
    return st.builds(lambda a, s, b: a + s + b, edge, core, edge)


IDS = st.one_of(
    st.none(),
    padded(st.sampled_from(["e", "u1", "anon-1", "ß", "\u00e9", "👍"])),
    st.sampled_from(["x" * 200, "x" * 201, "é" * 200, "👍" * 200, "👍" * 201, "a\u0301" * 100]),
    st.text(min_size=0, max_size=8),
)


def timestamps() -> st.SearchStrategy[str | None]:
    shaped = st.builds(
        lambda y, mo, d, h, mi, s, frac, sep, suffix: (
            f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{suffix}"
        ),
        st.sampled_from([1, 1999, 2000, 2001, 2024, 2025, 2026, 2027, 9999]),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["", ".1", ".123", ".123456", ".1234567", ".", ",5"]),
        st.sampled_from(["T", " ", "t"]),
        st.sampled_from(["+00:00", "Z", "z", "", "+01:00", "-00:00", "+0000", " UTC", "+00:00 "]),
    )
    near = st.builds(
        lambda seconds, suffix: (
            (RECEIVED_AT + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat() + suffix
        ),
        st.sampled_from([-1, 0, 86_399, 86_400, 86_401, 90_000]) | st.integers(-(10**9), 10**6),
        st.sampled_from(["+00:00", "Z"]),
    )
    edges = st.sampled_from(
        [
            "2000-01-01T00:00:00+00:00",
            "1999-12-31T23:59:59Z",
            "2000-01-02T00:00:00Z",
            "1714557600",
            "1714557600000",
            "2024-05-01",
            "yesterday",
            "",
        ]
    )
    return st.one_of(st.none(), padded(shaped), padded(near), edges)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**40), 10**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=8,
    )


TRAP_JSON = [
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":-Infinity}',
    '{"a":1,}',
    '{"a":1e400}',
    '{"a":"\\ud800"}',
    '{"a":"\\udc00x"}',
    '{"a":"\\ud83d\\ude00"}',
    '{"a":"\\u0000"}',
    '{"a":1,"a":[]}',
    '{"a":123456789012345678901234567890}',
    '{"a":01}',
    '{"a":.5}',
    '{"a":1.}',
    "{'a':1}",
    '{"a":1}{',
    '{"a":1} ',
    '{"a":"\x01"}',
    '{"a":1 /*c*/}',
    '{"a"\u00a0:1}',
    "{}",
    "[]",
    "null",
    '"{}"',
    "{" * 300 + "}" * 300,
    '{"a":' * 300 + "1" + "}" * 300,
    '{"a":"' + "x" * 32_760 + '"}',
    '{"a":"' + "é" * 16_380 + '"}',
]


def properties() -> st.SearchStrategy[str | None]:
    dumped = st.builds(
        lambda v, ascii_: json.dumps(v, ensure_ascii=ascii_),
        json_values() | st.dictionaries(st.text(max_size=4), json_values()),
        st.booleans(),
    )
    return st.one_of(st.none(), padded(dumped), padded(st.sampled_from(TRAP_JSON)))


REVENUES = st.one_of(
    st.none(),
    padded(
        st.sampled_from(
            [
                "12",
                "12.5",
                "-0",
                "19.99",
                "1e3",
                "12,5",
                "12.34567",
                "99999999999999.9999",
                "100000000000000",
                "+5",
                "١٢",
                "NaN",
                "inf",
                "0x10",
                "1_000",
                ".5",
                "5.",
            ]
        )
    ),
    st.from_regex(r"-?[0-9]{1,16}(\.[0-9]{0,6})?", fullmatch=True),
)
CURRENCIES = st.one_of(
    st.none(),
    padded(st.sampled_from(["EUR", "eur", "Eur", "USD", "XXX", "EU", "EURO", "ＥＵＲ", "ß", ""])),
)


def items() -> st.SearchStrategy[str | None]:
    fields = ["product_id", "sku", "name", "category", "brand", "variant", "price", "quantity"]
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**32), 2**32),
        st.sampled_from([10**13, 10**14, 10**20, -(2**31), 2**31 - 1, 2**31]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["1", "cheap", "price", "quantity", "2.5"]),
        st.lists(st.integers(), max_size=2),
        st.just({"price": 1}),
    )
    item = st.dictionaries(st.sampled_from([*fields, "Price", "extra"]), values, max_size=5)
    element = item | st.integers() | st.text(max_size=3) | st.none()

    def dump(elements: list[Any], ascii_: bool, dup: str | None) -> str:
        text = json.dumps(elements, ensure_ascii=ascii_)
        if dup is not None and text.startswith("[{"):
            text = "[{" + dup + "," + text[2:] if text[2] != "}" else "[{" + dup + text[2:]
        return text

    dumped = st.builds(
        dump,
        st.lists(element, max_size=4),
        st.booleans(),
        st.sampled_from(
            [None, None, '"price":"x"', '"price":1', '"quantity":1.5', '"pr\\u0069ce":"x"']
        ),
    )
    traps = st.sampled_from(
        ['[{"price":NaN}]', '[{"price":1e400}]', "[]", '{"price":1}', "[[]]", '[{"quantity":1,}]']
    )
    return st.one_of(st.none(), padded(dumped), padded(traps))


ADVERSARIAL: dict[str, st.SearchStrategy[str | None]] = {
    "event_id": IDS,
    "event": IDS,
    "user_id": IDS,
    "anonymous_id": IDS,
    "timestamp": timestamps(),
    "properties": properties(),
    "revenue": REVENUES,
    "currency": CURRENCIES,
    "items": items(),
}
#: Rows that are mostly valid, in the shapes proven, so that many rows are proven ...
PLAUSIBLE = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=12).map(lambda s: "e" + s.strip() + "x"),
        "event": st.sampled_from(["Order Completed", "page", "Produkt angesehen"]),
        "user_id": st.sampled_from(["u1", "u2", None]),
        "anonymous_id": st.sampled_from(["a1", "anon 2"]),
        "timestamp": st.datetimes(datetime(2000, 1, 1), datetime(2026, 1, 3)).map(
            lambda t: t.isoformat() + "+00:00"
        ),
        "properties": st.one_of(
            st.none(),
            st.dictionaries(st.text(max_size=4), json_values(), max_size=4).map(
                lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
            ),
        ),
        "revenue": st.one_of(
            st.none(), st.from_regex(r"-?[0-9]{1,14}(\.[0-9]{1,4})?", fullmatch=True)
        ),
        "currency": st.sampled_from([None, "EUR", "usd", "GBP"]),
        "items": st.one_of(st.none(), items()),
        "page_url": st.one_of(st.none(), st.text(max_size=10)),
    }
)


@st.composite
def rows_with_traps(draw: st.DrawFn) -> Row:
    """... and each row has up to two fields replaced by an adversarial value."""
    row: Row = draw(PLAUSIBLE)
    for name in draw(st.sets(st.sampled_from(sorted(ADVERSARIAL)), max_size=2)):
        row[name] = draw(ADVERSARIAL[name])
    return row


ROWS = rows_with_traps()


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(ROWS, min_size=20, max_size=80))
def test_a_proven_row_has_no_reason_in_the_sql(
    con: duckdb.DuckDBPyConnection, rows: list[Row]
) -> None:
    reasons = sql_reasons(con, rows)
    wrong = [(rows[i], reasons[i]) for i, ok in enumerate(proven(rows)) if ok and i in reasons]
    assert wrong == []


JSON_TOKENS = [
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    '"',
    '"a"',
    '"price"',
    "0",
    "1",
    "-",
    "+",
    ".",
    "e",
    "E",
    "01",
    "1e400",
    "-0",
    "NaN",
    "Infinity",
    "true",
    "null",
    "nul",
    " ",
    "\t",
    "\n",
    "\r",
    "\u00a0",
    "\x00",
    "\x1f",
    "\x7f",
    "\u2028",
    "\\",
    "\\u",
    "\\ud800",
    "\\udc00",
    "\\u0041",
    "\\u12",
    "\\x41",
    "\\/",
    "\\n",
    "\\a",
    "/*",
    "*/",
    "'",
    "é",
    "👍",
]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.lists(
        st.lists(st.sampled_from(JSON_TOKENS), max_size=14).map(lambda t: "{" + "".join(t)),
        min_size=50,
        max_size=100,
    )
)
def test_what_pydantic_core_parses_as_an_object_duckdb_accepts_as_one(
    con: duckdb.DuckDBPyConnection, texts: list[str]
) -> None:
    """The parser difference the properties and items rules rely on, on JSON-ish token soup."""
    rows: list[Row] = [GOOD | {"event_id": f"e{i}", "properties": t} for i, t in enumerate(texts)]
    rows += [GOOD | {"event_id": f"i{i}", "items": "[" + t[1:] + "]"} for i, t in enumerate(texts)]
    reasons = sql_reasons(con, rows)
    assert [(rows[i], reasons[i]) for i, ok in enumerate(proven(rows)) if ok and i in reasons] == []


# -- golden: what the collector really receives is proven ----------------------------------------


def benchmark_template(route: str) -> tuple[str, bytes]:
    path = Path(__file__).parents[2] / "benchmarks" / "collector.py"
    spec = importlib.util.spec_from_file_location("collector_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module._template(route)  # type: ignore[no-any-return]


def test_the_benchmark_segment_and_native_rows_are_all_proven(
    con: duckdb.DuckDBPyConnection,
) -> None:
    _, segment = benchmark_template("segment")
    payload = json.loads(segment.replace(b"@@@@@@@@@@", b"0000000001"))
    envelope = {"sentAt": payload["sentAt"]}
    rows = [from_segment(m, envelope=envelope, received_at=RECEIVED_AT) for m in payload["batch"]]
    _, native = benchmark_template("native")
    events = json.loads(native.replace(b"@@@@@@@@@@", b"0000000002"))["events"]
    rows += [from_native(e) for e in events]
    assert len(rows) == 200
    assert proven(rows) == [True] * 200
    assert sql_reasons(con, rows) == {}


def simulated_rows() -> list[Row]:
    """A simulated shop's events as the native route receives them from an SDK."""
    events = simulate(150, 3, seed=11).events.to_pylist()
    rows = []
    for event in events:
        wire: dict[str, Any] = {
            k: v for k, v in event.items() if v is not None and k not in ("items", "revenue")
        }
        wire["timestamp"] = event["timestamp"].isoformat()
        if event["revenue"] is not None:
            wire["revenue"] = float(event["revenue"])
        if event["items"]:
            wire["items"] = [
                {k: float(v) if isinstance(v, Decimal) else v for k, v in item.items()}
                for item in event["items"]
            ]
        if isinstance(wire.get("properties"), str):
            wire["properties"] = json.loads(wire["properties"])
        rows.append(from_native(wire))
    return rows


def test_a_simulated_shop_is_all_proven(con: duckdb.DuckDBPyConnection) -> None:
    rows = simulated_rows()
    assert len(rows) > 500
    assert any(r["items"] for r in rows) and any(r["revenue"] for r in rows)
    assert sql_reasons(con, rows) == {}
    received = prove_valid(
        {c: [r[c] for r in rows] for c in STAGING_COLUMNS},
        # the simulation's last day is long past: received now-ish, within the range
        received_at=max(datetime.fromisoformat(str(r["timestamp"])) for r in rows),
        currency="EUR",
    )
    assert received == [True] * len(rows)


# -- golden: each known trap is left to the SQL -----------------------------------------------

GOOD: Row = {
    "event_id": "e1",
    "event": "Order Completed",
    "user_id": "u1",
    "timestamp": "2025-12-31T10:00:00.250+00:00",
    "properties": '{"order_id":"o1","tags":["a",1.5,null]}',
    "revenue": "30.5",
    "currency": "eur",
    "items": '[{"product_id":"p1","price":12.5,"quantity":2},{"name":"x","price":3}]',
}

TRAPS = [
    pytest.param({"event_id": " e1"}, id="id-leading-space"),
    pytest.param({"event_id": "e1\u3000"}, id="id-ideographic-space"),
    pytest.param({"event_id": "x" * 201}, id="id-201-chars"),
    pytest.param({"event_id": None}, id="id-missing"),
    pytest.param({"event": "\u00a0"}, id="name-nbsp"),
    pytest.param({"user_id": None, "anonymous_id": " "}, id="identity-blank"),
    pytest.param({"user_id": " u1"}, id="identity-unstripped"),
    pytest.param({"timestamp": "2024-02-30T10:00:00+00:00"}, id="ts-no-such-day"),
    pytest.param({"timestamp": "2024-05-01T24:00:00+00:00"}, id="ts-hour-24"),
    pytest.param({"timestamp": "1999-12-31T23:59:59+00:00"}, id="ts-too-old"),
    pytest.param({"timestamp": "2026-01-02T12:00:06+00:00"}, id="ts-too-far-ahead"),
    pytest.param({"timestamp": "2025-12-31T10:00:00+01:00"}, id="ts-offset"),
    pytest.param({"timestamp": "1714557600"}, id="ts-epoch"),
    pytest.param({"timestamp": "2025-12-31T10:00:00.1234567Z"}, id="ts-7-digit-fraction"),
    pytest.param({"properties": '{"a":NaN}'}, id="props-nan"),
    pytest.param({"properties": '{"a":1,}'}, id="props-trailing-comma"),
    pytest.param({"properties": '{"a":"\\ud800"}'}, id="props-lone-surrogate"),
    pytest.param({"properties": '{"a":"\ud800"}'}, id="props-raw-lone-surrogate"),
    pytest.param({"items": '[{"name":"\udc00"}]'}, id="items-raw-lone-surrogate"),
    pytest.param({"properties": "[1]"}, id="props-array"),
    pytest.param({"properties": "[" * 300 + "]" * 300}, id="props-deep"),
    pytest.param({"properties": '{"a":"' + "é" * 16_381 + '"}'}, id="props-over-32k-bytes"),
    pytest.param({"revenue": "1e3"}, id="revenue-exponent"),
    pytest.param({"revenue": " 12"}, id="revenue-space"),
    pytest.param({"revenue": "12,5"}, id="revenue-comma"),
    pytest.param({"revenue": "100000000000000"}, id="revenue-too-big"),
    pytest.param({"revenue": "12.34567"}, id="revenue-5-decimals"),
    pytest.param({"currency": "XXX"}, id="currency-unknown"),
    pytest.param({"currency": "ＥＵＲ"}, id="currency-fullwidth"),
    pytest.param({"items": '[{"price":"12"}]'}, id="items-string-price"),
    pytest.param({"items": '[{"quantity":1.5}]'}, id="items-float-quantity"),
    pytest.param({"items": '[{"quantity":true}]'}, id="items-bool-quantity"),
    pytest.param({"items": '[{"quantity":2147483648}]'}, id="items-quantity-over-int32"),
    pytest.param({"items": '[{"price":1,"price":"x"}]'}, id="items-duplicate-key"),
    pytest.param({"items": '[{"pr\\u0069ce":"x","price":1}]'}, id="items-escaped-key"),
    pytest.param({"items": '[{"Price":1}]'}, id="items-unknown-key"),
    pytest.param({"items": "[1]"}, id="items-not-objects"),
    pytest.param({"items": '{"price":1}'}, id="items-object"),
]


def test_the_good_row_is_proven(con: duckdb.DuckDBPyConnection) -> None:
    assert proven([GOOD]) == [True]
    assert proven([GOOD | {"currency": None}]) == [True]  # the store's currency
    assert proven([GOOD | {"currency": None}], currency="XYZ") == [False]
    assert sql_reasons(con, [GOOD]) == {}


@pytest.mark.parametrize("change", TRAPS)
def test_a_trap_is_not_proven(change: Row) -> None:
    assert proven([GOOD | change]) == [False]


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(ROWS, min_size=1, max_size=40),
    st.sets(st.sampled_from(["event_id", "user_id", "anonymous_id", "revenue", "items"])),
)
def test_the_column_checks_are_the_per_row_rule(rows: list[Row], left_out: set[str]) -> None:
    """prove_valid works column by column, over each column's distinct values, and with columns
    left out; its verdicts are the per-row rule's (repeated values included: rows are doubled)."""
    from funnelscope.ingest.fastcheck import _row_ok
    from funnelscope.ingest.pipeline import MAX_FUTURE_SKEW

    rows = rows + rows[::2]
    columns = {c: [r.get(c) for r in rows] for c in STAGING_COLUMNS if c not in left_out}
    for currency in ("EUR", "XXY"):
        want = [
            _row_ok(
                {c: v[i] for c, v in columns.items()},
                RECEIVED_AT + MAX_FUTURE_SKEW,
                currency == "EUR",
            )
            for i in range(len(rows))
        ]
        assert prove_valid(columns, received_at=RECEIVED_AT, currency=currency) == want
