"""Slack via slack-sdk: a bot token posting to a channel, or an incoming webhook.

Delivery is retried with tenacity: exponential backoff with jitter on 5xx and connection errors,
and on 429 exactly the `Retry-After` Slack asks for (capped), within a bounded number of attempts
and total time, so a Slack outage never hangs a pipeline run.
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_before_delay, wait_random_exponential

from estore_ops.ops.notify.base import Alert, Notifier, NotifyError
from estore_ops.redact import redact

MAX_ATTEMPTS = 4
MAX_SECONDS = 30
MAX_RETRY_AFTER = 20
TIMEOUT = 10


class _HttpStatus(Exception):
    def __init__(self, status: int, retry_after: float | None, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.retry_after = status, retry_after


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _HttpStatus):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError, OSError))


_backoff = wait_random_exponential(multiplier=0.5, max=8)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _HttpStatus) and exc.status == 429 and exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER)
    return _backoff(state)


def _deliver(post: Callable[[float], None]) -> None:
    """Call `post(started)` until it succeeds, at most MAX_ATTEMPTS times and MAX_SECONDS in all.

    A wait that would end past MAX_SECONDS (Slack may ask for a long Retry-After) is not waited
    for: the last error is raised at once, so the documented cap holds whatever Slack answers.
    """
    started = time.monotonic()
    retrying = Retrying(
        retry=retry_if_exception(_retryable), wait=_wait,
        stop=stop_after_attempt(MAX_ATTEMPTS) | stop_before_delay(MAX_SECONDS), reraise=True,
    )
    for attempt in retrying:
        with attempt:
            post(started)


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if key.lower() == "retry-after":
            try:
                return float(value[0] if isinstance(value, list) else value)
            except (TypeError, ValueError):
                return None
    return None


def _escaped(text: str) -> str:
    """Slack reads <...> as links and mentions and & as entities: file names and error text never
    may (Slack's "Escaping text" rule: only &, < and > are replaced). estore-ops' own formatting
    uses none of them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _text(alert: Alert) -> str:
    return _escaped(alert.text)


def _blocks(alert: Alert) -> list[dict[str, Any]]:
    body = _escaped("\n".join(alert.lines))
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escaped(alert.title)}*"}}]
    if body:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:2900]}})
    return blocks


def _cap_timeout(client: Any, started: float) -> None:
    """Each attempt waits at most for the time left in the budget, so a hung Slack costs MAX_SECONDS."""
    client.timeout = max(1, min(TIMEOUT, int(MAX_SECONDS - (time.monotonic() - started))))


class SlackBotNotifier(Notifier):
    name = "slack-bot"

    def __init__(self, token: str, channel: str, base_url: str | None = None) -> None:
        kwargs: dict[str, Any] = {"token": token, "timeout": TIMEOUT, "retry_handlers": []}
        if base_url:
            kwargs["base_url"] = base_url.rstrip("/") + "/"
        self.client = WebClient(**kwargs)
        self.channel = channel

    def __repr__(self) -> str:
        return f"SlackBotNotifier(channel={self.channel!r}, token='****')"

    def _post(self, alert: Alert, started: float) -> None:
        _cap_timeout(self.client, started)
        try:
            self.client.chat_postMessage(channel=self.channel, text=_text(alert), blocks=_blocks(alert))
        except SlackApiError as exc:
            status = exc.response.status_code
            error = exc.response.get("error") if hasattr(exc.response, "get") else None
            raise _HttpStatus(status, _retry_after(exc.response.headers), str(error or "error")) from None

    def send(self, alert: Alert) -> None:
        try:
            _deliver(lambda started: self._post(alert, started))
        except _HttpStatus as exc:
            hint = " Check the bot token and that the bot is in the channel." if exc.status in (200, 401, 403, 404) else ""
            raise NotifyError(f"Slack refused the alert ({exc}).{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise NotifyError(f"Slack could not be reached ({type(exc).__name__}: {getattr(exc, 'reason', exc)}).") from None
        except Exception as exc:  # anything else from the SDK: never let its text (a URL, a token) escape raw
            raise NotifyError(redact(f"Slack alert failed ({type(exc).__name__}: {exc}).")) from None


class SlackWebhookNotifier(Notifier):
    name = "slack-webhook"

    def __init__(self, url: str) -> None:
        self.client = WebhookClient(url, timeout=TIMEOUT, retry_handlers=[])

    def __repr__(self) -> str:
        return "SlackWebhookNotifier(url='****')"

    def _post(self, alert: Alert, started: float) -> None:
        _cap_timeout(self.client, started)
        response = self.client.send(text=_text(alert), blocks=_blocks(alert))
        if response.status_code != 200:
            raise _HttpStatus(response.status_code, _retry_after(response.headers), str(response.body)[:200])

    def send(self, alert: Alert) -> None:
        try:
            _deliver(lambda started: self._post(alert, started))
        except _HttpStatus as exc:
            raise NotifyError(f"Slack refused the alert ({exc}).") from None
        except (urllib.error.URLError, OSError) as exc:
            raise NotifyError(f"Slack could not be reached ({type(exc).__name__}: {getattr(exc, 'reason', exc)}).") from None
        except Exception as exc:  # anything else from the SDK: never let its text (a URL, a token) escape raw
            raise NotifyError(redact(f"Slack alert failed ({type(exc).__name__}: {exc}).")) from None
