from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from funnelscope.errors import InvalidInputError
from funnelscope.ingest.facts import FACT_KINDS, FactKind, append_facts
from funnelscope.workspace import Workspace
from tests.conftest import NOW, load_journeys

GOOD: dict[str, dict[str, str]] = {
    "ad_spend": {
        "date": "2024-05-01",
        "channel": "paid_search",
        "source": "google",
        "campaign": "brand",
        "impressions": "1000",
        "clicks": "40",
        "spend": "52.10",
        "currency": "USD",
        "reach": "700",
    },
    "email_campaigns": {
        "campaign_id": "c1",
        "name": "may-sale",
        "sent_at": "2024-05-01T10:00:00Z",
        "recipients": "100",
        "delivered": "98",
    },
    "survey_responses": {
        "response_id": "r1",
        "answered_at": "2024-05-02T12:00:00Z",
        "user_id": "ann",
        "score": "9",
        "comment": "great",
    },
    "products": {
        "product_id": "p1",
        "sku": "SKU-1",
        "name": "Mug",
        "category": "kitchen",
        "brand": "Acme",
        "price": "12.50",
        "currency": "EUR",
    },
    "currency_rates": {"date": "2024-05-01", "currency": "EUR", "rate": "1.08"},
}


def table(rows: list[dict[str, Any]]) -> pa.Table:
    names = sorted({k for r in rows for k in r})
    return pa.table({n: pa.array([r.get(n) for r in rows], pa.string()) for n in names})


def load(ws: Workspace, kind: str, rows: list[dict[str, Any]], **kw: Any) -> Any:
    return append_facts(ws.store, kind, table(rows), source="test", received_at=NOW, **kw)


@pytest.mark.parametrize(
    ("kind", "change", "code"),
    [
        pytest.param("ad_spend", {"date": "2024-13-01"}, "ad_spend.bad_date", id="spend-bad-date"),
        pytest.param("ad_spend", {"date": None}, "ad_spend.missing_value", id="spend-no-date"),
        pytest.param(
            "ad_spend", {"date": "1999-12-31"}, "ad_spend.date_out_of_range", id="spend-too-old"
        ),
        pytest.param(
            "ad_spend", {"date": "2024-07-03"}, "ad_spend.date_out_of_range", id="spend-future"
        ),
        pytest.param(
            "ad_spend", {"clicks": "-1"}, "ad_spend.negative_value", id="spend-negative-clicks"
        ),
        pytest.param(
            "ad_spend", {"spend": "-0.01"}, "ad_spend.negative_value", id="spend-negative-spend"
        ),
        pytest.param(
            "ad_spend",
            {"impressions": "1.5"},
            "ad_spend.bad_number",
            id="spend-fractional-impressions",
        ),
        pytest.param("ad_spend", {"spend": "lots"}, "ad_spend.bad_number", id="spend-not-number"),
        pytest.param(
            "ad_spend",
            {"clicks": "1001"},
            "ad_spend.clicks_exceed_impressions",
            id="spend-clicks-gt-impressions",
        ),
        pytest.param(
            "ad_spend",
            {"reach": "1001"},
            "ad_spend.reach_exceeds_impressions",
            id="spend-reach-gt-impressions",
        ),
        pytest.param(
            "ad_spend", {"currency": "XYZ"}, "fact.unknown_currency", id="spend-unknown-currency"
        ),
        pytest.param(
            "ad_spend", {"channel": "tv"}, "ad_spend.unknown_channel", id="spend-unknown-channel"
        ),
        pytest.param(
            "email_campaigns",
            {"sent_at": "yesterday"},
            "email_campaign.bad_timestamp",
            id="email-bad-time",
        ),
        pytest.param(
            "email_campaigns",
            {"delivered": "101"},
            "email_campaign.delivered_exceed_recipients",
            id="email-delivered-gt-sent",
        ),
        pytest.param(
            "email_campaigns",
            {"recipients": "-3"},
            "email_campaign.negative_value",
            id="email-negative",
        ),
        pytest.param(
            "email_campaigns",
            {"campaign_id": " "},
            "email_campaign.missing_value",
            id="email-blank-id",
        ),
        pytest.param(
            "survey_responses", {"score": "11"}, "survey.score_out_of_range", id="survey-score-11"
        ),
        pytest.param(
            "survey_responses",
            {"score": "-1"},
            "survey.score_out_of_range",
            id="survey-score-negative",
        ),
        pytest.param(
            "survey_responses", {"score": "7.5"}, "survey.bad_number", id="survey-score-fraction"
        ),
        pytest.param(
            "survey_responses", {"answered_at": None}, "survey.missing_value", id="survey-no-time"
        ),
        pytest.param("products", {"price": "-2"}, "product.negative_value", id="product-negative"),
        pytest.param(
            "products", {"currency": "euro"}, "fact.unknown_currency", id="product-currency-word"
        ),
        pytest.param("products", {"product_id": None}, "product.missing_value", id="product-no-id"),
        pytest.param("currency_rates", {"rate": "0"}, "currency_rate.bad_rate", id="rate-zero"),
        pytest.param(
            "currency_rates", {"rate": "inf"}, "currency_rate.bad_number", id="rate-infinite"
        ),
        pytest.param(
            "currency_rates",
            {"currency": "ABC"},
            "fact.unknown_currency",
            id="rate-unknown-currency",
        ),
        pytest.param(
            "currency_rates", {"date": "01/05/2024"}, "currency_rate.bad_date", id="rate-bad-date"
        ),
    ],
)
def test_bad_row_is_quarantined_with_its_reason(
    workspace: Workspace, kind: str, change: dict[str, str | None], code: str
) -> None:
    good = dict(GOOD[kind])
    report = load(workspace, kind, [good, {**good, **change}])
    assert (report.rows, report.accepted, report.rejected) == (2, 1, 1)
    assert dict(report.reasons) == {code: 1}
    (stored,) = workspace.store.query(f"SELECT count(*) FROM {kind}")[0]
    assert stored == 1
    reason, message, payload = workspace.store.query(
        "SELECT reason_code, message, decode(payload) FROM quarantine"
    )[0]
    assert reason == code
    assert message  # names the field and the allowed values
    changed_field = next(iter(change))
    assert changed_field in message
    assert json.loads(payload)[changed_field] == change[changed_field]


def test_a_fact_row_with_text_that_is_not_utf8_is_quarantined(workspace: Workspace) -> None:
    # Arrow does not check a string column's bytes (a Parquet file's, say); DuckDB's check of
    # them is a fatal error: the row is quarantined first and the other rows load
    good = dict(GOOD["ad_spend"])
    rows = table([good, {**good, "date": "2024-05-02"}])
    raw = pa.array([b"brand", b"Caf\xe9"], pa.binary())
    campaign = pa.Array.from_buffers(pa.string(), 2, raw.buffers())
    rows = rows.set_column(rows.schema.get_field_index("campaign"), "campaign", campaign)
    report = append_facts(workspace.store, "ad_spend", rows, source="test", received_at=NOW)
    assert (report.rows, report.accepted, report.rejected) == (2, 1, 1)
    assert dict(report.reasons) == {"row.invalid_utf8": 1}
    assert workspace.store.query("SELECT campaign FROM ad_spend") == [("brand",)]
    assert workspace.store.query("SELECT row_number, reason_code FROM quarantine") == [
        (1, "row.invalid_utf8")
    ]


def test_messages_name_the_allowed_range(workspace: Workspace) -> None:
    report = load(workspace, "survey_responses", [{**GOOD["survey_responses"], "score": "12"}])
    assert "0..10" in report.rejections[0].message
    report = load(workspace, "ad_spend", [{**GOOD["ad_spend"], "channel": "tv"}])
    assert "paid_search" in report.rejections[0].message


def test_reloading_the_same_spend_file_does_not_double_spend(workspace: Workspace) -> None:
    rows = [
        {**GOOD["ad_spend"]},
        {**GOOD["ad_spend"], "campaign": None, "spend": "10"},  # a null key part is a key too
        {**GOOD["ad_spend"], "date": "2024-05-02", "spend": "7.25"},
    ]
    first = load(workspace, "ad_spend", rows)
    again = load(workspace, "ad_spend", rows)
    assert (first.inserted, first.duplicates) == (3, 0)
    assert (again.accepted, again.inserted, again.duplicates) == (3, 0, 3)
    total = workspace.store.query("SELECT sum(spend), count(*) FROM ad_spend")[0]
    assert total == (Decimal("69.3500"), 3)
    # a corrected export replaces the day's row rather than adding to it
    fixed = load(workspace, "ad_spend", [{**GOOD["ad_spend"], "spend": "60"}])
    assert fixed.inserted == 1
    assert workspace.store.query("SELECT sum(spend), count(*) FROM ad_spend")[0] == (
        Decimal("77.2500"),
        3,
    )


def test_last_row_of_a_key_in_one_batch_wins(workspace: Workspace) -> None:
    rows = [{**GOOD["products"], "price": "1"}, {**GOOD["products"], "price": "2"}]
    report = load(workspace, "products", rows)
    assert (report.accepted, report.inserted, report.duplicates) == (2, 1, 1)
    assert workspace.store.query("SELECT price FROM products") == [(Decimal("2.0000"),)]


def test_defaults_and_normalisation(workspace: Workspace) -> None:
    spend = {**GOOD["ad_spend"], "channel": " Paid Search ", "currency": None}
    del spend["reach"]
    assert load(workspace, "ad_spend", [spend]).accepted == 1
    assert workspace.store.query("SELECT channel, currency, reach FROM ad_spend") == [
        ("paid_search", "USD", None)
    ]
    survey = {**GOOD["survey_responses"]}
    assert load(workspace, "survey_responses", [survey]).accepted == 1
    assert workspace.store.query("SELECT survey FROM survey_responses") == [("nps",)]


def test_typed_arrow_columns_are_accepted(workspace: Workspace) -> None:
    typed = pa.table(
        {
            "date": pa.array([date(2024, 5, 1)], pa.date32()),
            "currency": ["GBP"],
            "rate": pa.array([1.27], pa.float64()),
        }
    )
    report = append_facts(
        workspace.store, FactKind.CURRENCY_RATES, typed, source="t", received_at=NOW
    )
    assert report.accepted == 1
    surveys = pa.table(
        {
            "response_id": ["r9"],
            "answered_at": pa.array(
                [datetime(2024, 5, 1, 8, tzinfo=UTC)], pa.timestamp("us", "UTC")
            ),
            "score": pa.array([10], pa.int64()),
        }
    )
    assert (
        append_facts(
            workspace.store, "survey_responses", surveys, source="t", received_at=NOW
        ).accepted
        == 1
    )
    assert workspace.store.query("SELECT answered_at, score FROM survey_responses") == [
        (datetime(2024, 5, 1, 8, tzinfo=UTC), 10)
    ]


def test_survey_respondents_resolve_to_stitched_persons(workspace: Workspace) -> None:
    load_journeys(
        workspace,
        {
            "ann": [
                (0, "page_viewed", {"anonymous_id": "a-ann"}),
                (5, "signed_up", {"anonymous_id": "a-ann", "user_id": "ann"}),
                (9, "order_completed", {"user_id": "ann"}),
            ],
            "bob": [(0, "page_viewed", {"anonymous_id": "a-bob"})],
        },
    )
    surveys = [
        {**GOOD["survey_responses"], "response_id": "r1", "user_id": "ann"},
        {**GOOD["survey_responses"], "response_id": "r2", "user_id": None, "anonymous_id": "a-ann"},
        {**GOOD["survey_responses"], "response_id": "r3", "user_id": None, "anonymous_id": "a-bob"},
        {**GOOD["survey_responses"], "response_id": "r4", "user_id": "carl"},
    ]
    assert load(workspace, "survey_responses", surveys).accepted == 4
    persons = dict(
        workspace.store.query(
            "SELECT r.response_id, m.canonical_id FROM survey_responses r "
            "LEFT JOIN person_map m USING (person_id)"
        )
    )
    who = "SELECT person_id FROM identities WHERE distinct_id = ?"
    ann = workspace.store.query(who, ["ann"])[0][0]
    bob = workspace.store.query(who, ["a-bob"])[0][0]
    assert persons == {"r1": ann, "r2": ann, "r3": bob, "r4": None}
    # carl's events arrive later; the next survey load resolves his earlier response
    load_journeys(workspace, {"carl": [(30, "page_viewed")]})
    load(workspace, "survey_responses", [{**GOOD["survey_responses"], "response_id": "r5"}])
    carl = workspace.store.query(who, ["carl"])[0][0]
    assert workspace.store.query(
        "SELECT person_id FROM survey_responses WHERE response_id = 'r4'"
    ) == [(carl,)]


def test_unknown_kind_names_the_allowed_kinds(workspace: Workspace) -> None:
    with pytest.raises(InvalidInputError) as err:
        load(workspace, "tv_spend", [GOOD["ad_spend"]])
    assert err.value.code == "fact.unknown_kind"
    assert all(kind in str(err.value) for kind in FACT_KINDS)


def test_missing_required_columns_fail_the_whole_table(workspace: Workspace) -> None:
    rows = [{k: v for k, v in GOOD["ad_spend"].items() if k not in ("spend", "clicks")}]
    with pytest.raises(InvalidInputError) as err:
        load(workspace, "ad_spend", rows)
    assert [p.code for p in err.value.problems] == ["fact.missing_column"] * 2
    assert {p.location for p in err.value.problems} == {"ad_spend.clicks", "ad_spend.spend"}
    assert workspace.store.query("SELECT count(*) FROM quarantine") == [(0,)]
