"""The object store interface: what the landing area and the state location must offer.

An implementation must:
- `list(prefix)`: yield every object under `prefix` (recursively), fetching pages of `page_size`;
  names are relative to the store root, with `/` separators. Callers filter by suffix.
- `stat(name)`: size, updated time and a `generation` that changes whenever the content is written.
  Generations are integers in microseconds that grow with each write of a name (GCS: the
  generation itself; local folder: max(mtime, ctime), forced to grow on writes through the
  store), so they also order files by arrival.
- `open(name)`: a binary stream of the stored bytes (no decompression). A remote store's stream
  survives transient errors: it reopens at the offset reached (`ResumingReader`), so a reader
  sees the whole object or one classified error.
- `read(name)`: bytes and generation of one small object, read consistently.
- `write(name, data, if_generation_match)`: replace an object in one request; with
  `if_generation_match=0` the object must not exist, with `g > 0` its generation must be `g`,
  else `PreconditionFailedError`. Returns the new generation. This is what makes the state
  document a compare-and-swap register.
- `delete(name, if_generation_match)`: remove, with the same precondition rule. A retried delete
  that finds the object gone succeeds (its first attempt removed it; the answer was lost).
- `local_path(name)`: a filesystem path for zero-copy reads when the store is local, else None
  (and `local_root`, the folder itself).
- `uri(name)`: where the object lives, for messages and for warehouses that read it themselves.
- `fingerprint(info)`: optional; a cheap content fingerprint where the generation is not enough.
A listing may yield entries with `problem` set (a dangling link, a folder it may not read): the
caller fails that entry alone and goes on with the others.
Names that escape the root are refused with `UnsafeNameError`.
"""

from __future__ import annotations

import abc
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

T = TypeVar("T")

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
    # Local folders: what really changes when a file is written. The generation alone cannot be
    # trusted there (an mtime copied from a clock in the future outweighs every later ctime).
    inode: int | None = None
    ctime_ns: int | None = None
    # An entry the store lists but cannot offer (a dangling link, an unreadable folder, a name that
    # cannot be an object name): it fails alone, with this text, and never blocks the others.
    problem: str | None = None

    @property
    def is_gzip(self) -> bool:
        return self.name.lower().endswith(".gz")

    def same_version(self, other: ObjectInfo) -> bool:
        """Whether two stats of a name show the same content version (fields a store lacks are skipped)."""
        if self.generation != other.generation or self.size != other.size:
            return False
        return all(a is None or b is None or a == b for a, b in ((self.inode, other.inode), (self.ctime_ns, other.ctime_ns)))

    def describe_version(self) -> str:
        text = f"generation {self.generation}, {self.size} bytes"
        if self.inode is not None:
            text += f", inode {self.inode}, ctime {self.ctime_ns}"
        return text


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
        """The landing files: `*.csv` and `*.csv.gz` under `prefix`, and the entries that could not be
        listed or opened (`problem` set; a folder's name ends with '/'): each fails alone."""
        return (o for o in self.list(prefix, page_size) if is_csv_name(o.name) or (o.problem and o.name.endswith("/")))

    def fingerprint(self, info: ObjectInfo) -> str | None:
        """A cheap content fingerprint of a local file (size, first and last blocks), or None where the
        store's generation already identifies the content (Cloud Storage)."""
        return None

    def exists(self, name: str) -> bool:
        from estore_ops.errors import ObjectNotFoundError

        try:
            self.stat(name)
        except ObjectNotFoundError:
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class ResumingReader(io.RawIOBase):
    """A read-only stream that survives transient errors of the stream under it.

    `open_at(offset)` opens the object at that byte offset (pinned to one generation by the
    store); `call(fn)` runs fn under the store's retry policy and error translation. Each read
    is one policy call: a transient error closes the broken stream and the retry reopens it where
    the last good byte ended, so a reader never sees a reset, only the bytes or a classified error.
    """

    def __init__(self, open_at: Callable[[int], Any], call: Callable[[Callable[[], Any]], Any]) -> None:
        super().__init__()
        self._open_at, self._call = open_at, call
        self._pos = 0
        self._stream: Any = None
        self._stream = call(lambda: open_at(0))  # a missing object fails here, at open

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < 0:
            raise io.UnsupportedOperation("ResumingReader seeks to absolute offsets only")
        if offset != self._pos:
            self._drop()
            self._pos = offset
        return self._pos

    def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - a broken stream may fail to close too
                pass

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)

        def once() -> bytes:
            if self._stream is None:
                self._stream = self._open_at(self._pos)
            try:
                return self._stream.read(want)
            except BaseException:
                self._drop()  # reopened at self._pos by the next attempt
                raise

        data = self._call(once) if want else b""
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def close(self) -> None:
        self._drop()
        super().close()
