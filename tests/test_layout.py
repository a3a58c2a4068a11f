"""The package tree reads as the architecture (README, "Architecture"): modules live in groups
(ingest/, backends/, ops/, analytics/, deploy/, testing/, ...), each group says in its __init__
docstring what it is for, and only the few modules every group shares sit at the top. A new module
at the top of estore_ops/ fails here: put it in the group whose job it does."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "estore_ops"

# The CLI, the library's entry points (jobs) and what every group shares.
TOP_LEVEL = {"cli", "jobs", "config", "runtime", "errors", "schema", "logs", "output", "redact", "__init__", "__main__"}
README = PACKAGE.parent / "README.md"


def _python_folders() -> list[Path]:
    """Every folder under estore_ops/ that holds Python modules (templates and data folders hold none)."""
    return sorted({p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts} - {PACKAGE})


def test_every_group_is_a_package_that_says_what_it_is_for() -> None:
    missing, undocumented = [], []
    for folder in _python_folders():
        init = folder / "__init__.py"
        name = folder.relative_to(PACKAGE.parent).as_posix()
        if not init.exists():
            missing.append(name)
        elif not (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "").strip():
            undocumented.append(name)
    assert not missing, f"folders of modules without an __init__.py: {missing}"
    assert not undocumented, f"packages whose __init__.py has no docstring saying what the group is for: {undocumented}"


def test_only_the_shared_modules_sit_at_the_top_of_the_package() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    stray = sorted(top - TOP_LEVEL)
    assert not stray, (
        f"modules at the top of estore_ops/: {stray}. Move each into the group whose job it does "
        "(ingest/, backends/, ops/, analytics/, deploy/, testing/), or, if every group shares it, "
        "add it to TOP_LEVEL in this test and to the README's architecture section."
    )


def _architecture_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Architecture"):]
    return section[section.index("```text"):section.index("```", section.index("```text") + 3)]


def test_the_readme_shows_the_tree_as_it_is_in_about_ten_lines() -> None:
    block = _architecture_block()
    groups = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    shared = sorted(f"{name}.py" for name in TOP_LEVEL - {"__init__", "__main__"} if (PACKAGE / f"{name}.py").exists())
    assert [g for g in groups if f"{g}/" not in block] == [], "a group the README's architecture block does not show"
    assert [m for m in shared if m not in block] == [], "a shared module the README's architecture block does not name"
    layers = sorted(p.name for p in (PACKAGE.parent / "dbt" / "models").iterdir() if p.is_dir())
    assert [layer for layer in layers if f"{layer}/" not in block] == [], "a dbt layer the README does not show"
    assert len(block.splitlines()) <= 13  # the fence, the root and one line a group: a glance, not a listing
