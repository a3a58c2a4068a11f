"""Heartbeats and health: the dead-man's switch that catches a timer that stopped firing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from estore_ops.documents import JsonDocument
from estore_ops.stores.base import ObjectStore

HEARTBEATS_NAME = "heartbeats.json"
EPISODES_NAME = "health-episodes.json"  # checks currently stale and already alerted
# Job -> the settings key of its threshold. A watch tick or a load both count as ingest.
CHECKS = {"ingest": "health_ingest_max_age", "transform": "health_transform_max_age", "snapshot": "health_snapshot_max_age"}
JOB_TO_HEARTBEAT = {"load": "ingest", "watch": "ingest", "transform": "transform", "snapshot": "snapshot"}


def beat(store: ObjectStore, job: str, run_id: str) -> None:
    name = JOB_TO_HEARTBEAT.get(job)
    if not name:
        return
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    JsonDocument(store, HEARTBEATS_NAME).update(lambda doc: doc.__setitem__(name, {"at": now, "run_id": run_id}))


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

    @property
    def stale(self) -> bool:
        return self.age_seconds is None or self.age_seconds > self.max_age_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check, "last_success": self.last_success, "age_seconds": self.age_seconds,
            "max_age_seconds": self.max_age_seconds, "stale": self.stale, "run_id": self.run_id,
        }


def check(store: ObjectStore, settings: Any, now: datetime | None = None) -> list[HealthRow]:
    now = now or datetime.now(timezone.utc)
    beats, _ = JsonDocument(store, HEARTBEATS_NAME).read()
    rows = []
    for name, key in CHECKS.items():
        entry = beats.get(name)
        at = entry["at"] if entry else None
        age = (now - datetime.fromisoformat(at)).total_seconds() if at else None
        rows.append(HealthRow(name, at, age, int(getattr(settings, key)), entry.get("run_id") if entry else None))
    return rows
