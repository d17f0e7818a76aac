"""Round trip: simulate a shop -> write CSV, JSON Lines and Parquet -> import each into a fresh
store -> the same events, persons and stage report as loading the simulator's tables directly;
importing a file again adds nothing; the CLI's exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import funnelscope
from funnelscope.cli.main import main
from funnelscope.workspace import Workspace
from tests.conftest import NOW

pytestmark = pytest.mark.e2e

CUSTOMERS, DAYS, SEED = 1_500, 30, 11
FORMATS = ("parquet", "csv", "jsonl")


@pytest.fixture(scope="module")
def shop_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from funnelscope.simulate import simulate

    shop = simulate(CUSTOMERS, DAYS, seed=SEED)
    out = tmp_path_factory.mktemp("shop")
    files = {fmt: shop.write_files(out / f"events.{fmt}") for fmt in FORMATS}
    with funnelscope.open(out / "direct.duckdb") as ws:
        report = shop.write_store(ws.store, received_at=NOW)
        assert report.rejected == 0, report.reasons
        expected = _summary(ws)
    return {"shop": shop, "files": files, "expected": expected}


def _summary(ws: Workspace) -> dict[str, Any]:
    q = ws.store.query
    return {
        "events": q("SELECT count(*) FROM events")[0][0],
        "by_event": dict(q("SELECT event, count(*) FROM events GROUP BY 1")),
        "persons": ws.info()["persons"],
        "revenue": q("SELECT currency, sum(revenue) FROM events GROUP BY 1 ORDER BY 1"),
        "ad_spend": q("SELECT count(*), sum(spend) FROM ad_spend")[0],
        "stage_report": ws.stage_report().to_dict(),
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips(shop_files: dict[str, Any], fmt: str, tmp_path: Path) -> None:
    files, expected = shop_files["files"][fmt], shop_files["expected"]
    with funnelscope.open(tmp_path / "store.duckdb") as ws:
        report = ws.ingest(files["events"], received_at=NOW)
        assert (report.rejected, dict(report.reasons)) == (0, {})
        assert report.inserted == shop_files["shop"].events.num_rows
        for kind, path in files.items():
            if kind != "events":
                assert ws.ingest(path, kind=kind, received_at=NOW).rejected == 0, kind
        assert _summary(ws) == expected

        again = ws.ingest(files["events"], received_at=NOW)
        assert (again.inserted, again.duplicates) == (0, again.rows)
        assert ws.store.query("SELECT count(*) FROM events")[0][0] == expected["events"]
        assert ws.store.query("SELECT count(*) FROM imports WHERE kind = 'events'")[0][0] == 2


def test_cli_import_and_exit_codes(
    shop_files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "cli.duckdb")
    events = str(shop_files["files"]["csv"]["events"])
    main(["import", events, "--store", store, "--format-out", "json"])
    out = capsys.readouterr().out
    assert f'"inserted": {shop_files["expected"]["events"]}' in out

    broken = tmp_path / "broken.csv"
    broken.write_text("when,what\n2024-01-01,x\n")
    with pytest.raises(SystemExit) as exit_:
        main(["import", str(broken), "--store", store])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(broken) in err and "missing required column" in err

    with pytest.raises(SystemExit) as exit_:
        main(["import", str(tmp_path / "absent.jsonl"), "--store", store])
    assert exit_.value.code == 2
    assert "no such file" in capsys.readouterr().err

    main(["quarantine", "--store", store, "--format", "json"])
    assert '"total": 0' in capsys.readouterr().out
