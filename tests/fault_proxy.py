"""A scripted HTTP proxy on 127.0.0.1 between the Google client libraries and the emulators.

The emulators accept what the real services refuse and never answer with the errors the real
services return. The proxy forwards every request to its upstream (fake-gcs-server or bqemulator)
unless a rule of the running test matches, and then answers the way Google documents it:

- an error with the documented JSON shape (`google_error`): HTTP status, `error.errors[].reason`,
  `error.message` (Cloud Storage: https://cloud.google.com/storage/docs/json_api/v1/status-codes;
  BigQuery: https://cloud.google.com/bigquery/docs/error-messages and
  https://cloud.google.com/bigquery/docs/troubleshoot-quotas);
- a lost answer: the request is applied upstream, then the connection is closed without a
  response (the client sees a reset and retries a request that already took effect);
- a rewritten answer: the upstream response, changed by a function (a job that ends with
  `status.errorResult.reason = backendError`, a job held RUNNING, ...).

Rules match on method and a regular expression over the path (and optionally the query string or
the request body) and fire a bounded number of times. Every request is recorded (method, path,
query, JSON body, what was answered), so tests assert what the client really sent (a job's location,
maximumBytesBilled, labels, cancel calls).

Like BigQuery (and unlike bqemulator), a job insert whose job id was already inserted answers 409
Already Exists, without reaching the upstream: so a lost answer followed by a retry behaves as on
the real service.

Use: `with FaultProxy(upstream) as proxy:` then point the client at `proxy.url`
(STORAGE_EMULATOR_HOST for Cloud Storage, `api_endpoint=` of the bigquery:// URL for BigQuery).
`make drill` reuses it with random documented faults (`RandomFaults`).
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "host"}

# Documented error answers: (HTTP status, reason, message, domain).
# BigQuery: https://cloud.google.com/bigquery/docs/troubleshoot-quotas ("If a BigQuery operation
# fails because of exceeding a quota, the API returns the HTTP 403 Forbidden status code ...
# reason rateLimitExceeded / quotaExceeded") and https://cloud.google.com/bigquery/docs/error-messages.
BQ_RATE_LIMIT = (403, "rateLimitExceeded", "Exceeded rate limits: too many api requests per user per method for this user_method. For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas", "usageLimits")
BQ_QUOTA = (403, "quotaExceeded", "Quota exceeded: Your project exceeded quota for imports per project. For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas", "global")
BQ_ACCESS_DENIED = (403, "accessDenied", "Access Denied: Project test-project: User does not have bigquery.jobs.create permission in project test-project.", "global")
BQ_BACKEND = (503, "backendError", "Error encountered during execution. Retrying may solve the problem.", "global")
BQ_INTERNAL = (500, "internalError", "An internal error occurred and the request could not be completed.", "global")
# Cloud Storage: https://cloud.google.com/storage/docs/json_api/v1/status-codes and the retry
# strategy (https://cloud.google.com/storage/docs/retry-strategy: 408, 429 and 5xx are retried).
GCS_TIMEOUT = (408, "requestTimeout", "Request Timeout", "global")
GCS_RATE_LIMIT = (429, "rateLimitExceeded", "The object exceeded the rate limit for object mutation operations (create, update, and delete). Please reduce your request rate.", "usageLimits")
GCS_INTERNAL = (500, "backendError", "We encountered an internal error. Please try again.", "global")
GCS_UNAVAILABLE = (503, "backendError", "We encountered an internal error. Please try again.", "global")


def google_error(status: int, reason: str, message: str, domain: str = "global") -> dict[str, Any]:
    """The JSON error body Google APIs send: {"error": {"code", "message", "errors": [...]}}."""
    return {"error": {"code": status, "message": message, "errors": [{"message": message, "domain": domain, "reason": reason}]}}


def job_not_found(project: str, location: str, job_id: str) -> tuple[int, dict[str, Any]]:
    message = f"Not found: Job {project}:{location}.{job_id}"
    return 404, google_error(404, "notFound", message)


def job_already_exists(project: str, location: str, job_id: str) -> tuple[int, dict[str, Any]]:
    message = f"Already Exists: Job {project}:{location}.{job_id}"
    return 409, google_error(409, "duplicate", message)


def failed_job(body: dict[str, Any], reason: str = "backendError", message: str = "Backend error. Job aborted.") -> dict[str, Any]:
    """A job resource that ended with a job-level error (status.errorResult), as jobs.get shows it."""
    error = {"reason": reason, "message": message}
    body = dict(body)
    body["status"] = {"state": "DONE", "errorResult": error, "errors": [error]}
    return body


def running_job(body: dict[str, Any]) -> dict[str, Any]:
    """A job resource still RUNNING (no end time, no result statistics yet)."""
    body = dict(body)
    body["status"] = {"state": "RUNNING"}
    stats = dict(body.get("statistics") or {})
    for key in ("endTime", "query", "load"):
        stats.pop(key, None)
    body["statistics"] = stats
    return body


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any  # parsed JSON when the request body is JSON, else None
    answered: str  # "forwarded", "error 403", "dropped", "rewritten", "answered"
    status: int = 0
    raw: bytes = b""

    def mentions(self, text: str) -> bool:
        """The text appears in the path, the query or the body (e.g. an object name in a multipart upload)."""
        return text in self.path or text in str(self.query) or text.encode() in self.raw

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    action: str  # "error", "drop", "rewrite", "answer"
    times: int | None = 1  # None: always
    status: int = 0
    body: Any = None
    rewrite: Callable[[Seen, int, Any], tuple[int, Any]] | None = None
    answer: Callable[[Seen], tuple[int, Any]] | None = None
    when: Callable[[Seen], bool] | None = None
    fired: int = 0

    def matches(self, seen: Seen) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method not in ("*", seen.method) or not self.path.search(seen.path):
            return False
        return self.when is None or self.when(seen)


@dataclass
class RandomFaults:
    """For drills: a share of requests answered with a documented transient error, or applied
    upstream with the answer dropped. Seeded, so a failing drill can be replayed."""

    share: float
    errors: tuple[tuple[int, str, str, str], ...]
    lost_share: float = 0.0
    seed: int = 1
    rng: random.Random = field(init=False)
    injected: dict[str, int] = field(default_factory=lambda: {"error": 0, "dropped": 0})

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = upstream.rstrip("/")
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        self._job_ids: set[str] = set()  # BigQuery job ids inserted upstream
        self.random: RandomFaults | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- scripting ---------------------------------------------------------------------------
    def error(self, method: str, path: str, error: tuple[int, str, str, str], times: int | None = 1,
              when: Callable[[Seen], bool] | None = None) -> Rule:
        status, reason, message, domain = error
        return self._add(Rule(method, re.compile(path), "error", times, status, google_error(status, reason, message, domain), when=when))

    def drop_after_forwarding(self, method: str, path: str, times: int | None = 1, when: Callable[[Seen], bool] | None = None) -> Rule:
        """The request reaches the upstream and is applied; its answer never comes back."""
        return self._add(Rule(method, re.compile(path), "drop", times, when=when))

    def rewrite(self, method: str, path: str, fn: Callable[[Seen, int, Any], tuple[int, Any]], times: int | None = 1,
                when: Callable[[Seen], bool] | None = None) -> Rule:
        """Forward, then answer fn(seen, upstream status, upstream JSON body) -> (status, body)."""
        return self._add(Rule(method, re.compile(path), "rewrite", times, rewrite=fn, when=when))

    def answer(self, method: str, path: str, fn: Callable[[Seen], tuple[int, Any]], times: int | None = 1,
               when: Callable[[Seen], bool] | None = None) -> Rule:
        """Answer fn(seen) -> (status, JSON body) without forwarding."""
        return self._add(Rule(method, re.compile(path), "answer", times, answer=fn, when=when))

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.random = None

    def requests(self, method: str = "*", path: str = "") -> list[Seen]:
        with self._lock:
            seen = list(self.seen)
        pattern = re.compile(path)
        return [s for s in seen if method in ("*", s.method) and pattern.search(s.path)]

    # -- serving -----------------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        try:
            body: Any = json.loads(raw) if raw and "json" in (handler.headers.get("Content-Type") or "") else None
        except ValueError:
            body = None
        seen = Seen(handler.command, parts.path, parse_qs(parts.query), body, "forwarded", raw=raw)
        with self._lock:
            rule = next((r for r in self.rules if r.matches(seen)), None)
            if rule is not None:
                rule.fired += 1
            self.seen.append(seen)
            chaos = self._random_fault()

        if rule is not None and rule.action == "error":
            seen.answered, seen.status = f"error {rule.status}", rule.status
            return self._reply(handler, rule.status, rule.body)
        if rule is not None and rule.action == "answer":
            status, answer = rule.answer(seen)  # type: ignore[misc]  # set for action "answer"
            seen.answered, seen.status = "answered", status
            return self._reply(handler, status, answer)
        job_id = self._job_insert_id(seen)
        if rule is None and job_id is not None and job_id in self._job_ids:
            seen.answered, seen.status = "answered", 409
            project = seen.path.split("/")[4] if seen.path.count("/") >= 4 else "project"
            location = (seen.body.get("jobReference") or {}).get("location") or "US"
            return self._reply(handler, *job_already_exists(project, location, job_id))
        if rule is None and chaos is not None and chaos[0] == "error":
            status, reason, message, domain = chaos[1]
            seen.answered, seen.status = f"error {status}", status
            return self._reply(handler, status, google_error(status, reason, message, domain))

        status, headers, data = self._forward(handler, raw)
        if job_id is not None and status < 300:
            with self._lock:
                self._job_ids.add(job_id)
        if (rule is not None and rule.action == "drop") or (rule is None and chaos is not None and chaos[0] == "drop"):
            seen.answered, seen.status = "dropped", status
            # Applied upstream; the client gets no answer at all (a reset connection).
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        if rule is not None and rule.action == "rewrite":
            try:
                upstream_body = json.loads(data) if data else None
            except ValueError:
                upstream_body = None
            status, new_body = rule.rewrite(seen, status, upstream_body)  # type: ignore[misc]  # set for action "rewrite"
            seen.answered, seen.status = "rewritten", status
            return self._reply(handler, status, new_body)
        seen.status = status
        return self._send(handler, status, headers, data)

    @staticmethod
    def _job_insert_id(seen: Seen) -> str | None:
        if seen.method != "POST" or not re.search(r"/bigquery/v2/projects/[^/]+/jobs$", seen.path) or not isinstance(seen.body, dict):
            return None
        job_id = (seen.body.get("jobReference") or {}).get("jobId")
        return str(job_id) if job_id else None

    def _random_fault(self) -> tuple[str, Any] | None:
        faults = self.random
        if faults is None:
            return None
        x = faults.rng.random()
        if x < faults.share:
            faults.injected["error"] += 1
            return "error", faults.rng.choice(faults.errors)
        if x < faults.share + faults.lost_share:
            faults.injected["dropped"] += 1
            return "drop", None
        return None

    def _forward(self, handler: BaseHTTPRequestHandler, raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(raw))
            conn.request(handler.command, handler.path, body=raw, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            # Links the emulator builds with its own address (media links, self links) point at the proxy.
            data = data.replace(self.upstream.encode(), self.url.encode())
            return resp.status, out_headers, data
        finally:
            conn.close()

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self._send(handler, status, [("Content-Type", "application/json; charset=UTF-8")], data)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        handler.send_response(status)
        for key, value in headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if data and handler.command != "HEAD":
            handler.wfile.write(data)


@contextmanager
def gcp_through_proxies(monkeypatch: Any, fake_gcs: Any, bq_emulator: Any, bucket: str, dataset: str) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    """Landing and state in `bucket`, the warehouse in `dataset`, every request of the CLI through
    one proxy per emulator: yields (Cloud Storage proxy, BigQuery proxy)."""
    with FaultProxy(fake_gcs.endpoint) as gcs, FaultProxy(bq_emulator.endpoint) as bq:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        monkeypatch.setenv("ESTORE_LANDING", f"gs://{bucket}/landing")
        monkeypatch.setenv("ESTORE_STATE", f"gs://{bucket}/state")
        monkeypatch.setenv("ESTORE_WAREHOUSE", bq_emulator.url(dataset, bq.url))
        yield gcs, bq


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
