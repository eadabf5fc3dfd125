#!/usr/bin/env bash
# Builds the local Deephaven server image for the docker-launch tests, without a registry:
# a debootstrap'd Debian bookworm rootfs with Java 17 and Python, `deephaven-server`
# pip-installed into a venv inside it (same version as ours), then `docker import`.
# The image runs the same server script as the python launch (supervisor.launchers.
# deephaven.SERVER_SCRIPT) on 0.0.0.0:10000 with the JVM arguments from $START_OPTS, as
# ghcr.io/deephaven/server does (the PSK too, as -Dauthentication.psk=...). Cached by tag: nothing happens if the image exists.
# Needs root, docker, debootstrap, a reachable Debian mirror and the host's pip index.
set -euo pipefail

IMAGE=${DEEPHAVEN_TEST_IMAGE:-supervisor-test/deephaven:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$HERE/.venv/bin/python}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
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

echo "provision: building $IMAGE (bookworm + Java 17 + deephaven-server $version)"
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

"$PYTHON" -c 'from supervisor.launchers.deephaven import SERVER_SCRIPT; print(SERVER_SCRIPT)' \
  >"$rootfs/opt/deephaven/server.py"
cat >"$rootfs/opt/deephaven/start.sh" <<'SH'
#!/bin/sh
# START_OPTS (split on whitespace: a list of JVM arguments) as ghcr.io/deephaven/server
# takes it; the PSK moves to the environment so that it is in no command line.
opts=""
for opt in $START_OPTS; do
  case "$opt" in
    -Dauthentication.psk=*) SUPERVISOR_DEEPHAVEN_PSK="${opt#-Dauthentication.psk=}" ;;
    *) opts="$opts $opt" ;;
  esac
done
export SUPERVISOR_DEEPHAVEN_PSK
exec /opt/deephaven/venv/bin/python /opt/deephaven/server.py 0.0.0.0 10000 $opts
SH
chmod 0755 "$rootfs/opt/deephaven/start.sh"

tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/opt/deephaven/start.sh"]' \
  --change 'EXPOSE 10000' \
  - "$IMAGE" >/dev/null
echo "provision: ok ($IMAGE)"
