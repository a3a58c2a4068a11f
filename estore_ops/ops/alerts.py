"""Failure alerts with deduplication and recovery messages.

A failure is (job, subject, error) where the subject is the failing file or dbt node. The same
failure is not re-sent within `alert_dedup_minutes`; when a job that had failures succeeds again,
one recovery message says so. Delivery problems are logged and swallowed: an alert must never
replace the job's own error or exit code.
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from estore_ops.ops.documents import JsonDocument
from estore_ops.logs import get_logger
from estore_ops.ops.notify import Alert, Notifier, NotifyError
from estore_ops.output import printable
from estore_ops.redact import redact
from estore_ops.backends.stores.base import ObjectStore

ALERTS_NAME = "alerts.json"
log = get_logger("alerts")


@dataclass(frozen=True)
class Failure:
    subject: str  # a file, a dbt node, or the job itself
    error: str

    @property
    def fingerprint(self) -> str:
        # Numbers that change every run (run ids, timings, generations) do not make a failure new.
        normalized = re.sub(r"\d+", "N", self.error.splitlines()[0] if self.error else "")
        return hashlib.sha256(f"{self.subject}\x00{normalized}".encode(errors="surrogateescape")).hexdigest()[:16]


def _first_lines(text: str, n: int = 4, width: int = 400) -> list[str]:
    return [line[:width] for line in printable(redact(text)).strip().splitlines()[:n]]


class AlertManager:
    def __init__(self, notifier: Notifier, store: ObjectStore, dedup_minutes: int = 60) -> None:
        self.notifier = notifier
        self.doc = JsonDocument(store, ALERTS_NAME)
        self.window = timedelta(minutes=dedup_minutes)

    def _deliver(self, alert: Alert) -> bool:
        try:
            self.notifier.send(alert)
            return True
        except NotifyError as exc:
            log.warning("alert not delivered: %s", exc)
        except Exception as exc:  # a notifier bug must not change the job's outcome either
            log.warning("alert not delivered (%s): %s", type(exc).__name__, redact(str(exc)))
        return False

    def failure(self, job: str, run_id: str, failures: list[Failure]) -> bool:
        """Send one message for the failures not already sent within the window."""
        now = datetime.now(timezone.utc)
        try:
            state, _ = self.doc.read()
        except Exception as exc:
            log.warning("alert deduplication state unreadable (%s): sending anyway", exc)
            state = {}
        sent = state.get("sent", {})
        fresh = [
            f for f in failures
            if f.fingerprint not in sent or now - datetime.fromisoformat(sent[f.fingerprint]) > self.window
        ]
        if not fresh:
            log.info("alert suppressed: same failure already sent within %s", self.window)
            return False
        lines = [f"*Run:* `{run_id}`   *Host:* `{socket.gethostname()}`"]
        for f in fresh[:5]:
            lines.append(f"*Failing:* `{printable(redact(f.subject), keep_newlines=False)}`")
            lines.extend(f"> {line}" for line in _first_lines(f.error))
        if len(fresh) > 5:
            lines.append(f"... and {len(fresh) - 5} more")
        lines.append(f"Investigate: `estore-ops runs show {run_id}`")
        delivered = self._deliver(Alert("failure", f":red_circle: estore-ops {job} failed", lines))

        def remember(doc: dict[str, Any]) -> None:
            doc.setdefault("active", {})[job] = run_id
            if delivered:
                marks = doc.setdefault("sent", {})
                for f in fresh:
                    marks[f.fingerprint] = now.isoformat()
                cutoff = now - max(self.window, timedelta(days=1))
                for key in [k for k, v in marks.items() if datetime.fromisoformat(v) < cutoff]:
                    del marks[key]

        self._safe_update(remember)
        return delivered

    def success(self, job: str, run_id: str, note: str = "") -> bool:
        """After a successful run: one recovery message if the job had failed before."""
        try:
            state, _ = self.doc.read()
        except Exception:
            return False
        failed_run = state.get("active", {}).get(job)
        if not failed_run:
            return False
        lines = [f"*Run:* `{run_id}`   *Host:* `{socket.gethostname()}`", f"Last failure was run `{failed_run}`."]
        if note:
            lines.append(note)
        delivered = self._deliver(Alert("recovery", f":large_green_circle: estore-ops {job} recovered", lines))
        if delivered:
            self._safe_update(lambda doc: doc.setdefault("active", {}).pop(job, None))
        return delivered

    def send(self, alert: Alert) -> bool:
        return self._deliver(alert)

    def _safe_update(self, change: Any) -> None:
        try:
            self.doc.update(change)
        except Exception as exc:
            log.warning("could not record alert state: %s", exc)
