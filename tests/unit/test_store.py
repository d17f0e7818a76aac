from __future__ import annotations

from pathlib import Path

import pytest

import funnelscope
from funnelscope.errors import StoreError
from funnelscope.store import Store


def test_open_creates_and_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "shop.duckdb"
    with funnelscope.open(path) as ws:
        version = ws.store.schema_version
        assert version >= 1
        assert ws.info()["events"] == 0
    with funnelscope.open(path) as ws:  # reopening applies nothing twice
        assert ws.store.schema_version == version
        from funnelscope.store.store import _migrations

        applied = ws.store.query("SELECT count(*) FROM schema_migrations")[0][0]
        assert applied == len(_migrations())


def test_failed_write_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(RuntimeError), store.write() as con:
        con.execute("INSERT INTO meta VALUES ('k', 'v')")
        raise RuntimeError("boom")
    assert store.get_meta("k") is None
    store.set_meta("k", "v")
    assert store.get_meta("k") == "v"
    store.close()


def test_second_writer_process_gets_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "locked.duckdb"
    holder = Store(path)
    code = (
        "import funnelscope, sys\n"
        "try:\n    funnelscope.open(sys.argv[1])\n"
        "except funnelscope.StoreError as e:\n    print(e); sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    holder.close()
    assert out.returncode == 3
    assert "another funnelscope process" in out.stdout
    assert isinstance(StoreError("x"), funnelscope.FunnelscopeError)
