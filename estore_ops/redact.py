"""Keep secrets out of every output: logs, tables, JSON, alerts and error messages.

Secret values are registered once (from the settings, the environment and credential files) and
replaced by `****` wherever text leaves the process. Slack tokens and webhook URLs are also
recognised by shape, so one that was never registered is still masked.
"""

from __future__ import annotations

import re

_secrets: set[str] = set()
_PATTERNS = (
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{8,}"),  # Slack tokens
    re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),  # Slack webhooks
    re.compile(r"(?i)(authorization:\s*bearer\s+)[^\s'\"]+"),
)


def register_secret(value: str | None) -> None:
    if value and len(value) >= 6:
        _secrets.add(value)


def redact(text: str) -> str:
    for value in sorted(_secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "****")
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "****", text)
        else:
            text = pattern.sub("****", text)
    return text
