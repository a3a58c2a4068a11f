"""Bounded retries for backend calls on the load path: only `TransientBackendError` is retried.

The Cloud Storage store and the BigQuery warehouse already retry their own requests (tenacity,
inside the backend). This helper is the retry for everything *above* the backends, applied at the
call sites of the load path (ingest, state, lock), so that any store or warehouse that reports a
`TransientBackendError` (429, 5xx, connection reset; also the `chaos+` test backends) is retried
the same way, a bounded number of times with jittered exponential backoff, and never hangs a run:

- at most `ATTEMPTS` tries and at most `MAX_SECONDS` from the first try (checked after each try,
  so a backend that already spent its own retry budget is not retried again past that bound);
- waits drawn from `wait_random_exponential(INITIAL_WAIT, max=MAX_WAIT)` (full jitter);
- everything else (BackendError, PreconditionFailedError, ObjectNotFoundError, ConfigError, ...)
  passes through at once: permanent errors fail fast.

When the attempts run out the last `TransientBackendError` is re-raised with the number of attempts
added, so the message says what failed, where, and that it was retried.

Use:
    from estore_ops.retry import retry_call
    info = retry_call(store.stat, name, what=f"stat {store.uri(name)}")

Writes with a precondition (`if_generation_match`) are safe to retry: a write that did happen
but whose answer was lost makes the retry fail with PreconditionFailedError, which the caller
already handles as a conflict (the state document re-reads and re-applies its change).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from estore_ops.errors import TransientBackendError
from estore_ops.logs import get_logger

T = TypeVar("T")

# Bounds (module attributes so tests and drills can shorten them).
ATTEMPTS = 8
MAX_SECONDS = 60.0
INITIAL_WAIT = 0.05
MAX_WAIT = 4.0

log = get_logger("retry")

# Counters for drills and tests: calls retried and retries made in this process.
stats = {"retried_calls": 0, "retries": 0, "gave_up": 0}


def _log_retry(what: str) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        stats["retries"] += 1
        if state.attempt_number == 1:
            stats["retried_calls"] += 1
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: transient error (attempt %d of %d), retrying in %.2fs: %s",
            what, state.attempt_number, ATTEMPTS, wait, str(exc).splitlines()[0] if exc else "",
            extra={"fields": {"retry_of": what, "attempt": state.attempt_number}},
        )

    return before_sleep


def retry_call(fn: Callable[..., T], *args: Any, what: str = "", **kwargs: Any) -> T:
    """Call `fn(*args, **kwargs)`, retrying TransientBackendError within the bounds above."""
    label = what or getattr(fn, "__qualname__", repr(fn))
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientBackendError),
        stop=tenacity.stop_after_attempt(ATTEMPTS) | tenacity.stop_after_delay(MAX_SECONDS),
        wait=tenacity.wait_random_exponential(multiplier=INITIAL_WAIT, max=MAX_WAIT),
        before_sleep=_log_retry(label),
        reraise=True,
    )
    try:
        return retrying(fn, *args, **kwargs)
    except TransientBackendError as exc:
        stats["gave_up"] += 1
        attempts = retrying.statistics.get("attempt_number", 1)
        if attempts > 1:
            raise TransientBackendError(f"{exc} (gave up after {attempts} attempts)") from exc
        raise
