"""A private Docker engine for tests: its own dockerd, containerd, bridge and directories.

Tests that stop, restart or reconfigure an engine use one of these, never the machine's
own (on a workstation that would kill every other container). Each engine lives under
/tmp/svtd-<random>/ and owns:

- its dockerd, with its own data-root, exec-root, pidfile, config file (not
  /etc/docker/daemon.json) and unix socket (`host`);
- its own containerd (config, root, state and socket under the same directory). Left to
  itself dockerd would use the system containerd whenever /run/containerd/containerd.sock
  exists (Docker CE's containerd.service), sharing its "moby" namespace with the host's
  engine; the private one outlives dockerd restarts, as a containerd.service does;
- its own bridge `svtd<slot>` on 10.199.<slot>.0/24: not `--bridge=none`, because dockerd
  then deletes docker0 (the host's bridge: removeDefaultBridgeInterface), and containers
  on the default network need a bridge. No --default-address-pool either: newer dockerds
  also delete docker0 on restart when one is set;
- no iptables rules, no ip_forward or masquerade: containers reach the host, nothing else.

Readiness and exits are events, not polls: both daemons are started with NOTIFY_SOCKET
(they send READY=1 once they serve), and exits are awaited on a pidfd. Whatever the test
did, `close()` removes containers and user networks, stops both daemons, kills anything
left that names the directory, unmounts what is mounted under it, deletes the bridge and
the directory. `sweep_stale()` does the same for engines whose test run died (owner file).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# Short on purpose: dockerd binds <exec-root>/libnetwork/<64 hex>.sock, and a unix socket
# path holds 108 bytes, so the exec-root must stay under ~26 characters.
TMP = Path("/tmp")
PREFIX = "svtd-"
SUBNETS = ipaddress.IPv4Network("10.199.0.0/16")  # one /24 per engine, by bridge slot
BRIDGE = "svtd{}"
START_TIMEOUT = 180.0  # generous: the machine is loaded
STOP_TIMEOUT = 120.0  # dockerd stops its containers first (their stop timeouts, at most 15 s)


class EngineError(RuntimeError):
    """A private engine did not start or stop as asked."""


class PrivateDockerd:
    """One private engine: `create()` starts it; `stop`, `start`, `restart`; `close()` ends it."""

    def __init__(self, base: Path, bridge: str, subnet: ipaddress.IPv4Network) -> None:
        self.base = base
        self.bridge = bridge
        self.subnet = subnet
        self._dockerd: subprocess.Popen[bytes] | None = None
        self._containerd: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0  # how long the last start() took
        self.load_seconds = 0.0  # how long the last load() took

    @classmethod
    def create(cls) -> PrivateDockerd:
        """Claim a directory, a bridge and a subnet, and start the engine on them."""
        TMP.mkdir(exist_ok=True)
        while True:
            base = TMP / f"{PREFIX}{secrets.token_hex(4)}"
            with contextlib.suppress(FileExistsError):
                base.mkdir(mode=0o711)
                break
        # (the mode of a new directory is masked by umask; dockerd needs o+x on its root)
        base.chmod(0o711)
        (base / "owner").write_text(process_identity(os.getpid()))
        try:
            bridge, subnet = _claim_bridge(base)
            engine = cls(base, bridge, subnet)
            engine._write_configs()
            engine.start()
        except BaseException:
            purge(base)
            raise
        return engine

    @property
    def socket(self) -> Path:
        return self.base / "docker.sock"

    @property
    def host(self) -> str:
        """The engine's URL, for DOCKER_HOST or a config's `docker_host`."""
        return f"unix://{self.socket}"

    @property
    def dockerd_pid(self) -> int | None:
        return self._dockerd.pid if self._dockerd is not None else None

    @property
    def containerd_pid(self) -> int | None:
        return self._containerd.pid if self._containerd is not None else None

    def _write_configs(self) -> None:
        b = self.base
        (b / "containerd.toml").write_text(
            "version = 2\n"
            f'root = "{b}/containerd/root"\n'
            f'state = "{b}/containerd/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{b}/containerd.sock"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
            # default /opt/containerd is the host's
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{b}/containerd/opt"\n'
        )
        # Its own config file, so the host's /etc/docker/daemon.json is not read; its own
        # key, so its engine ID differs from the host's (dockerd 20.10; later ones ignore
        # the key and keep the ID in the data-root).
        (b / "daemon.json").write_text(json.dumps({"deprecated-key-path": f"{b}/key.json"}))

    def _dockerd_argv(self) -> list[str]:
        b = self.base
        return [
            "dockerd",
            f"--config-file={b}/daemon.json",
            f"--data-root={b}/data",
            f"--exec-root={b}/e",
            f"--pidfile={b}/dockerd.pid",
            f"--host={self.host}",
            f"--containerd={b}/containerd.sock",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--log-level=info",
        ]

    def start(self) -> None:
        """Start containerd (unless it runs) and dockerd; return once dockerd serves."""
        if self._dockerd is not None:
            raise EngineError(f"{self.base}: dockerd already runs")
        began = time.monotonic()
        if self._containerd is None:
            argv = ["containerd", f"--config={self.base}/containerd.toml"]
            self._containerd = self._spawn("containerd", argv)
            (self.base / "containerd.pid").write_text(str(self._containerd.pid))
        self._dockerd = self._spawn("dockerd", self._dockerd_argv())
        self.start_seconds = time.monotonic() - began

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start `argv` with a notify socket; return once it sent READY=1."""
        notify_path = self.base / f"{name}.notify"
        notify_path.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["NOTIFY_SOCKET"] = str(notify_path)
        log = self.base / f"{name}.log"
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
            log.open("ab") as out,
        ):
            notify.bind(str(notify_path))
            # Its own session: a ^C at the terminal reaches pytest, which tears down in order.
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True,
            )  # fmt: skip
            try:
                _wait_ready(name, proc, notify, START_TIMEOUT, log)
            except BaseException:
                _terminate(proc.pid, 10.0)
                proc.wait()
                raise
            finally:
                notify_path.unlink(missing_ok=True)
        return proc

    def stop(self) -> None:
        """SIGTERM dockerd (it stops its containers) and wait for it to exit."""
        proc, self._dockerd = self._dockerd, None
        if proc is None:
            return
        exited = _terminate(proc.pid, STOP_TIMEOUT)
        proc.wait()
        if not exited:
            raise EngineError(f"{self.base}: dockerd ignored SIGTERM for {STOP_TIMEOUT:.0f} s")

    def restart(self) -> None:
        """Stop dockerd and start it again with the same arguments and data-root (its
        containerd runs on, as a host's containerd.service does)."""
        self.stop()
        self.start()

    def docker(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        """Run the docker CLI against this engine; return its stdout."""
        done = subprocess.run(
            ["docker", *args],
            env={**_cli_env(), "DOCKER_HOST": self.host},
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise EngineError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def load(self, tar: Path) -> None:
        """Load images saved with `docker save` (the engine has none of its own)."""
        began = time.monotonic()
        self.docker("load", "--quiet", "--input", str(tar), timeout=600)
        self.load_seconds = time.monotonic() - began

    def close(self) -> None:
        """Remove everything: containers, networks, both daemons, mounts, bridge, directory."""
        if not self.base.exists():
            return  # closed already
        try:
            if self._dockerd is None:
                # Stopped: only dockerd can remove its user networks (bridges on the machine).
                with contextlib.suppress(EngineError):
                    self.start()
            if self._dockerd is not None:
                _empty_engine(self.host)
                self.stop()
            proc, self._containerd = self._containerd, None
            if proc is not None:
                _terminate(proc.pid, STOP_TIMEOUT)
                proc.wait()
        finally:
            purge(self.base)


def save_image(image: str, tar: Path) -> Path:
    """`docker save` `image` from the machine's engine to `tar`, for `PrivateDockerd.load`."""
    subprocess.run(
        ["docker", "save", "--output", str(tar), image],
        capture_output=True,
        check=True,
        timeout=600,
    )
    return tar


def _cli_env() -> dict[str, str]:
    # DOCKER_CONTEXT or TLS settings meant for another engine must not apply.
    return {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}


def _wait_ready(
    name: str, proc: subprocess.Popen[bytes], notify: socket.socket, timeout: float, log: Path
) -> None:
    """Wait for READY=1 on `notify`; fail at once if `proc` exits first."""
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(proc.pid)
    try:
        with selectors.DefaultSelector() as events:
            events.register(notify, selectors.EVENT_READ, "notify")
            events.register(pidfd, selectors.EVENT_READ, "exit")
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in events.select(left):
                    if key.data == "exit":
                        code = proc.wait()
                        raise EngineError(f"{name} exited with {code}:\n{_tail(log)}")
                    if "READY=1" in notify.recv(4096).decode(errors="replace").splitlines():
                        return
    finally:
        os.close(pidfd)
    raise EngineError(f"{name} not ready after {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _wait_exit(pid: int, timeout: float) -> bool:
    """Whether process `pid` is gone within `timeout` (a pidfd turns readable at exit)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with selectors.DefaultSelector() as events:
            events.register(pidfd, selectors.EVENT_READ)
            return bool(events.select(timeout))
    finally:
        os.close(pidfd)


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM `pid`, wait for its exit, SIGKILL it if it is late; whether SIGTERM sufficed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_exit(pid, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_exit(pid, 30.0)
    return False


def process_identity(pid: int) -> str:
    """`pid` and its start time: a reused pid does not pass for a live owner."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return f"{pid} {stat.rpartition(')')[2].split()[19]}"


def orphaned(base: Path) -> bool:
    """Whether `base` is an engine directory whose test run is gone (by its owner file)."""
    if not re.fullmatch(rf"{PREFIX}[0-9a-f]{{8}}", base.name) or not base.is_dir():
        return False
    try:
        owner = (base / "owner").read_text()
    except FileNotFoundError:
        return False  # not ours, or being created right now
    try:
        return process_identity(int(owner.split()[0])) != owner
    except (OSError, ValueError, IndexError):
        return True


def _routed_networks() -> list[ipaddress.IPv4Network]:
    routes = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "route", "show", "table", "all"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    )
    nets = []
    for route in routes:
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(route.get("dst", ""), strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)


def _claim_bridge(base: Path) -> tuple[str, ipaddress.IPv4Network]:
    """Create the first free bridge svtd<slot> and give it 10.199.<slot>.1/24.

    `ip link add` is atomic: two engines (even in two test runs) never get one slot.
    Slots whose subnet overlaps a route of the machine are skipped.
    """
    routed = _routed_networks()
    for slot, subnet in enumerate(SUBNETS.subnets(new_prefix=24)):
        if any(subnet.overlaps(net) for net in routed):
            continue
        name = BRIDGE.format(slot)
        added = _ip("link", "add", "name", name, "type", "bridge")
        if added.returncode != 0:
            if "exists" in added.stderr:
                continue
            raise EngineError(f"ip link add {name}: {added.stderr.strip()}")
        (base / "bridge").write_text(name)
        for args in (
            ("addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", name),
            ("link", "set", name, "up"),
        ):
            done = _ip(*args)
            if done.returncode != 0:
                raise EngineError(f"ip {' '.join(args)}: {done.stderr.strip()}")
        return name, subnet
    raise EngineError(f"no free bridge slot in {SUBNETS}")


def _empty_engine(host: str) -> None:
    """Remove containers, then networks (a user network is a bridge on the machine)."""

    def docker(*args: str) -> str:
        env = {**_cli_env(), "DOCKER_HOST": host}
        done = subprocess.run(
            ["docker", *args], env=env, capture_output=True, text=True, check=False, timeout=300
        )
        return done.stdout

    with contextlib.suppress(subprocess.TimeoutExpired):
        docker("swarm", "leave", "--force")
        ids = docker("ps", "-aq").split()
        if ids:
            docker("rm", "--force", "--volumes", *ids)
        docker("network", "prune", "--force")


def processes_naming(base: Path) -> list[int]:
    """Processes whose command line names `base` (daemons, shims, runc), but this one."""
    needle = str(base).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if any(arg == needle or needle + b"/" in arg for arg in argv):
            found.append(int(entry.name))
    return found


def _descendants(pids: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def mounts_under(base: Path) -> list[Path]:
    """Mount points at or under `base`, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Octal escapes (\040 for a space) in the mount point field.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == str(base) or point.startswith(f"{base}/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def bridge_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def purge(base: Path) -> None:
    """Kill what names `base`, unmount what is under it, delete its bridge and `base`.

    After the daemons were stopped this finds nothing but the directory; after a crash it
    finds the rest (a shim's descendants are its container: they die with it).
    """
    dockerd = _live_pid(base, "dockerd.pid")
    if dockerd is not None:  # an orphan: empty it while it answers
        _empty_engine(f"unix://{base}/docker.sock")
        _terminate(dockerd, STOP_TIMEOUT)
    containerd = _live_pid(base, "containerd.pid")
    if containerd is not None:
        _terminate(containerd, STOP_TIMEOUT)
    for pid in _descendants(processes_naming(base)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in processes_naming(base):
        _wait_exit(pid, 30.0)
    for point in mounts_under(base):
        if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)
    with contextlib.suppress(FileNotFoundError):
        bridge = (base / "bridge").read_text().strip()
        if bridge and bridge_exists(bridge):
            _ip("link", "del", bridge)
    left = mounts_under(base)
    if left:  # never rmtree through a mount
        raise EngineError(f"still mounted under {base}: {left}")
    shutil.rmtree(base, ignore_errors=True)
    if base.exists():
        raise EngineError(f"could not remove {base}")


def _live_pid(base: Path, pidfile: str) -> int | None:
    """The pid in `base`/`pidfile` if that process still runs for `base`."""
    try:
        pid = int((base / pidfile).read_text())
    except (OSError, ValueError):
        return None
    return pid if pid in processes_naming(base) else None


def _close_stale(base: Path) -> None:
    """Close the engine of a run that died, as that run would have."""
    try:
        bridge = (base / "bridge").read_text().strip()
    except FileNotFoundError:
        bridge = ""
    if not bridge or not bridge_exists(bridge) or _live_pid(base, "dockerd.pid") is not None:
        purge(base)  # (empties a live dockerd first)
        return
    # dockerd died too, maybe leaving containers running under containerd and user networks
    # (bridges): a new dockerd on the same data-root stops those, then the engine is emptied.
    containerd = _live_pid(base, "containerd.pid")
    if containerd is not None:
        _terminate(containerd, STOP_TIMEOUT)  # the new one takes the running shims over
    (base / "dockerd.pid").unlink(missing_ok=True)  # its pid may be a zombie's yet
    slot = int(bridge.removeprefix(BRIDGE.format("")))
    PrivateDockerd(base, bridge, list(SUBNETS.subnets(new_prefix=24))[slot]).close()


def sweep_stale() -> list[Path]:
    """Close the engines of test runs that died without tearing down; return their dirs."""
    stale = [p for p in TMP.glob(f"{PREFIX}*") if orphaned(p)]
    for base in stale:
        _close_stale(base)
    return stale
