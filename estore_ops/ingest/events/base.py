"""What tells `watch --events` that a landing file arrived: the arrival-source interface.

An implementation must:
- `start()`: begin listening; raise `SourceError` (saying what to fix) when it cannot. The loop then
  polls and calls `start()` again later.
- `get(timeout)`: the arrivals received since the last call, waiting at most `timeout` seconds for
  the first one. Never raises: a failure is reported by `check()`.
- `check()`: raise `SourceError` when the source stopped working since it started (its thread
  died, the subscription vanished, the server does not answer). Cheap enough to call every few
  seconds; a source that must ask a server does so at most every `probe_seconds`.
- `complete(name)`: whether a file is whole and may be loaded now. A Cloud Storage object is
  whole once finalized; a local file is whole once nobody has it open for writing.
- `stop()`: stop listening. Arrivals not acknowledged are delivered again later (Pub/Sub), or
  found by the catch-up scan (a folder has nothing to redeliver).

An `Arrival` names a landing file (relative to the landing area) and, where the source knows it,
the generation that arrived. `ack()` tells the source it is done with; the loop calls it only once
that version, or a newer one, is recorded in the state.
"""

from __future__ import annotations

import abc
import queue
import time
from dataclasses import dataclass, field
from typing import Any

from estore_ops.errors import BackendError


class SourceError(BackendError):
    """The notification source cannot be used now (missing, refused, unreachable): the loop polls."""


@dataclass(eq=False)
class Arrival:
    name: str
    generation: int | None = None  # None: the source does not say (a folder); the loader stats the file
    received: float = field(default_factory=time.monotonic)
    message: Any = field(default=None, repr=False)  # the Pub/Sub message to acknowledge

    def ack(self) -> None:
        if self.message is not None:
            self.message.ack()
            self.message = None


def drain(arrivals: queue.SimpleQueue[Arrival], timeout: float) -> list[Arrival]:
    """Wait at most `timeout` seconds for one arrival, then take every arrival already queued."""
    out: list[Arrival] = []
    try:
        out.append(arrivals.get(timeout=max(0.0, timeout)))
    except queue.Empty:
        return out
    while True:
        try:
            out.append(arrivals.get_nowait())
        except queue.Empty:
            return out


class ArrivalSource(abc.ABC):
    """A stream of arrivals for one landing area (see the module docstring for the contract)."""

    description: str = ""  # where the arrivals come from, for logs and alerts

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def get(self, timeout: float) -> list[Arrival]: ...

    @abc.abstractmethod
    def check(self) -> None: ...

    def complete(self, name: str) -> bool:
        return True

    @abc.abstractmethod
    def stop(self) -> None: ...
