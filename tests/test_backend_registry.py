"""The backend registry: every backend owns its URL scheme, and nothing else in estore_ops branches on one."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from estore_ops.backends import registry
from estore_ops.backends.registry import StoreBackend, WarehouseBackend
from estore_ops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "estore_ops"
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
STRING_TESTS = {"startswith", "endswith", "removeprefix"}


def _backends() -> list[StoreBackend | WarehouseBackend]:
    return [*registry.STORES.all(), *registry.WAREHOUSES.all()]


def _schemes() -> set[str]:
    return {s for b in _backends() for s in b.schemes if s}


def _backend_files() -> set[Path]:
    """The registry, and each backend's declaration and implementation modules."""
    modules = {"estore_ops.backends.registry"}
    for backend in _backends():
        modules |= {type(backend).__module__, backend.implementation.partition(":")[0]}
    return {ROOT / (m.replace(".", "/") + ".py") for m in modules}


def _names_url_of_a_backend(text: str, schemes: set[str]) -> bool:
    """'gs://', 'duckdb:', 'chaos+': a literal that only a URL of a registered backend starts with."""
    lowered = text.lower()
    return any(lowered.startswith(s) if s.endswith("+") else lowered.startswith(f"{s}:") for s in schemes)


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _strings(e)]
    return []


def scheme_branches(source: str, schemes: set[str]) -> list[str]:
    """Lines of `source` that test a value against a backend's URL scheme: a comparison or a
    startswith() with a URL prefix ("duckdb:", "gs://", "chaos+"), a comparison of something named
    *scheme* with a scheme name ("gs", "file"), or a call of a *_scheme() helper."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare) and any(isinstance(op, COMPARISONS) for op in node.ops):
            operands = [node.left, *node.comparators]
            literals = [s for o in operands for s in _strings(o)]
            about_scheme = any("scheme" in ast.unparse(o) for o in operands if not _strings(o))
            if any(_names_url_of_a_backend(s, schemes) for s in literals) or (
                about_scheme and any(s in schemes for s in literals)
            ):
                found.append(f"{line}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            literals = [s for a in node.args for s in _strings(a)]
            if name in STRING_TESTS and any(_names_url_of_a_backend(s, schemes) for s in literals):
                found.append(f"{line}: {ast.unparse(node)}")
            elif name.endswith("_scheme"):
                found.append(f"{line}: {ast.unparse(node)}")
    return found


def test_the_detector_finds_scheme_branching() -> None:
    schemes = {"duckdb", "bigquery", "gs", "file", "chaos+"}
    source = (
        'if url.startswith("duckdb:"): pass\n'
        'if scheme == "gs": pass\n'
        'if parsed.scheme in ("", "file"): pass\n'
        'if "bigquery://" not in url: pass\n'
        'x = store_scheme(url)\n'
        'if url.startswith(("chaos+gs", "x")): pass\n'
        # not branching on a backend's scheme:
        'help = "use duckdb:///path or gs://bucket"\n'
        'if target.get("type") == "duckdb": pass\n'
        'if parsed.scheme != "pubsub": pass\n'
        'if text.startswith(("{", "[")): pass\n'
    )
    assert [f.split(":")[0] for f in scheme_branches(source, schemes)] == ["1", "2", "3", "4", "5", "6"]


def test_no_module_outside_a_backend_branches_on_a_url_scheme() -> None:
    schemes = _schemes()
    assert {"file", "gs", "duckdb", "bigquery", "chaos+"} <= schemes
    allowed = _backend_files()
    assert all(path.is_file() for path in allowed), allowed
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed:
            continue
        for hit in scheme_branches(path.read_text(encoding="utf-8"), schemes):
            offenders.append(f"{path.relative_to(ROOT)}:{hit}")
    assert not offenders, (
        "Ask the backend (estore_ops.backends.registry) instead of testing URL schemes:\n" + "\n".join(offenders)
    )


def test_each_scheme_has_one_backend_and_each_built_in_suggests_its_form() -> None:
    for backends in (registry.STORES.all(), registry.WAREHOUSES.all()):
        schemes = [s for b in backends for s in b.schemes]
        assert len(schemes) == len(set(schemes)), schemes
    assert registry.STORES.forms() == "a folder path, file:///path or gs://BUCKET/prefix"
    assert registry.WAREHOUSES.forms() == "duckdb:///path.duckdb or bigquery://PROJECT/DATASET"
    assert type(registry.store_backend("/srv/landing")).__name__ == "LocalFolderBackend"
    assert type(registry.store_backend("chaos+gs://b/p?fail=0.1")).__name__ == "ChaosStoreBackend"
    assert type(registry.warehouse_backend("bigquery://p/d?location=EU")).__name__ == "BigQueryBackend"
    assert type(registry.dbt_backend({"type": "duckdb"})).__name__ == "DuckDBBackend"
    with pytest.raises(ConfigError, match=r"^landing = s3://b: unknown scheme 's3'; use a folder path, file:///path or gs://BUCKET/prefix\.$"):
        registry.store_backend("s3://b", "landing = s3://b")


def test_a_registered_backend_is_found_by_its_scheme(tmp_path: Path) -> None:
    """What a new backend does: declare itself, register, and the configuration and open_store use it."""
    from estore_ops.backends.stores import open_store
    from estore_ops.backends.stores.local import LocalFolderStore
    from estore_ops.config import load_settings

    class MemoryBackend(StoreBackend):
        schemes = ("testmem",)
        examples = ("testmem://NAME",)

        def check(self, url: str) -> None:
            if not url.startswith("testmem://") or url == "testmem://":
                raise ConfigError("is malformed: write testmem://NAME.")

        def open(self, url: str, setting: str, **options: object) -> LocalFolderStore:
            return LocalFolderStore(tmp_path / url.removeprefix("testmem://"), role=f"the {setting} folder")

    backend = registry.register_store(MemoryBackend)
    try:
        with pytest.raises(ValueError, match=r"MemoryBackend: the store scheme\(s\) \['testmem'\] already have a backend"):
            registry.register_store(MemoryBackend)
        settings = load_settings({"landing": "testmem://box"}, env={}, cwd=tmp_path)
        assert settings.landing == "testmem://box"  # a URL: not anchored as a path
        assert open_store(settings.landing, "landing").local_root == tmp_path / "box"
        with pytest.raises(ConfigError, match=r"landing = 'testmem://' \(from flag --landing\) is malformed"):
            load_settings({"landing": "testmem://"}, env={}, cwd=tmp_path)
        with pytest.raises(ConfigError, match="gs://BUCKET/prefix or testmem://NAME"):
            load_settings({"landing": "s3://b"}, env={}, cwd=tmp_path)
    finally:
        registry.STORES._loaded.remove(backend)


def test_validating_the_settings_imports_no_backend_implementation(tmp_path: Path) -> None:
    """Start-up checks every location without the client libraries or the DuckDB warehouse module."""
    code = (
        "import sys\n"
        "from estore_ops.config import load_settings\n"
        "load_settings({'landing': 'gs://b/l', 'state': 'gs://b/s', 'warehouse': 'bigquery://my-project/raw?location=EU'}, env={})\n"
        "load_settings({}, env={})\n"
        "heavy = [m for m in sys.modules if m.startswith(('google.cloud.', 'duckdb', 'estore_ops.backends.warehouses.duckdb',"
        " 'estore_ops.backends.warehouses.bigquery', 'estore_ops.backends.stores.gcs', 'estore_ops.testing'))"
        " and not m.endswith('_url')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
