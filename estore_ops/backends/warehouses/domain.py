"""Values stay in their domain: the checks every raw row passes, and how a failed check is found again.

The policy (tests/corpus/EXPECTED.md) refuses the whole file, naming the line and the column, when:
- a price is not a finite number (`NaN`, `inf`, an overflow such as `1e400`) or is negative;
- an id (product_id, category_id, user_id) has a fraction (`1.5`, `1.0`, `15e-1`: DuckDB's integer
  parser would round it, silently making it another id) or is negative (REES46 ids are positive);
- an event_time is empty or not a finite time (`infinity`); unparseable text already fails in the
  CSV reader, with its line;
- a row is entirely empty (`,,,,,,,,`).
Such a value would otherwise reach `raw.events` and poison every model and report built on it.

The checks ride on the load's own scan (SQL expressions evaluated while DuckDB reads the file), so
a good file is read once. They abort the statement with an `estore-check:` error; only then is the
file read a second time, here in Python, to find the first offending line (a rare path).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

CHECK = "estore-check: "
ID_COLUMNS = ("product_id", "category_id", "user_id")
# Ids are read as text; one with a '.' (a fraction) or a '-' (negative, or a negative exponent, which
# is a fraction too) is refused, the rest is cast. Two substring tests per value cost about a tenth
# of a load's CPU; a full regular expression cost three times that (measured on 1M rows).
_INTEGER_NOTATION = re.compile(r" *(\+?[0-9_]+|0[xXbB][0-9A-Fa-f_]+|\+?[0-9]+[eE]\+?[0-9]+) *")
_BIGINT = (-(2**63), 2**63 - 1)
_INFINITE_TIMES = {"infinity", "+infinity", "-infinity", "inf", "+inf", "-inf"}
_AGAIN = "Fix the value (or remove the line) and upload the file again; the new version loads on the next run."


def price_sql(value: str) -> str:
    return (f"CASE WHEN NOT isfinite({value}) OR {value} < 0 THEN error('{CHECK}price') ELSE {value} END")


def id_sql(column: str, value: str) -> str:
    return (f"CASE WHEN contains({value}, '.') OR contains({value}, '-') THEN error('{CHECK}{column}') "
            f"ELSE CAST({value} AS BIGINT) END")


def event_time_sql(raw: str, converted: str) -> str:
    return (f"CASE WHEN {raw} IS NULL OR NOT isfinite({raw}) THEN error('{CHECK}event_time') ELSE {converted} END")


# -- finding the line again ------------------------------------------------------------------------


def _open_text(path: Path, is_gzip: bool) -> IO[str]:
    if is_gzip:
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def _rows(path: Path, is_gzip: bool) -> Iterator[tuple[int, list[str], list[str]]]:
    """(first line of the row, header, fields) for every data row."""
    with _open_text(path, is_gzip) as fh:
        reader = csv.reader(fh)
        header = [c.strip() for c in next(reader)]
        while True:
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            yield line, header, fields


def violation(name: str, path: Path, is_gzip: bool) -> str | None:
    """The first value out of its domain in the file, as a message with line and column; None when
    there is none (the statement failed for another reason)."""
    try:
        for line, header, fields in _rows(path, is_gzip):
            if fields and all(f == "" for f in fields):
                return (f"{name}, line {line}: the row is empty (all {len(fields)} fields are empty). Every row must be "
                        f"an event; the whole file was refused. Remove the line and upload the file again; the new "
                        "version loads on the next run.")
            values = dict(zip(header, fields))
            for column in header:
                problem = _problem(column, values.get(column, ""))
                if problem:
                    return f"{name}, line {line}, column {column}: {problem} {_AGAIN}"
    except (OSError, EOFError, csv.Error, StopIteration, ValueError):
        return None  # the reader's own error is reported instead
    return None


def _problem(column: str, value: str) -> str:
    if column == "price":
        if value == "":
            return ""
        try:
            number = float(value)
        except ValueError:
            return ""  # not a number at all: the reader reports it
        if not math.isfinite(number):
            return (f'"{value}" is not a finite number. Prices are numbers of 0 or more (NaN, inf and overflows such as '
                    "1e400 poison every sum and average), so the whole file was refused.")
        if number < 0:
            return (f"negative price {value}. Prices are 0 or more in these events, and a negative one would corrupt "
                    "revenue, so the whole file was refused.")
        return ""
    if column in ID_COLUMNS:
        if value == "":
            return ""
        if "." in value or "e-" in value.lower():
            return (f'"{value}" has a fraction. Ids are whole numbers, and reading this one as a number would round '
                    "it to another id, so the whole file was refused.")
        if "-" in value:
            return f'"{value}" is negative. Ids are positive whole numbers, so the whole file was refused.'
        if not _INTEGER_NOTATION.fullmatch(value):
            return f'"{value}" is not a whole number. Ids are whole numbers, so the whole file was refused.'
        digits = value.strip().lstrip("+")
        if digits.isdigit() and int(digits) > _BIGINT[1]:
            return (f'"{value}" is too large for an id (at most 9223372036854775807, a BIGINT), so the whole file '
                    "was refused.")
        return ""
    if column == "event_time":
        if value.strip() == "":
            return "the time is empty. Every event needs its time, so the whole file was refused."
        if value.strip().lower() in _INFINITE_TIMES:
            return f'"{value}" is not a point in time. Every event needs its real time, so the whole file was refused.'
    return ""


# -- line endings ---------------------------------------------------------------------------------

_TERMINATORS = re.compile(rb'[\r\n"]')
_SCAN_LIMIT = 1 << 30  # bytes of (uncompressed) data searched before giving up


def mixed_line_endings(path: Path, is_gzip: bool) -> tuple[int, str, str] | None:
    """(line, its ending, the first line's ending) for the first line that ends differently from
    line 1, outside quoted values; None when every line ends the same way."""
    opener = gzip.open if is_gzip else open
    try:
        with opener(path, "rb") as fh:  # type: ignore[operator]
            return _scan_endings(fh)
    except (OSError, EOFError):
        return None


def _scan_endings(fh: io.BufferedIOBase) -> tuple[int, str, str] | None:
    line, first, in_quote, pending_cr, seen = 1, "", False, False, 0

    def ended(kind: str) -> tuple[int, str, str] | None:
        nonlocal line, first
        if not first:
            first = kind
        elif kind != first:
            return line, kind, first
        line += 1
        return None

    while seen < _SCAN_LIMIT:
        chunk = fh.read(1 << 20)
        if not chunk:
            break
        seen += len(chunk)
        skip_to = 0
        if pending_cr:
            pending_cr = False
            found = ended("CRLF" if chunk[:1] == b"\n" else "CR")
            if found:
                return found
            skip_to = 1 if chunk[:1] == b"\n" else 0
        for match in _TERMINATORS.finditer(chunk, skip_to):
            at = match.start()
            if at < skip_to:
                continue
            char = match.group()
            if char == b'"':
                in_quote = not in_quote
                continue
            if in_quote:
                continue
            if char == b"\r":
                if at + 1 == len(chunk):
                    pending_cr = True
                    continue
                if chunk[at + 1:at + 2] == b"\n":
                    skip_to = at + 2
                    found = ended("CRLF")
                else:
                    found = ended("CR")
            else:
                found = ended("LF")
            if found:
                return found
    if pending_cr:
        return ended("CR")
    return None


ENDING_NAMES = {"LF": "LF (\\n, Unix)", "CRLF": "CRLF (\\r\\n, Windows)", "CR": "CR alone (\\r, classic Mac OS)"}


def describe_line_endings(name: str, found: tuple[int, str, str]) -> str:
    line, kind, first = found
    return (
        f"{name}, line {line}: the line ends with {ENDING_NAMES[kind]} but line 1 ends with {ENDING_NAMES[first]}: the "
        "file mixes line endings, so its rows cannot be told apart reliably. Convert it to one kind (for example "
        "with dos2unix, or 'save as' CSV with Unix or Windows line endings) and upload it again; the new version "
        "loads on the next run."
    )
