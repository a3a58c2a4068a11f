"""The object store interface: what the landing area and the state location must offer.

An implementation must:
- `list(prefix)`: yield every object under `prefix` (recursively), fetching pages of `page_size`;
  names are relative to the store root, with `/` separators. Callers filter by suffix.
- `stat(name)`: size, updated time and a `generation` that changes whenever the content is written.
  Generations are integers in microseconds that grow with each write of a name (GCS: the
  generation itself; local folder: max(mtime, ctime), forced to grow on writes through the
  store), so they also order files by arrival.
- `open(name)`: a binary stream of the stored bytes (no decompression).
- `read(name)`: bytes and generation of one small object, read consistently.
- `write(name, data, if_generation_match)`: replace an object in one request; with
  `if_generation_match=0` the object must not exist, with `g > 0` its generation must be `g`,
  else `PreconditionFailedError`. Returns the new generation. This is what makes the state
  document a compare-and-swap register.
- `delete(name, if_generation_match)`: remove, with the same precondition rule.
- `local_path(name)`: a filesystem path for zero-copy reads when the store is local, else None
  (and `local_root`, the folder itself).
- `uri(name)`: where the object lives, for messages and for warehouses that read it themselves.
Names that escape the root are refused with `UnsafeNameError`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

CSV_SUFFIXES = (".csv", ".csv.gz")

# Characters that DuckDB's read_csv (like a shell) expands as a file pattern: `data[1].csv` would
# read `data1.csv`. Paths handed to a reader must not contain them.
PATTERN_CHARACTERS = frozenset("*?[]{}")


def has_pattern_characters(path: str) -> bool:
    return not PATTERN_CHARACTERS.isdisjoint(path)


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    updated: datetime
    generation: int
    checksum: str | None = None  # md5/crc32c where the store keeps one; None where it would cost a full read

    @property
    def is_gzip(self) -> bool:
        return self.name.lower().endswith(".gz")


def is_csv_name(name: str) -> bool:
    return name.lower().endswith(CSV_SUFFIXES)


class ObjectStore(abc.ABC):
    """A bucket-like store rooted at a URL (a folder, or gs://bucket/prefix)."""

    url: str

    @abc.abstractmethod
    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]: ...

    @abc.abstractmethod
    def stat(self, name: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def open(self, name: str) -> BinaryIO: ...

    @abc.abstractmethod
    def read(self, name: str) -> tuple[bytes, int]: ...

    @abc.abstractmethod
    def write(self, name: str, data: bytes, if_generation_match: int | None = None) -> int: ...

    @abc.abstractmethod
    def delete(self, name: str, if_generation_match: int | None = None) -> None: ...

    def local_path(self, name: str) -> Path | None:
        return None

    @property
    def local_root(self) -> Path | None:
        """The folder behind the store when it is local (sample data is written there), else None."""
        return None

    @abc.abstractmethod
    def uri(self, name: str = "") -> str: ...

    def list_csv(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        """The landing files: `*.csv` and `*.csv.gz` under `prefix`."""
        return (o for o in self.list(prefix, page_size) if is_csv_name(o.name))

    def exists(self, name: str) -> bool:
        from estore_ops.errors import ObjectNotFoundError

        try:
            self.stat(name)
        except ObjectNotFoundError:
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
