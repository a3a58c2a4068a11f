"""Secrets: the secret part is masked wherever it appears, not only the whole URL.

A Slack webhook's secret is its path (`/services/T…/B…/…`): a server that echoes the path in an
error body, or an error about a malformed URL that quotes part of it, used to leak it although the
whole URL was masked. Tokens are recognised by shape too (bot, user, app-level, refresh tokens).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from estore_ops.redact import redact
from tests.helpers import Workspace, clean_env, event_lines
from tests.slack_server import FakeSlack, slack  # noqa: F401 - fixture

SECRET_PART = "webhooksecret123"  # FakeSlack's webhook path is /services/T000/B000/webhooksecret123


def _run(ws: Workspace, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "estore_ops", *args], cwd=ws.root, env=clean_env(env),
                          capture_output=True, text=True, timeout=120)


def _no_leak(ws: Workspace, result: subprocess.CompletedProcess[str], secret: str) -> None:
    assert secret not in result.stdout and secret not in result.stderr, (result.stdout, result.stderr)
    for path in ws.state.glob("*.json"):
        assert secret not in path.read_text(errors="replace"), path


def test_a_webhook_path_echoed_in_an_error_body_is_masked(ws: Workspace, slack: FakeSlack) -> None:  # noqa: F811
    echo = (404, {}, {"ok": False, "error": "no_service", "detail": f"no hook at /services/T000/B000/{SECRET_PART}",
                      "escaped": f"\\/services\\/T000\\/B000\\/{SECRET_PART}"})
    env = {"SLACK_WEBHOOK_URL": slack.webhook_url, "ESTORE_LOG_FORMAT": "json"}
    slack.script = [echo] * 8
    ws.add("bad.csv", event_lines(2), header="x,y")
    load = _run(ws, env, "--verbose", "load")
    assert load.returncode == 1 and "alert not delivered" in load.stderr
    _no_leak(ws, load, SECRET_PART)
    slack.script = [echo] * 8
    test = _run(ws, env, "--debug", "alert", "test")
    assert test.returncode != 0 and "Slack refused the alert" in test.stderr
    _no_leak(ws, test, SECRET_PART)


@pytest.mark.parametrize("url", [
    "https://hooks.slack.com/services/T0AA/B0BB/SUPER\tSECRET123",  # a tab pasted into the secret
    "https://hooks.slack.com/services/T0AA/B0BB/SUPERSECRET123\n",
    "https://hooks.slack.com /services/T0AA/B0BB/SUPERSECRET123",
    "http://[hooks.slack.com/services/T0AA/B0BB/SUPERSECRET123",
    "https://hooks.slack.com:99999/services/T0AA/B0BB/SUPERSECRET123",
])
def test_a_malformed_webhook_url_never_shows_its_secret_part(ws: Workspace, url: str) -> None:
    for args in (["--debug", "alert", "test"], ["config"], ["config", "--json"]):
        result = _run(ws, {"SLACK_WEBHOOK_URL": url}, *args)
        for fragment in ("SUPERSECRET123", "SECRET123"):
            assert fragment not in result.stdout and fragment not in result.stderr, (args, result.stdout, result.stderr)


@pytest.mark.parametrize("text", [
    "xoxb-2222-3333-AbCdEfGhIj", "xoxp-1-2-3-abcdef", "xapp-1-A111-222-abcdef0123", "xoxe.xoxp-1-Mi0yLTE3MTk",
    "xoxe-1-My0xLTIwMjMtMTE", "hooks.slack.com/services/T123/B456/abcdefXYZ", "https://hooks.slack.com/services/T123/B456/abcdefXYZ",
    "%2Fservices%2FT123%2FB456%2FabcdefXYZ", "\\/services\\/T123\\/B456\\/abcdefXYZ", "Authorization: Bearer abcdefXYZ",
])
def test_secrets_are_recognised_by_shape(text: str) -> None:
    masked = redact(f"error body: {text} (end)")
    for part in ("abcdefXYZ", "AbCdEfGhIj", "abcdef0123", "Mi0yLTE3MTk", "My0xLTIwMjMtMTE", "abcdef"):
        assert part not in masked, masked
    assert masked.endswith(" (end)")


@pytest.mark.parametrize("text", ["services/Tables/B.csv", "landing/services/T2019/oct.csv", "xox-1", "boxb-12345678"])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text
