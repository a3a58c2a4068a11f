"""Backends by URL scheme: what each store and warehouse declares, and where to find it.

A backend is two modules: its implementation (an `ObjectStore` or a `Warehouse`, free to import
its SDK at the top) and its *declaration*, a `StoreBackend` or `WarehouseBackend` subclass in a
module that imports no SDK (`stores/gcs_url.py`, `warehouses/bigquery_url.py`, ...). The
declaration says everything that is decided from the URL alone: its scheme(s), how the URL is
parsed and checked (the configuration refuses a bad URL at start-up, exit 2, without loading
any client library), how a relative path inside it is anchored, the database file of an embedded
warehouse, its dbt adapter's checks and vars, and how to open the implementation (an optional
dependency group that is missing gives MissingExtraError with the pip command).

What needs an open backend (the dbt target, the doctor's check) is a method of the
implementation class.

Built-in declarations are listed below as `module:Class` strings and imported the first time a
URL needs them, in order, so `estore-ops --help` and a timer tick import no backend they do not use.
`register_store` / `register_warehouse` add one at run time (a plugin, a test).

A scheme ending in `+` names a wrapper: `chaos+gs://...` is found under `chaos+`.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlparse

from estore_ops.errors import ConfigError, EnvironmentFaultError, EstoreError, MissingExtraError

if TYPE_CHECKING:
    from estore_ops.backends.stores.base import ObjectStore
    from estore_ops.backends.warehouses.base import Warehouse

BUILT_IN_STORES = (
    "estore_ops.backends.stores.local_url:LocalFolderBackend",
    "estore_ops.backends.stores.gcs_url:GCSBackend",
    "estore_ops.testing.chaos_store:ChaosStoreBackend",
)
BUILT_IN_WAREHOUSES = (
    "estore_ops.backends.warehouses.duckdb_url:DuckDBBackend",
    "estore_ops.backends.warehouses.bigquery_url:BigQueryBackend",
    "estore_ops.testing.chaos_warehouse:ChaosWarehouseBackend",
)


def url_scheme(url: str) -> str:
    """The registry key of a URL: '' for a plain path ("C:" style drive letters are not schemes),
    'chaos+' for chaos+gs://... (a wrapper), else the scheme."""
    scheme = urlparse(url).scheme
    if len(scheme) <= 1:
        return ""
    head, plus, _ = scheme.partition("+")
    return head + plus


def anchor_path(value: str, base: Path) -> str:
    """A relative local path made absolute against `base`; a URL (or an empty value) as it is."""
    if "://" in value or not value or value.lower().startswith("file:"):
        return value
    return str((base / value).resolve()) if not Path(value).is_absolute() else value


def _import(reference: str) -> Any:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


class Backend:
    """The common part of a store's and a warehouse's declaration."""

    schemes: tuple[str, ...] = ()  # what url_scheme() gives for its URLs
    examples: tuple[str, ...] = ()  # the URL forms error messages suggest (none: a test backend)
    implementation = ""  # "module:Class" of the implementation, imported by open()
    extra = ""  # the pip extra the implementation needs ("gcp"), if any
    extra_libraries = ""  # what that extra installs, for the message ("the Google Cloud client libraries")

    def validate(self, url: str, where: str) -> None:
        """Raise ConfigError (starting with `where`, e.g. "landing = 'x' (from flag --landing)")
        for a URL this backend would refuse. Called at start-up: no SDK import, no request."""
        try:
            self.check(url)
        except ConfigError as exc:
            raise ConfigError(f"{where} {exc}") from None

    def check(self, url: str) -> None:
        """What `validate` checks, as ConfigError("is malformed: write ...") without the setting's name."""

    def anchor(self, url: str, base: Path) -> str:
        """The URL with a relative local path in it made absolute against `base` (the config file's folder)."""
        return anchor_path(url, base)

    def load_implementation(self, setting: str, url: str) -> Any:
        """The implementation class; MissingExtraError (with the pip command) when its extra is missing."""
        module, _, name = self.implementation.partition(":")
        try:
            # The import statement's own hook (not importlib), as `from module import name` would.
            return getattr(__import__(module, fromlist=[name]), name)
        except ImportError:
            if not self.extra:
                raise
            raise MissingExtraError(
                f"{setting} = {url} needs {self.extra_libraries}. Install them with: pip install 'estore-ops[{self.extra}]'"
            ) from None


class StoreBackend(Backend):
    def open(self, url: str, setting: str, **options: Any) -> ObjectStore:
        """Open the store; `options`: `keyfile` (Google credentials; other stores ignore it)."""
        raise NotImplementedError

    def arrivals_by_notifications(self, url: str) -> bool:
        """True when `watch --events` hears of new objects through a notification subscription
        (the `notifications` setting); False when the operating system watches the folder."""
        return False


class WarehouseBackend(Backend):
    dbt_type = ""  # the dbt adapter's `type` in the profile target
    dbt_required: tuple[str, ...] = ()  # target keys that must be set, beyond type and threads
    table_editor_class = ""  # "module:Class" of its TableEditor for `upgrade` (estore_ops.deploy.upgrade.tables)

    def open(self, url: str, work_dir: Path | None = None, read_only: bool = False, **options: Any) -> Warehouse:
        raise NotImplementedError

    def keyfile(self, url: str) -> str:
        """A credentials file named in the URL itself ('' when none)."""
        return ""

    def local_file(self, url: str) -> Path | None:
        """The database file of an embedded warehouse (opened read-only by checks that must not
        create or lock it); None for a warehouse that is a service."""
        return None

    def environment_fault(self, message: str, url: str) -> EnvironmentFaultError | None:
        """The machine's fault (disk full, out of memory, a lock) that a dbt model's error message
        shows, if any: such a failure blames no model. None when the message is the model's own."""
        return None

    def check_dbt_target(self, target: dict[str, Any], url: str) -> None:
        """Raise EstoreError when the dbt profile target built for `url` lacks what dbt needs."""
        missing = [k for k in ("type", "threads") if k not in target] + [k for k in self.dbt_required if not target.get(k)]
        if missing:
            raise EstoreError(f"The dbt target for {url} lacks {missing}.")

    def dbt_vars(self, target: dict[str, Any]) -> dict[str, Any]:
        """dbt vars this target needs by default (a caller's vars win)."""
        return {}

    def table_editor(self, warehouse: Warehouse) -> Any:
        """The editor `upgrade` changes this warehouse's tables with (its SQL dialect)."""
        if not self.table_editor_class:
            raise EstoreError(f"{warehouse.url}: estore-ops has no table editor for this warehouse, so it cannot upgrade its tables.")
        return _import(self.table_editor_class)(warehouse)


B = TypeVar("B", bound=Backend)


class _Registry(Generic[B]):
    def __init__(self, kind: str, built_in: tuple[str, ...], unknown: str) -> None:
        self.kind = kind
        self._pending = list(built_in)  # declarations not imported yet, in lookup order
        self._loaded: list[B] = []
        self._lock = threading.Lock()
        self._unknown = unknown  # the message for a URL no backend takes: {where}, {scheme}, {forms}

    def register(self, backend: B | type[B]) -> B:
        """Add a backend after the built-ins; a scheme that another backend has already is refused."""
        instance = backend() if isinstance(backend, type) else backend
        taken = {s for b in self.each() for s in b.schemes} & set(instance.schemes)
        if taken:
            raise ValueError(f"{type(instance).__name__}: the {self.kind} scheme(s) {sorted(taken)} already have a backend.")
        with self._lock:
            self._loaded.append(instance)
        return instance

    def each(self) -> Iterator[B]:
        index = 0
        while True:
            with self._lock:
                if index >= len(self._loaded):
                    if not self._pending:
                        return
                    self._loaded.append(_import(self._pending.pop(0))())
                backend = self._loaded[index]
            yield backend
            index += 1

    def find(self, url: str) -> B | None:
        scheme = url_scheme(url)
        return next((b for b in self.each() if scheme in b.schemes), None)

    def get(self, url: str, where: str) -> B:
        """The backend of `url`, or ConfigError (starting with `where`) naming the forms to use."""
        backend = self.find(url)
        if backend is None:
            raise ConfigError(self._unknown.format(where=where, scheme=url_scheme(url), forms=self.forms()))
        return backend

    def forms(self) -> str:
        examples = [e for b in self.each() for e in b.examples]
        return ", ".join(examples[:-1]) + " or " + examples[-1] if len(examples) > 1 else "".join(examples)

    def all(self) -> list[B]:
        return list(self.each())


STORES: _Registry[StoreBackend] = _Registry("store", BUILT_IN_STORES, "{where}: unknown scheme {scheme!r}; use {forms}.")
WAREHOUSES: _Registry[WarehouseBackend] = _Registry("warehouse", BUILT_IN_WAREHOUSES, "{where} is not a warehouse URL: use {forms}.")
_ANY_DBT_TARGET = WarehouseBackend()


def register_store(backend: StoreBackend | type[StoreBackend]) -> StoreBackend:
    return STORES.register(backend)


def register_warehouse(backend: WarehouseBackend | type[WarehouseBackend]) -> WarehouseBackend:
    return WAREHOUSES.register(backend)


def store_backend(url: str, where: str = "") -> StoreBackend:
    return STORES.get(url, where or f"location = {url}")


def warehouse_backend(url: str, where: str = "") -> WarehouseBackend:
    return WAREHOUSES.get(url, where or f"warehouse = {url}")


def dbt_backend(target: dict[str, Any]) -> WarehouseBackend:
    """The declaration of the warehouse whose dbt adapter a profile target names (a wrapper such
    as chaos+ hands dbt its inner warehouse's target); the generic checks for an unknown type."""
    kind = target.get("type")
    return next((b for b in WAREHOUSES.each() if b.dbt_type and b.dbt_type == kind), _ANY_DBT_TARGET)


def anchor(kind: str, value: str, base: Path) -> str:
    """`value` (a store or warehouse location) with its relative local path made absolute against `base`."""
    backend = (WAREHOUSES if kind == "warehouse" else STORES).find(value) if value else None
    return backend.anchor(value, base) if backend is not None else anchor_path(value, base)
