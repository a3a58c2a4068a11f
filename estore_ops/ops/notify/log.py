"""Alerts to the log only: the default when no Slack is configured."""

from __future__ import annotations

from estore_ops.logs import get_logger
from estore_ops.ops.notify.base import Alert, Notifier

log = get_logger("alerts")


class LogNotifier(Notifier):
    name = "log"

    def send(self, alert: Alert) -> None:
        level = log.info if alert.kind in ("recovery", "test") else log.error
        level("alert: %s", alert.text.replace("\n", " | "), extra={"fields": {"alert_kind": alert.kind}})
