"""Write the bad-input corpus: one file per kind of bad (or odd but valid) landing file.

    python tests/corpus/make_corpus.py            # (re)write the small files kept in tests/corpus/files/
    python tests/corpus/make_corpus.py --large DIR  # write the large ones (not kept in git) into DIR

The expected outcome of each file is in tests/corpus/EXPECTED.md and in tests/test_bad_input.py.
Every file is deterministic (no clock, no randomness), so rerunning the script changes nothing;
tests/test_bad_input.py checks that the kept files match this script byte for byte.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
COLUMNS = HEADER.split(",")
FILES_DIR = Path(__file__).resolve().parent / "files"


def row(i: int, **over: str) -> str:
    """One valid REES46 event line; `over` replaces columns by name."""
    values = {
        "event_time": f"2019-10-01 00:{i // 60 % 60:02d}:{i % 60:02d} UTC",
        "event_type": "view",
        "product_id": str(1000 + i),
        "category_id": "2053013552326770905",
        "category_code": "electronics.smartphone",
        "brand": "samsung",
        "price": f"{10 + i % 90}.5",
        "user_id": str(500000000 + i % 50),
        "user_session": f"sess-{i // 5}",
    }
    values.update(over)
    return ",".join(values[c] for c in COLUMNS)


def row_in(i: int, columns: list[str]) -> str:
    """Row i with only `columns`, in that order."""
    values = dict(zip(COLUMNS, row(i).split(",")))
    return ",".join(values[c] for c in columns)


def rows(n: int, start: int = 0) -> list[str]:
    return [row(i) for i in range(start, start + n)]


def text(lines: list[str], newline: str = "\n", final_newline: bool = True) -> bytes:
    return (newline.join(lines) + (newline if final_newline else "")).encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _truncated_late() -> bytes:
    data = gz(text([HEADER, *rows(1500)]))
    return data[: len(data) * 3 // 4]


def small_files() -> dict[str, bytes]:
    ok5 = rows(5)
    reordered_cols = COLUMNS[::-1]
    files: dict[str, bytes] = {
        # -- files that are fine and load ----------------------------------------------------
        "crlf.csv": text([HEADER, *ok5], newline="\r\n"),
        "bom.csv": b"\xef\xbb\xbf" + text([HEADER, *ok5]),
        "reordered_columns.csv": text([",".join(reordered_cols), *[row_in(i, reordered_cols) for i in range(5)]]),
        "other_timezone.csv": text([
            HEADER,
            row(0, event_time="2019-10-01 02:00:00+02:00"),  # = 00:00:00 UTC
            row(1, event_time="2019-09-30 19:00:01-05:00"),  # = 00:00:01 UTC
            row(2, event_time="2019-10-01 00:00:02 UTC"),
        ]),
        "duplicated_rows.csv": text([HEADER, *ok5, *ok5[:3]]),
        "quoted_newline.csv": text([HEADER, row(0), row(1, brand='"sam\nsung, inc."'), row(2)]),
        "header_only.csv": text([HEADER]),
        "no_final_newline.csv": text([HEADER, *ok5], final_newline=False),
        "empty_optional_fields.csv": text([HEADER, row(0, category_code="", brand=""), row(1, category_code="", brand="", user_session="")]),
        "multi_member.csv.gz": gz(text([HEADER, *rows(3)])) + gz(text(rows(2, start=3))),
        # -- files that fail (that file alone) -------------------------------------------------
        "empty.csv": b"",
        "empty.csv.gz": b"",
        "missing_column.csv": text([HEADER.replace(",brand", ""), *[row_in(i, [c for c in COLUMNS if c != "brand"]) for i in range(5)]]),
        "renamed_column.csv": text([HEADER.replace("user_session", "session_id"), *ok5]),
        "extra_column.csv": text([HEADER + ",coupon", *[r + ",X1" for r in ok5]]),
        "semicolon_delimited.csv": text([HEADER.replace(",", ";"), *[r.replace(",", ";") for r in ok5]]),
        "tab_delimited.csv": text([HEADER.replace(",", "\t"), *[r.replace(",", "\t") for r in ok5]]),
        "blank_header.csv": text(["", HEADER, *ok5]),
        "unterminated_quote.csv": text([HEADER, row(0), row(1), row(2, brand='"samsung'), row(3)]),
        "bad_timestamp.csv": text([HEADER, row(0), row(1), row(2, event_time="10/01/2019 00:00:02")]),
        "text_in_price.csv": text([HEADER, row(0), row(1), row(2), row(3, price="twelve")]),
        "negative_price.csv": text([HEADER, row(0), row(1), row(2, price="-12.5"), row(3)]),
        "id_overflow.csv": text([HEADER, row(0), row(1, product_id="99999999999999999999")]),
        "too_few_fields.csv": text([HEADER, row(0), row(1).rsplit(",", 2)[0], row(2)]),
        "too_many_fields.csv": text([HEADER, row(0), row(1) + ",extra", row(2)]),
        "nul_bytes.csv": text([HEADER, row(0), row(1, brand="sam\x00sung"), row(2)]),
        "nul_header.csv": text([HEADER.replace("event_type", "event\x00type"), *ok5]),
        "invalid_utf8.csv": text([HEADER, row(0), row(1)]) + row(2, brand="M\udcfcller").encode("utf-8", "surrogateescape") + b"\n",
        "utf16.csv": ("\n".join([HEADER, *ok5]) + "\n").encode("utf-16"),
        "truncated.csv.gz": gz(text([HEADER, *rows(400)]))[:900],
        # Cut after the header's first 64 KiB: the header check passes, the reader finds the end missing.
        "truncated_late.csv.gz": _truncated_late(),
        # A writer that died after preallocating: the tail is a block of zero bytes.
        "zero_filled_tail.csv": text([HEADER, *ok5]) + b"\x00" * 4096,
        "not_gzip.csv.gz": text([HEADER, *ok5]),
        "not_csv.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89" + bytes(range(256)),
        "json_not_csv.csv": b'{"events": [{"event_time": "2019-10-01 00:00:00 UTC", "event_type": "view"}]}\n',
        # -- values out of their domain (the whole file fails, naming line and column) -----------
        "nan_price.csv": text([HEADER, row(0), row(1, price="NaN"), row(2)]),
        "infinite_price.csv": text([HEADER, row(0), row(1), row(2, price="inf")]),
        "overflow_price.csv": text([HEADER, row(0), row(1, price="1e400")]),
        "fractional_id.csv": text([HEADER, row(0), row(1, product_id="1.5"), row(2)]),
        "exponent_id.csv": text([HEADER, row(0), row(1, user_id="15e-1")]),
        "negative_id.csv": text([HEADER, row(0, category_id="-2053013552326770905")]),
        "id_notations.csv": text([HEADER, row(0, product_id="5e8", category_id="0x1F", user_id="1_000")]),
        "empty_event_time.csv": text([HEADER, row(0), row(1), row(2, event_time="")]),
        "infinite_event_time.csv": text([HEADER, row(0), row(1, event_time="infinity")]),
        "all_empty_row.csv": text([HEADER, row(0), ",,,,,,,,", row(1)]),
        "blank_lines.csv": text([HEADER, row(0), "", row(1), "", ""]),
        "spaces_around_ids.csv": text([HEADER, row(0, product_id=" 1000 ", user_id=" 500000000")]),
        # -- line endings and garbage at the end ----------------------------------------------------
        "cr_line_endings.csv": text([HEADER, *ok5], newline="\r"),
        "mixed_line_endings.csv": text([HEADER, row(0)], newline="\r\n") + text(rows(3, start=1)),
        "stray_cr.csv": text([HEADER, row(0), row(1)]) + row(2).encode() + b"\r" + text(rows(2, start=3)),
        # The last row runs straight into zero bytes (no line break): the NULs would end up in its
        # user_session, and the file used to load.
        "nul_tail_no_newline.csv": text([HEADER, *ok5], final_newline=False) + b"\x00" * 4096,
    }
    return files


def large_files() -> dict[str, bytes]:
    return {
        # One 1 MiB line: no line break at all, so no header.
        "single_line_1mb.csv": b"x" * (1 << 20),
        # A valid header, then one data row whose session id is 1 MiB long: a legal but absurd value.
        "huge_field_1mb.csv": text([HEADER, row(0, user_session="s" * (1 << 20))]),
        # A valid file followed by 64 MiB of zero bytes: DuckDB's reader skipped such a run and the
        # file loaded as if nothing were wrong.
        "nul_tail_64mb.csv": text([HEADER, *rows(5)]) + b"\x00" * (64 << 20),
    }


def write(files: dict[str, bytes], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = folder / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)


def big_events_csv(path: Path, n_rows: int) -> Path:
    """A large valid file (for timed kills during the read), written in blocks."""
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(HEADER + "\n")
        block = 10_000
        for start in range(0, n_rows, block):
            out.write("\n".join(row(i) for i in range(start, min(start + block, n_rows))) + "\n")
    return path


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--large":
        write(large_files(), Path(sys.argv[2]))
    else:
        write(small_files(), FILES_DIR)
    print("ok")
