"""A small file system the tests can fill and free, and a way to test permissions as root.

`CappedDisk` mounts a tmpfs of a few MiB on a folder (when the test runs as root, as CI does), so a
warehouse put there really meets ENOSPC when the test fills it. Where mounting is not allowed, it
falls back to a file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets) on the estore-ops processes the
test starts: their writes past the limit fail with EFBIG, which estore-ops treats like a full disk.
The fallback needs the processes started with `disk.popen_kwargs()`.

`as_unprivileged(cmd)` runs a command as root without the capabilities that let root read and
write every file whatever its mode (setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), so a
`chmod 000` folder is really unreadable to it; a non-root user needs nothing.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TMPFS, RLIMIT = "tmpfs", "rlimit"


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None and shutil.which("umount") is not None


class CappedDisk:
    def __init__(self, path: Path, size_mb: int = 8) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.mode = RLIMIT
        self.limit: int | None = None
        if _can_mount():
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                self.mode = TMPFS

    @property
    def filler(self) -> Path:
        return self.path / "filler.bin"

    def fill(self, leave: int = 64 * 1024) -> None:
        """No room left (but `leave` bytes) for anything that grows."""
        if self.mode == TMPFS:
            free = shutil.disk_usage(self.path).free
            with open(self.filler, "ab") as fh:
                fh.write(b"\0" * max(0, free - leave))
            return
        # The processes started from now on cannot grow any file past what is there now.
        self.limit = max([p.stat().st_size for p in self.path.rglob("*") if p.is_file()] + [leave])

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        self.limit = None

    def popen_kwargs(self) -> dict[str, Any]:
        """Arguments for subprocess.run/Popen: the file-size limit in the fallback mode."""
        if self.mode == TMPFS or self.limit is None:
            return {}
        limit = self.limit

        def cap() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return {"preexec_fn": cap}

    def close(self) -> None:
        if self.mode == TMPFS:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    disk = CappedDisk(tmp_path / "small-disk")
    try:
        yield disk
    finally:
        disk.close()


def as_unprivileged(cmd: list[str]) -> list[str]:
    """`cmd` run so that file modes apply to it (see the module docstring); skips when impossible."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): root reads and writes every folder whatever its "
                    "mode, so an unreadable folder cannot be made here")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]


def read_only_mount(path: Path) -> Callable[[], None] | None:
    """Make `path` a read-only file system (root: a read-only tmpfs on it); returns the undo, or None
    when not possible (then the caller uses file modes instead)."""
    if not _can_mount():
        return None
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        return None
    return lambda: subprocess.run(["umount", "-l", str(path)], capture_output=True) and None
