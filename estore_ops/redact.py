"""Keep secrets out of every output: logs, tables, JSON, alerts and error messages.

Secret values are registered once (from the settings, the environment and credential files) and
replaced by `****` wherever text leaves the process. A registered webhook URL also registers its
secret part (the path after /services/), because a server or a library may echo the path alone.

Slack secrets are also recognised by shape, so one that was never registered, or that reaches us
cut short, re-encoded or inside a malformed URL, is still masked:
- a webhook path `/services/T…/B…/…` anywhere in text (with or without its host, also
  percent-encoded): the secret part becomes `/services/****`;
- bot, user, app-level and refresh tokens (`xoxb-…`, `xoxp-…`, `xapp-…`, `xoxe.xoxp-…`, ...);
- an `Authorization: Bearer …` header.
"""

from __future__ import annotations

import re

_secrets: set[str] = set()
_SEP = r"(?:/|%2[Ff]|\\/)"  # a path separator, also percent-encoded or JSON-escaped
_PATTERNS = (
    # Slack tokens: xoxb- (bot), xoxp- (user), xoxa-, xoxr-, xoxs-, xoxo-, xoxe.xoxp- (refresh), xapp- (app-level).
    (re.compile(r"\b(?:xox[a-z]|xapp)(?:\.xox[a-z])?-[A-Za-z0-9-]{6,}"), "****"),
    # Slack webhook paths: /services/T…/B…/secret (the host may be missing or misspelled).
    # The secret part runs to the next space, quote or bracket: a pasted URL may carry a tab or other
    # junk (shown escaped as "\t" by the error that quotes it) in the middle of the secret.
    (re.compile(rf"(services){_SEP}T[A-Z0-9]+{_SEP}B[A-Z0-9]+(?:{_SEP}[^\s'\"<>()\[\]{{}},]*)?"), r"\1/****"),
    (re.compile(r"(?i)(authorization:\s*bearer\s+)[^\s'\"]+"), r"\1****"),
)
_WEBHOOK_PATH = re.compile(r"/services/(.+)$")


def register_secret(value: str | None) -> None:
    if not value:
        return
    value = value.strip()
    if len(value) >= 6:
        _secrets.add(value)
    path = _WEBHOOK_PATH.search(value)
    if path:  # the path alone (T…/B…/secret) and its last part (the secret itself)
        for part in (path.group(1), path.group(1).rstrip("/").rsplit("/", 1)[-1]):
            if len(part) >= 6:
                _secrets.add(part)


def redact(text: str) -> str:
    for value in sorted(_secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "****")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
