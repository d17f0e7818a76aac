"""The stage report with each stage's main KPIs, and ``funnelscope report``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import funnelscope
from funnelscope.analysis.kpi_catalogue import MAIN_KPIS
from funnelscope.analysis.report import (
    _stage_counts_layout,
    _stage_counts_sql,
    stage_counts,
    stage_report,
)
from funnelscope.cli.main import main
from funnelscope.events.stages import DEFAULT_STAGE_MODEL, Stage, StageModel
from funnelscope.simulate import simulate
from funnelscope.workspace import Workspace
from tests.conftest import T0, load_journeys
from tests.golden.test_kpis import W_END, W_START, load_shop


def test_each_stage_carries_its_main_kpis_with_the_change(workspace: Workspace) -> None:
    load_shop(workspace)
    report = stage_report(workspace.engine, start=W_START, end=W_END)
    for row in report.rows:
        assert list(row.kpis) == list(MAIN_KPIS[row.stage])
    action = report.row(Stage.ACTION).kpis
    assert action["orders"]["value"] == 4 and action["orders"]["previous_value"] == 1
    assert action["orders"]["change"] == pytest.approx(3.0)
    assert action["revenue"]["unit"] == "currency"
    assert report.row(Stage.AWARENESS).kpis["sessions"]["value"] == 7
    assert report.row(Stage.RETENTION).kpis["nps"]["value"] == pytest.approx(40)
    # the people counts keep their meaning
    assert report.row(Stage.ACTION).persons == 4
    assert json.loads(json.dumps(report.to_dict()))["stages"][3]["kpis"]["aov"]["value"] == 73.25


def test_without_kpis_the_rows_have_none(workspace: Workspace) -> None:
    load_shop(workspace)
    report = stage_report(workspace.engine, start=W_START, end=W_END, with_kpis=False)
    assert all(row.kpis == {} for row in report.rows)


def test_cli_report_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shop.duckdb"
    with funnelscope.open(path) as ws:
        load_shop(ws)
    window = ["--start", "2024-05-06", "--end", "2024-05-13", "--store", str(path)]
    main(["report", *window, "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert [s["stage"] for s in out["stages"]] == [
        "awareness",
        "interest",
        "decision",
        "action",
        "retention",
    ]
    assert out["stages"][0]["kpis"]["visitors"]["value"] == 5
    assert out["currency"] == "USD"
    main(["report", *window])
    text = capsys.readouterr().out
    assert "Action: 4 people" in text
    assert "293.00 USD" in text  # revenue
    assert "+300.0%" in text  # orders: 4 against 1


def test_cli_report_bad_stage_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "stages.toml"
    bad.write_text("[stages]\nawareness = 'not a list'\n")
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--stages", str(bad), "--store", str(tmp_path / "s.duckdb")])
    assert exit_.value.code == 2
    assert "must be a list of event names" in capsys.readouterr().err


# -- the layout path and the SQL path count alike -------------------------------------------------

REPEATS = {
    # two orders at the same instant, then a third: one Action and two Retention events
    "tia": [
        (0, "page_viewed"),
        (10, "order_completed", {"order_id": "t1"}),
        (10, "order_completed", {"order_id": "t2"}),
        (3000, "order_completed", {"order_id": "t3"}),
    ],
    # anonymous, then identified: one person; her first order is before the window below
    "uma": [
        (0, "product_viewed", {"anonymous_id": "anon-u"}),
        (5, "order_completed", {"anonymous_id": "anon-u", "order_id": "u1"}),
        (6, "identify", {"anonymous_id": "anon-u", "user_id": "uma"}),
        (2000, "order_completed", {"user_id": "uma", "order_id": "u2"}),
        (2001, "nps_answered", {"user_id": "uma"}),
    ],
    "vic": [(2500, "ad_impression"), (2600, "product_added")],
}


@pytest.mark.parametrize(
    "window",
    [(0, 10_000), (11, 10_000), (0, 10), (1999, 2600)],
    ids=["all", "after-first-orders", "before-orders", "middle"],
)
@pytest.mark.parametrize("model", ["default", "no-repeat-rule", "orders-unmapped"])
def test_layout_counts_equal_the_sql_counts(
    workspace: Workspace, window: tuple[int, int], model: str
) -> None:
    load_journeys(workspace, REPEATS)
    stages = {
        "default": DEFAULT_STAGE_MODEL,
        "no-repeat-rule": StageModel(DEFAULT_STAGE_MODEL.events, repeat_order_is_retention=False),
        # only repeat orders are stage events here (Retention); a first order is in no stage
        "orders-unmapped": StageModel(
            {"page_viewed": Stage.INTEREST, "product_viewed": Stage.INTEREST}
        ),
    }[model]
    start, end = (T0 + timedelta(minutes=m) for m in window)
    layout = _stage_counts_layout(workspace.engine.person_layout(), stages, start, end)
    sql = _stage_counts_sql(workspace.engine, stages, start, end)
    assert layout == sql


def test_layout_counts_by_hand(workspace: Workspace) -> None:
    load_journeys(workspace, REPEATS)
    active, tops = stage_counts(
        workspace.engine, start=T0 + timedelta(minutes=11), end=T0 + timedelta(minutes=10_000)
    )
    # tia: her third order (Retention); uma: second order (Retention) and NPS (Retention);
    # vic: an impression (Awareness) and an add to cart (Decision)
    assert active == {1: (1, 1), 2: (0, 0), 3: (1, 1), 4: (0, 0), 5: (3, 2)}
    assert tops == {3: 1, 5: 2}


def test_the_simulated_shop_counts_alike(workspace: Workspace) -> None:
    simulate(customers=300, days=20, seed=5).write_store(
        workspace.store, received_at=datetime(2024, 2, 1, tzinfo=UTC)
    )
    layout = workspace.engine.person_layout()
    for start, end in [
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 21, tzinfo=UTC)),
        (datetime(2024, 1, 8, 13, tzinfo=UTC), datetime(2024, 1, 15, tzinfo=UTC)),
    ]:
        counts = _stage_counts_layout(layout, DEFAULT_STAGE_MODEL, start, end)
        assert counts == _stage_counts_sql(workspace.engine, DEFAULT_STAGE_MODEL, start, end)
        assert counts[0][1][0] > 0 and counts[0][4][0] > 0  # not vacuous: impressions, orders
