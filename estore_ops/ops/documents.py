"""Small JSON documents in the state location, updated by compare-and-swap (runs, heartbeats, alerts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from estore_ops.errors import CorruptStateError, ObjectNotFoundError, PreconditionFailedError, StateConflictError
from estore_ops.ingest.state import backoff
from estore_ops.backends.stores.base import ObjectStore

T = TypeVar("T")


class JsonDocument:
    def __init__(self, store: ObjectStore, name: str, empty: Callable[[], Any] = dict) -> None:
        self.store, self.name, self.empty = store, name, empty

    def read(self) -> tuple[Any, int]:
        try:
            raw, generation = self.store.read(self.name)
        except ObjectNotFoundError:
            return self.empty(), 0
        try:
            return json.loads(raw), generation
        except ValueError:
            raise CorruptStateError(
                f"{self.store.uri(self.name)} is not valid JSON. It only holds history; delete it to start it afresh."
            ) from None

    def update(self, change: Callable[[Any], T], attempts: int = 20) -> T:
        """Apply `change` to the current content (in place or by returning nothing) and save it."""
        for attempt in range(attempts):
            doc, generation = self.read()
            result = change(doc)
            try:
                self.store.write(self.name, json.dumps(doc, default=str).encode(), if_generation_match=generation)
                return result
            except PreconditionFailedError:
                backoff(attempt)
        raise StateConflictError(f"{self.store.uri(self.name)} kept changing under {attempts} update attempts.")
