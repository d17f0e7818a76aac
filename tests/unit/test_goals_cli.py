"""``funnelscope goals add|list|show|check|remove``: flags, YAML files, exit codes."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

import funnelscope
from funnelscope.cli.main import main
from tests.unit.test_goals import load_orders

NOW = "2025-01-11T00:00:00+00:00"


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "store.duckdb"
    with funnelscope.open(path) as ws:
        load_orders(ws, date(2024, 11, 1), date(2025, 1, 30))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    main(list(args))
    return capsys.readouterr().out


def test_add_from_flags_and_a_file_then_list_show_check(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(
        capsys,
        "goals",
        "add",
        "orders-up",
        "--kpi",
        "orders",
        "--target",
        "+15%",
        "--start",
        "2025-01-01",
        "--deadline",
        "2025-01-30",
        "--owner",
        "ana",
        "--now",
        NOW,
        "--store",
        store,
    )
    file = tmp_path / "goals.yaml"
    file.write_text(
        "- name: x-revenue\n  kpi: product_revenue\n  scope: {product: X}\n  target: 500 USD\n"
        "  start: 2025-01-01\n  deadline: 2025-01-30\n  initiative: email_spring\n"
    )
    run(capsys, "goals", "add", "--file", str(file), "--now", NOW, "--store", store)

    listed = json.loads(run(capsys, "goals", "list", "--format", "json", "--store", store))
    assert [(g["name"], g["target"], g["target_kind"]) for g in listed] == [
        ("orders-up", 15.0, "change"),
        ("x-revenue", 500.0, "absolute"),
    ]

    shown = json.loads(
        run(
            capsys, "goals", "show", "x-revenue", "--now", NOW, "--format", "json", "--store", store
        )
    )
    # 10 days x 2 orders x 10 USD of product X so far; 30 days x 20 USD = 600 forecast.
    assert (shown["current_value"], shown["target_value"]) == (200.0, 500.0)
    assert (shown["forecast"]["mean"], shown["status"]) == (600.0, "on_track")
    assert "daily" not in shown

    text = run(capsys, "goals", "show", "orders-up", "--now", NOW, "--store", store)
    assert "off_track" in text and "69.00" in text
    assert "29.0% of target" in text and "deadline 2025-01-30: 30 days, 20 left" in text

    checked = json.loads(
        run(capsys, "goals", "check", "--now", NOW, "--format", "json", "--store", store)
    )
    assert [(c["goal"], c["status"]) for c in checked] == [
        ("orders-up", "off_track"),
        ("x-revenue", "on_track"),
    ]
    run(capsys, "goals", "remove", "orders-up", "--store", store)
    listed = json.loads(run(capsys, "goals", "list", "--format", "json", "--store", store))
    assert [(g["name"], g["status"]) for g in listed] == [("x-revenue", "on_track")]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        pytest.param(
            ["--kpi", "ordrs", "--target", "10"], ["goal.unknown_kpi", "orders"], id="unknown-kpi"
        ),
        pytest.param(
            ["--kpi", "orders", "--target", "10", "--deadline", "2024-12-01"],
            ["goal.deadline_before_start"],
            id="deadline-before-start",
        ),
        pytest.param(
            ["--kpi", "conversion_rate", "--target", "150%"],
            ["goal.target_unit", "150% is outside"],
            id="target-unit",
        ),
        pytest.param(
            ["--kpi", "orders", "--target", "10", "--scope", "colour=red"],
            ["goal.unknown_scope", "'colour'"],
            id="unknown-scope",
        ),
        pytest.param(
            ["--kpi", "email_open_rate", "--target", "0.2"],
            ["goal.unmeasurable", "no email_open_rate data"],
            id="unmeasurable",
        ),
    ],
)
def test_a_bad_goal_exits_2_with_one_line(
    store: str, flags: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["goals", "add", "g", "--start", "2025-01-01", "--deadline", "2025-01-30", *flags]
    # later flags win: a test's --deadline replaces the default one
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--now", NOW, "--store", store])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err


def test_without_a_deadline_the_goal_is_not_time_bound(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "goals",
                "add",
                "g",
                "--kpi",
                "orders",
                "--target",
                "10",
                "--start",
                "2025-01-01",
                "--now",
                NOW,
                "--store",
                store,
            ]
        )
    assert exit_.value.code == 2
    assert "not time-bound: give one [goal.not_time_bound]" in capsys.readouterr().err
