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


def test_a_checkpoint_moves_the_wal_into_the_file_while_a_reader_reads(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = Store(path)
    store.checkpoint()
    assert store.wal_bytes == 0
    store.set_meta("k", "v")
    assert store.wal_bytes > 0  # committed, in the WAL, not in the file yet
    reader = store.reader()
    reader.execute("BEGIN TRANSACTION")
    assert reader.execute("SELECT value FROM meta WHERE key = 'k'").fetchall() == [("v",)]
    store.checkpoint()  # an open read transaction does not stop it
    assert store.wal_bytes == 0
    assert reader.execute("SELECT value FROM meta WHERE key = 'k'").fetchall() == [("v",)]
    reader.execute("COMMIT")
    store.close()
    assert Store(path).get_meta("k") == "v"
    assert Store(":memory:").wal_bytes == 0


def test_the_checkpoint_threshold_is_set_and_given_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")

    def current() -> str:
        return str(store.query("SELECT current_setting('checkpoint_threshold')")[0][0])

    assert store.set_checkpoint_threshold("1GiB") == "16.0 MiB"  # DuckDB's default
    assert current() == "1.0 GiB"
    for bad in ("1GiB'; CHECKPOINT; SET threads = '1", "lots", "1GiB\n"):
        with pytest.raises(StoreError, match="not a DuckDB size"):
            store.set_checkpoint_threshold(bad)
    assert store.set_checkpoint_threshold("16.0 MiB") == "1.0 GiB"
    assert current() == "16.0 MiB"
    store.close()
