"""`estore-ops watch --events --json` as a real process, and waits on what it reports (no sleeps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


class EventsProcess:
    """The loop as a subprocess; every JSON line it prints is kept in `events`."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "estore_ops", "watch", "--events", "--json", *args], cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "ESTORE_LOG_FORMAT": "json", **(env or {})},
        )
        self.events: list[dict[str, Any]] = []
        self.stderr_lines: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._read_out, daemon=True), threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_out(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "text", "line": line.rstrip()}
            with self._lock:
                self.events.append(event)

    def _read_err(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            with self._lock:
                self.stderr_lines.append(line.rstrip())

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == kind]

    def loaded(self) -> list[str]:
        """Names loaded so far by batches and catch-up scans, in order."""
        return [name for e in self.of("batch") + self.of("catch-up") for name in e.get("loaded", [])]

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        def check() -> Any:
            if self.proc.poll() is not None:
                raise AssertionError(f"watch --events exited {self.proc.returncode} while waiting for {what}:\n{self.log()}")
            return predicate()

        try:
            return wait_for(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None

    def wait_event(self, kind: str, timeout: float, count: int = 1, where: Callable[[dict[str, Any]], bool] = lambda e: True) -> list[dict[str, Any]]:
        return self.wait(lambda: len([e for e in self.of(kind) if where(e)]) >= count and self.of(kind), timeout,
                         f"{count} '{kind}' event(s)")

    def log(self) -> str:
        with self._lock:
            out = "\n".join(e.get("line", json.dumps(e)) for e in self.events[-40:])
            err = "\n".join(self.stderr_lines[-40:])
        return f"--- stdout ---\n{out}\n--- stderr ---\n{err}"

    def terminate(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        for t in self._threads:
            t.join(timeout=5)
        return code

    def kill_during(self, produce: Callable[[], None], delay: float) -> None:
        """Run `produce` (files arriving) in a thread and SIGKILL the loop `delay` seconds in, as an
        OOM kill or a power cut would; the producer still finishes."""
        thread = threading.Thread(target=produce)
        thread.start()
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= delay, delay + 10, "the moment of the kill")
        self.proc.kill()
        self.proc.wait(30)
        thread.join(120)
        self.terminate()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
