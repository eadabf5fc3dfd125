#!/usr/bin/env bash
# Installs what the test suite needs beyond Python, on a fresh Debian machine (CI runs as
# root): Prometheus and promtool (Debian package `prometheus`). Idempotent; fails loudly.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "provision: need root to install: $*" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -q >/dev/null
    APT_UPDATED=1
  fi
  apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

if ! have promtool || ! have prometheus; then
  echo "provision: installing prometheus (prometheus, promtool)"
  apt_install prometheus
fi
if ! have systemd-analyze || ! have systemd-sysusers; then
  echo "provision: installing systemd (systemd-analyze, sysusers, tmpfiles)"
  apt_install systemd
fi
# The Debian package enables a service; under a real systemd it would hold port 9090.
# Tests start their own server on a free port, so a running one is harmless but unneeded.

promtool --version >/dev/null
prometheus --version >/dev/null 2>&1
systemd-analyze --version >/dev/null
echo "provision: ok (promtool, prometheus, systemd-analyze)"
