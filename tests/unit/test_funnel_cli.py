"""``funnelscope funnel``: flags, JSON output, per-person export, errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from funnelscope.cli.main import main
from funnelscope.workspace import Workspace
from tests.conftest import load_journeys


@pytest.fixture
def store(workspace: Workspace) -> Path:
    load_journeys(
        workspace,
        {
            "ann": [
                (0, "Product Viewed", {"country": "FR"}),
                (5, "Product Added"),
                (10, "Order Completed"),
            ],
            "ben": [(0, "Product Viewed", {"country": "DE"}), (90, "Product Added")],
        },
    )
    path = workspace.path
    workspace.close()
    return path


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_counts_and_breakdown(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        [
            "funnel",
            "product_viewed",
            "product_added",
            "order_completed",
            "--store",
            str(store),
            "--breakdown",
            "country",
            "-f",
            "json",
        ],
        capsys,
    )
    assert code == 0
    data = json.loads(out)
    assert [s["count"] for s in data["steps"]] == [2, 2, 1]
    assert {tuple(b["values"]): [s["count"] for s in b["steps"]] for b in data["breakdowns"]} == {
        ("FR",): [1, 1, 1],
        ("DE",): [1, 1, 0],
    }


def test_per_step_limit_and_dropped_export(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_csv = tmp_path / "dropped.csv"
    code, out, _ = _run(
        [
            "funnel",
            "product_viewed",
            "product_added",
            "--store",
            str(store),
            "--within",
            "2=1h",
            "--per-person",
            str(out_csv),
            "--persons-step",
            "2",
            "--dropped",
            "-f",
            "json",
        ],
        capsys,
    )
    assert code == 0
    assert [s["count"] for s in json.loads(out)["steps"]] == [2, 1]
    lines = out_csv.read_text().splitlines()
    assert lines[0].startswith("person_id,furthest_step,step_1_at")
    assert len(lines) == 2 and lines[1].split(",")[1] == "1"  # ben: added after 90 minutes


def test_explain(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        [
            "funnel",
            "product_viewed",
            "product_added",
            "order_completed",
            "--store",
            str(store),
            "--explain",
            "1",
        ],
        capsys,
    )
    assert code == 0
    assert "furthest step: 2 of 3" in out
    assert "no matching event after the previous step" in out


def test_invalid_spec_is_one_line_exit_2(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        ["funnel", "a", "b", "--window", "400d", "--mode", "loose", "--store", str(store)], capsys
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "funnel.window_out_of_range" in err and "funnel.unknown_mode" in err
