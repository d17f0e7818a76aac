"""A CSV file cut into ranges and parsed on two threads (ingest/csv_ranges.py): whatever the
cuts hit (quoted line breaks, doubled quotes, stray quotes, CRLF, a BOM), the blocks come out in
file order with exactly the records of a serial read, and a reader's error is raised after the
records before it."""

from __future__ import annotations

import csv
import gzip
import io
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from funnelscope.ingest import csv_ranges
from funnelscope.ingest.csv_ranges import next_line, parallel_blocks

BOM = b"\xef\xbb\xbf"
RANGE = 4 << 10
#: values with quotes, delimiters and line breaks, none of them ending in a line break
PLAIN = ["plain", 'say "hi"', "a,b", '"', '""', "", ",x,"]
BROKEN = ["two\nlines", "cr\r\nlf", "\n\nlead"]


def _text(rows: int, values: list[str], *, end: str = "\n", last: bool = False) -> bytes:
    """A header and ``rows`` records quoted by the csv module; ``values`` go in the middle
    column (``last``: in the last column)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=end)
    writer.writerow(["id", "n", "note"] if last else ["id", "note", "n"])
    for i in range(rows):
        value = values[i % len(values)]
        writer.writerow([i, i * 7, value] if last else [i, value, i * 7])
    return out.getvalue().encode()


def _write(folder: Path, text: bytes, name: str = "e.csv") -> Path:
    path = folder / name
    path.write_bytes(text)
    return path


#: one block per range: pyarrow's serial reader itself may drop the \n of a \r\n inside quotes
#: where a block ends between the two (a block boundary the ranges would move)
OPTIONS = (
    pacsv.ReadOptions(use_threads=False, block_size=1 << 20),
    pacsv.ParseOptions(newlines_in_values=True),
    pacsv.ConvertOptions(column_types={"id": pa.string(), "note": pa.string(), "n": pa.string()}),
)


def _parallel(path: Path) -> pa.Table:
    blocks = parallel_blocks(path, *OPTIONS, lambda b: b, range_bytes=RANGE)
    assert blocks is not None
    return pa.Table.from_batches(list(blocks))


def _serial(path: Path) -> pa.Table:
    return pacsv.read_csv(path, *OPTIONS)


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per serial read of a file's rest (a range's end was not trusted)."""
    found: list[int] = []
    original = csv_ranges.read_ahead

    def spy(items: object, depth: int = 8) -> object:
        found.append(depth)
        return original(items, depth)  # type: ignore[arg-type]

    monkeypatch.setattr(csv_ranges, "read_ahead", spy)
    return found


def test_next_line_is_the_first_line_start_at_or_after_the_position() -> None:
    text = b'id\r\n1,"a\nb"\n\n2\n'
    data = np.frombuffer(text, np.uint8)
    starts = [i + 1 for i, c in enumerate(text) if c == ord("\n")]
    for position in range(len(text) + 1):
        assert next_line(data, position) == next((s for s in starts if s >= position), len(text))


@pytest.mark.parametrize(
    ("values", "end", "prefix", "tail"),
    [
        (PLAIN, "\n", b"", b""),
        (PLAIN, "\r\n", b"", b""),
        (PLAIN, "\n", BOM, b""),
        (PLAIN, "\n", b"", b"\n\n"),  # blank lines at the end
        (PLAIN, "\n", b"", b"999,no line end,0"),
        (PLAIN + BROKEN, "\n", b"", b""),  # cuts inside quoted line breaks
        (PLAIN + BROKEN, "\r\n", BOM, b""),
    ],
    ids=["lf", "crlf", "bom", "blank-lines", "no-final-newline", "quoted-breaks", "crlf-bom"],
)
def test_blocks_come_in_file_order_with_the_records_of_a_serial_read(
    tmp_path: Path, values: list[str], end: str, prefix: bytes, tail: bytes, fallbacks: list[int]
) -> None:
    path = _write(tmp_path, prefix + _text(4_000, values, end=end) + tail)
    assert path.stat().st_size > 10 * RANGE
    got = _parallel(path)
    assert got.equals(_serial(path))
    assert got.column("id").to_pylist()[:3] == ["0", "1", "2"]
    if values == PLAIN:  # no line break inside quotes: every cut holds
        assert fallbacks == []


@pytest.mark.parametrize(
    "values",
    [["x", "tail\nbreak", "a longer value"], ["x", "y", "tail\r\n\r\nbreak"]],
    ids=["lf", "crlf"],
)
def test_a_range_ending_inside_quotes_is_read_again_serially(
    tmp_path: Path, values: list[str], fallbacks: list[int]
) -> None:
    # the last column holds line breaks: a cut inside one leaves the range's last value open
    # (ending in the newline), so that range and the rest are read serially from its start
    path = _write(tmp_path, _text(4_000, values, last=True))
    assert _parallel(path).equals(_serial(path))
    assert fallbacks == [fallbacks[0]]  # a cut fell inside a quoted value: once, then serial


def test_a_cut_inside_quotes_of_a_middle_column_fails_a_reader_and_is_read_again(
    tmp_path: Path, fallbacks: list[int]
) -> None:
    # the open field leaves the range's last record short of fields: the reader fails, and
    # that failure is not raised but makes the rest a serial read
    path = _write(tmp_path, _text(4_000, ["x", "mid\nbreak", "a longer value"]))
    assert _parallel(path).equals(_serial(path))
    assert len(fallbacks) == 1


def test_a_value_that_really_ends_in_a_newline_costs_only_a_serial_read(
    tmp_path: Path, fallbacks: list[int]
) -> None:
    path = _write(tmp_path, _text(4_000, ["ends\n"], last=True))
    assert _parallel(path).equals(_serial(path))
    assert len(fallbacks) == 1  # the first range's end already looks open


def test_a_stray_quote_is_read_as_the_serial_reader_reads_it(
    tmp_path: Path, fallbacks: list[int]
) -> None:
    # a quote inside an unquoted value is a plain character to pyarrow: no count of quotes
    # decides the cuts, the readers' own results do
    rows = [f'{i},a"b{i},{i}' if i % 3 else f'{i},"q""{i}",{i}' for i in range(4_000)]
    path = _write(tmp_path, ("id,note,n\n" + "\n".join(rows) + "\n").encode())
    got = _parallel(path)
    assert got.equals(_serial(path))
    assert got.column("note").to_pylist()[1:4] == ['a"b1', 'a"b2', 'q"3']
    assert fallbacks == []


def test_small_and_compressed_files_are_not_cut(tmp_path: Path) -> None:
    text = _text(2_000, PLAIN)
    small = _write(tmp_path, text[: 2 * RANGE - 100].rsplit(b"\n", 1)[0] + b"\n")
    assert parallel_blocks(small, *OPTIONS, lambda b: b, range_bytes=RANGE) is None
    packed = _write(tmp_path, gzip.compress(text), "e.csv.gz")
    assert parallel_blocks(packed, *OPTIONS, lambda b: b, range_bytes=RANGE) is None


@pytest.mark.parametrize("values", [PLAIN, PLAIN + BROKEN], ids=["plain", "quoted-breaks"])
def test_a_reader_error_is_raised_after_every_record_before_it(
    tmp_path: Path, values: list[str]
) -> None:
    text = _text(4_000, values)
    bad = text.index(b"\n1500,") + 1
    path = _write(tmp_path, text[:bad] + b"1500,too,many,fields\n" + text[bad:])
    seen: list[str] = []
    blocks = parallel_blocks(path, *OPTIONS, lambda b: b, range_bytes=RANGE)
    assert blocks is not None
    with pytest.raises(pa.ArrowInvalid, match="Expected 3 columns, got 4"):
        for batch in blocks:
            seen.extend(batch.column("id").to_pylist())
    # a prefix of the records, in order, up to the block holding the bad row
    assert seen == [str(i) for i in range(len(seen))]
    assert 1_000 < len(seen) <= 1_500


def test_leaving_early_stops_the_threads(tmp_path: Path) -> None:
    path = _write(tmp_path, _text(5_000, PLAIN))
    blocks = parallel_blocks(path, *OPTIONS, lambda b: b, range_bytes=RANGE)
    assert blocks is not None
    next(blocks)
    blocks.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("csv-range-")]
