"""One run lock in the state location: load, transform, snapshot and watch never overlap.

The lock is an object created with `if_generation_match=0` holding owner, host, pid, start and a
lease expiry. The holder renews the lease from a background thread. A lock whose lease expired (its holder
hung, or died on another host), or whose holder provably died on this host (no such pid, or the
machine rebooted since), is taken over with a precondition on its generation, so two contenders
cannot both take it. `estore-ops lock break --yes` deletes it by hand.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from estore_ops.errors import BackendError, LockHeldError, ObjectNotFoundError, PreconditionFailedError
from estore_ops.logs import get_logger
from estore_ops.backends.stores.base import ObjectStore

LOCK_NAME = "run.lock"
log = get_logger("lock")


@dataclass
class LockInfo:
    owner: str  # run id
    command: str
    host: str
    pid: int
    started_at: str
    expires_at: str
    boot_id: str = ""

    @property
    def expired(self) -> bool:
        return datetime.fromisoformat(self.expires_at) <= datetime.now(timezone.utc)

    @property
    def holder_is_dead(self) -> bool:
        """Provably gone: same host and (another boot, or no such process, or not estore-ops)."""
        if self.host != socket.gethostname() or self.pid <= 0:
            return False  # another machine: only the lease can tell
        if self.boot_id and self.boot_id != _boot_id():
            return True
        # kill(pid, 0) is a syscall, so it sees processes that /proc hides (systemd's
        # ProtectProc=invisible): ESRCH means gone, EPERM means alive under another identity.
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False  # alive but unreadable: assume it is the holder
        return b"estore" not in cmdline  # the pid was reused by an unrelated process

    @property
    def stale(self) -> bool:
        return self.expired or self.holder_is_dead

    def describe(self) -> str:
        return f"run {self.owner} ({self.command}) on {self.host}, pid {self.pid}, since {self.started_at}, lease until {self.expires_at}"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def read_lock(store: ObjectStore) -> tuple[LockInfo, int] | None:
    try:
        raw, generation = store.read(LOCK_NAME)
    except ObjectNotFoundError:
        return None
    try:
        return LockInfo(**json.loads(raw)), generation
    except (ValueError, TypeError):
        # An unreadable lock is treated as expired so a torn write cannot block the pipeline forever.
        return LockInfo("unknown", "unknown", "unknown", 0, "", datetime.min.replace(tzinfo=timezone.utc).isoformat()), generation


def _read_quietly(store: ObjectStore) -> tuple[LockInfo, int] | None:
    try:
        return read_lock(store)
    except Exception:
        return None


def break_lock(store: ObjectStore, expected_generation: int | None = None) -> LockInfo | None:
    """Delete the lock, only the version the operator saw when `expected_generation` is given."""
    found = read_lock(store)
    if found is None or (expected_generation is not None and found[1] != expected_generation):
        return None
    try:
        store.delete(LOCK_NAME, if_generation_match=found[1])
    except (PreconditionFailedError, ObjectNotFoundError):
        pass  # it changed or went away meanwhile: either way it is not the lock we saw
    return found[0]


class RunLock:
    def __init__(self, store: ObjectStore, run_id: str, command: str, lease_seconds: int = 600) -> None:
        self.store = store
        self.run_id = run_id
        self.command = command
        self.lease = timedelta(seconds=max(lease_seconds, 3))
        self.generation = 0
        self.lost = threading.Event()  # set when a renewal found the lock taken by someone else
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _document(self) -> bytes:
        now = datetime.now(timezone.utc)
        info = LockInfo(
            self.run_id, self.command, socket.gethostname(), os.getpid(),
            getattr(self, "_started", now.isoformat(timespec="seconds")),
            (now + self.lease).isoformat(timespec="seconds"),
            _boot_id(),
        )
        self._started = info.started_at
        return json.dumps(asdict(info)).encode()

    def acquire(self) -> RunLock:
        try:
            self.generation = self.store.write(LOCK_NAME, self._document(), if_generation_match=0)
        except PreconditionFailedError:
            found = read_lock(self.store)
            if found is None:
                return self.acquire()  # released between our write and our read
            holder, generation = found
            if holder.owner == self.run_id and holder.pid == os.getpid():
                # Our own create went through but its answer was lost (then retried): it is ours.
                self.generation = generation
                self._start_renewal()
                return self
            if not holder.stale:
                raise LockHeldError(
                    f"Another run holds the lock {self.store.uri(LOCK_NAME)}: {holder.describe()}. "
                    "This run did nothing. If that process is gone, wait for the lease to expire or run "
                    "`estore-ops lock break --yes`."
                ) from None
            try:
                self.generation = self.store.write(LOCK_NAME, self._document(), if_generation_match=generation)
            except PreconditionFailedError:
                raise LockHeldError(
                    f"Another run took over the expired lock {self.store.uri(LOCK_NAME)} at the same moment; this run did nothing."
                ) from None
        self._start_renewal()
        return self

    def _start_renewal(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="lock-renewal", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = self.lease.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self.generation = self.store.write(LOCK_NAME, self._document(), if_generation_match=self.generation)
            except PreconditionFailedError:
                # Our previous renewal may have gone through with its answer lost: still ours?
                found = _read_quietly(self.store)
                if found and found[0].owner == self.run_id and found[0].pid == os.getpid():
                    self.generation = found[1]
                    continue
                log.error("run lock %s was taken by another run: stopping this one", self.store.uri(LOCK_NAME))
                self.lost.set()
                return
            except Exception:  # a transient store error: try again at the next interval
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost.is_set() or not self.generation:
            return
        try:
            self.store.delete(LOCK_NAME, if_generation_match=self.generation)
        except (PreconditionFailedError, ObjectNotFoundError):
            pass
        except BackendError as exc:
            # The work is done; a lock left behind is taken over (dead pid) or expires with its lease.
            log.warning("could not release the run lock: %s", exc)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
