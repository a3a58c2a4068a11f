"""Crash points for drills and crash tests.

`ESTORE_FAULT_POINT=name` (or `name:N` for the N-th time the point is reached) makes the process
SIGKILL itself there, exactly as an OOM kill or a power cut would: no cleanup, no finally blocks.
Unset in production, a fault point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(name: str, subject: str = "") -> None:
    """`name`, `name:N` (the N-th hit) or `name@FILE` (only while handling that file)."""
    spec = os.environ.get("ESTORE_FAULT_POINT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    target, _, only = target.partition("@")
    if target != name or (only and only != subject):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def pause_point(name: str) -> None:
    """`ESTORE_PAUSE_POINT=name:DIR` parks the process at `name`: it creates DIR/reached and waits
    (at most 120 s) for DIR/release. Drills use it to hold a process at an exact spot."""
    spec = os.environ.get("ESTORE_PAUSE_POINT")
    if not spec:
        return
    target, _, folder = spec.partition(":")
    if target != name or not folder:
        return
    import time
    from pathlib import Path

    Path(folder, "reached").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not Path(folder, "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def dropped(name: str, subject: str = "") -> bool:
    """`ESTORE_DROP_POINT=name@SUBJECT`: pretend this notification was lost (an inotify queue
    overflow, a Pub/Sub message that never came), so drills can show the catch-up scan finds it."""
    spec = os.environ.get("ESTORE_DROP_POINT")
    if not spec:
        return False
    target, _, only = spec.partition("@")
    return target == name and (not only or only == subject)
