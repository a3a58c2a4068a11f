"""Everything a command needs, built lazily from the settings: stores, state, warehouse, run id."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from estore_ops.config import Settings
from estore_ops.ingest.state import StateStore
from estore_ops.backends.stores import ObjectStore, open_store
from estore_ops.backends.warehouses import Warehouse, open_warehouse


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()  # a name, not a secret


@dataclass
class Runtime:
    settings: Settings
    run_id: str = field(default_factory=new_run_id)
    lock: Any = field(default=None, repr=False)  # the RunLock while a job holds it

    @cached_property
    def landing(self) -> ObjectStore:
        return open_store(self.settings.landing, "landing", keyfile=self.settings.keyfile)

    @cached_property
    def state_backend(self) -> ObjectStore:
        return open_store(self.settings.state, "state", keyfile=self.settings.keyfile)

    @cached_property
    def state(self) -> StateStore:
        return StateStore(self.state_backend)

    @property
    def work_dir(self) -> Path:
        return Path(self.settings.work_dir)

    def next_run(self) -> Runtime:
        """The same settings under a new run id: one id per job in a multi-step flow."""
        from estore_ops.logs import set_run_id

        fresh = Runtime(self.settings)
        set_run_id(fresh.run_id)
        return fresh

    def fork(self) -> Runtime:
        """A new run id over the same settings and the same open stores (a long-running loop
        starts one job per batch; opening a Cloud Storage client per batch would cost more than
        the batch)."""
        from estore_ops.logs import set_run_id

        fresh = Runtime(self.settings)
        for name in ("landing", "state_backend", "state"):
            if name in self.__dict__:
                fresh.__dict__[name] = self.__dict__[name]
        set_run_id(fresh.run_id)
        return fresh

    def warehouse(self, read_only: bool = False) -> Warehouse:
        from estore_ops.config import parse_size

        return open_warehouse(
            self.settings.warehouse, work_dir=self.work_dir, read_only=read_only,
            memory_limit=self.settings.load_memory_limit, batch_mb=self.settings.load_batch_mb,
            keyfile=self.settings.keyfile, max_bytes_billed=parse_size(self.settings.max_bytes_billed),
            job_timeout=self.settings.job_timeout_seconds, run_id=self.run_id,
        )
