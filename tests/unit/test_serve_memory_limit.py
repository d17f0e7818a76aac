"""`funnelscope serve --memory-limit`: the cap on the store's DuckDB memory."""

from __future__ import annotations

from pathlib import Path

import pytest

import funnelscope
from funnelscope.cli.main import main
from funnelscope.cli.serve import memory_limit_setting
from funnelscope.errors import InvalidInputError


@pytest.mark.parametrize(
    ("text", "setting", "shown"),
    [
        ("300MB", "300MB", "286.1 MiB"),  # DuckDB shows powers of 1024
        (" 1.5 GiB ", "1.5GiB", "1.5 GiB"),
        ("2gb", "2gb", "1.8 GiB"),
        ("64MB", "64MB", "61.0 MiB"),  # the smallest allowed
    ],
)
def test_a_size_becomes_duckdbs_setting(text: str, setting: str, shown: str) -> None:
    assert memory_limit_setting(text) == setting
    with funnelscope.open(":memory:") as ws:
        ws.store.reader().execute("SET memory_limit = ?", [setting])
        assert ws.store.query("SELECT current_setting('memory_limit')") == [(shown,)]


@pytest.mark.parametrize("text", ["abc", "2", "10kb", "63MB", "-1GB", "1 PB", "1e9B", ""])
def test_a_bad_size_names_the_allowed_form(text: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        memory_limit_setting(text)
    (problem,) = info.value.problems
    assert problem.code == "serve.bad_memory_limit"
    assert problem.location == "--memory-limit"
    assert "at least 64MB" in problem.message and "GiB" in problem.message


def test_the_cli_refuses_a_bad_size_before_opening_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "shop.duckdb"
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--store", str(store), "--memory-limit", "lots"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--memory-limit: 'lots' is not a memory size" in err
    assert not store.exists()
