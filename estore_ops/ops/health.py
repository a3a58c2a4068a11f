"""Heartbeats and health: the dead-man's switch that catches a timer that stopped firing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from estore_ops.ops.documents import JsonDocument
from estore_ops.backends.stores.base import ObjectStore

HEARTBEATS_NAME = "heartbeats.json"
EPISODES_NAME = "health-episodes.json"  # checks currently stale and already alerted
# In the heartbeats document: {check: episode} of a job that stops on a fault of the machine (disk
# full, out of memory, ...) since `since`; the job's next success ends it.
ENVIRONMENT_KEY = "environment"
# Job -> the settings key of its threshold. A watch tick or a load both count as ingest.
CHECKS = {"ingest": "health_ingest_max_age", "transform": "health_transform_max_age", "snapshot": "health_snapshot_max_age"}
JOB_TO_HEARTBEAT = {"load": "ingest", "watch": "ingest", "transform": "transform", "snapshot": "snapshot"}


def beat(store: ObjectStore, job: str, run_id: str) -> None:
    name = JOB_TO_HEARTBEAT.get(job)
    if not name:
        return
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")

    def change(doc: dict[str, Any]) -> None:
        doc[name] = {"at": now, "run_id": run_id}
        faults = doc.get(ENVIRONMENT_KEY) or {}
        if name in faults:  # the place works again: the environment episode is over
            del faults[name]
            doc[ENVIRONMENT_KEY] = faults

    JsonDocument(store, HEARTBEATS_NAME).update(change)


def environment_failed(store: ObjectStore, job: str, run_id: str, error: str, path: str, kind: str) -> dict[str, Any] | None:
    """Record that `job` stopped on a fault of the machine; returns the episode (with `since`, the
    first failure, and `alerted`), kept until the job's next success (see `beat`)."""
    name = JOB_TO_HEARTBEAT.get(job)
    if not name:
        return None
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        faults = doc.setdefault(ENVIRONMENT_KEY, {})
        episode = faults.get(name) or {"since": now, "alerted": False}
        episode.update({"last": now, "run_id": run_id, "error": error, "path": path, "kind": kind})
        faults[name] = episode
        return dict(episode)

    return JsonDocument(store, HEARTBEATS_NAME).update(change)


def environment_alerted(store: ObjectStore, job: str) -> None:
    name = JOB_TO_HEARTBEAT.get(job)

    def change(doc: dict[str, Any]) -> None:
        episode = (doc.get(ENVIRONMENT_KEY) or {}).get(name)
        if episode is not None:
            episode["alerted"] = True

    JsonDocument(store, HEARTBEATS_NAME).update(change)


def mark_data_loaded(store: ObjectStore, run_id: str) -> None:
    """Raw data changed: the models are stale until a transform succeeds."""
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    JsonDocument(store, HEARTBEATS_NAME).update(lambda doc: doc.__setitem__("data_loaded", {"at": now, "run_id": run_id}))


def transform_due(store: ObjectStore) -> str:
    """Why a transform is due ('' if not): files loaded after the last successful transform.

    Comparing the two marks (instead of "this tick loaded something") also retries a transform
    that failed or was skipped by a shutdown after its files had loaded.
    """
    beats, _ = JsonDocument(store, HEARTBEATS_NAME).read()
    loaded = beats.get("data_loaded", {}).get("at")
    done = beats.get("transform", {}).get("at")
    if not loaded:
        return ""
    if not done:
        return "new data"
    return "new data" if datetime.fromisoformat(loaded) > datetime.fromisoformat(done) else ""


@dataclass
class HealthRow:
    check: str
    last_success: str | None
    age_seconds: float | None
    max_age_seconds: int
    run_id: str | None
    environment: dict[str, Any] | None = None  # the job keeps stopping on a fault of the machine
    environment_seconds: float | None = None  # for this long

    @property
    def failing(self) -> bool:
        """Failing for environment reasons for longer than the check's threshold."""
        return self.environment_seconds is not None and self.environment_seconds > self.max_age_seconds

    @property
    def stale(self) -> bool:
        return self.age_seconds is None or self.age_seconds > self.max_age_seconds or self.failing

    def problem(self) -> str:
        """Why the check is not ok, in one line ('' when it is)."""
        if self.failing and self.environment:
            return (f"{self.check} has failed for {self.environment_seconds / 60:.0f} min because of the machine: "
                    f"{self.environment.get('error', '')}")
        if self.stale:
            age = "never" if self.age_seconds is None else f"{self.age_seconds / 60:.0f} min ago"
            return f"{self.check}: last success {age} (limit {self.max_age_seconds / 60:.0f} min)"
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check, "last_success": self.last_success, "age_seconds": self.age_seconds,
            "max_age_seconds": self.max_age_seconds, "stale": self.stale, "run_id": self.run_id,
            "environment": self.environment, "environment_seconds": self.environment_seconds,
        }


def check(store: ObjectStore, settings: Any, now: datetime | None = None) -> list[HealthRow]:
    now = now or datetime.now(timezone.utc)
    beats, _ = JsonDocument(store, HEARTBEATS_NAME).read()
    rows = []
    faults = beats.get(ENVIRONMENT_KEY) or {}
    for name, key in CHECKS.items():
        entry = beats.get(name)
        at = entry["at"] if entry else None
        age = (now - datetime.fromisoformat(at)).total_seconds() if at else None
        episode = faults.get(name)
        failing_for = (now - datetime.fromisoformat(episode["since"])).total_seconds() if episode else None
        rows.append(HealthRow(name, at, age, int(getattr(settings, key)), entry.get("run_id") if entry else None,
                              episode, failing_for))
    return rows
