from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import funnelscope
from funnelscope.errors import InvalidInputError
from funnelscope.events.channels import CHANNELS
from funnelscope.events.schema import ITEM_TYPE, STAGING_COLUMNS
from funnelscope.ingest.pipeline import IngestReport
from funnelscope.simulate import CHANNEL_PROFILES, SimulatedShop, simulate
from funnelscope.workspace import Workspace

CUSTOMERS, DAYS, SEED = 2000, 60, 11
START = date(2024, 3, 4)  # a Monday
RECEIVED = datetime(2024, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def shop() -> SimulatedShop:
    return simulate(CUSTOMERS, DAYS, SEED, start=START)


@pytest.fixture(scope="module")
def loaded(
    shop: SimulatedShop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Workspace, IngestReport]]:
    ws = funnelscope.open(tmp_path_factory.mktemp("sim") / "shop.duckdb")
    report = shop.write_store(ws.store, received_at=RECEIVED)
    yield ws, report
    ws.close()


def sql(table: pa.Table, query: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("t", table)
    return con.execute(query).fetchall()


def test_same_seed_gives_identical_tables() -> None:
    a, b = simulate(300, 20, 5), simulate(300, 20, 5)
    for name in (
        "events",
        "ad_spend",
        "email_campaigns",
        "survey_responses",
        "products",
        "currency_rates",
    ):
        assert getattr(a, name).equals(getattr(b, name)), name


def test_different_seeds_differ() -> None:
    a, b = simulate(300, 20, 5), simulate(300, 20, 6)
    assert a.events.num_rows != b.events.num_rows or not a.events.equals(b.events)
    assert a.ad_spend.column("spend") != b.ad_spend.column("spend")


def test_events_are_typed_sorted_and_deterministically_named(shop: SimulatedShop) -> None:
    events = shop.events
    assert tuple(events.column_names) == STAGING_COLUMNS
    assert events.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert events.schema.field("revenue").type == pa.decimal128(18, 4)
    assert events.schema.field("items").type == pa.list_(ITEM_TYPE)
    ts = events.column("timestamp").cast(pa.int64()).to_numpy()
    assert (ts[1:] >= ts[:-1]).all()
    ids = events.column("event_id")
    assert pc.count_distinct(ids).as_py() == events.num_rows
    assert ids[0].as_py() == f"sim-{SEED}-0000000000"
    first, last = sql(events, 'SELECT min("timestamp"), max("timestamp") FROM t')[0]
    assert first >= datetime(2024, 3, 4, tzinfo=UTC)
    assert last < datetime(2024, 5, 3, tzinfo=UTC)  # START + 60 days


def test_ctr_and_cost_per_channel_are_in_their_configured_ranges(shop: SimulatedShop) -> None:
    rows = sql(
        shop.ad_spend,
        "SELECT channel, sum(clicks), sum(impressions), sum(spend) FROM t GROUP BY channel",
    )
    seen = {
        ch: (clicks / impressions, float(spend) / clicks) for ch, clicks, impressions, spend in rows
    }
    profiles = {p.name: p for p in CHANNEL_PROFILES}
    assert set(seen) == {
        "paid_search",
        "paid_social",
        "display",
        "affiliate",
        "organic_search",
        "organic_social",
        "email",
    }
    for channel, (ctr, cpc) in seen.items():
        lo, hi = profiles[channel].ctr or (0, 0)
        assert lo <= ctr <= hi, (channel, ctr)
        cost = profiles[channel].cost
        if cost and not profiles[channel].is_cpm and channel != "email":
            assert cost[0] <= cpc <= cost[1], (channel, cpc)
    assert seen["paid_search"][0] > 10 * seen["display"][0]  # search CTR dwarfs display's


def test_session_conversion_is_in_a_plausible_band(shop: SimulatedShop) -> None:
    sessions, orders = sql(
        shop.events,
        "SELECT count(DISTINCT session_id), "
        "count(*) FILTER (WHERE event = 'order_completed') FROM t",
    )[0]
    assert 0.01 <= orders / sessions <= 0.05
    abandoned = sql(
        shop.events, "SELECT 1 - count(DISTINCT order_id) / count(DISTINCT cart_id) FROM t"
    )[0][0]
    assert 0.6 <= abandoned <= 0.85  # cart abandonment


def test_repeat_purchasing_is_heterogeneous(loaded: tuple[Workspace, IngestReport]) -> None:
    ws, _ = loaded
    per_person = ws.engine.sql(
        "SELECT n, count(*) AS persons FROM (SELECT person_id, count(*) FILTER "
        "(WHERE event = 'order_completed') AS n FROM events GROUP BY person_id) GROUP BY n"
    ).to_pylist()
    counts = {int(r["n"]): int(r["persons"]) for r in per_person}
    persons = sum(counts.values())
    assert persons == CUSTOMERS
    assert sum(v for n, v in counts.items() if n >= 3) >= 3
    assert (counts.get(0, 0) + counts.get(1, 0)) / persons > 0.9
    buyers = persons - counts.get(0, 0)
    assert 0.03 * persons < buyers < 0.2 * persons


def test_weekends_differ_from_weekdays(shop: SimulatedShop) -> None:
    rows = sql(
        shop.events,
        """
        SELECT isodow("timestamp") >= 6 AS weekend,
               count(DISTINCT session_id) / count(DISTINCT CAST("timestamp" AS DATE)),
               count(*) FILTER (WHERE event = 'order_completed') / count(DISTINCT session_id)
        FROM t WHERE session_id IS NOT NULL GROUP BY 1""",
    )
    by = {weekend: (per_day, conv) for weekend, per_day, conv in rows}
    assert by[True][0] > 1.1 * by[False][0]  # more visits on a weekend day
    assert by[True][1] < by[False][1]  # which convert less


def test_refunds_returns_and_a_second_currency(shop: SimulatedShop) -> None:
    refunds = sql(
        shop.events,
        """
        SELECT r.revenue, r.currency, o.currency, r.revenue <= o.revenue
        FROM t r JOIN t o ON o.order_id = r.order_id AND o.event = 'order_completed'
        WHERE r.event = 'order_refunded'""",
    )
    assert refunds
    assert all(rev > 0 and cur == order_cur and within for rev, cur, order_cur, within in refunds)
    assert sql(shop.events, "SELECT count(*) FROM t WHERE event = 'product_returned'")[0][0]
    currencies = dict(
        sql(
            shop.events,
            "SELECT currency, count(*) FROM t WHERE event = 'order_completed' GROUP BY 1",
        )
    )
    assert {"USD", "EUR", "GBP"} <= set(currencies)
    assert currencies["USD"] > 2 * (currencies["EUR"] + currencies["GBP"])  # a small share
    assert sql(shop.currency_rates, 'SELECT count(DISTINCT "date"), count(*) FROM t') == [
        (DAYS, 2 * DAYS)
    ]


def test_everything_loads_with_zero_rejections(
    shop: SimulatedShop, loaded: tuple[Workspace, IngestReport]
) -> None:
    ws, report = loaded
    assert report.rejected == 0, report.reasons
    total = shop.events.num_rows + sum(t.num_rows for t in shop.facts.values())
    assert report.rows == report.accepted == total
    info = ws.info()
    assert info["events"] == shop.events.num_rows
    assert info["persons"] == CUSTOMERS  # every customer appears, stitched once
    assert info["quarantine"] == 0
    for name, table in shop.facts.items():
        assert ws.store.query(f"SELECT count(*) FROM {name}")[0][0] == table.num_rows, name


def test_anonymous_visitors_who_sign_up_stitch_to_one_person(
    loaded: tuple[Workspace, IngestReport],
) -> None:
    ws, _ = loaded
    # joins, not correlated subqueries: DuckDB 2.0 fails on
    # "WHERE distinct_id IN (s.anonymous_id, s.user_id)" inside a correlated subquery here
    rows = ws.store.query("""
        WITH s AS (SELECT anonymous_id, user_id, "timestamp" AS at FROM events
                   WHERE event = 'signed_up'),
        before AS (SELECT s.user_id, count(e.event_id) AS n FROM s LEFT JOIN events e
                   ON e.anonymous_id = s.anonymous_id AND e.user_id IS NULL AND e."timestamp" < s.at
                   GROUP BY s.user_id),
        after AS (SELECT s.user_id, count(e.event_id) AS n FROM s LEFT JOIN events e
                  ON e.user_id = s.user_id AND e.anonymous_id IS NULL AND e."timestamp" > s.at
                  GROUP BY s.user_id),
        persons AS (SELECT s.user_id, count(DISTINCT m.canonical_id) AS n FROM s
                    JOIN identities i ON i.distinct_id = s.anonymous_id OR i.distinct_id = s.user_id
                    JOIN person_map m ON m.person_id = i.person_id GROUP BY s.user_id)
        SELECT s.user_id, b.n, a.n, p.n FROM s JOIN before b USING (user_id)
        JOIN after a USING (user_id) JOIN persons p USING (user_id)""")
    assert len(rows) >= 20
    assert all(persons == 1 for *_, persons in rows)
    assert all(before >= 1 for _, before, _, _ in rows)  # anonymous browsing came first
    assert sum(after >= 1 for _, _, after, _ in rows) > len(rows) / 2
    never = ws.store.query(
        "SELECT count(*) FROM identities i WHERE NOT is_user AND NOT EXISTS "
        "(SELECT 1 FROM events e WHERE e.anonymous_id = i.distinct_id AND e.user_id IS NOT NULL)"
    )[0][0]
    assert never > CUSTOMERS / 4  # anonymous visitors who never sign up


def test_derived_channels_match_the_campaigns(loaded: tuple[Workspace, IngestReport]) -> None:
    ws, _ = loaded
    present = {r[0] for r in ws.store.query("SELECT DISTINCT channel FROM events")}
    assert present == set(CHANNELS)
    mismatched = ws.store.query("""
        SELECT DISTINCT a.channel, e.channel, a.campaign FROM ad_spend a
        JOIN events e ON e.utm_campaign = a.campaign AND e.event <> 'ad_impression'
        WHERE a.campaign IS NOT NULL AND e.channel <> a.channel""")
    assert mismatched == []
    email = ws.store.query(
        "SELECT DISTINCT channel FROM events WHERE event = 'email_clicked' OR utm_medium = 'email'"
    )
    assert email == [("email",)]


def test_nps_answers_match_survey_rows(loaded: tuple[Workspace, IngestReport]) -> None:
    ws, _ = loaded
    surveys, matched = ws.store.query("""
        SELECT count(*), count(*) FILTER (WHERE EXISTS (
            SELECT 1 FROM events e WHERE e.event = 'nps_answered'
              AND e."timestamp" = r.answered_at
              AND e.user_id IS NOT DISTINCT FROM r.user_id
              AND e.anonymous_id IS NOT DISTINCT FROM r.anonymous_id
              AND CAST(e.properties ->> 'score' AS INTEGER) = r.score))
        FROM survey_responses r""")[0]
    assert surveys > 0
    assert matched == surveys
    resolved = ws.store.query("SELECT count(*) FROM survey_responses WHERE person_id IS NULL")
    assert resolved == [(0,)]


def test_email_campaigns_and_their_events(loaded: tuple[Workspace, IngestReport]) -> None:
    ws, _ = loaded
    campaigns = ws.store.query("SELECT campaign_id, recipients, delivered FROM email_campaigns")
    assert len(campaigns) == 2 * DAYS // 7 + 1 or len(campaigns) == 2 * DAYS // 7
    assert all(0 < delivered <= recipients for _, recipients, delivered in campaigns)
    opened = {
        r[0]
        for r in ws.store.query(
            "SELECT DISTINCT properties ->> 'campaign_id' FROM events WHERE event = 'email_opened'"
        )
    }
    assert opened <= {c[0] for c in campaigns}
    assert len(opened) >= len(campaigns) - 1
    actions = {
        r[0]
        for r in ws.store.query(
            "SELECT DISTINCT properties ->> 'action' FROM events WHERE event = 'social_engaged'"
        )
    }
    assert actions == {"like", "comment", "share", "follow"}


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_write_files(tmp_path: Path, suffix: str) -> None:
    small = simulate(150, 10, 3)
    written = small.write_files(tmp_path / f"shop{suffix}")
    assert set(written) == {"events", *small.facts}
    assert written["ad_spend"] == tmp_path / "shop.ad_spend.csv"
    con = duckdb.connect()
    reader = {".parquet": "read_parquet", ".csv": "read_csv", ".jsonl": "read_json"}[suffix]
    path = str(written["events"])
    n, orders = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE event = 'order_completed') FROM {reader}(?)",
        [path],
    ).fetchone() or (0, 0)
    assert n == small.events.num_rows
    assert orders > 0
    if suffix != ".parquet":
        first = Path(path).read_text().splitlines()[1]
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first)
        if suffix == ".jsonl":
            row = json.loads(first)
            assert isinstance(row["properties"] or "{}", str)
            items = [json.loads(r)["items"] for r in Path(path).read_text().splitlines()]
            assert any(isinstance(i, str) and json.loads(i)[0]["product_id"] for i in items)
    for name, table in small.facts.items():
        assert con.execute("SELECT count(*) FROM read_csv(?)", [str(written[name])]).fetchone() == (
            table.num_rows,
        )


@pytest.mark.parametrize(
    ("args", "codes"),
    [
        pytest.param((0, 10, 1), ["simulate.bad_customers"], id="no-customers"),
        pytest.param((10, 0, 1), ["simulate.bad_days"], id="no-days"),
        pytest.param((10, 3651, 1), ["simulate.bad_days"], id="too-many-days"),
        pytest.param(
            (0, 0, -1),
            ["simulate.bad_customers", "simulate.bad_days", "simulate.bad_seed"],
            id="all-wrong",
        ),
    ],
)
def test_bad_arguments_name_the_allowed_range(args: tuple[int, int, int], codes: list[str]) -> None:
    with pytest.raises(InvalidInputError) as err:
        simulate(*args)
    assert [p.code for p in err.value.problems] == codes
    assert "1.." in str(err.value) or ">= 0" in str(err.value)


def test_unknown_file_extension_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"\.parquet, \.csv, \.jsonl"):
        simulate(20, 3, 1).write_files(tmp_path / "shop.xlsx")


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        pytest.param(
            ["--customers", "0", "--days", "5", "--out", "x.csv"],
            "simulate.bad_customers",
            id="no-customers",
        ),
        pytest.param(
            ["--customers", "5", "--days", "3651", "--out", "x.csv"],
            "simulate.bad_days",
            id="too-many-days",
        ),
        pytest.param(["--customers", "5", "--days", "5"], "simulate.target", id="no-target"),
        pytest.param(
            ["--customers", "5", "--days", "5", "--out", "x.csv", "--store", "s.db"],
            "simulate.target",
            id="two-targets",
        ),
        pytest.param(
            ["--customers", "5", "--days", "5", "--out", "x.csv", "--start", "2999-01-01"],
            "simulate.future_period",
            id="future",
        ),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(
    argv: list[str],
    code: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from funnelscope.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and code in err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_simulates_into_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from funnelscope.cli.main import main

    store = tmp_path / "demo" / "shop.duckdb"
    main(
        [
            "simulate",
            "--customers",
            "50",
            "--days",
            "7",
            "--seed",
            "2",
            "--store",
            str(store),
            "--start",
            "2024-05-01",
            "-f",
            "json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert result["ingest"]["rejected"] == 0
    assert result["events_per_second"] > 0
    with funnelscope.open(store) as ws:
        assert ws.info()["persons"] == 50
        assert ws.info()["events"] == result["events"]
