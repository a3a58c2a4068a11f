"""Shared fixtures: a clean environment and a workspace with landing, state and warehouse in tmp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import Workspace, clean_env


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ESTORE_* or Slack variable of the developer's shell leaks into a test."""
    kept = clean_env()
    for name in list(os.environ):
        if name not in kept:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "1")


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A workspace in tmp_path, which is also the current directory (so defaults land there)."""
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path)
