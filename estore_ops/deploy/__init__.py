"""Deployment helpers: render, install and inspect the systemd units that drive estore-ops on a VM."""

from estore_ops.deploy.systemd import (
    DEFAULT_CREDENTIAL_FILE,
    DEFAULT_ENV_FILE,
    DEFAULT_STATE_DIR,
    DEFAULT_UNIT_DIR,
    DEFAULT_USER,
    DEFAULT_WORK_DIR,
    DeployError,
    InstallResult,
    TimerStatus,
    default_exe,
    install,
    installed_units,
    render_units,
    status,
)

__all__ = [
    "DEFAULT_CREDENTIAL_FILE",
    "DEFAULT_ENV_FILE",
    "DEFAULT_STATE_DIR",
    "DEFAULT_UNIT_DIR",
    "DEFAULT_USER",
    "DEFAULT_WORK_DIR",
    "DeployError",
    "InstallResult",
    "TimerStatus",
    "default_exe",
    "install",
    "installed_units",
    "render_units",
    "status",
]
