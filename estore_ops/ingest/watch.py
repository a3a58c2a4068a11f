"""`estore-ops watch`: the foreground loop that replaces the Dagster sensors.

`watch --events` runs the event loop instead (estore_ops.ingest.events.loop): files load seconds after
they land, with the same stop handling.

Every interval: one ingest tick (scan, load, and one dbt build when data arrived), under the run
lock for the length of the tick only, so the daily transform and weekly snapshot timers can run in
between. SIGTERM / SIGINT stop the loop: a tick in progress finishes the file it is loading, skips
the files not started and the transform (the next tick or timer does it), releases the lock, exit 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from estore_ops import jobs
from estore_ops.errors import EstoreError, LockHeldError
from estore_ops.logs import get_logger
from estore_ops.redact import redact
from estore_ops.runtime import Runtime

log = get_logger("watch")


class StopFlag:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""

    def __call__(self) -> bool:
        return self.event.is_set()

    def install(self) -> dict[int, Any]:
        """Route SIGTERM and SIGINT to this flag; returns the previous handlers."""
        def handler(signum: int, _frame: Any) -> None:
            self.signal_name = signal.Signals(signum).name
            self.event.set()

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def watch(
    make_runtime: Callable[[], Runtime],
    interval: float,
    once: bool = False,
    on_tick: Callable[[str, jobs.TickResult | None], None] | None = None,
    max_ticks: int | None = None,
) -> int:
    """Run ticks until stopped; returns the exit code (with --once: the tick's own outcome)."""
    stop = StopFlag()
    previous = stop.install()
    try:
        return _loop(make_runtime, interval, once, on_tick, max_ticks, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _loop(
    make_runtime: Callable[[], Runtime],
    interval: float,
    once: bool,
    on_tick: Callable[[str, jobs.TickResult | None], None] | None,
    max_ticks: int | None,
    stop: StopFlag,
) -> int:
    ticks = 0
    code = 0
    while not stop():
        rt = make_runtime()  # a fresh run id per tick
        try:
            result = jobs.ingest_tick(rt, should_stop=stop)
            code = 0 if result.ok else 1
            line = result.status_line()
        except LockHeldError as exc:
            result, code = None, int(exc.exit_code)
            line = f"tick {rt.run_id}: skipped, {exc}"
        except EstoreError as exc:
            # Already recorded and alerted by the tracked job: keep going.
            result, code = None, int(exc.exit_code)
            line = f"tick {rt.run_id}: FAILED {redact(str(exc))}"
        except Exception as exc:  # an unexpected error must not end the loop either
            log.exception("tick %s crashed", rt.run_id)
            result, code = None, 1
            line = f"tick {rt.run_id}: FAILED {type(exc).__name__}: {redact(str(exc))}"
        log.info(line)
        if on_tick:
            on_tick(line, result)
        ticks += 1
        if once or (max_ticks is not None and ticks >= max_ticks):
            return code
        stop.event.wait(interval)
    log.info("stopped by %s", stop.signal_name or "request")
    return 0


def watch_events(
    rt: Runtime, interval: float, on_line: Callable[[str, dict[str, Any]], None] | None = None
) -> int:
    """`watch --events` until SIGTERM / SIGINT; returns the exit code (0 after a clean stop)."""
    from estore_ops.ingest.events.loop import EventLoop, open_source

    stop = StopFlag()
    previous = stop.install()
    try:
        loop = EventLoop(rt, open_source(rt), interval, should_stop=stop, wait=stop.event.wait, on_line=on_line)
        code = loop.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped by %s", stop.signal_name or "request")
    return code
