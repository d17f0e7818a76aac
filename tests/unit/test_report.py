"""The stage report with each stage's main KPIs, and ``funnelscope report``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import funnelscope
from funnelscope.analysis.kpi_catalogue import MAIN_KPIS
from funnelscope.analysis.report import stage_report
from funnelscope.cli.main import main
from funnelscope.events.stages import Stage
from funnelscope.workspace import Workspace
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
        "awareness", "interest", "decision", "action", "retention"]
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
