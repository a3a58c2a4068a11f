"""Notifiers, chosen by configuration: Slack bot token + channel, Slack incoming webhook, or the log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from estore_ops.errors import ConfigError
from estore_ops.ops.notify.base import Alert, Notifier, NotifyError
from estore_ops.redact import register_secret

__all__ = ["Alert", "Notifier", "NotifyError", "open_notifier", "slack_token"]

CREDENTIAL_NAME = "slack_token"


def slack_token(settings: Any) -> str:
    """The bot token: the setting / SLACK_BOT_TOKEN, else the systemd credential `slack_token`."""
    token = settings.slack_bot_token.get()
    if not token and os.environ.get("CREDENTIALS_DIRECTORY"):
        path = Path(os.environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        if path.is_file():
            token = path.read_text().strip()
    register_secret(token)
    return token


def open_notifier(settings: Any) -> Notifier:
    token = slack_token(settings)
    webhook = settings.slack_webhook_url.get()
    register_secret(webhook)
    if token:
        if not settings.slack_channel:
            raise ConfigError("A Slack bot token is set but no channel: set slack_channel (ESTORE_SLACK_CHANNEL), e.g. #data-alerts.")
        from estore_ops.ops.notify.slack import SlackBotNotifier

        return SlackBotNotifier(token, settings.slack_channel, base_url=settings.slack_api_url or None)
    if webhook:
        if not webhook.startswith(("https://", "http://")):
            raise ConfigError("slack_webhook_url must be the full https://hooks.slack.com/services/... URL (value not shown).")
        from estore_ops.ops.notify.slack import SlackWebhookNotifier

        return SlackWebhookNotifier(webhook)
    from estore_ops.ops.notify.log import LogNotifier

    return LogNotifier()
