"""Run history: what ran, when, and what happened (the `runs` command), bounded to recent runs."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from estore_ops.ops.documents import JsonDocument
from estore_ops.errors import EstoreError
from estore_ops.backends.stores.base import ObjectStore

RUNS_NAME = "runs.json"
RUNNING, SUCCESS, FAILED, LOCKED = "running", "success", "failed", "locked"


def now_iso() -> str:
    # Milliseconds: most ticks take well under a second, and whole seconds made their duration 0.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class RunRecord:
    run_id: str
    job: str
    args: list[str] = field(default_factory=lambda: sys.argv[1:])
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: str = field(default_factory=now_iso)
    ended_at: str | None = None
    status: str = RUNNING
    files_loaded: int = 0
    files_failed: int = 0
    rows_loaded: int = 0
    dbt_nodes: dict[str, int] = field(default_factory=dict)  # status -> count
    failures: list[dict[str, str]] = field(default_factory=list)  # {"subject": file or node, "error": ...}
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        if not self.ended_at:
            return None
        return round((datetime.fromisoformat(self.ended_at) - datetime.fromisoformat(self.started_at)).total_seconds(), 3)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"seconds": self.seconds}


class RunHistory:
    def __init__(self, store: ObjectStore, keep: int = 200) -> None:
        self.doc = JsonDocument(store, RUNS_NAME, list)
        self.keep = max(keep, 1)

    def save(self, record: RunRecord) -> None:
        data = asdict(record)

        def change(runs: list[dict[str, Any]]) -> None:
            for i, existing in enumerate(runs):
                if existing["run_id"] == record.run_id:
                    runs[i] = data
                    break
            else:
                runs.insert(0, data)
            del runs[self.keep:]

        self.doc.update(change)

    def list(self, job: str | None = None, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        runs, _ = self.doc.read()
        out = []
        for data in runs:
            if (job and data["job"] != job) or (status and data["status"] != status):
                continue
            out.append(_record(data))
            if len(out) >= limit:
                break
        return out

    def get(self, run_id: str) -> RunRecord:
        runs, _ = self.doc.read()
        matches = [d for d in runs if d["run_id"] == run_id or d["run_id"].startswith(run_id)]
        if len(matches) != 1:
            what = "no run" if not matches else f"{len(matches)} runs"
            raise RunNotFoundError(f"{what} with id {run_id!r} in the last {self.keep} runs; list them with `estore-ops runs`.")
        return _record(matches[0])


class RunNotFoundError(EstoreError):
    exit_code = 2  # type: ignore[assignment]


def _record(data: dict[str, Any]) -> RunRecord:
    known = {k: v for k, v in data.items() if k in RunRecord.__dataclass_fields__}
    return RunRecord(**known)
