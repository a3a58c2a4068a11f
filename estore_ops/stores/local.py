"""A local folder used as a bucket: the embedded default for the landing area and the state."""

from __future__ import annotations

import fcntl
import operator
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

from estore_ops.errors import (
    BackendError,
    ObjectNotFoundError,
    PreconditionFailedError,
    UnsafeNameError,
)
from estore_ops.logs import get_logger
from estore_ops.stores.base import ObjectInfo, ObjectStore, is_csv_name

log = get_logger("stores.local")

# Conditional writes hold this file (in the root) exclusively so check-then-rename is atomic
# between processes; reads of small documents hold it shared. Hidden names are never listed.
_WRITE_LOCK = ".estore-write.lock"


def _generation(st: os.stat_result) -> int:
    # ctime cannot be set by users (unlike mtime, which `cp -p` preserves), so a file copied
    # in later always gets a later generation: this is its arrival time.
    # Microseconds, like GCS generations, so one margin works for every store.
    return max(st.st_mtime_ns, st.st_ctime_ns) // 1000


_entry_name = operator.attrgetter("name")


class LocalFolderStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str], create: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(
                    f"Cannot create the folder {self.root}: {exc.strerror}. "
                    "Create it yourself or point the setting to a writable folder."
                ) from None
        self.url = str(self.root)

    # -- names ------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        if not name or name.startswith("/") or "\\" in name or "\x00" in name:
            raise UnsafeNameError(f"Object name {name!r} is not a relative name inside {self.root}.")
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise UnsafeNameError(f"Object name {name!r} escapes or is not normal inside {self.root}.")
        path = self.root.joinpath(*parts)
        # A symlink may point outside the root: resolve and compare.
        resolved = path.resolve()
        if resolved != self.root.resolve() and self.root.resolve() not in resolved.parents:
            raise UnsafeNameError(
                f"Object {name!r} resolves to {resolved}, outside the store root {self.root}; "
                "remove the link or copy the file into the folder."
            )
        return path

    def _info(self, name: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            name=name,
            size=st.st_size,
            updated=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc),
            generation=_generation(st),
        )

    # -- reads ------------------------------------------------------------------------------
    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        return self._walk(prefix, None)

    def list_csv(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        # The name is checked before the file is stat'ed (and without a second generator).
        return self._walk(prefix, is_csv_name)

    def _walk(self, prefix: str, wanted: Callable[[str], bool] | None) -> Iterator[ObjectInfo]:
        # os.scandir walks lazily: memory stays flat with 100k files. Results are sorted per
        # folder for a stable order (GCS lists names lexicographically too).
        # The relative name is built from the folder's own relative name (os.path.relpath per
        # entry was more than half the time of listing 100k files).
        root_resolved = self.root.resolve()
        stack: list[tuple[str, str]] = [(str(self.root), "")]  # (folder, its relative name + "/")
        while stack:
            folder, rel_dir = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=_entry_name, reverse=True)
            except FileNotFoundError:
                continue
            for entry in reversed(entries):
                name = entry.name
                if name.startswith("."):
                    continue
                rel = rel_dir + name
                if entry.is_dir(follow_symlinks=False):
                    if "\\" in name or "\x00" in name:
                        log.warning("skipping %s: a name with a backslash cannot be an object name; rename the folder", entry.path)
                        continue
                    if prefix and not (rel + "/").startswith(prefix) and not prefix.startswith(rel + "/"):
                        continue
                    stack.append((entry.path, rel + "/"))
                    continue
                if (prefix and not rel.startswith(prefix)) or (wanted is not None and not wanted(name)):
                    continue
                if "\\" in name or "\x00" in name:
                    log.warning("skipping %s: a name with a backslash cannot be an object name; rename the file", entry.path)
                    continue
                if entry.is_symlink():
                    target = Path(entry.path).resolve()
                    if root_resolved not in target.parents:
                        continue  # a link leaving the root is never offered for loading
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # removed while listing
                if not S_ISREG(st.st_mode):
                    continue
                yield self._info(rel, st)

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{self.uri(name)} does not exist.") from None
        return self._info(name, st)

    def open(self, name: str) -> BinaryIO:
        path = self._path(name)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{self.uri(name)} does not exist.") from None

    def read(self, name: str) -> tuple[bytes, int]:
        path = self._path(name)
        # Shared lock: no conditional write can replace the file while we read it. Without it,
        # a rename over the file changes the old inode's ctime (unlink), and stale bytes could be
        # paired with the new generation: a lost update waiting to happen.
        with self._root_lock(exclusive=False):
            try:
                with open(path, "rb") as fh:
                    return fh.read(), _generation(os.fstat(fh.fileno()))
            except FileNotFoundError:
                raise ObjectNotFoundError(f"{self.uri(name)} does not exist.") from None

    def local_path(self, name: str) -> Path:
        return self._path(name)

    @property
    def local_root(self) -> Path:
        return self.root

    def uri(self, name: str = "") -> str:
        return str(self.root / name) if name else str(self.root)

    # -- conditional writes -------------------------------------------------------------------
    @contextmanager
    def _root_lock(self, exclusive: bool = True) -> Iterator[None]:
        fd = os.open(self.root / _WRITE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the flock, also when the process dies

    def _current_generation(self, path: Path) -> int:
        try:
            return _generation(path.stat())
        except FileNotFoundError:
            return 0

    def _check(self, name: str, current: int, expected: int | None) -> None:
        if expected is not None and current != expected:
            what = "does not exist" if current == 0 else f"is at generation {current}"
            raise PreconditionFailedError(
                f"{self.uri(name)} {what}, expected generation {expected}: another writer changed it."
            )

    def write(self, name: str, data: bytes, if_generation_match: int | None = None) -> int:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._root_lock():
            current = self._current_generation(path)
            self._check(name, current, if_generation_match)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                # Timestamps are coarse (a few ms): force the generation past the current one
                # so two quick writes never share a generation.
                now = max(os.stat(tmp).st_ctime_ns, (current + 1) * 1000)
                os.utime(tmp, ns=(now, now))
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # make the rename durable before anyone relies on it
            finally:
                os.close(dir_fd)
            return self._current_generation(path)

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        path = self._path(name)
        with self._root_lock():
            current = self._current_generation(path)
            if current == 0 and if_generation_match is None:
                raise ObjectNotFoundError(f"{self.uri(name)} does not exist.")
            self._check(name, current, if_generation_match)
            if current:
                path.unlink()
