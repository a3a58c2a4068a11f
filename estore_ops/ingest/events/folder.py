"""Arrivals in a local landing folder, from the operating system's file notifications (watchfiles:
inotify on Linux, through the Rust `notify` crate).

- A thread runs `watchfiles.watch` over the folder (recursively) and queues every `.csv` /
  `.csv.gz` name that was added or modified. Hidden names (a leading `.` in any segment) are
  ignored: producers write `.name.tmp` and rename it into place. A new sub-folder is listed when
  it appears, since files written into it before the OS watch was added send no event.
- Completeness. inotify says when a file was written, not when the writer is done; watchfiles
  does not pass on close events at all. A file is loaded only when no process has it open for
  writing: the Linux kernel refuses a read lease (`F_SETLEASE`, F_RDLCK) on such a file, so
  taking one and releasing it at once is an exact test. The kernel grants leases only to the
  file's owner (or with CAP_LEASE); for a file estore-ops does not own, or on a filesystem
  without leases (NFS), the fallback is that nothing changed it for `SETTLE_SECONDS`. A file
  renamed into place is complete either way.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import threading
import time
from pathlib import Path

from estore_ops.ingest.events.base import Arrival, ArrivalSource, SourceError, drain
from estore_ops.testing.faults import dropped
from estore_ops.logs import get_logger
from estore_ops.backends.stores.base import ObjectStore, is_csv_name

log = get_logger("events.folder")

# Without a lease test: a file whose size and mtime stayed the same this long is complete.
SETTLE_SECONDS = 5.0
# watchfiles: yield after `STEP_MS` without a change, at most every `DEBOUNCE_MS` during a stream.
STEP_MS = 50
DEBOUNCE_MS = 500
# How long the watch thread blocks in the Rust watcher before it looks at the stop flag.
RUST_TIMEOUT_MS = 1000

OPEN_FOR_WRITING, NOT_OPEN, UNKNOWN = "writing", "closed", "unknown"


def open_for_writing(path: Path) -> str:
    """OPEN_FOR_WRITING, NOT_OPEN, or UNKNOWN (no lease allowed here: not the owner, NFS, ...)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return UNKNOWN
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        # EAGAIN/EBUSY: another open file description has it for writing.
        return OPEN_FOR_WRITING if exc.errno in (errno.EAGAIN, errno.EBUSY) else UNKNOWN
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return NOT_OPEN
    finally:
        os.close(fd)


class FolderSource(ArrivalSource):
    def __init__(self, store: ObjectStore) -> None:
        root = store.local_root
        if root is None:
            raise SourceError(f"{store.uri()} is not a local folder: the folder source watches local folders only.")
        self.store, self.root = store, Path(root)
        self.description = f"file notifications (inotify) on {self.root}"
        self._queue: queue.SimpleQueue[Arrival] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._root_id: tuple[int, int] | None = None

    # -- listening ------------------------------------------------------------------------------
    def start(self) -> None:
        import watchfiles  # fail here, with the reason, if the install is broken

        del watchfiles

        self.stop()
        try:
            st = self.root.stat()
        except OSError as exc:
            raise SourceError(f"Cannot watch the landing folder {self.root}: {exc.strerror}.") from None
        self._root_id = (st.st_dev, st.st_ino)
        self._stop = threading.Event()
        self._error = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="estore-folder-watch", daemon=True)
        self._thread.start()
        started.wait(RUST_TIMEOUT_MS / 1000 + 10)
        self.check()

    def _run(self, started: threading.Event) -> None:
        import watchfiles

        try:
            watcher = watchfiles.watch(
                self.root, watch_filter=self._wanted, debounce=DEBOUNCE_MS, step=STEP_MS, stop_event=self._stop,
                rust_timeout=RUST_TIMEOUT_MS, yield_on_timeout=True, raise_interrupt=False,
                ignore_permission_denied=True, recursive=True,
            )
            for changes in watcher:
                # The OS watches are in place once the generator has stepped (it yields an empty
                # set after RUST_TIMEOUT_MS without changes): only then is the catch-up scan that
                # follows start() sure to overlap with them.
                started.set()
                for change, path in changes:
                    self._on_change(change, path)
        except BaseException as exc:  # noqa: BLE001 - reported by check() in the loop's thread
            self._error = exc
        finally:
            started.set()

    def _wanted(self, change: object, path: str) -> bool:
        rel = os.path.relpath(path, self.root)
        return not any(part.startswith(".") for part in rel.split(os.sep))

    def _on_change(self, change: object, path: str) -> None:
        import watchfiles

        if change == watchfiles.Change.deleted:
            return
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        if os.path.isdir(path):
            # Files written into a new folder before its watch was set sent no event.
            try:
                names = [info.name for info in self.store.list_csv(rel + "/")]
            except Exception as exc:  # noqa: BLE001 - the catch-up scan finds them anyway
                log.warning("could not list the new folder %s: %s", path, exc)
                return
            for name in names:
                self._queue.put(Arrival(name))
        elif is_csv_name(rel) and not dropped("arrival", rel):
            self._queue.put(Arrival(rel))

    def get(self, timeout: float) -> list[Arrival]:
        return drain(self._queue, timeout)

    def check(self) -> None:
        if self._error is not None:
            raise SourceError(f"Watching {self.root} failed: {type(self._error).__name__}: {self._error}") from None
        if self._thread is None or not self._thread.is_alive():
            raise SourceError(f"The watch of {self.root} stopped.")
        try:
            st = self.root.stat()
        except OSError as exc:
            raise SourceError(f"The landing folder {self.root} is gone ({exc.strerror}): nothing can be watched.") from None
        if (st.st_dev, st.st_ino) != self._root_id:
            raise SourceError(f"The landing folder {self.root} was replaced: watching it again.")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=RUST_TIMEOUT_MS / 1000 + 5)
            self._thread = None

    # -- completeness ---------------------------------------------------------------------------
    def complete(self, name: str) -> bool:
        path = self.store.local_path(name)
        verdict = open_for_writing(path)
        if verdict != UNKNOWN:
            return verdict == NOT_OPEN
        # No lease test here: complete once nothing changed the file for SETTLE_SECONDS. ctime
        # moves with every write and cannot be set back (unlike mtime), so an old copy is not
        # mistaken for a settled one.
        try:
            st = path.stat()
        except OSError:
            return False
        return time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 >= SETTLE_SECONDS
