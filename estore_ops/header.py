"""Check a landing file's header against the schema before any row is loaded."""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass

from estore_ops.schema import SOURCE_COLUMN_NAMES
from estore_ops.stores.base import ObjectInfo, ObjectStore

_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class HeaderCheck:
    columns: tuple[str, ...]  # as found, in file order (BOM and whitespace stripped)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _first_line(store: ObjectStore, info: ObjectInfo) -> bytes:
    with store.open(info.name) as raw:
        if info.is_gzip:
            try:
                with gzip.GzipFile(fileobj=raw) as gz:
                    head = gz.read(_MAX_HEADER_BYTES)
            except (OSError, EOFError, zlib.error) as exc:
                raise ValueError(
                    f"{info.name} is not a readable gzip file ({exc}). Upload it again, or rename it to .csv if it is not compressed."
                ) from None
        else:
            head = raw.read(_MAX_HEADER_BYTES)
    return head.split(b"\n", 1)[0]


def check_header(store: ObjectStore, info: ObjectInfo) -> HeaderCheck:
    """Read the first line only and compare it with the expected columns (any order)."""
    expected = ", ".join(SOURCE_COLUMN_NAMES)
    if info.size == 0:
        return HeaderCheck((), f"{info.name} is empty (0 bytes). Upload the complete file; an empty file has no header.")
    try:
        line = _first_line(store, info)
    except ValueError as exc:
        return HeaderCheck((), str(exc))
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]  # UTF-8 byte order mark: harmless, DuckDB skips it too
    line = line.rstrip(b"\r")
    if not line.strip():
        return HeaderCheck((), f"{info.name}, line 1: the header line is empty. The first line must be: {expected}.")
    if len(line) >= _MAX_HEADER_BYTES:
        return HeaderCheck((), f"{info.name}, line 1: no line break in the first 64 KiB, so this is not an event CSV header. Expected: {expected}.")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return HeaderCheck((), f"{info.name}, line 1: the header is not UTF-8 text. Save the file as UTF-8 CSV with the header: {expected}.")
    if "\x00" in text:
        return HeaderCheck((), f"{info.name}, line 1: the header contains NUL bytes; this is not a CSV text file.")
    columns = tuple(c.strip() for c in next(csv.reader([text])))
    if len(columns) == 1:
        for sep in (";", "\t", "|"):
            if sep in text:
                return HeaderCheck(
                    columns,
                    f"{info.name}, line 1: the file looks {sep!r}-delimited; estore-ops reads comma-separated files. "
                    f"Export it with ',' as the delimiter. Expected header: {expected}.",
                )
    missing = [c for c in SOURCE_COLUMN_NAMES if c not in columns]
    extra = [c for c in columns if c not in SOURCE_COLUMN_NAMES]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s) {', '.join(extra)}")
    if duplicated:
        problems.append(f"duplicated column(s) {', '.join(duplicated)}")
    if problems:
        return HeaderCheck(
            columns,
            f"{info.name}, line 1: header has {'; '.join(problems)}. Expected: {expected}. "
            "Fix the header (or the export) and upload the file again.",
        )
    return HeaderCheck(columns)
