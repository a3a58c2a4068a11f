"""The notifier interface: deliver one alert, or raise NotifyError after bounded retries.

An implementation must never block for long (retries are bounded in count and time) and must
never put a secret (token, webhook URL) in the text of an error it raises.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from estore_ops.errors import EstoreError


class NotifyError(EstoreError):
    """An alert could not be delivered. Logged by the caller; never replaces the job's own error."""


@dataclass
class Alert:
    kind: str  # failure | recovery | stale | test
    title: str
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join([self.title, *self.lines])


class Notifier(abc.ABC):
    name: str = "notifier"

    @abc.abstractmethod
    def send(self, alert: Alert) -> None: ...
