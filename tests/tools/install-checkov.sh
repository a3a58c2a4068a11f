#!/usr/bin/env bash
# Installs checkov (the Terraform policy scanner used by tests/test_terraform.py) into its own
# virtual environment, $1/checkov-venv, so its pinned dependencies never touch the project's .venv.
# Idempotent: does nothing when a working checkov is already there.
# Usage: bash tests/tools/install-checkov.sh TOOLS_DIR   (TOOLS_DIR defaults to .tools)
set -euo pipefail
tools="${1:-.tools}"
mkdir -p "$tools"
venv="$(cd "$tools" && pwd)/checkov-venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 DO_NOT_TRACK=1

if [ -x "$venv/bin/checkov" ] && "$venv/bin/checkov" --version >/dev/null 2>&1; then
  echo "checkov: already installed ($("$venv/bin/checkov" --version)) in $venv"
  exit 0
fi

python="${PYTHON:-python3}"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q 'checkov>=3.2,<4'
echo "checkov: installed $("$venv/bin/checkov" --version) in $venv"
