#!/usr/bin/env bash
# Builds the local Deephaven server image for the docker-launch tests, without a registry:
# a debootstrap'd Debian bookworm rootfs with Java 17 and Python, `deephaven-server`
# pip-installed into a venv inside it (same version as ours), then `docker import`.
# It offers the interface of ghcr.io/deephaven/server that the daemon uses: a server on
# 0.0.0.0:10000 (the embedded `deephaven_server.Server`), JVM arguments from $START_OPTS,
# and its configuration in DEEPHAVEN_CONFIG_DIR=/opt/deephaven/config, whose deephaven.prop
# (Deephaven's defaults plus the console type, as in the official image) a deployment
# replaces by mounting its own; that is how the daemon hands over a PSK.
# Cached by tag and REVISION (a label): an image of another revision is rebuilt.
# Needs root, docker, debootstrap, a reachable Debian mirror and the host's pip index.
set -euo pipefail

IMAGE=${DEEPHAVEN_TEST_IMAGE:-supervisor-test/deephaven:bookworm}
REVISION=2  # bump when the image's interface changes
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$HERE/.venv/bin/python}

label='{{index .Config.Labels "supervisor-test.revision"}}'
if [ "$(docker image inspect --format "$label" "$IMAGE" 2>/dev/null)" = "$REVISION" ]; then
  echo "provision: $IMAGE is there"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "provision: need root to debootstrap $IMAGE" >&2
  exit 1
fi

version=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("deephaven-server"))')
rootfs=$(mktemp -d /tmp/supervisor-test-dh-rootfs.XXXXXX)
log=/tmp/supervisor-test-dh-build.log
cleanup() {
  umount "$rootfs/proc" 2>/dev/null || true
  rm -rf "$rootfs"
}
trap cleanup EXIT

echo "provision: building $IMAGE r$REVISION (bookworm + Java 17 + deephaven-server $version)"
debootstrap --variant=minbase \
  --include=openjdk-17-jre-headless,python3,python3-venv,libpython3.11,ca-certificates \
  bookworm "$rootfs" "$MIRROR" >"$log" 2>&1 \
  || { tail -20 "$log" >&2; exit 1; }

# Wheels come through the host's pip (its index, proxy and CA settings); the chroot
# installs them offline, with a clean environment.
mkdir -p "$rootfs/tmp/wheels" "$rootfs/opt/deephaven"
"$PYTHON" -m pip download -q --only-binary=:all: -d "$rootfs/tmp/wheels" \
  "deephaven-server==$version" >>"$log" 2>&1 \
  || { tail -20 "$log" >&2; exit 1; }
mount -t proc proc "$rootfs/proc"
chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin python3 -m venv /opt/deephaven/venv
chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /opt/deephaven/venv/bin/pip install \
  -q --no-index --find-links /tmp/wheels "deephaven-server==$version" >>"$log" 2>&1 \
  || { tail -20 "$log" >&2; exit 1; }
umount "$rootfs/proc"
rm -rf "$rootfs/tmp/wheels"

mkdir -p "$rootfs/opt/deephaven/config"
cat >"$rootfs/opt/deephaven/config/deephaven.prop" <<'PROP'
includefiles=dh-defaults.prop

deephaven.console.type=python
PROP
cat >"$rootfs/opt/deephaven/server.py" <<'PY'
# The server, its JVM arguments in argv; alive until signalled (the JVM runs with -Xrs).
import sys
import threading

from deephaven_server import Server

Server(host="0.0.0.0", port=10000, jvm_args=sys.argv[1:]).start()
threading.Event().wait()
PY
cat >"$rootfs/opt/deephaven/start.sh" <<'SH'
#!/bin/sh
# START_OPTS: JVM arguments split on whitespace, as ghcr.io/deephaven/server takes them.
exec /opt/deephaven/venv/bin/python /opt/deephaven/server.py $START_OPTS
SH
chmod 0755 "$rootfs/opt/deephaven/start.sh"

tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/opt/deephaven/start.sh"]' \
  --change 'EXPOSE 10000' \
  --change 'ENV DEEPHAVEN_CONFIG_DIR=/opt/deephaven/config' \
  --change "LABEL supervisor-test.revision=$REVISION" \
  - "$IMAGE" >/dev/null
echo "provision: ok ($IMAGE r$REVISION)"
