"""Slack alerts against a real HTTP server on 127.0.0.1: content, deduplication, recovery, retries."""

from __future__ import annotations

import socket
import time

import pytest

from tests.helpers import HEADER, Workspace, event_lines
from tests.slack_server import FakeSlack, slack  # noqa: F401 - fixture

TOKEN = "xoxb-1234567890-TESTTOKENVALUE"


@pytest.fixture
def bot(ws: Workspace, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> FakeSlack:  # noqa: F811
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ESTORE_SLACK_CHANNEL", "#data-alerts")
    monkeypatch.setenv("ESTORE_SLACK_API_URL", slack.api_url)
    return slack


def test_failed_load_sends_one_message_with_everything_needed(ws: Workspace, bot: FakeSlack) -> None:
    ws.add("good.csv", event_lines(3))
    ws.add("bad.csv", event_lines(2), header=HEADER.replace("brand", "brand_name"))
    result = ws.cli("load", "--json")
    assert result.exit_code == 1
    import json

    run_id = json.loads(result.stdout)["run_id"]
    assert len(bot.requests) == 1
    request = bot.requests[0]
    assert request["path"] == "/api/chat.postMessage"
    assert request["body"]["channel"] == "#data-alerts"
    assert request["auth"] == f"Bearer {TOKEN}"
    text = request["body"]["text"]
    assert "estore-ops load failed" in text
    assert run_id in text and socket.gethostname() in text
    assert "*Failing:* `bad.csv`" in text
    assert "bad.csv, line 1: header has missing column(s) brand; unexpected column(s) brand_name." in text
    assert f"estore-ops runs show {run_id}" in text


def test_repeated_identical_failure_is_not_resent_and_recovery_is_announced(ws: Workspace, bot: FakeSlack) -> None:
    ws.add("bad.csv", event_lines(2), header="x,y")
    assert ws.cli("load").exit_code == 1
    assert ws.cli("load").exit_code == 1  # retry 2 of 3: same file, same error
    assert len(bot.messages) == 1
    ws.add("bad.csv", event_lines(2))  # fixed and uploaded again
    assert ws.cli("load").exit_code == 0
    assert len(bot.messages) == 2
    assert "estore-ops load recovered" in bot.messages[1]
    assert ws.cli("load").exit_code == 0  # nothing new: no more messages
    assert len(bot.messages) == 2


def test_dedup_window_expiry_resends(ws: Workspace, bot: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTORE_ALERT_DEDUP_MINUTES", "0")
    ws.add("bad.csv", event_lines(2), header="x,y")
    assert ws.cli("load").exit_code == 1
    assert ws.cli("load").exit_code == 1
    assert len(bot.messages) == 2


def test_429_is_retried_after_the_time_slack_asks(ws: Workspace, bot: FakeSlack) -> None:
    bot.script.append((429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"}))
    ws.add("bad.csv", event_lines(2), header="x,y")
    started = time.monotonic()
    assert ws.cli("load").exit_code == 1
    assert time.monotonic() - started >= 1.0
    assert len(bot.requests) == 2 and bot.requests[0]["body"] == bot.requests[1]["body"]


def test_slack_500_keeps_the_original_failure_and_exit_code(ws: Workspace, bot: FakeSlack) -> None:
    bot.script.extend([(500, {}, {"ok": False, "error": "internal"})] * 10)
    ws.add("bad.csv", event_lines(2), header="x,y")
    started = time.monotonic()
    result = ws.cli("load")
    assert result.exit_code == 1
    assert "bad.csv, line 1: header has missing column(s)" in result.output
    assert "alert not delivered: Slack refused the alert (HTTP 500" in result.stderr
    assert len(bot.requests) == 4  # bounded retries
    assert time.monotonic() - started < 40


def test_closed_port_keeps_the_original_failure_and_exit_code(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ESTORE_SLACK_CHANNEL", "#x")
    monkeypatch.setenv("ESTORE_SLACK_API_URL", f"http://127.0.0.1:{port}/api/")
    ws.add("bad.csv", event_lines(2), header="x,y")
    result = ws.cli("load")
    assert result.exit_code == 1
    assert "alert not delivered: Slack could not be reached" in result.stderr
    assert TOKEN not in result.output


def test_webhook_alerts_and_alert_test(ws: Workspace, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    result = ws.cli("alert", "test")
    assert result.exit_code == 0 and "Test alert sent via slack-webhook." in result.output
    assert slack.requests[0]["path"] == "/services/T000/B000/webhooksecret123"
    assert "estore-ops test alert" in slack.messages[0]
    assert ws.cli("alert", "unit-failure", "estore-ops-transform.service").exit_code == 0
    assert "systemd unit estore-ops-transform.service failed" in slack.messages[1]
    assert "webhooksecret123" not in ws.cli("config").output


def test_without_slack_alerts_go_to_the_log(ws: Workspace) -> None:
    ws.add("bad.csv", event_lines(2), header="x,y")
    result = ws.cli("--log-format", "json", "load")
    assert result.exit_code == 1
    assert '"msg": "alert: :red_circle: estore-ops load failed' in result.stderr
    assert ws.cli("alert", "test").stdout.strip() == "Test alert sent via log."


def test_token_without_channel_is_a_configuration_error(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    result = ws.cli("alert", "test")
    assert result.exit_code == 2
    assert "A Slack bot token is set but no channel: set slack_channel (ESTORE_SLACK_CHANNEL)" in result.output


def test_systemd_credential_file_supplies_the_token(ws: Workspace, bot: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    creds = ws.root / "creds"
    creds.mkdir()
    (creds / "slack_token").write_text("xoxb-from-credential-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert ws.cli("alert", "test").exit_code == 0
    assert bot.requests[0]["auth"] == "Bearer xoxb-from-credential-file"


def test_malformed_webhook_url_is_a_clear_error_that_does_not_echo_it(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/SUPERSECRET123")
    result = ws.cli("alert", "test")
    assert result.exit_code == 2
    assert "slack_webhook_url must be the full https://hooks.slack.com/services/... URL" in result.output
    assert "SUPERSECRET123" not in result.output
