"""systemd's readiness and watchdog protocol (sd_notify(3)), in the few lines it takes.

Under `Type=notify` systemd passes NOTIFY_SOCKET, a datagram socket to which the service sends
`READY=1`, `STATUS=...`, `STOPPING=1` and, when `WatchdogSec=` is set (WATCHDOG_USEC in the
environment), `WATCHDOG=1` at least every half period. Outside systemd NOTIFY_SOCKET is unset
and every call does nothing.

The watchdog is fed by a thread, but only while the loop proves it is alive: the loop calls
`alive()` on each pass (it wakes up at least every `period / 2`), and a job in progress (a long
load or a dbt build that blocks the loop) counts as alive for at most `job_limit` seconds, the
bound the oneshot ingest unit sets with TimeoutStartSec. A loop that hangs is killed and restarted
by systemd (Restart=on-failure).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def notify(*assignments: str) -> bool:
    """Send `KEY=VALUE` lines to systemd; False when not running under Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not assignments:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
    except OSError:
        return False
    return True


def watchdog_period() -> float | None:
    """The watchdog period systemd asks for (seconds), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


class Watchdog:
    def __init__(self, job_limit: float = 45 * 60) -> None:
        self.period = watchdog_period()
        self.job_limit = job_limit
        self._alive_at = time.monotonic()
        self._job_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval(self) -> float | None:
        """How often the loop must call alive() (None: no watchdog)."""
        return self.period / 4 if self.period else None

    def start(self) -> None:
        if self.period and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="estore-watchdog", daemon=True)
            self._thread.start()

    def alive(self) -> None:
        self._alive_at = time.monotonic()

    @contextmanager
    def job(self) -> Iterator[None]:
        self._job_since = time.monotonic()
        try:
            yield
        finally:
            self._job_since = None
            self.alive()

    def _healthy(self) -> bool:
        now = time.monotonic()
        if self._job_since is not None:
            return now - self._job_since < self.job_limit
        return now - self._alive_at < self.period / 2  # type: ignore[operator]

    def _run(self) -> None:
        assert self.period
        while not self._stop.wait(self.period / 4):
            if self._healthy():
                notify("WATCHDOG=1")

    def stop(self) -> None:
        self._stop.set()
