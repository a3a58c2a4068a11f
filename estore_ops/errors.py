"""One error hierarchy; each class carries the exit code the CLI turns it into (in one place: cli.main)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in `estore-ops --help` and the README."""

    OK = 0
    FAILED = 1  # a file, a dbt node or a job failed
    USAGE = 2  # bad command line or configuration
    STATE = 3  # state document conflict or corrupt state
    BACKEND = 4  # a backend is unreachable, missing or refuses access
    UNHEALTHY = 5  # `health`: a heartbeat is stale
    LOCKED = 75  # another run holds the lock (EX_TEMPFAIL: try again later)
    INTERRUPTED = 130


EXIT_CODE_HELP = (
    "Exit codes: 0 ok; 1 a file or job failed; 2 usage or configuration error; "
    "3 state conflict or corrupt state; 4 backend unreachable or access denied, or a fault of the machine "
    "(disk full, read-only folder, out of memory); "
    "5 unhealthy (stale heartbeat); 75 another run holds the lock; 130 interrupted."
)


class EstoreError(Exception):
    """Base of every error estore-ops reports to a user. The message says what, where and how to fix."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(EstoreError):
    exit_code = ExitCode.USAGE


class UsageError(ConfigError):
    """The command's own arguments are wrong (e.g. `load --file notes.txt`): nothing ran, so no run
    is recorded and no alert is sent."""


class MissingExtraError(ConfigError):
    """A backend needs an optional dependency group that is not installed."""


class StateError(EstoreError):
    exit_code = ExitCode.STATE


class StateConflictError(StateError):
    """A compare-and-swap write lost against a concurrent writer."""


class CorruptStateError(StateError):
    """The state document cannot be read back."""


class BackendError(EstoreError):
    exit_code = ExitCode.BACKEND


class TransientBackendError(BackendError):
    """A failure worth retrying (429, 5xx, connection reset).

    `exhausted` is True once the retry policy gave up on it (or it is a longer-term limit): an
    outer layer must not retry it again; the next run does.
    """

    def __init__(self, message: str = "", exhausted: bool = False) -> None:
        super().__init__(message)
        self.exhausted = exhausted


class EnvironmentFaultError(BackendError):
    """A problem of the place, not of any file: a full disk, a read-only or unwritable folder, out of
    memory, a lock held by another program, an I/O error. The run stops at once (exit 4), no attempt
    is counted against any file, and the message names the path and what to free or fix
    (`estore_ops.backends.environment` builds these)."""

    def __init__(self, message: str, path: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.path = path  # the file or folder the machine refused
        self.kind = kind  # disk_full, read_only, permission, memory, lock, io, file_size, open_files


class ObjectNotFoundError(BackendError):
    """The named object does not exist."""


class PreconditionFailedError(BackendError):
    """A conditional write or delete found another generation."""


class UnsafeNameError(ConfigError):
    """An object name escapes the store root."""


class MissingTableError(EstoreError):
    """A query named a table the warehouse does not have (e.g. the marts before the first transform)."""


class LoadError(EstoreError):
    """A file could not be loaded. Only that file fails; the run goes on."""


class UnreadableEntryError(LoadError):
    """A landing entry cannot be opened (a dangling or looping link, no read permission): that entry
    fails alone and is retried, then quarantined, like a file with bad data."""


class JobFailedError(EstoreError):
    """A job finished with failures (files, dbt nodes); details are in its result."""


class LockHeldError(EstoreError):
    exit_code = ExitCode.LOCKED


class LockLostError(EstoreError):
    """The run lock was taken by another run while this one worked (its lease was not renewed)."""


class UnhealthyError(EstoreError):
    exit_code = ExitCode.UNHEALTHY


class StoppedError(EstoreError):
    """A job stopped by SIGTERM/SIGINT (e.g. systemd's timeout) after cleaning up."""

    exit_code = ExitCode.INTERRUPTED


class UpgradeRequiredError(EstoreError):
    """A deployment of an earlier version needs a change no job makes on its own; the message names the command."""
