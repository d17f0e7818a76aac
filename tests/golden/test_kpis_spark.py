"""Spark and the embedded engine agree on every KPI: the golden shop and a simulated 1M+ store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import funnelscope
from funnelscope.analysis.kpi_catalogue import CATALOGUE
from funnelscope.analysis.kpis import KpiResult, KpiSpec, compute_kpis
from funnelscope.engines.spark import SparkEngine
from funnelscope.workspace import Workspace
from tests.golden.test_kpis import EXPECTED, W_END, W_START, load_shop

pytestmark = pytest.mark.spark


def _same(a: KpiResult, b: KpiResult) -> None:
    left = [r.to_dict() for r in a.rows]
    right = [r.to_dict() for r in b.rows]
    assert len(left) == len(right)
    for x, y in zip(left, right, strict=True):
        for key, value in x.items():
            if isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (x["kpi"], key)
            else:
                assert y[key] == value, (x["kpi"], key)


def test_golden_shop_on_spark(workspace: Workspace, tmp_path: Path, spark: Any) -> None:
    load_shop(workspace)
    workspace.export(tmp_path / "parquet")
    engine = SparkEngine(tmp_path / "parquet", spark)
    result = compute_kpis(engine, KpiSpec.create(list(EXPECTED), W_START, W_END))
    for row in result.rows:
        value = EXPECTED[row.kpi][0]
        assert row.value == (None if value is None else pytest.approx(value)), row.kpi
    spec = KpiSpec.create(
        ["sessions", "orders", "revenue", "roas", "customer_retention_rate"],
        W_START,
        W_END,
        breakdown=["channel"],
        granularity="day",
        compare="previous_period",
    )
    _same(compute_kpis(workspace.engine, spec), compute_kpis(engine, spec))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Path]]:
    from funnelscope.simulate import simulate

    folder = tmp_path_factory.mktemp("simulated")
    shop = simulate(customers=100_000, days=90, seed=11)
    ws = funnelscope.open(folder / "shop.duckdb")
    shop.write_store(ws.store, received_at=datetime(2030, 1, 1, tzinfo=UTC))
    ws.export(folder / "parquet")
    yield ws, folder / "parquet"
    ws.close()


@pytest.mark.slow
def test_every_kpi_agrees_on_a_simulated_store(
    simulated: tuple[Workspace, Path], spark: Any
) -> None:
    ws, parquet = simulated
    assert ws.info()["events"] >= 1_000_000
    last = ws.store.query('SELECT max("timestamp") FROM events')[0][0]
    end = datetime.combine(last.date(), datetime.min.time(), tzinfo=UTC)
    start = end - timedelta(days=28)
    engine = SparkEngine(parquet, spark)
    everything = KpiSpec.create([k.name for k in CATALOGUE], start, end, compare="previous_period")
    _same(compute_kpis(ws.engine, everything), compute_kpis(engine, everything))
    by_channel = KpiSpec.create(
        [k.name for k in CATALOGUE if "channel" in k.breakdowns],
        start,
        end,
        breakdown=["channel"],
        granularity="week",
    )
    _same(compute_kpis(ws.engine, by_channel), compute_kpis(engine, by_channel))
