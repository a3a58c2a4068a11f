"""Check a landing file before any row is loaded: its header against the schema, and its tail."""

from __future__ import annotations

import csv
import gzip
import os
import zlib
from dataclasses import dataclass

from estore_ops.errors import ObjectNotFoundError
from estore_ops.schema import SOURCE_COLUMN_NAMES
from estore_ops.backends.stores.base import ObjectInfo, ObjectStore

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
    except ObjectNotFoundError:
        return HeaderCheck(
            (),
            f"{info.name} disappeared from the landing area after the scan (renamed or deleted); nothing of it was "
            "loaded. If it was renamed, it loads under its new name on the next run.",
        )
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]  # UTF-8 byte order mark: harmless, DuckDB skips it too
    line = line.rstrip(b"\r")
    if b"\r" in line:
        return HeaderCheck((), (
            f"{info.name}, line 1: the line ends with a CR alone (\\r, classic Mac OS line endings); estore-ops reads "
            "lines that end with LF (\\n) or CRLF (\\r\\n). Convert the file (for example with mac2unix, or 'save as' "
            "CSV with Unix or Windows line endings) and upload it again."
        ))
    if not line.strip():
        return HeaderCheck((), f"{info.name}, line 1: the header line is empty. The first line must be: {expected}. Fix the file and upload it again.")
    if len(line) >= _MAX_HEADER_BYTES:
        return HeaderCheck((), f"{info.name}, line 1: no line break in the first 64 KiB, so this is not an event CSV header. Expected: {expected}. "
                           "Upload the events as a CSV file with one event per line.")
    if line.startswith((b"\xff\xfe", b"\xfe\xff")):
        return HeaderCheck((), f"{info.name}, line 1: the file is UTF-16 text. Export it as UTF-8 CSV with the header: {expected}, and upload it again.")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return HeaderCheck(
            (),
            f"{info.name}, line 1: the header is not UTF-8 text, so this is a binary file (not a CSV file) or text in "
            f"another encoding. Upload the events as a UTF-8 CSV file with the header: {expected}.",
        )
    if "\x00" in text:
        return HeaderCheck((), f"{info.name}, line 1: the header contains NUL bytes; this is not a CSV text file. Upload the events as a UTF-8 CSV file.")
    columns = tuple(c.strip() for c in next(csv.reader([text])))
    if len(columns) == 1:
        for sep in (";", "\t", "|"):
            if sep in text:
                return HeaderCheck(
                    columns,
                    f"{info.name}, line 1: the file looks {sep!r}-delimited; estore-ops reads comma-separated files. "
                    f"Export it with ',' as the delimiter and upload it again. Expected header: {expected}.",
                )
    missing = [c for c in SOURCE_COLUMN_NAMES if c not in columns]
    extra = [c for c in columns if c not in SOURCE_COLUMN_NAMES]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s) {', '.join(c[:60] for c in extra[:10])}{', ...' if len(extra) > 10 else ''}")
    if duplicated:
        problems.append(f"duplicated column(s) {', '.join(duplicated)}")
    if problems:
        if not set(columns) & set(SOURCE_COLUMN_NAMES):
            looks = " (it starts like JSON)" if text.lstrip().startswith(("{", "[")) else ""
            return HeaderCheck(
                columns,
                f"{info.name}, line 1: header has {'; '.join(problems)}. None of the expected columns is there, so this "
                f"is not an event CSV file{looks}. Expected: {expected}. Upload the CSV export, or move this file out "
                "of the landing area.",
            )
        return HeaderCheck(
            columns,
            f"{info.name}, line 1: header has {'; '.join(problems)}. Expected: {expected}. "
            "Fix the header (or the export) and upload the file again.",
        )
    return HeaderCheck(columns)


# A writer that died after preallocating (or a file system that lost the tail) leaves the file
# ending in a run of zero bytes. DuckDB's reader takes such a run as one more (odd) value or line,
# and a long run may even load as if nothing were wrong, so the end is checked before the load.
_TAIL_BLOCK = 64 * 1024


def check_tail(store: ObjectStore, info: ObjectInfo) -> str | None:
    """An error when an uncompressed local file ends in NUL bytes (naming where the run starts), else None."""
    path = store.local_path(info.name)
    if path is None or info.is_gzip or info.size == 0:
        return None
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        start = size
        while start > 0:  # walk back over the run of zero bytes, a block at a time
            offset = max(0, start - _TAIL_BLOCK)
            fh.seek(offset)
            block = fh.read(start - offset)
            kept = block.rstrip(b"\x00")
            start = offset + len(kept)
            if kept:
                break
        if start == size:
            return None
        fh.seek(0)
        newlines, remaining = 0, start
        while remaining > 0:
            chunk = fh.read(min(8 << 20, remaining))
            if not chunk:
                break
            newlines += chunk.count(b"\n")
            remaining -= len(chunk)
        fh.seek(max(0, start - 1))
        line_start = start == 0 or fh.read(1) == b"\n"
    run = size - start
    line = newlines + 1
    what = "the line is made of NUL (zero) bytes" if line_start else "the line ends in NUL (zero) bytes"
    return (
        f"{info.name}, line {line}: {what}, {run:,} of them from byte {start:,} to the end of the file: the file was "
        "cut off (or preallocated) while it was being written. Upload the complete file again; the new version "
        "loads on the next run."
    )
