"""Dictionary pages read from a Parquet file's bytes (ingest/parquet_pages.py): the values equal
what pyarrow's dictionary read returns, and a chunk the pages cannot vouch for says so."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from funnelscope.ingest import parquet_pages
from funnelscope.ingest.parquet_pages import (
    DictionaryPage,
    DictionaryPages,
    decode_pages,
    read_dictionaries,
)

#: Values a text check must tell apart: spaces at either end, empty, non-ASCII edges, NULL.
VALUES = ["shoes", " padded", "padded ", "", "caf\u00e9", "\u3000wide", "x", None, "a b"]


def _table(rows: int = 3_000) -> pa.Table:
    return pa.table(
        {
            "s": [VALUES[i % len(VALUES)] for i in range(rows)],
            "t": [f"page/{i % 37}" for i in range(rows)],
            "nulls": pa.array([None] * rows, pa.string()),
            "n": list(range(rows)),
        }
    )


def _pyarrow_dictionaries(path: Path, column: str) -> list[list[str | None]]:
    """pyarrow's dictionary of ``column`` in each row group (each whole, one chunk)."""
    file = pq.ParquetFile(path, read_dictionary=[column])
    out = []
    for group in range(file.metadata.num_row_groups):
        chunks = file.read_row_group(group, columns=[column]).column(0).chunks
        dictionaries = {tuple(c.dictionary.to_pylist()) for c in chunks}
        assert len(dictionaries) <= 1
        out.append(list(dictionaries.pop()) if dictionaries else [])
    return out


def _assert_as_pyarrow(path: Path, columns: list[str]) -> None:
    found = read_dictionaries(path, columns)
    for column in columns:
        assert found[column].is_known, found[column].reason
        assert found[column].values is not None
        got = [a.to_pylist() for a in found[column].values]
        want = _pyarrow_dictionaries(path, column)
        assert [set(v) for v in got] == [set(v) for v in want]
        assert got == want  # pyarrow keeps the page's order too


@pytest.mark.parametrize("version", ["1.0", "2.0"], ids=["data page v1", "data page v2"])
@pytest.mark.parametrize("codec", ["none", "snappy", "gzip", "zstd", "brotli", "lz4"])
def test_pyarrow_files_give_pyarrows_dictionaries(tmp_path: Path, codec: str, version: str) -> None:
    path = tmp_path / "e.parquet"
    # 7 row groups, the last a short one; small pages: several data pages per chunk
    pq.write_table(
        _table(),
        path,
        compression=codec,
        data_page_version=version,
        row_group_size=450,
        data_page_size=64,
    )
    assert pq.read_metadata(path).num_row_groups == 7
    _assert_as_pyarrow(path, ["s", "t", "nulls"])
    values = read_dictionaries(path, ["s", "nulls"])
    assert values["s"].values is not None and values["nulls"].values is not None
    assert sorted(values["s"].values[0].to_pylist()) == sorted(v for v in VALUES if v is not None)
    assert [len(a) for a in values["nulls"].values] == [0] * 7


def test_a_dictionary_that_overflows_into_plain_pages_cannot_tell(tmp_path: Path) -> None:
    # a 200-byte dictionary limit: the writer falls back to PLAIN data pages in every chunk
    path = tmp_path / "e.parquet"
    table = pa.table({"u": [f"user-{i}" for i in range(2_000)], "s": ["a"] * 2_000})
    pq.write_table(table, path, dictionary_pagesize_limit=200, data_page_size=100)
    found = read_dictionaries(path, ["u", "s"])
    assert not found["u"].is_known
    assert found["u"].reason == "a data page not dictionary-encoded"
    assert found["s"].values is not None and found["s"].values[0].to_pylist() == ["a"]


def test_columns_written_without_a_dictionary_cannot_tell(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(_table(), path, use_dictionary=["t"])
    found = read_dictionaries(path, ["s", "t", "n", "missing"])
    assert [found[c].is_known for c in ("s", "t", "n", "missing")] == [False, True, False, False]
    assert found["n"].reason == "'n' is not a flat BYTE_ARRAY column"
    assert found["missing"].reason == "0 leaf columns named 'missing'"


def test_nested_string_columns_cannot_tell(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    table = pa.table({"l": [["a", "b"], None, ["c"]] * 10, "st": [{"x": "a"}] * 30})
    pq.write_table(table, path)
    found = read_dictionaries(path, ["l.list.element", "st.x", "l"])
    assert not any(f.is_known for f in found.values())


def test_empty_row_groups_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    table = _table(20)
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(table.slice(0, 0))  # a row group of no rows
        writer.write_table(table)
        writer.write_table(table.slice(0, 0))
    assert pq.read_metadata(path).num_row_groups == 3
    _assert_as_pyarrow(path, ["s", "nulls"])
    empty = tmp_path / "empty.parquet"
    pq.write_table(table.slice(0, 0), empty)
    found = read_dictionaries(empty, ["s"])["s"]
    assert found.values is not None and sum(len(v) for v in found.values) == 0


def test_long_values_make_page_headers_longer_than_the_first_read(tmp_path: Path) -> None:
    # page statistics hold the page's min and max: 3 KB values make 6 KB headers
    path = tmp_path / "e.parquet"
    table = pa.table({"s": ["a" * 3_000, "b" * 3_000, None] * 100})
    pq.write_table(table, path, data_page_size=1_000, write_statistics=True)
    _assert_as_pyarrow(path, ["s"])


def test_invalid_utf8_in_a_dictionary_is_told_apart(tmp_path: Path) -> None:
    raw = pa.array([b"ok", b"bad\xff", None] * 10, pa.binary())
    relabelled = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"s": relabelled, "t": ["x"] * 30}), path)
    found = read_dictionaries(path, ["s", "t"])
    assert not found["s"].is_valid_utf8 and not found["s"].is_known
    assert found["t"].is_valid_utf8 and found["t"].is_known


def _plain(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _page(body: bytes, count: int, size: int | None = None) -> DictionaryPage:
    return DictionaryPage(count, len(body) if size is None else size, body, "UNCOMPRESSED")


def test_pages_decode_and_bad_pages_are_refused() -> None:
    accented = "\u00e9".encode()
    snappy = pa.Codec("snappy").compress(_plain(b"x", b"y z"), asbytes=True)
    decoded = decode_pages(
        [
            _page(_plain(b"", b"ab", accented), 3),
            _page(b"", 0),
            DictionaryPage(2, len(_plain(b"x", b"y z")), snappy, "SNAPPY"),
        ]
    )
    assert [a.to_pylist() for a in decoded] == [["", "ab", "\u00e9"], [], ["x", "y z"]]
    with pytest.raises(parquet_pages._NotUtf8):
        decode_pages([_page(_plain(b"x"), 1), _page(_plain(b"x", b"\xc3("), 2)])
    for body, count in [
        (_plain(b"abc")[:-1], 1),  # the last value runs past the page
        (_plain(b"abc"), 2),  # fewer values than the header says
        (_plain(b"abc", b"d"), 1),  # bytes left over
        (_plain(b"abc")[:3], 1),  # a length cut short
    ]:
        with pytest.raises(parquet_pages._CannotTell):
            decode_pages([_page(body, count)])
    with pytest.raises(parquet_pages._CannotTell):  # not snappy data
        decode_pages([DictionaryPage(1, 5, b"\xff\xff\xff\xff", "SNAPPY")])


def _struct(raw: bytes) -> tuple[dict[int, object], int]:
    return parquet_pages._struct(raw, 0, parquet_pages._PAGE_HEADER, 0)


def test_the_thrift_reader_keeps_known_fields_and_skips_the_rest() -> None:
    # a PageHeader in the compact protocol, written by hand: field header = delta << 4 | type
    header = bytes(
        [0x15, 0x04, 0x15, 0x0A, 0x15, 0x0A]  # fields 1-3, i32: type 2, sizes 5 and 5
        + [0x15, 0x80, 0x01]  # field 4 (crc), i32 64 as a two-byte varint
        + [0x0C, 0x80, 0x01]  # field 64 in long form (zigzag 128), a struct of:
        + [0x18, 0x02, 0x68, 0x69]  # field 1: binary "hi"
        + [0x17]
        + [0] * 8  # field 2: double
        + [0x19, 0x25, 0x00, 0x04]  # field 3: list of 2 i32
        + [0x1A, 0x21, 0x01, 0x02]  # field 4: set of 2 booleans (a byte each)
        + [0x1B, 0x01, 0x55, 0x02, 0x04]  # field 5: map of 1 (i32 -> i32)
        + [0x11, 0x12]  # fields 6 and 7: booleans true, false
        + [0x1C, 0x13, 0x05, 0x00]  # field 8: struct of an i8
        + [0x00]  # end of field 64
        + [0x4C, 0x15, 0x02, 0x15, 0x00, 0x11, 0x00]  # field 68 (delta 4): a struct
        + [0x00]  # end of the PageHeader
    )
    assert _struct(header) == ({1: 2, 2: 5, 3: 5}, len(header))
    # dictionary_page_header as field 7 (delta 3 from field 4): num_values 1, PLAIN, sorted
    header = bytes([0x15, 0x04, 0x15, 0x0A, 0x15, 0x0A, 0x15, 0x80, 0x01])
    header += bytes([0x3C, 0x15, 0x02, 0x15, 0x00, 0x11, 0x00, 0x00])
    assert _struct(header) == ({1: 2, 2: 5, 3: 5, 7: {1: 1, 2: 0}}, len(header))
    for cut in range(len(header)):
        with pytest.raises(parquet_pages._Truncated):
            _struct(header[:cut])
    for wrong in (
        [0x18, 0x01, 0x41, 0x00],  # the page type as a binary
        [0x9D, 0x00],  # field 9 of wire type 13, which does not exist
        [0x15, 0x04, 0x1C, 0x18, 0x01, 0x41, 0x00, 0x00],  # a struct where an i32 is read
    ):
        with pytest.raises(parquet_pages._CannotTell):
            _struct(bytes(wrong))


def test_damaged_bytes_never_raise_and_never_give_other_values(tmp_path: Path) -> None:
    # every byte of the first column chunk flipped in turn: the answer is pyarrow's values (a
    # flipped value byte changes both reads alike), or cannot tell; never an exception
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"s": ["ab", "cd", None, "ab"]}), path, compression="none")
    chunk = pq.read_metadata(path).row_group(0).column(0)
    good = path.read_bytes()
    known = 0
    for at in range(chunk.dictionary_page_offset, chunk.data_page_offset):
        damaged = tmp_path / f"d{at}.parquet"
        damaged.write_bytes(good[:at] + bytes([good[at] ^ 0x5A]) + good[at + 1 :])
        found = read_dictionaries(damaged, ["s"])["s"]
        if found.values is not None:
            known += 1
            assert [a.to_pylist() for a in found.values] == _pyarrow_dictionaries(damaged, "s")
    assert 0 < known < chunk.data_page_offset - chunk.dictionary_page_offset
    (tmp_path / "cut.parquet").write_bytes(good[: len(good) // 2])
    assert read_dictionaries(tmp_path / "cut.parquet", ["s"])["s"].reason.startswith(
        "unreadable footer"
    )
    assert not read_dictionaries(tmp_path / "nothing.parquet", ["s"])["s"].is_known


@pytest.mark.parametrize("codec", ["uncompressed", "snappy", "gzip", "zstd", "brotli", "lz4"])
def test_duckdb_files_give_pyarrows_dictionaries(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "e.parquet"
    con = duckdb.connect()
    con.register("t", _table())
    con.execute(f"COPY t TO '{path}' (FORMAT parquet, COMPRESSION {codec}, ROW_GROUP_SIZE 1024)")
    assert pq.read_metadata(path).num_row_groups == 2  # DuckDB cuts at 2,048 rows
    _assert_as_pyarrow(path, ["s", "t"])
    # DuckDB writes an all-NULL column as PLAIN pages with no dictionary
    assert not read_dictionaries(path, ["nulls"])["nulls"].is_known


@pytest.mark.parametrize("codec", ["uncompressed", "snappy", "gzip", "zstd", "brotli", "lz4"])
def test_polars_files_give_pyarrows_dictionaries(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "e.parquet"
    pl.from_arrow(_table()).write_parquet(path, compression=codec, row_group_size=1024)
    assert pq.read_metadata(path).num_row_groups == 3
    _assert_as_pyarrow(path, ["s", "t", "nulls"])


@pytest.mark.parametrize(("codec", "name"), [(5, "UNKNOWN"), (3, "LZO")], ids=["lz4 hadoop", "lzo"])
def test_codecs_outside_the_list_cannot_tell(tmp_path: Path, codec: int, name: str) -> None:
    # the footer's codec of column "s" (ColumnMetaData field 4, after the path "s") patched
    # from SNAPPY (zigzag 2) to Parquet's Hadoop-framed LZ4 or LZO: pyarrow names them so
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"s": ["a", "b"] * 10}), path, compression="snappy")
    raw = path.read_bytes()
    assert raw.count(b"\x01s\x15\x02") == 1
    path.write_bytes(raw.replace(b"\x01s\x15\x02", b"\x01s\x15" + bytes([codec * 2])))
    assert pq.read_metadata(path).row_group(0).column(0).compression == name
    assert read_dictionaries(path, ["s"])["s"].reason == f"codec {name}"


class _KeysInTheClear(pe.KmsClient):
    """A key service that wraps keys by base64 only: enough to write an encrypted file."""

    def __init__(self, config: pe.KmsConnectionConfig) -> None:
        super().__init__()

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> bytes:
        return base64.b64encode(key_bytes)

    def unwrap_key(self, wrapped_key: bytes, master_key_identifier: str) -> bytes:
        return base64.b64decode(wrapped_key)


def write_encrypted(path: Path, *, plaintext_footer: bool) -> None:
    """Column ``s`` encrypted (``t`` not), the footer in the clear or encrypted."""
    factory = pe.CryptoFactory(_KeysInTheClear)
    keys = pe.KmsConnectionConfig(
        custom_kms_conf={"footer": "0123456789012345", "column": "1234567890123450"}
    )
    config = pe.EncryptionConfiguration(
        footer_key="footer",
        column_keys={"column": ["s"]},
        plaintext_footer=plaintext_footer,
        double_wrapping=False,
    )
    table = pa.table({"s": ["a", " b"] * 10, "t": ["x", "y"] * 10})
    properties = factory.file_encryption_properties(keys, config)
    with pq.ParquetWriter(path, table.schema, encryption_properties=properties) as writer:
        writer.write_table(table)


@pytest.mark.parametrize("plaintext_footer", [True, False], ids=["plaintext footer", "encrypted"])
def test_encrypted_files_cannot_tell(tmp_path: Path, plaintext_footer: bool) -> None:
    # pyarrow aborts the process when asked for an encrypted chunk's metadata: never asked
    path = tmp_path / "e.parquet"
    write_encrypted(path, plaintext_footer=plaintext_footer)
    found = read_dictionaries(path, ["t", "s"])
    assert not found["t"].is_known and not found["s"].is_known
    assert found["s"].reason == (
        "encrypted columns"
        if plaintext_footer
        else "unreadable footer: Could not read encrypted metadata, no decryption found in "
        "reader's properties"
    )


def test_a_footer_pointing_past_the_files_end_cannot_tell(tmp_path: Path) -> None:
    # the column chunk's bytes cut out of the middle of the file: its offsets now point at
    # the footer and past the file's end
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"s": [f"v{i}" for i in range(5_000)]}), path, compression="none")
    chunk = pq.read_metadata(path).row_group(0).column(0)
    raw = path.read_bytes()
    start = chunk.dictionary_page_offset
    path.write_bytes(raw[:start] + raw[start + chunk.total_compressed_size :])
    found = read_dictionaries(path, ["s"])["s"]
    assert not found.is_known


@pytest.mark.timeout(20)
def test_a_page_header_cut_by_the_files_end_is_truncated(tmp_path: Path) -> None:
    # a chunk that claims 100 KB where the file holds the first field of a header only
    path = tmp_path / "cut"
    path.write_bytes(bytes([0x15, 0x04]))
    with DictionaryPages(path) as pages, pytest.raises(parquet_pages._Truncated):
        pages._header(0, 100_000)
