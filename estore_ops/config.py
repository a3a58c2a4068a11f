"""Settings, resolved as: command-line flag > ESTORE_* environment variable > estore-ops.toml > default.

Every value remembers where it came from, so `estore-ops config` can show it. Secrets are kept in
`Secret` wrappers whose repr and str are masked.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from estore_ops.errors import ConfigError
from estore_ops.backends.stores.base import has_pattern_characters

CONFIG_FILE_NAME = "estore-ops.toml"
ENV_PREFIX = "ESTORE_"


class Secret:
    """A string that never shows itself in repr, str, logs or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Field:
    name: str
    default: Any
    kind: type  # str, int, float, bool or Secret
    help: str
    path_like: bool = False  # relative values in a config file are relative to that file
    url: str = ""  # "store" or "warehouse": a location URL, validated by the backend of its scheme
    extra_env: tuple[str, ...] = ()  # conventional variable names also accepted (lower precedence)


FIELDS: tuple[Field, ...] = (
    Field("landing", "./data/landing", str, "Landing area: a folder, file:///path or gs://bucket/prefix.", path_like=True, url="store"),
    Field("warehouse", "duckdb:///./data/warehouse.duckdb", str, "Warehouse: duckdb:///path.duckdb or bigquery://project/dataset?location=US.", path_like=True, url="warehouse"),
    Field("keyfile", "", str, "Google service-account key file for Cloud Storage, BigQuery and dbt alike (empty: Application Default Credentials).", path_like=True),
    Field("max_bytes_billed", "100GB", str, "BigQuery: the most one query job may bill (estore-ops' and dbt's), e.g. 100GB or 2TB; 0 for no cap."),
    Field("job_timeout_seconds", 1800, int, "BigQuery: how long one job (a load, a commit, a dbt model) may run before the run gives up on it."),
    Field("state", "./data/state", str, "State location (cursor, lock, runs): a folder or gs://bucket/prefix.", path_like=True, url="store"),
    Field("work_dir", "./data/work", str, "Local scratch folder (dbt target, downloads).", path_like=True),
    Field("dbt_project_dir", "", str, "The dbt project folder (empty: the one shipped with estore-ops).", path_like=True),
    Field("max_attempts", 3, int, "Failed loads of one file version before it is quarantined."),
    Field("load_memory_limit", "auto", str, "DuckDB memory limit of the load connection: auto (64MB per DuckDB thread, at least 512MB), a size like 2GB, or empty (DuckDB's default, 80% of RAM)."),
    Field("load_batch_mb", 256, int, "Small files that arrive together load in one DuckDB transaction, up to this many MB (0: one transaction per file)."),
    Field("state_checkpoint_seconds", 1.0, float, "Write loaded files to the state at most this often (0: after every file)."),
    Field("lock_lease_seconds", 600, int, "Run lock lease; the holder renews it, others may take it over once expired."),
    Field("runs_keep", 200, int, "How many recent runs the run history keeps."),
    Field("dbt_artifacts_keep", 5, int, "How many dbt runs' artifacts are kept under the state location."),
    Field("slack_webhook_url", Secret(""), Secret, "Slack incoming-webhook URL (secret).", extra_env=("SLACK_WEBHOOK_URL",)),
    Field("slack_bot_token", Secret(""), Secret, "Slack bot token (secret); or a systemd credential named slack_token.", extra_env=("SLACK_BOT_TOKEN",)),
    Field("slack_channel", "", str, "Slack channel for the bot token, e.g. #data-alerts."),
    Field("slack_api_url", "", str, "Slack Web API base URL override (tests)."),
    Field("alert_dedup_minutes", 60, int, "Identical failures are not re-sent within this window."),
    Field("health_ingest_max_age", 900, int, "Seconds after which the ingest heartbeat is stale."),
    Field("health_transform_max_age", 93600, int, "Seconds after which the transform heartbeat is stale."),
    Field("health_snapshot_max_age", 691200, int, "Seconds after which the snapshot heartbeat is stale."),
    Field("log_format", "auto", str, "auto (text on a terminal, JSON lines otherwise), text or json."),
    # watch --events (estore_ops.ingest.events)
    Field("notifications", "", str, "Where `watch --events` hears about new landing files on GCS: pubsub://PROJECT/SUBSCRIPTION (a local landing folder is watched by the OS)."),
    Field("gather_window", 1.0, float, "watch --events: seconds to gather arrivals that come close together into one load."),
    Field("catchup_interval", 600, int, "watch --events: seconds between catch-up scans of the whole landing area (a lost notification waits at most this long)."),
    Field("transform_min_interval", 900, int, "watch --events: at most one transform per this many seconds while files keep arriving."),
    Field("transform_quiet_period", 60, int, "watch --events: one more transform once no file has loaded for this many seconds."),
)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class Settings:
    values: dict[str, Any]
    sources: dict[str, str]
    config_file: Path | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def describe(self) -> list[dict[str, str]]:
        """Each value with its origin, secrets masked: for `estore-ops config`."""
        out = []
        for f in FIELDS:
            value = self.values[f.name]
            if isinstance(value, Secret):
                shown = "****" if value else ""
            else:
                shown = value
            out.append({"key": f.name, "value": shown, "source": self.sources[f.name], "help": f.help})
        return out

    def with_overrides(self, **overrides: Any) -> Settings:
        values = {**self.values, **overrides}
        sources = {**self.sources, **{k: "override" for k in overrides}}
        return Settings(values, sources, self.config_file)


def _coerce(f: Field, raw: Any, origin: str) -> Any:
    try:
        if f.kind is Secret:
            if isinstance(raw, Secret):
                return raw
            if not isinstance(raw, str):
                raise TypeError
            return Secret(raw)
        if f.kind is int:
            if isinstance(raw, bool):
                raise TypeError
            value = int(raw)
            if value < 0:
                raise ValueError
            return value
        if f.kind is float:
            if isinstance(raw, bool):
                raise TypeError
            number = float(raw)
            if number < 0 or number != number:
                raise ValueError
            return number
        if f.kind is bool:
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        if not isinstance(raw, str):
            raise TypeError
        return raw
    except (TypeError, ValueError):
        kind = {int: "a non-negative whole number", float: "a non-negative number"}.get(f.kind, "a string")
        raise ConfigError(f"{f.name} from {origin} must be {kind}, got {raw!r}.") from None


def _anchor(f: Field, value: str, base: Path) -> str:
    """Make a relative path (or the relative path inside a location URL) absolute against `base`."""
    from estore_ops.backends import registry

    return registry.anchor(f.url, value, base) if f.url else registry.anchor_path(value, base)


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}


def parse_size(text: str) -> int:
    """'100GB' -> 100_000_000_000 (KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def validate_location(f: Field, value: str, origin: str) -> None:
    """Raise ConfigError for a location that no backend would accept (no backend SDK is imported)."""
    from estore_ops.backends import registry

    where = f"{f.name} = {value!r} (from {origin})"
    if not value:
        raise ConfigError(f"{where} is empty: give a folder path or a URL.")
    backends = registry.WAREHOUSES if f.url == "warehouse" else registry.STORES
    backends.get(value, where).validate(value, where)


_PROJECT_RE = re.compile(r"^[a-z][a-z0-9.:-]{3,61}[a-z0-9]$")
# Pub/Sub resource names: 3-255 characters, a letter first, then letters, digits and - _ . ~ + %.
_SUBSCRIPTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.~+%-]{2,254}$")


def validate_notifications(value: str, origin: str) -> None:
    """`pubsub://PROJECT/SUBSCRIPTION`: the subscription `watch --events` pulls bucket notifications from."""
    where = f"notifications = {value!r} (from {origin})"
    parsed = urlparse(value)
    if parsed.scheme != "pubsub":
        raise ConfigError(f"{where} is not a Pub/Sub subscription: write pubsub://PROJECT/SUBSCRIPTION.")
    subscription = parsed.path.strip("/")
    if not _PROJECT_RE.match(parsed.netloc) or parsed.query:
        raise ConfigError(f"{where}: {parsed.netloc!r} is not a project id; write pubsub://PROJECT/SUBSCRIPTION.")
    if not _SUBSCRIPTION_RE.match(subscription) or subscription.startswith("goog"):
        raise ConfigError(
            f"{where}: {subscription!r} is not a subscription name (3-255 letters, digits or - _ . ~ + %, "
            "starting with a letter, not with 'goog'); write pubsub://PROJECT/SUBSCRIPTION."
        )


def find_config_file(explicit: str | os.PathLike[str] | None, cwd: Path | None = None) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist: check --config / ESTORE_CONFIG.")
        return path.resolve()
    candidate = (cwd or Path.cwd()) / CONFIG_FILE_NAME
    return candidate.resolve() if candidate.is_file() else None


def _read_file(path: Path) -> dict[str, Any]:
    import tomllib  # only when there is a file: off the start-up path of every timer tick

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file or pass another with --config.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from None
    # Allow keys at the top level or under an [estore-ops] table.
    section = data.pop("estore-ops", None)
    if isinstance(section, dict):
        data = {**data, **section}
    for key in data:
        if key not in FIELDS_BY_NAME:
            known = ", ".join(f.name for f in FIELDS)
            raise ConfigError(f"Unknown key {key!r} in {path}. Known keys: {known}.")
    return data


def load_settings(
    flags: dict[str, Any] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve every setting. `flags` holds command-line values (None means not given)."""
    env = dict(os.environ) if env is None else env
    cwd = cwd or Path.cwd()
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    for key in flags:
        if key not in FIELDS_BY_NAME:
            raise ConfigError(f"Unknown setting {key!r}.")
    explicit = config_file or env.get(f"{ENV_PREFIX}CONFIG")
    path = find_config_file(explicit, cwd)
    file_values = _read_file(path) if path else {}
    for name in env:
        if name.startswith(ENV_PREFIX) and name != f"{ENV_PREFIX}CONFIG":
            key = name[len(ENV_PREFIX):].lower()
            if key not in FIELDS_BY_NAME and not key.startswith("_") and key not in _RESERVED_ENV:
                raise ConfigError(
                    f"Unknown environment variable {name}. Known: "
                    + ", ".join(f"{ENV_PREFIX}{f.name.upper()}" for f in FIELDS)
                    + "."
                )

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f in FIELDS:
        env_name = f"{ENV_PREFIX}{f.name.upper()}"
        if f.name in flags:
            raw, origin, base = flags[f.name], f"flag --{f.name.replace('_', '-')}", cwd
        elif env_name in env:
            raw, origin, base = env[env_name], f"env {env_name}", cwd
        elif f.name in file_values:
            raw, origin, base = file_values[f.name], f"file {path}", path.parent  # type: ignore[union-attr]  # file_values is empty when path is None
        elif any(e in env for e in f.extra_env):
            name = next(e for e in f.extra_env if e in env)
            raw, origin, base = env[name], f"env {name}", cwd
        else:
            raw, origin, base = f.default, "default", cwd
        value = _coerce(f, raw, origin)
        if f.path_like and isinstance(value, str):
            value = _anchor(f, value, base)
        if f.url:
            validate_location(f, value, origin)
        values[f.name] = value
        sources[f.name] = origin
    limit = values["load_memory_limit"]
    if limit and limit != "auto" and not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", limit, re.I):
        raise ConfigError(
            f"load_memory_limit from {sources['load_memory_limit']} must be auto or a size like 512MB or 2GB, got {limit!r}."
        )
    if has_pattern_characters(values["work_dir"]):
        raise ConfigError(
            f"work_dir from {sources['work_dir']} is {values['work_dir']!r}, which contains one of * ? [ ] {{ }}: "
            "DuckDB's reader would take those as a file pattern. Choose a folder without them."
        )
    if values["notifications"]:
        validate_notifications(values["notifications"], sources["notifications"])
    try:
        parse_size(values["max_bytes_billed"])
    except ValueError:
        raise ConfigError(
            f"max_bytes_billed from {sources['max_bytes_billed']} must be a size like 100GB or 2TB (0: no cap), "
            f"got {values['max_bytes_billed']!r}."
        ) from None
    _keyfile_from_warehouse_url(values, sources)
    if values["log_format"] not in ("auto", "text", "json"):
        raise ConfigError(f"log_format from {sources['log_format']} must be auto, text or json, got {values['log_format']!r}.")
    return Settings(values, sources, path)


def _keyfile_from_warehouse_url(values: dict[str, Any], sources: dict[str, str]) -> None:
    """`bigquery://...&keyfile=PATH` (the older spelling) sets the one keyfile setting, which
    Cloud Storage and dbt use too; a different keyfile setting beside it is an error."""
    from estore_ops.backends.registry import warehouse_backend

    url = values["warehouse"]
    in_url = warehouse_backend(url).keyfile(url)
    if not in_url:
        return
    if values["keyfile"] and values["keyfile"] != in_url:
        raise ConfigError(
            f"keyfile from {sources['keyfile']} ({values['keyfile']}) differs from keyfile= in the warehouse URL "
            f"(from {sources['warehouse']}, {in_url}). Keep one: the keyfile setting serves Cloud Storage, BigQuery and dbt."
        )
    if not values["keyfile"]:
        values["keyfile"], sources["keyfile"] = in_url, f"keyfile= in the warehouse URL ({sources['warehouse']})"


# ESTORE_* variables that are not settings: drill hooks (estore_ops.testing.faults), the test tools folder,
# and the run id estore-ops hands to dbt (estore_ops.analytics.transform.RUN_ID_ENV).
_RESERVED_ENV = {"fault_point", "pause_point", "drop_point", "tools_dir", "run_id"}

