"""The KPI catalogue, its rendered docs, and the ``kpi`` / ``kpis`` commands."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from funnelscope.analysis.kpi_catalogue import (
    BASES,
    CATALOGUE,
    DIMENSIONS,
    Measure,
    render_markdown,
)
from funnelscope.analysis.kpis import KpiSpec
from funnelscope.cli.main import main
from tests.golden.test_kpis import W_END, W_START, load_shop

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kpis.md"


def test_docs_kpis_md_is_the_rendered_catalogue() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_markdown(), (
        "docs/kpis.md is stale: regenerate it with "
        "python -c 'from funnelscope.analysis.kpi_catalogue import render_markdown as r; "
        'open("docs/kpis.md", "w").write(r())\''
    )


@pytest.mark.parametrize("kpi", CATALOGUE, ids=lambda k: k.name)
def test_catalogue_entries_are_consistent(kpi: object) -> None:
    from funnelscope.analysis.kpi_catalogue import Kpi

    assert isinstance(kpi, Kpi)
    assert kpi.name.isidentifier() and kpi.name == kpi.name.lower()
    assert kpi.description.endswith(".")
    for m in kpi.measures:
        assert m.base in BASES
    assert set(kpi.breakdowns) <= set(DIMENSIONS)
    # additive KPIs are counts or sums: no denominator, no quantile
    if kpi.additive:
        assert kpi.denominator is None
        assert isinstance(kpi.numerator, Measure) and kpi.numerator.quantile is None


def test_names_are_unique() -> None:
    names = [k.name for k in CATALOGUE]
    assert len(names) == len(set(names))


@pytest.fixture
def store(tmp_path: Path) -> str:
    import funnelscope

    path = tmp_path / "shop.duckdb"
    ws = funnelscope.open(path)
    load_shop(ws)
    ws.close()
    return str(path)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    main(list(args))
    return capsys.readouterr().out


def test_cli_kpi_json_csv_and_table(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    window = ["--start", W_START.date().isoformat(), "--end", W_END.date().isoformat()]
    out = json.loads(
        _run(
            capsys,
            "kpi",
            "orders",
            "revenue",
            "-b",
            "channel",
            *window,
            "--store",
            store,
            "--format",
            "json",
        )
    )
    revenue = {r["channel"]: r["value"] for r in out["rows"] if r["kpi"] == "revenue"}
    assert revenue == {
        "direct": pytest.approx(88),
        "organic_search": pytest.approx(33),
        "paid_search": pytest.approx(100),
        "paid_social": pytest.approx(72),
    }
    assert out["currency"] == "USD"

    text = _run(
        capsys,
        "kpi",
        "sessions,aov",
        *window,
        "--compare",
        "previous_period",
        "--store",
        store,
        "--format",
        "csv",
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["kpi"], r["value"], r["previous_value"]) for r in rows] == [
        ("sessions", "7.0", "1.0"),
        ("aov", "73.25", "40.0"),
    ]

    table = _run(capsys, "kpi", "bounce_rate", *window, "--store", store)
    assert "14.3%" in table  # 1 of 7 sessions


def test_cli_kpi_unsupported_breakdown_exits_2(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["kpi", "nps", "-b", "channel", "--store", store])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "nps cannot be broken down by channel; allowed: none" in err
    assert "Traceback" not in err


def test_cli_kpis_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    listed = json.loads(_run(capsys, "kpis", "--format", "json"))
    assert [e["name"] for e in listed] == [k.name for k in CATALOGUE]
    roas = next(e for e in listed if e["name"] == "roas")
    assert roas["breakdowns"] == ["channel", "campaign"] and roas["stage"] == "action"


def test_default_window_is_four_weeks_to_the_last_event_day(store: str) -> None:
    import funnelscope
    from funnelscope.cli.kpi import resolve_window

    with funnelscope.open(store) as ws:
        start, end = resolve_window(ws, None, None)
    # the last event is dan's return on 2024-05-09 20:20
    assert (start.isoformat(), end.isoformat()) == (
        "2024-04-12T00:00:00+00:00",
        "2024-05-10T00:00:00+00:00",
    )


def test_spec_filters_and_breakdown_are_bound_not_formatted(tmp_path: Path) -> None:
    import funnelscope

    with funnelscope.open(tmp_path / "s.duckdb") as ws:
        load_shop(ws)
        spec = KpiSpec.create(
            ["sessions"], W_START, W_END, filters={"country": ["DE'); DROP TABLE events; --"]}
        )
        frame = ws.kpis(spec.names, W_START, W_END, filters=dict(spec.filters))
        assert frame["value"].tolist() == [0.0]
        assert ws.info()["events"] > 0
