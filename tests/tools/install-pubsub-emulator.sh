#!/usr/bin/env bash
# Makes sure Google's Pub/Sub emulator can run here (tests/test_events_gcp.py starts it with
# `gcloud beta emulators pubsub start`): the Google Cloud CLI with its pubsub-emulator component,
# from the google-cloud-cli-pubsub-emulator Debian package, and a Java runtime (17 or newer) for it.
# Idempotent: installs with apt-get only what is missing. Usage: bash install-pubsub-emulator.sh [TOOLS_DIR]
set -euo pipefail

emulator_installed() {
  command -v gcloud >/dev/null 2>&1 || return 1
  local root  # SDK_ROOT/bin/gcloud -> SDK_ROOT
  root="$(dirname "$(dirname "$(readlink -f "$(command -v gcloud)")")")"
  [ -x "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ]
}

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local major
  major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [ -n "$major" ] && [ "$major" -ge 17 ]
}

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "pubsub emulator: missing $*; install it as root: apt-get install -y $*" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

export CLOUDSDK_CORE_DISABLE_PROMPTS=1 CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1
if ! java_ok; then
  echo "pubsub emulator: installing a Java 17 runtime"
  apt_install openjdk-17-jre-headless
fi
if ! emulator_installed; then
  echo "pubsub emulator: installing google-cloud-cli-pubsub-emulator"
  apt_install google-cloud-cli google-cloud-cli-pubsub-emulator
fi
emulator_installed || { echo "pubsub emulator: still not found after installing it" >&2; exit 1; }
echo "pubsub emulator: $(gcloud --version 2>/dev/null | head -1), java $(java -version 2>&1 | head -1)"
