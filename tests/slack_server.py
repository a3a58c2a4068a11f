"""A real HTTP server on 127.0.0.1 standing in for Slack's Web API and incoming webhooks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class FakeSlack:
    """Scripted answers (status, headers, body) consumed in order; then 200 ok."""

    script: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/webhooksecret123"

    @property
    def messages(self) -> list[str]:
        return [r["body"].get("text", "") for r in self.requests]

    def next_answer(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self.lock:
            return self.script.pop(0) if self.script else (200, {}, {"ok": True, "ts": "1.0"})


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length).decode()
            try:
                body = json.loads(raw)
            except ValueError:
                from urllib.parse import parse_qsl

                body = dict(parse_qsl(raw))
            fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization", "")})
            status, headers, answer = fake.next_answer()
            data = json.dumps(answer).encode() if not self.path.startswith("/services/") or status != 200 else b"ok"
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
