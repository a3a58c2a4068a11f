"""The one retry policy of every backend: which errors are worth another try, how often, how long.

Each store and warehouse runs its requests through `POLICY.call(fn, what=...)` (the Cloud Storage
store, the BigQuery warehouse, the `chaos+` test backends around their injected faults, the
resumable read streams). Callers of a backend never retry: they see either success or one
classified error.

Classification (`classify`) follows the client libraries and Google's documentation:

- RETRY (now, with backoff): HTTP 408, 429, 500, 502, 503, 504; an error whose `reason` is
  rateLimitExceeded, backendError, internalError or badGateway whatever its status (BigQuery
  answers rate limits as HTTP **403** with reason rateLimitExceeded: google.cloud.bigquery.retry
  classifies by reason for that reason); dropped connections and timeouts of the transport;
  a `TransientBackendError` nobody has retried yet (e.g. a fault injected by `chaos+`).
  Sources: https://cloud.google.com/storage/docs/retry-strategy (408, 429, 5xx, socket timeouts
  and TCP disconnects), https://cloud.google.com/bigquery/docs/error-messages and
  https://cloud.google.com/bigquery/docs/troubleshoot-quotas.
- LATER: transient, but not worth retrying within this run: reason quotaExceeded ("a longer-term
  limit ... wait 10 minutes or longer", troubleshoot-quotas; the client library does not retry
  it either), or a `TransientBackendError` that a backend already retried (so nested backends,
  such as `chaos+gs://`, never multiply their retries). Raised as `TransientBackendError`: the
  next run tries again and nothing is counted against the file.
- PERMANENT: everything else (403 accessDenied, 404, 400 invalid, 412, an SSL error, ...):
  re-raised at once for the backend to translate into a message that says how to fix it.

Bounds: at most `attempts` tries and `max_seconds` from the first one (checked after each try, so
each request also needs its own timeout), waits drawn from `wait_random_exponential(initial_wait,
max=max_wait)` (full jitter). When the policy gives up, the error is a `TransientBackendError`
marked `exhausted`, saying what failed, the last answer and how many attempts were made.

Writes are only safe to retry when they are idempotent: conditional writes (if_generation_match)
answer a retried, already applied request with 412, which the callers handle as a conflict; BigQuery
jobs have deterministic ids, so a retried insert answers 409 and the existing job is used.
"""

from __future__ import annotations

import http.client
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from estore_ops.errors import EstoreError, TransientBackendError
from estore_ops.logs import get_logger

T = TypeVar("T")

RETRY, LATER, PERMANENT = "retry", "later", "permanent"

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# google.cloud.bigquery.retry._RETRYABLE_REASONS: an error with one of these reasons is retried
# whatever its HTTP status.
RETRYABLE_REASONS = frozenset({"rateLimitExceeded", "backendError", "internalError", "badGateway"})
LATER_REASONS = frozenset({"quotaExceeded"})

log = get_logger("retry")

# Counters for drills and tests: calls retried, retries made and calls given up in this process.
stats = {"retried_calls": 0, "retries": 0, "gave_up": 0}


def error_reason(exc: BaseException) -> str | None:
    """The `reason` of the first entry of a Google API error's `errors` list, if any."""
    try:
        reason = exc.errors[0]["reason"]  # type: ignore[attr-defined]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return reason if isinstance(reason, str) else None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an API error (google.api_core's `code`, or a response's status_code)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 100 <= code < 600:
        return code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _transport_error(exc: BaseException) -> bool:
    """A dropped connection or a timeout: the request may or may not have reached the server."""
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.exceptions.SSLError):
        return False  # a certificate problem does not go away by itself
    if isinstance(exc, (ConnectionError, TimeoutError, http.client.HTTPException)):
        return True
    if requests is not None and isinstance(
        exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.exceptions.Timeout)
    ):
        return True
    urllib3 = sys.modules.get("urllib3")
    if urllib3 is not None and isinstance(
        exc, (urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError, urllib3.exceptions.PoolError)
    ):
        return True
    auth = sys.modules.get("google.auth.exceptions")
    if auth is not None and isinstance(exc, auth.TransportError):
        return True
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, (ConnectionResetError, ConnectionAbortedError))


def classify(exc: BaseException) -> str:
    """RETRY, LATER or PERMANENT (see the module docstring)."""
    if isinstance(exc, TransientBackendError):
        return LATER if exc.exhausted else RETRY
    if isinstance(exc, EstoreError) or not isinstance(exc, Exception):
        return PERMANENT
    reason = error_reason(exc)
    if reason in RETRYABLE_REASONS:
        return RETRY
    if reason in LATER_REASONS:
        return LATER
    status = http_status(exc)
    if status is not None:
        return RETRY if status in RETRYABLE_STATUS else PERMANENT
    return RETRY if _transport_error(exc) else PERMANENT


def first_line(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    max_seconds: float = 60.0
    initial_wait: float = 0.5
    max_wait: float = 10.0

    def call(self, fn: Callable[[], T], *, what: str, classify: Callable[[BaseException], str] = classify) -> T:
        """Run `fn`, retrying what `classify` calls RETRY within the bounds.

        Returns fn's result, or raises: the PERMANENT error unchanged, or a `TransientBackendError`
        (exhausted) for a transient one, once given up or when it is LATER.
        """
        started = time.monotonic()
        tries = 0

        def attempt() -> T:
            nonlocal tries
            tries += 1
            return fn()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            stats["retries"] += 1
            if state.attempt_number == 1:
                stats["retried_calls"] += 1
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "%s: transient error (attempt %d of %d), retrying in %.2fs: %s",
                what, state.attempt_number, self.attempts, wait, first_line(exc) if exc else "",
                extra={"fields": {"retry_of": what, "attempt": state.attempt_number}},
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: classify(e) == RETRY),
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.max_seconds),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Exception as exc:
            verdict = classify(exc)
            if verdict == PERMANENT or (isinstance(exc, TransientBackendError) and exc.exhausted):
                raise
            stats["gave_up"] += 1
            if verdict == LATER:
                why = "a longer-term limit: not retried in this run"
            else:
                why = f"gave up after {tries} attempt{'s' if tries > 1 else ''} in {time.monotonic() - started:.1f}s"
            raise TransientBackendError(
                f"{what}: {first_line(exc)} ({why}); the next run tries again.", exhausted=True
            ) from exc


# The policy every backend uses; tests and drills replace it to shorten the waits.
POLICY = RetryPolicy()
