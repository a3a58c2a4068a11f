"""`estore-ops watch --events`: load files seconds after they land, with polling as the safety net.

The loop reuses everything the timer path uses: each batch is one tracked `watch` job
(`jobs.ingest_arrivals`: the run lock for the length of the batch, run history, heartbeat, alerts)
over the same loader (`ingest.load_files` with `files=`), and SIGTERM / SIGINT are handled by
`watch.StopFlag` exactly as in `watch`: the file (or batch) in progress finishes, the rest stay
pending, exit 0.

- **Gathering.** The first arrival opens a window of `gather_window` seconds; everything that
  arrived by its end loads as one batch (one lock, one transaction per batch of small files).
- **Acknowledging.** An arrival is acknowledged once its version, or a newer one, is recorded in
  the state: loaded, or failed (the state then owns the retries, as with the timer: the catch-up
  scan tries a failed file again until it is quarantined). An arrival older than what is recorded
  is acknowledged without loading: an older generation never replaces a newer one. A file that
  disappeared is acknowledged. Anything else (the lock was busy, the warehouse unreachable, a
  shutdown) stays unacknowledged and is tried again with a growing delay.
- **Completeness.** Files the source calls incomplete (a local file still open for writing) are
  left alone and checked again every `RECHECK_SECONDS`: inotify sends nothing when a writer closes.
- **Catch-up.** A scan of the whole landing area at start and every `catchup_interval`: a lost
  notification delays a file by at most that long. Its `watch` job is also the loop's heartbeat
  (`health` goes stale when the loop dies), so it must be shorter than `health_ingest_max_age`.
- **Transform.** Once arrivals pause for `transform_quiet_period`, one dbt build; while files keep
  arriving without such a pause, at most one every `transform_min_interval`. So at most two per
  `transform_min_interval`, and models lag the data by at most `transform_min_interval`.
- **Source failure.** When the source fails (subscription missing, access denied, server
  unreachable, the folder gone), the loop alerts once, polls (a catch-up every `--interval`) and
  tries to subscribe again every `min(interval, 60)` s; when it is back, a recovery message and an
  immediate catch-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from estore_ops.ops import health

from estore_ops import jobs
from estore_ops.errors import ConfigError, EstoreError, LockHeldError
from estore_ops.ingest.events.base import Arrival, ArrivalSource, SourceError
from estore_ops.ingest.events.sdnotify import Watchdog, notify
from estore_ops.testing.faults import fault_point
from estore_ops.ingest.pipeline import LoadResult
from estore_ops.logs import get_logger
from estore_ops.redact import redact
from estore_ops.runtime import Runtime
from estore_ops.ingest.state import IngestState

log = get_logger("events")

RECHECK_SECONDS = 0.5  # a file still being written is looked at again this often
RETRY_SECONDS = (2.0, 5.0, 15.0, 30.0, 60.0)  # after a batch that could not run (lock busy, outage)
LOCK_RETRY_SECONDS = 5.0
MAX_WAIT = 5.0  # the loop wakes at least this often (stop flag, source health)

_MISSING = "no longer in the landing area"
_INCOMPLETE = "not complete yet"
_ALREADY = "already "


def open_source(rt: Runtime) -> ArrivalSource:
    """The arrival source for the configured landing area (see estore_ops.ingest.events)."""
    from estore_ops.backends.stores import store_scheme

    landing_url = rt.settings.landing
    scheme = store_scheme(landing_url).removeprefix("chaos+")
    notifications = rt.settings.notifications
    if scheme == "gs":
        if not notifications:
            raise ConfigError(
                f"watch --events on {landing_url} needs the Pub/Sub subscription of the bucket's notifications: set "
                "notifications = \"pubsub://PROJECT/SUBSCRIPTION\" (Terraform prints it as the `notifications` output), "
                "ESTORE_NOTIFICATIONS or --notifications."
            )
        from estore_ops.ingest.events.pubsub import PubSubSource

        return PubSubSource(notifications, landing_url)
    if notifications:
        raise ConfigError(
            f"notifications = {notifications} (from {rt.settings.sources['notifications']}) applies to a gs:// landing "
            f"area; {landing_url} is a local folder, which is watched through the operating system. Remove the setting."
        )
    from estore_ops.ingest.events.folder import FolderSource

    return FolderSource(rt.landing)


@dataclass
class _Pending:
    name: str
    first: float
    arrivals: list[Arrival] = field(default_factory=list)
    not_before: float = 0.0
    tries: int = 0  # batches that could not settle it
    waiting: bool = False  # reported as still being written

    def recorded(self, state: IngestState) -> bool:
        """Every arrival names a version that is recorded (or superseded) in the state."""
        gens = [a.generation for a in self.arrivals]
        if not gens or any(g is None for g in gens):
            return False  # a folder does not say the version: the loader decides
        return version_recorded(state, self.name, max(g for g in gens if g is not None))

    def ack(self) -> None:
        for arrival in self.arrivals:
            arrival.ack()


def version_recorded(state: IngestState, name: str, generation: int) -> bool:
    """True when this version of the file, or a newer one, is in the state (loaded, failed or quarantined)."""
    rec = state.files.get(name)
    if rec is not None:
        return rec.generation >= generation
    folded = state.folded.get(name)
    return folded is not None and folded >= generation


class EventLoop:
    def __init__(
        self,
        rt: Runtime,
        source: ArrivalSource,
        interval: float,
        should_stop: Callable[[], bool],
        wait: Callable[[float], Any],
        on_line: Callable[[str, dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        s = rt.settings
        self.rt, self.source, self.interval = rt, source, interval
        self.should_stop, self.wait, self.on_line, self.clock = should_stop, wait, on_line, clock
        self.gather = float(s.gather_window)
        self.catchup_every = float(s.catchup_interval)
        self.min_interval = float(s.transform_min_interval)
        self.quiet_period = float(s.transform_quiet_period)
        self.resubscribe_every = min(interval, 60.0)
        if hasattr(source, "probe_seconds"):
            source.probe_seconds = min(float(source.probe_seconds), interval)  # type: ignore[attr-defined]
        for shared in ("landing", "state_backend", "state"):  # opened once, shared by every job's fork
            getattr(rt, shared)
        self.pending: dict[str, _Pending] = {}
        self.degraded: str = ""  # why the source is not used, while polling
        self.next_catchup = 0.0
        self.next_resubscribe = 0.0
        # Transform scheduling (monotonic times).
        self.due_since: float | None = None  # data loaded and not transformed since then
        self.last_load: float | None = None
        self.last_quiet_transform: float | None = None
        self.transform_retry_at = 0.0
        self.watchdog = Watchdog()
        self._list_requests = 0
        self.stats = {"batches": 0, "catchups": 0, "files_loaded": 0, "transforms": 0, "acked": 0}

    # -- output ---------------------------------------------------------------------------------
    def _say(self, line: str, **data: Any) -> None:
        log.info(line)
        if self.on_line:
            self.on_line(line, {"event": data.pop("event", "info"), **data})

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        s = self.rt.settings
        if s.catchup_interval >= s.health_ingest_max_age:
            raise ConfigError(
                f"catchup_interval ({s.catchup_interval} s, from {s.sources['catchup_interval']}) must be shorter than "
                f"health_ingest_max_age ({s.health_ingest_max_age} s): the catch-up scan is the event loop's heartbeat. "
                "Lower catchup_interval or raise health_ingest_max_age."
            )
        self.watchdog.start()
        try:
            self._subscribe(first=True)
            notify("READY=1", f"STATUS={self._status()}")
            if health.transform_due(self.rt.state_backend):
                self.due_since = self.last_load = self.clock()
            while not self.should_stop():
                self.watchdog.alive()
                self._step()
        finally:
            notify("STOPPING=1")
            self.source.stop()
            self.watchdog.stop()
        self._say("stopped: files not acknowledged are delivered again or found by the next catch-up scan", event="stopped",
                  **self.stats, received=getattr(self.source, "received", None), ignored=getattr(self.source, "ignored", None),
                  unacknowledged=sum(len(p.arrivals) for p in self.pending.values()))
        return 0

    def _step(self) -> None:
        now = self.clock()
        timeout = max(0.0, min(self._next_wakeup(now), now + MAX_WAIT) - now)
        if self.degraded:
            self.wait(timeout)
            arrivals: list[Arrival] = []
        else:
            arrivals = self.source.get(timeout)
        now = self.clock()
        for arrival in arrivals:
            entry = self.pending.get(arrival.name)
            if entry is None:
                entry = self.pending[arrival.name] = _Pending(arrival.name, arrival.received)
            entry.arrivals.append(arrival)
        if self.should_stop():
            return
        if self.degraded:
            if now >= self.next_resubscribe:
                self._subscribe()
        else:
            try:
                self.source.check()
            except SourceError as exc:
                self._degrade(exc)
        if self.should_stop():
            return
        if now >= self.next_catchup:
            self._catchup()
        elif self._batch_due(now):
            self._batch()
        if not self.should_stop():
            self._maybe_transform(self.clock())

    def _next_wakeup(self, now: float) -> float:
        times = [self.next_catchup]
        ready = [p for p in self.pending.values()]
        if ready:
            times.append(min(max(p.first + self.gather, p.not_before) for p in ready))
        if self.degraded:
            times.append(self.next_resubscribe)
        transform_at = self._transform_at(now)
        if transform_at is not None:
            times.append(transform_at)
        if self.watchdog.interval:
            times.append(now + self.watchdog.interval)
        return min(times)

    def _batch_due(self, now: float) -> bool:
        ready = [p for p in self.pending.values() if p.not_before <= now]
        return bool(ready) and now >= min(p.first for p in ready) + self.gather

    # -- the source -----------------------------------------------------------------------------
    def _subscribe(self, first: bool = False) -> None:
        try:
            self.source.start()
        except SourceError as exc:
            self._degrade(exc)
            return
        if self.degraded or first:
            was = self.degraded
            self.degraded = ""
            self.next_catchup = self.clock()  # what arrived while not listening
            self._say(f"listening: {self.source.description}", event="listening", source=self.source.description)
            if was:
                self._alerts("success")
        notify(f"STATUS={self._status()}")

    def _degrade(self, exc: SourceError) -> None:
        now = self.clock()
        self.source.stop()
        for entry in self.pending.values():
            for arrival in entry.arrivals:
                arrival.message = None  # that stream is gone: Pub/Sub delivers them again
        self.next_resubscribe = now + self.resubscribe_every
        if self.degraded:
            self.degraded = str(exc)
            return
        self.degraded = str(exc)
        self.next_catchup = min(self.next_catchup, now)
        self._say(f"notifications unavailable, polling every {self.interval:g}s and retrying every "
                  f"{self.resubscribe_every:g}s: {redact(str(exc))}", event="degraded", error=redact(str(exc)))
        self._alerts("failure", str(exc))
        notify(f"STATUS={self._status()}")

    def _alerts(self, kind: str, error: str = "") -> None:
        from estore_ops.ops.alerts import Failure
        from estore_ops.ops.tracking import alert_manager

        try:
            alerts = alert_manager(self.rt)
            if alerts is None:
                return
            if kind == "failure":
                alerts.failure("watch --events notifications", self.rt.run_id, [Failure(self.source.description, error + (
                    f" estore-ops polls the landing area every {self.interval:g}s until the notifications work again."))])
            else:
                alerts.success("watch --events notifications", self.rt.run_id, f"Listening again: {self.source.description}.")
        except Exception as exc:  # noqa: BLE001 - an alert never stops the loop
            log.warning("alert not sent: %s", redact(str(exc)))

    def _status(self) -> str:
        mode = f"polling every {self.interval:g}s ({self.degraded[:120]})" if self.degraded else f"listening on {self.source.description}"
        return (f"{mode}; {self.stats['files_loaded']} file(s) loaded in {self.stats['batches']} batch(es), "
                f"{self.stats['catchups']} catch-up scan(s), {self.stats['transforms']} transform(s)")

    # -- loading --------------------------------------------------------------------------------
    def _run_job(self, what: str, files: list[str]) -> LoadResult | None:
        rt = self.rt.fork()
        try:
            with self.watchdog.job():
                return jobs.ingest_arrivals(rt, files=files, accept=lambda info: self.source.complete(info.name),
                                            should_stop=self.should_stop)
        except LockHeldError as exc:
            self._say(f"{what} {rt.run_id}: skipped, {exc}", event="skipped", run_id=rt.run_id)
        except EstoreError as exc:  # recorded and alerted by the tracked job
            self._say(f"{what} {rt.run_id}: FAILED {redact(str(exc))}", event="failed", run_id=rt.run_id, error=redact(str(exc)))
        except Exception as exc:  # noqa: BLE001 - the loop must survive anything a batch raises
            log.exception("%s %s crashed", what, rt.run_id)
            self._say(f"{what} {rt.run_id}: FAILED {type(exc).__name__}: {redact(str(exc))}", event="failed", run_id=rt.run_id)
        return None

    def _loaded(self, what: str, result: LoadResult, files: int, list_requests: int | None = None) -> None:
        now = self.clock()
        if result.loaded:
            self.last_load = now
            if self.due_since is None:
                self.due_since = now
        self.stats["files_loaded"] += len(result.loaded)
        line = (f"{what} {result.run_id}: {len(result.loaded)} file(s) loaded, {result.rows} rows, "
                f"{len(result.failed)} failed" + (f" ({files} arrival(s))" if what == "batch" else "")
                + (f", {list_requests} list request(s) of up to 1,000 objects" if list_requests is not None else ""))
        self._say(line, event=what, run_id=result.run_id, files_loaded=len(result.loaded), rows=result.rows,
                  files_failed=len(result.failed), loaded=[o.name for o in result.loaded],
                  **({"list_requests": list_requests} if list_requests is not None else {}))
        notify(f"STATUS={self._status()}")

    def _batch(self) -> None:
        now = self.clock()
        ready = [p for p in self.pending.values() if p.not_before <= now]
        if any(entry.arrivals and entry.arrivals[0].generation is not None for entry in ready):
            state = self.rt.state.read().state
            done = [entry for entry in ready if entry.recorded(state)]
            for entry in done:  # a duplicate, or older than what is recorded: nothing to load
                self._finish(entry)
            if done:
                self._say(f"acknowledged {sum(len(e.arrivals) for e in done)} arrival(s) of {len(done)} file(s) already "
                          "recorded (redelivered, duplicated, or older than the recorded version)", event="acknowledged",
                          files=[e.name for e in done], arrivals=sum(len(e.arrivals) for e in done))
        names = []
        for entry in ready:
            if entry.name not in self.pending:
                continue
            if self.source.complete(entry.name):
                names.append(entry.name)
                continue
            if not entry.waiting:  # said once per file; it is checked again every RECHECK_SECONDS
                self._say(f"waiting for {entry.name}: still being written", event="incomplete", file=entry.name)
            entry.waiting = True
            entry.not_before = now + RECHECK_SECONDS
        if not names:
            return
        self.stats["batches"] += 1
        result = self._run_job("batch", names)
        now = self.clock()
        if result is None:
            for name in names:
                self._retry_later(self.pending[name], now)
            return
        self._loaded("batch", result, len(names))
        self._settle(names, result, now)

    def _settle(self, names: list[str], result: LoadResult, now: float) -> None:
        """After a load: acknowledge what is recorded; look again at what is not."""
        state = self.rt.state.read().state
        outcome = {o.name: o for o in result.outcomes}
        why = {s["name"]: s["why"] for s in result.skipped}
        for name in names:
            entry = self.pending.get(name)
            if entry is None:
                continue
            o = outcome.get(name)
            reason = why.get(name, "")
            if entry.recorded(state) or reason.startswith((_MISSING, _ALREADY, "quarantined")) or (
                o is not None and (o.ok or not o.retryable) and all(a.generation is None for a in entry.arrivals)
            ):
                self._finish(entry)
            elif reason.startswith(_INCOMPLETE):
                entry.not_before = now + RECHECK_SECONDS
            else:
                self._retry_later(entry, now)

    def _finish(self, entry: _Pending) -> None:
        fault_point("before_ack", entry.name)
        entry.ack()
        self.stats["acked"] += len(entry.arrivals)
        self.pending.pop(entry.name, None)

    def _retry_later(self, entry: _Pending, now: float) -> None:
        entry.tries += 1
        entry.not_before = now + RETRY_SECONDS[min(entry.tries, len(RETRY_SECONDS)) - 1]

    def _catchup(self) -> None:
        now = self.clock()
        self.next_catchup = now + (self.interval if self.degraded else self.catchup_every)
        self.stats["catchups"] += 1
        result = self._run_job("catch-up", [])
        if result is None:
            self.next_catchup = min(self.next_catchup, self.clock() + LOCK_RETRY_SECONDS)
            return
        requests = getattr(self.rt.landing, "list_requests", None)
        self._loaded("catch-up", result, 0, list_requests=None if requests is None else requests - self._list_requests)
        self._list_requests = requests or 0
        now = self.clock()
        for skipped in result.skipped:  # still being written: watch it until it is complete
            if skipped["why"].startswith(_INCOMPLETE) and skipped["name"] not in self.pending:
                self.pending[skipped["name"]] = _Pending(skipped["name"], now, not_before=now + RECHECK_SECONDS)
        if any(p.arrivals for p in self.pending.values()):
            state = self.rt.state.read().state
            for entry in list(self.pending.values()):
                if entry.recorded(state):
                    self._finish(entry)

    # -- transform ------------------------------------------------------------------------------
    def _transform_at(self, now: float) -> float | None:
        """When the next transform is due (None: the models are up to date)."""
        if self.due_since is None:
            return None
        regular_at = self.due_since + self.min_interval
        quiet_at = (self.last_load if self.last_load is not None else now) + self.quiet_period
        if self.last_quiet_transform is not None:  # one quiet-period transform per min_interval
            quiet_at = max(quiet_at, self.last_quiet_transform + self.min_interval)
        return max(self.transform_retry_at, min(regular_at, quiet_at))

    def _maybe_transform(self, now: float) -> None:
        at = self._transform_at(now)
        if at is None or now < at or (self.pending and self._batch_due(now)):
            return
        regular = now >= self.due_since + self.min_interval  # type: ignore[operator]
        reason = "files kept arriving for transform_min_interval" if regular else "arrivals paused"
        rt = self.rt.fork()
        try:
            with self.watchdog.job():
                result = jobs.transform(rt)
        except LockHeldError as exc:
            self._say(f"transform {rt.run_id}: skipped, {exc}", event="skipped", run_id=rt.run_id)
            self.transform_retry_at = self.clock() + 30
            return
        except Exception as exc:  # noqa: BLE001 - recorded and alerted by the tracked job
            self._say(f"transform {rt.run_id}: FAILED {redact(str(exc))}", event="transform", run_id=rt.run_id, ok=False)
            result = None
        now = self.clock()
        if not regular:
            self.last_quiet_transform = now
        self.stats["transforms"] += 1
        if result is not None and result.ok:
            self.due_since = None
            self._say(f"transform {rt.run_id}: ok ({reason}, {result.elapsed:.1f}s)", event="transform", run_id=rt.run_id, ok=True)
        else:
            # Failed (and alerted): the models stay due; try again at the next regular slot.
            self.due_since = now
            if result is not None:
                self._say(f"transform {rt.run_id}: FAILED ({reason})", event="transform", run_id=rt.run_id, ok=False)
        notify(f"STATUS={self._status()}")
