"""A fault-injecting object store for tests and drills: `chaos+<inner URL>?fail=0.3&permanent=0.0&seed=1`.

It wraps any store URL (`chaos+file:///abs/path`, `chaos+gs://bucket/prefix`) and makes a share of
the calls fail the way a cloud store fails:

- `fail`      share of calls that raise a *retryable* `TransientBackendError`
              (HTTP 429, HTTP 503, or a connection reset). Default 0.
- `permanent` share of calls that raise a *permanent* `BackendError` (HTTP 403). Default 0.
- `lost`      share of the transient failures of `write`/`delete` that happen *after* the inner
              call took effect (the answer was lost on the way back): the caller must cope with
              a write that happened although it saw an error. Default 0.
- `ops`       which operations may fail, comma-separated, from
              list,stat,open,read,write,delete,stream (stream: a reset in the middle of reading
              an opened object). Default: all.
- `seed`      seed of the fault sequence: the n-th backend opened with this URL in a process
              always draws the same faults (a new process starts at n = 1 again); default random.
- `local`     1 to expose the inner store's local path (zero-copy reads that bypass the faults,
              like the real local store); default 0, so DuckDB copies through `open` and the
              faults reach the data path too.

Faults are drawn before the inner call, so a failed call (except `lost`) changed nothing.
Like a real backend, the chaos store runs each call (its injected fault and the inner call) under
the one retry policy (estore_ops.backends.retry), so callers see what they see from Cloud Storage: success
or one classified error. A transient error that the inner store already retried is not retried
again (it is `exhausted`). Reads resume after a broken stream (stores.base.ResumingReader).
The parameters above are removed from the URL; anything else is passed to the inner store.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import parse_qsl, urlencode

from estore_ops.backends import retry
from estore_ops.errors import BackendError, ConfigError, ObjectNotFoundError, PreconditionFailedError, TransientBackendError
from estore_ops.backends.stores.base import ObjectInfo, ObjectStore, ResumingReader

OPS = ("list", "stat", "open", "read", "write", "delete", "stream")
PARAMS = ("fail", "permanent", "lost", "ops", "seed", "local")
TRANSIENT_KINDS = (
    "HTTP 429 Too Many Requests (rate limited)",
    "HTTP 503 Service Unavailable",
    "connection reset by peer",
)


_OPENED: dict[tuple[str, int], int] = {}
T = TypeVar("T")


class FaultPlan:
    """Draws faults for one backend; shared by the chaos store and the chaos warehouse."""

    def __init__(self, url: str, params: dict[str, str], ops: tuple[str, ...], setting: str) -> None:
        def share(key: str) -> float:
            try:
                value = float(params.get(key, "0"))
            except ValueError:
                raise ConfigError(f"{setting} = {url}: {key}={params[key]!r} is not a number between 0 and 1.") from None
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{setting} = {url}: {key}={value} is not between 0 and 1.")
            return value

        self.fail = share("fail")
        self.permanent = share("permanent")
        self.lost = share("lost")
        if self.fail + self.permanent > 1.0:
            raise ConfigError(f"{setting} = {url}: fail + permanent is more than 1.")
        chosen = tuple(o.strip() for o in params.get("ops", ",".join(ops)).split(",") if o.strip())
        unknown = sorted(set(chosen) - set(ops))
        if unknown:
            raise ConfigError(f"{setting} = {url}: unknown ops {unknown}; choose from {', '.join(ops)}.")
        self.ops = frozenset(chosen)
        seed = params.get("seed")
        if seed in (None, ""):
            self.rng = random.Random()
        else:
            # The n-th backend opened with this URL in this process gets its own sequence, so
            # repeated in-process runs do not replay the very same faults (which could starve a file).
            key = (url, int(seed))
            _OPENED[key] = _OPENED.get(key, 0) + 1
            self.rng = random.Random(f"{int(seed)}/{_OPENED[key]}")
        self.injected = {"transient": 0, "permanent": 0, "lost": 0, "calls": 0}

    def draw(self, op: str) -> str | None:
        """None (no fault), 'transient' or 'permanent'."""
        self.injected["calls"] += 1
        if op not in self.ops:
            return None
        x = self.rng.random()
        if x < self.fail:
            self.injected["transient"] += 1
            return "transient"
        if x < self.fail + self.permanent:
            self.injected["permanent"] += 1
            return "permanent"
        return None

    def lost_answer(self) -> bool:
        if self.lost and self.rng.random() < self.lost:
            self.injected["lost"] += 1
            return True
        return False

    def transient_error(self, what: str) -> TransientBackendError:
        kind = self.rng.choice(TRANSIENT_KINDS)
        return TransientBackendError(f"{what}: {kind} (injected by chaos; retryable).")

    @staticmethod
    def permanent_error(what: str) -> BackendError:
        return BackendError(
            f"{what}: HTTP 403 Forbidden: permission denied (injected by chaos; permanent). "
            "Grant the service account access to it, or fix the location setting."
        )


def split_chaos_url(url: str, setting: str) -> tuple[str, dict[str, str]]:
    """`chaos+gs://b/p?fail=0.3&x=1` -> (`gs://b/p?x=1`, {"fail": "0.3"}).

    Plain string surgery: urlunsplit would turn duckdb:////abs into duckdb://abs."""
    if not url.startswith("chaos+"):
        raise ConfigError(f"{setting} = {url}: a chaos URL starts with chaos+ (e.g. chaos+file:///path?fail=0.3).")
    base, _, query_text = url[len("chaos+"):].partition("?")
    query = parse_qsl(query_text, keep_blank_values=True)
    params = {k: v for k, v in query if k in PARAMS}
    rest = [(k, v) for k, v in query if k not in PARAMS]
    inner = base + (f"?{urlencode(rest)}" if rest else "")
    if "://" not in base or base.startswith("chaos+"):
        raise ConfigError(f"{setting} = {url}: wrap one store URL, e.g. chaos+file:///path?fail=0.3 or chaos+gs://bucket/prefix?fail=0.3.")
    return inner, params


class ChaosStore(ObjectStore):
    def __init__(self, inner: ObjectStore, plan: FaultPlan, url: str, local: bool = False) -> None:
        self.inner = inner
        self.plan = plan
        self.url = url
        self.local = local

    @classmethod
    def from_url(cls, url: str, setting: str = "location", **options: Any) -> ChaosStore:
        from estore_ops.backends.stores import open_store

        inner_url, params = split_chaos_url(url, setting)
        inner = open_store(inner_url, setting, **options)
        plan = FaultPlan(url, params, OPS, setting)
        return cls(inner, plan, inner.url, local=params.get("local", "0") in ("1", "true", "yes"))

    def _maybe_fail(self, op: str, name: str | None) -> None:
        fault = self.plan.draw(op)
        if fault is None:
            return
        what = f"{op} {self.inner.uri(name) if name else self.inner.uri()}"
        if fault == "permanent":
            raise self.plan.permanent_error(what)
        raise self.plan.transient_error(what)

    def _call(self, op: str, name: str | None, fn: Callable[[], T]) -> T:
        where = self.inner.uri(name) if name else self.inner.uri()
        return retry.POLICY.call(fn, what=f"{op} {where}")

    # -- reads ------------------------------------------------------------------------------
    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        def once() -> Iterator[ObjectInfo]:
            self._maybe_fail("list", prefix or None)
            return self.inner.list(prefix, page_size)

        return self._call("list", prefix or None, once)

    def stat(self, name: str) -> ObjectInfo:
        def once() -> ObjectInfo:
            self._maybe_fail("stat", name)
            return self.inner.stat(name)

        return self._call("stat", name, once)

    def open(self, name: str) -> BinaryIO:
        def open_at(offset: int) -> Any:
            self._maybe_fail("open", name)
            stream = self.inner.open(name)
            if offset:
                stream.seek(offset)
            fault = self.plan.draw("stream")
            if fault is None:
                return stream
            # The connection breaks after a random share of what is left to read.
            left = max(self.inner.stat(name).size - offset, 1)
            return _BreakingStream(stream, int(self.plan.rng.random() * left), fault, self.plan, f"read {self.inner.uri(name)}")

        return ResumingReader(open_at, lambda fn: self._call("read", name, fn))  # type: ignore[return-value]

    def read(self, name: str) -> tuple[bytes, int]:
        def once() -> tuple[bytes, int]:
            self._maybe_fail("read", name)
            return self.inner.read(name)

        return self._call("read", name, once)

    # -- writes -----------------------------------------------------------------------------
    def write(self, name: str, data: bytes, if_generation_match: int | None = None) -> int:
        what = f"write {self.inner.uri(name)}"

        def once() -> int:
            fault = self.plan.draw("write")
            if fault == "permanent":
                raise self.plan.permanent_error(what)
            if fault == "transient":
                if self.plan.lost_answer():
                    self.inner.write(name, data, if_generation_match)
                raise self.plan.transient_error(what)
            return self.inner.write(name, data, if_generation_match)

        return self._call("write", name, once)

    def delete(self, name: str, if_generation_match: int | None = None) -> None:
        what = f"delete {self.inner.uri(name)}"
        attempts = 0

        def once() -> None:
            nonlocal attempts
            attempts += 1
            fault = self.plan.draw("delete")
            if fault == "permanent":
                raise self.plan.permanent_error(what)
            if fault == "transient":
                if self.plan.lost_answer():
                    self.inner.delete(name, if_generation_match)
                raise self.plan.transient_error(what)
            try:
                self.inner.delete(name, if_generation_match)
            except (ObjectNotFoundError, PreconditionFailedError):
                if attempts > 1 and not self.inner.exists(name):
                    return  # an earlier attempt removed it and its answer was lost
                raise

        self._call("delete", name, once)

    def local_path(self, name: str) -> Path | None:
        return self.inner.local_path(name) if self.local else None

    def fingerprint(self, info: ObjectInfo) -> str | None:
        return self.inner.fingerprint(info)

    def uri(self, name: str = "") -> str:
        return self.inner.uri(name)

    def __repr__(self) -> str:
        return f"ChaosStore({self.inner!r}, fail={self.plan.fail}, permanent={self.plan.permanent})"


class _BreakingStream(io.RawIOBase):
    """Passes bytes through until `break_at`, then raises like a reset connection."""

    def __init__(self, inner: Any, break_at: int, fault: str, plan: FaultPlan, what: str) -> None:
        self.inner, self.break_at, self.fault, self.plan, self.what = inner, break_at, fault, plan, what
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.break_at:
            if self.fault == "permanent":
                raise self.plan.permanent_error(self.what)
            raise self.plan.transient_error(self.what)
        want = min(len(buffer), self.break_at - self.pos) or len(buffer)
        data = self.inner.read(want)
        n = len(data)
        buffer[:n] = data
        self.pos += n
        return n

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            super().close()
