"""Crash points for drills and crash tests.

`ESTORE_FAULT_POINT=name` (or `name:N` for the N-th time the point is reached) makes the process
SIGKILL itself there, exactly as an OOM kill or a power cut would: no cleanup, no finally blocks.
Unset in production, a fault point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get("ESTORE_FAULT_POINT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
