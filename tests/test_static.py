"""Static check of the shipped code: a name used but never defined (a lost import after a merge, a
typo on an error path) only fails when that path runs, often on a user's machine. pyflakes finds
it without running anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_and_the_benchmarks_have_no_undefined_or_unused_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pyflakes", "estore_ops", "bench"], cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, f"pyflakes found:\n{result.stdout}{result.stderr}"
