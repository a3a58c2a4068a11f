"""A local folder used as a bucket: the embedded default for the landing area and the state."""

from __future__ import annotations

import fcntl
import hashlib
import operator
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from estore_ops.backends import environment
from estore_ops.errors import (
    BackendError,
    ObjectNotFoundError,
    PreconditionFailedError,
    UnreadableEntryError,
    UnsafeNameError,
)
from estore_ops.logs import get_logger
from estore_ops.backends.stores.base import ObjectInfo, ObjectStore, is_csv_name

log = get_logger("stores.local")

# Conditional writes hold this file (in the root) exclusively so check-then-rename is atomic
# between processes; reads of small documents hold it shared. Hidden names are never listed.
_WRITE_LOCK = ".estore-write.lock"
# The fingerprint reads this much at each end of a file (with its size): cheap, and a rewrite that
# keeps every timestamp, the size and the inode still shows when its first or last lines differ.
FINGERPRINT_BLOCK = 64 * 1024


def _generation(st: os.stat_result) -> int:
    # ctime cannot be set by users (unlike mtime, which `cp -p` preserves), so a file copied
    # in later always gets a later generation: this is its arrival time.
    # Microseconds, like GCS generations, so one margin works for every store.
    return max(st.st_mtime_ns, st.st_ctime_ns) // 1000


_entry_name = operator.attrgetter("name")


class LocalFolderStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str], create: bool = True, role: str = "the folder") -> None:
        self.root = Path(root).expanduser().absolute()
        self.role = role  # "the state folder", "the landing folder": named in messages
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                fault = environment.from_os_error(exc, role, self.root)
                if fault is not None:
                    raise fault from None
                raise BackendError(
                    f"Cannot create the folder {self.root}: {exc.strerror}. "
                    "Create it yourself or point the setting to a writable folder."
                ) from None
        self.url = str(self.root)

    @contextmanager
    def _machine_faults(self, path: Path) -> Iterator[None]:
        """A write the machine refuses (disk full, read-only, not ours) is the place's fault, not a file's."""
        try:
            yield
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            fault = environment.from_os_error(exc, self.role, path)
            if fault is None:
                raise
            raise fault from None

    # -- names ------------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        if not name or name.startswith("/") or "\\" in name or "\x00" in name:
            raise UnsafeNameError(f"Object name {name!r} is not a relative name inside {self.root}.")
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise UnsafeNameError(f"Object name {name!r} escapes or is not normal inside {self.root}.")
        path = self.root.joinpath(*parts)
        # A symlink may point outside the root: resolve and compare.
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):  # a loop of links: opening it fails with its own error
            resolved = path.parent.resolve() / path.name
        if resolved != self.root.resolve() and self.root.resolve() not in resolved.parents:
            raise UnsafeNameError(
                f"Object {name!r} resolves to {resolved}, outside the store root {self.root}; "
                "remove the link or copy the file into the folder."
            )
        return path

    def _info(self, name: str, st: os.stat_result, problem: str | None = None) -> ObjectInfo:
        return ObjectInfo(
            name=name,
            size=st.st_size,
            updated=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc),
            generation=_generation(st),
            inode=st.st_ino,
            ctime_ns=st.st_ctime_ns,
            problem=problem,
        )

    def _problem(self, name: str, path: str, problem: str) -> ObjectInfo | None:
        """An entry that cannot be offered, identified by its own (link or folder) stat, so fixing it
        (which changes its ctime) makes it a new version that is tried again."""
        try:
            st = os.lstat(path)
        except OSError:
            return None  # gone meanwhile
        return self._info(name, st, problem)

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
        # entry was more than half the time of listing 100k files). An entry the OS chokes on
        # (a folder we may not read, a dangling link, a name that cannot be an object name) is
        # yielded with `problem` set: it fails alone, the walk goes on.
        root_resolved = self.root.resolve()
        stack: list[tuple[str, str]] = [(str(self.root), "")]  # (folder, its relative name + "/")
        while stack:
            folder, rel_dir = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=_entry_name, reverse=True)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if not rel_dir:
                    fault = environment.from_os_error(exc, self.role, folder)
                    raise fault or BackendError(f"Cannot list {self.role} {folder}: {exc.strerror or exc}.") from None
                rel = rel_dir
                problem = self._problem(rel, str(folder), (
                    f"{rel}: the folder cannot be listed ({exc.strerror or exc}), so the files in it are not seen. "
                    "Let the user running estore-ops read it (chmod u+rx, or chown), or move the files out of it."
                ))
                if problem is not None and rel.startswith(prefix):
                    yield problem
                continue
            for entry in reversed(entries):
                name = entry.name
                if name.startswith("."):
                    continue
                rel = rel_dir + name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    if prefix and not (rel + "/").startswith(prefix) and not prefix.startswith(rel + "/"):
                        continue
                    stack.append((entry.path, rel + "/"))
                    continue
                if (prefix and not rel.startswith(prefix)) or (wanted is not None and not wanted(name)):
                    continue
                found = self._entry(entry, rel, root_resolved)
                if found is not None:
                    yield found

    def _entry(self, entry: os.DirEntry[str], rel: str, root_resolved: Path) -> ObjectInfo | None:
        """One listed file, a problem entry, or None (not a landing file at all)."""
        csv = is_csv_name(rel)
        bad_name = _bad_name(rel)
        if bad_name:
            if not csv:
                return None
            return self._problem(rel, entry.path, (
                f"{_printable(rel)}: {bad_name}, so it cannot be an object name. Rename the file."
            ))
        if entry.is_symlink():
            try:
                target = Path(entry.path).resolve(strict=True)
            except (OSError, RuntimeError) as exc:  # dangling, or a loop of links
                if not csv:
                    return None
                why = getattr(exc, "strerror", None) or str(exc)
                return self._problem(rel, entry.path, (
                    f"{rel}: the link points to {os.readlink(entry.path) if os.path.islink(entry.path) else '?'}, "
                    f"which cannot be opened ({why}). Point the link to an existing file in the landing area, or remove it."
                ))
            if target != root_resolved and root_resolved not in target.parents:
                return None  # a link leaving the root is never offered for loading
            inner = target.relative_to(root_resolved).as_posix()
            if target.is_file() and is_csv_name(inner) and not any(p.startswith(".") for p in inner.split("/")):
                # The target is listed under its own name: loading the link too would load its rows twice.
                log.info("skipping %s: a link to %s, which loads under its own name", rel, inner)
                return None
        try:
            st = entry.stat()
        except FileNotFoundError:
            return None  # removed while listing
        except OSError as exc:
            if not csv:
                return None
            return self._problem(rel, entry.path, (
                f"{rel}: cannot be read ({exc.strerror or exc}). Fix its permissions (the user running estore-ops must read it)."
            ))
        if not entry.is_file():
            if not csv:
                return None
            return self._problem(rel, entry.path, (
                f"{rel}: is not a regular file (a named pipe, socket or device), so it cannot be loaded. Remove it "
                "and upload the events as a file."
            ))
        return self._info(rel, st)

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{self.uri(name)} does not exist.") from None
        except OSError as exc:
            raise self._unreadable(name, exc) from None
        return self._info(name, st)

    def open(self, name: str) -> BinaryIO:
        path = self._path(name)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{self.uri(name)} does not exist.") from None
        except OSError as exc:
            raise self._unreadable(name, exc) from None

    def _unreadable(self, name: str, exc: OSError) -> Exception:
        """A file we may not read is that file's problem; a disk that fails is the machine's."""
        fault = environment.from_os_error(exc, self.role, self.root / name, permission_is_environment=False)
        if fault is not None:
            return fault
        return UnreadableEntryError(
            f"{name}: cannot be read ({exc.strerror or exc}). Fix its permissions (the user running estore-ops must "
            "read it), or if it is a link, point it to an existing file."
        )

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

    def fingerprint(self, info: ObjectInfo) -> str | None:
        """Size plus a hash of the first and last FINGERPRINT_BLOCK bytes (two reads, whatever the size)."""
        digest = hashlib.blake2b(digest_size=8)
        with open(self._path(info.name), "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            digest.update(size.to_bytes(8, "little"))
            digest.update(fh.read(FINGERPRINT_BLOCK))
            if size > FINGERPRINT_BLOCK:
                fh.seek(max(FINGERPRINT_BLOCK, size - FINGERPRINT_BLOCK))
                digest.update(fh.read(FINGERPRINT_BLOCK))
        return digest.hexdigest()

    @property
    def local_root(self) -> Path:
        return self.root

    def uri(self, name: str = "") -> str:
        return str(self.root / name) if name else str(self.root)

    # -- conditional writes -------------------------------------------------------------------
    @contextmanager
    def _root_lock(self, exclusive: bool = True) -> Iterator[None]:
        with self._machine_faults(self.root):
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
        with self._machine_faults(path):
            return self._write(path, name, data, if_generation_match)

    def _write(self, path: Path, name: str, data: bytes, if_generation_match: int | None) -> int:
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
        with self._root_lock(), self._machine_faults(path):
            current = self._current_generation(path)
            if current == 0 and if_generation_match is None:
                raise ObjectNotFoundError(f"{self.uri(name)} does not exist.")
            self._check(name, current, if_generation_match)
            if current:
                path.unlink()


def _bad_name(rel: str) -> str:
    """Why a listed name cannot be an object name ('' when it can)."""
    if "\\" in rel or "\x00" in rel:
        return "its name contains a backslash"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8 text"
    return ""


def _printable(rel: str) -> str:
    """A name with its undecodable bytes shown as \\xNN."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")
