#!/usr/bin/env bash
# Installs what the test suite needs beyond Python, on a fresh Debian machine (CI runs as
# root), and fails loudly if it cannot:
#   - Prometheus and promtool (Debian package `prometheus`);
#   - systemd's tools (systemd-analyze, -sysusers, -tmpfiles);
#   - a Docker engine (Debian's docker.io; dockerd is started when none answers);
#   - stress-ng, for `make test-loaded` (the suite beside `stress-ng --cpu 2`);
#   - bubblewrap, which isolates `process` sandboxes (Debian's package);
#   - chromium, which tests/integration/test_console.py drives through Playwright (the
#     system browser: Playwright's own browser download is never used);
#   - for the private engines of tests/private_dockerd.py: containerd, ip (a bridge each)
#     and iptables-save (to check they add no rule);
#   - the local test images, built without any registry (`docker import` of a rootfs):
#       supervisor-test/systemd:bookworm  Debian minbase + systemd + bubblewrap, to boot as
#                                         PID 1 (an image built before bubblewrap was
#                                         added gets the host's bwrap in a new layer);
#       supervisor-test/sandbox:bookworm  the same image, tagged for sandbox tests (sh,
#                                         coreutils' `timeout` for exec deadlines, ps);
#       supervisor-test/deephaven:bookworm  Java 17 + deephaven-server, for the docker
#                                         launch (tests/provision_deephaven_image.sh).
# Idempotent: what is there already is left alone.
set -euo pipefail

SYSTEMD_IMAGE=supervisor-test/systemd:bookworm
SANDBOX_IMAGE=supervisor-test/sandbox:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

have() { command -v "$1" >/dev/null 2>&1; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "provision: need root to $*" >&2
    exit 1
  fi
}

APT_UPDATED=""
apt_install() {
  need_root "install: $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ]; then
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
if ! have dockerd || ! have debootstrap; then
  echo "provision: installing docker.io and debootstrap"
  apt_install docker.io debootstrap
fi

if ! have stress-ng; then
  echo "provision: installing stress-ng (the suite must pass with CPU load beside it)"
  apt_install stress-ng
fi
if ! have chromium; then
  echo "provision: installing chromium (the web console's browser tests drive it headless)"
  apt_install chromium
fi
if ! have bwrap; then
  echo "provision: installing bubblewrap (isolated process sandboxes)"
  apt_install bubblewrap
fi
if ! have containerd || ! have ip || ! have iptables-save; then
  echo "provision: installing containerd, iproute2 and iptables (private test engines)"
  apt_install containerd iproute2 iptables
fi

if ! docker info >/dev/null 2>&1; then
  need_root "start dockerd"
  echo "provision: starting dockerd"
  setsid dockerd >/var/log/supervisor-test-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    echo "provision: dockerd did not come up; its log:" >&2
    tail -20 /var/log/supervisor-test-dockerd.log >&2
    exit 1
  fi
fi

if ! docker image inspect "$SYSTEMD_IMAGE" >/dev/null 2>&1; then
  need_root "debootstrap"
  echo "provision: building $SYSTEMD_IMAGE (debootstrap minbase + systemd, docker import)"
  rootfs=$(mktemp -d /tmp/supervisor-test-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=systemd,systemd-sysv,procps,dbus,bubblewrap \
    bookworm "$rootfs" "$MIRROR" >/tmp/supervisor-test-debootstrap.log 2>&1 \
    || { tail -20 /tmp/supervisor-test-debootstrap.log >&2; exit 1; }
  tar -C "$rootfs" -c . | docker import - "$SYSTEMD_IMAGE" >/dev/null
fi

if ! docker run --rm --entrypoint /bin/sh "$SYSTEMD_IMAGE" -c 'command -v bwrap' >/dev/null 2>&1; then
  echo "provision: adding bwrap to $SYSTEMD_IMAGE (a layer with this host's bubblewrap)"
  layer=$(docker create "$SYSTEMD_IMAGE" /bin/true)
  docker cp "$(command -v bwrap)" "$layer:/usr/bin/bwrap"
  docker commit "$layer" "$SYSTEMD_IMAGE" >/dev/null
  docker rm "$layer" >/dev/null
fi

if ! docker image inspect "$SANDBOX_IMAGE" >/dev/null 2>&1; then
  echo "provision: tagging $SYSTEMD_IMAGE as $SANDBOX_IMAGE"
  docker tag "$SYSTEMD_IMAGE" "$SANDBOX_IMAGE"
fi

# Java 17 + deephaven-server in a rootfs, for the docker-launch tests (~80 s, cached by tag).
bash "$(dirname "$0")/provision_deephaven_image.sh"

promtool --version >/dev/null
systemd-analyze --version >/dev/null
bwrap --version >/dev/null
chromium --version >/dev/null
docker image inspect "$SYSTEMD_IMAGE" "$SANDBOX_IMAGE" >/dev/null
echo "provision: ok (promtool, prometheus, systemd tools, bwrap, docker, $SYSTEMD_IMAGE, $SANDBOX_IMAGE)"
