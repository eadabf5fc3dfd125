"""A private Docker Swarm for tests: private engines in network namespaces, one veth apart.

Each node is a `PrivateDockerd` (its own data-root, exec-root, pidfile, socket and
containerd) with three differences:

- both its daemons run in a network namespace of their own (`nsenter --net`: only the
  network is switched, so their paths, mounts and pids stay the machine's and the
  private engine's clean-up finds them as usual). The namespaces are joined by one veth
  pair, so swarm traffic (2377, 7946, 4789) never leaves them and the machine's
  interfaces, routes and iptables are untouched; the test reaches each engine through
  its unix socket, which no namespace hides;
- its default bridge is docker0 *inside* its namespace, on its own `--bip`;
- its containers live under a cgroup parent of their own, removed at close.

`PrivateSwarm.create(n)` makes the nodes, inits the swarm on the first and joins the rest
as workers. `close()` removes everything: each engine (it leaves the swarm and is emptied
by `PrivateDockerd.close`), the namespaces (the veths go with them) and the cgroups.
`sweep_stale_swarms()` does the same for a test run that died (namespaces whose engine
directory is gone or orphaned).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import selectors
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.private_dockerd import (
    PREFIX,
    TMP,
    EngineError,
    PrivateDockerd,
    orphaned,
    process_identity,
    purge,
)

NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "svsw-"
CGROUP_ROOT = Path("/sys/fs/cgroup")
LINK_NET = "10.198.0.{}"  # the veth link between the nodes: private to their namespaces
LINK_PREFIX = 24
BIP = "172.30.{}.1/24"  # each node's docker0, inside its own namespace
JOIN_TIMEOUT = 180.0


def _run(argv: Sequence[str], *, timeout: float = 60.0) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise EngineError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def _in_netns(netns: str, *argv: str) -> str:
    return _run(["ip", "-netns", netns, *argv])


class SwarmNode(PrivateDockerd):
    """A private engine whose daemons run in network namespace `netns`."""

    def __init__(self, base: Path, netns: str, address: str, index: int) -> None:
        super().__init__(base, "docker0", _subnet_of(index))
        self.netns = netns
        self.address = address  # on the veth link: the swarm's advertise address
        self.index = index

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.base.name}"

    @classmethod
    def create_in(cls, netns: str, address: str, index: int) -> SwarmNode:
        """Claim an engine directory and start the engine in `netns`."""
        while True:
            base = TMP / f"{PREFIX}{secrets.token_hex(4)}"
            with contextlib.suppress(FileExistsError):
                base.mkdir(mode=0o711)
                break
        base.chmod(0o711)
        (base / "owner").write_text(process_identity(os.getpid()))
        (base / "netns").write_text(netns)
        try:
            node = cls(base, netns, address, index)
            node._write_configs()
            node.start()
        except BaseException:
            purge(base)
            _remove_cgroups(f"/{base.name}")
            raise
        return node

    def _dockerd_argv(self) -> list[str]:
        argv = [a for a in super()._dockerd_argv() if not a.startswith("--bridge=")]
        return [*argv, f"--bip={BIP.format(self.index)}", f"--cgroup-parent={self.cgroup_parent}"]

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        # nsenter execs the daemon in place: the pid, pidfd and notify socket are its own.
        return super()._spawn(name, ["nsenter", f"--net={NETNS_DIR / self.netns}", "--", *argv])

    def first_event(self, since: float, *filters: str, timeout: float = 120.0) -> dict[str, object]:
        """The first event since `since` (a time.time()) matching `filters` ("event=start"),
        as decoded JSON; waits for it (the stream is pushed: no polling), up to `timeout`."""
        argv = ["docker", "events", "--since", f"{since:.6f}", "--format", "{{json .}}"]
        for f in filters:
            argv += ["--filter", f]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        proc = subprocess.Popen(
            argv, env={**env, "DOCKER_HOST": self.host}, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                if not sel.select(timeout):
                    raise EngineError(f"no event {filters} on {self.base} in {timeout:.0f} s")
            line = proc.stdout.readline()
            if not line:
                raise EngineError(f"docker events on {self.base} ended")
            event: dict[str, object] = json.loads(line)
            return event
        finally:
            proc.kill()
            proc.communicate()

    def node_id(self) -> str:
        return self.docker("info", "--format", "{{.Swarm.NodeID}}").strip()

    def close(self) -> None:
        try:
            super().close()
        finally:
            _remove_cgroups(self.cgroup_parent)


class PrivateSwarm:
    """Nodes in namespaces joined by a veth pair; the first is the manager."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.nodes: list[SwarmNode] = []
        self.namespaces: list[str] = []
        self.form_seconds = 0.0
        self.cut: list[SwarmNode] = []  # partitioned nodes, joined again by `heal`
        self.stopped: list[SwarmNode] = []  # nodes whose engine is stopped, see `restore`

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    @classmethod
    def create(cls, size: int = 2) -> PrivateSwarm:
        """Start `size` engines (2: one veth pair joins them) and form a swarm of them."""
        if size != 2:
            raise ValueError("one veth pair joins exactly two nodes")
        began = time.monotonic()
        swarm = cls(secrets.token_hex(3))
        try:
            swarm._link()
            for index, netns in enumerate(swarm.namespaces):
                address = LINK_NET.format(index + 1)
                swarm.nodes.append(SwarmNode.create_in(netns, address, index))
            swarm._form()
        except BaseException:
            swarm.close()
            raise
        swarm.form_seconds = time.monotonic() - began
        return swarm

    def _link(self) -> None:
        for side in "ab":
            netns = f"{NETNS_PREFIX}{self.tag}{side}"
            _run(["ip", "netns", "add", netns])
            self.namespaces.append(netns)
            _in_netns(netns, "link", "set", "lo", "up")
        a, b = self.namespaces
        # Created in the machine's namespace and moved at once: a crash between the two
        # leaves a pair named after our tag, which `sweep_stale_swarms` deletes.
        _run(["ip", "link", "add", f"{a}", "type", "veth", "peer", "name", f"{b}"])
        for index, netns in enumerate(self.namespaces):
            _run(["ip", "link", "set", netns, "netns", netns])
            _in_netns(netns, "link", "set", netns, "name", "eth0")
            _in_netns(netns, "addr", "add", f"{LINK_NET.format(index + 1)}/{LINK_PREFIX}", "dev", "eth0")  # fmt: skip
            _in_netns(netns, "link", "set", "eth0", "up")

    def _form(self) -> None:
        manager = self.manager
        manager.docker("swarm", "init", "--advertise-addr", manager.address, timeout=JOIN_TIMEOUT)
        token = manager.docker("swarm", "join-token", "--quiet", "worker").strip()
        for node in self.nodes[1:]:
            node.docker(
                "swarm", "join", "--token", token, "--advertise-addr", node.address,
                f"{manager.address}:2377", timeout=JOIN_TIMEOUT,
            )  # fmt: skip

    def node_list(self) -> list[dict[str, str]]:
        """`docker node ls` on the manager: one dict (ID, Hostname, Status, ...) per node."""
        out = self.manager.docker("node", "ls", "--format", "{{json .}}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def node_state(self, node_id: str) -> str:
        """The manager's view of node `node_id`: "ready", "down", ..."""
        return self.manager.docker(
            "node", "inspect", "--format", "{{.Status.State}}", node_id
        ).strip()

    def wait_node(self, node_id: str, state: str, timeout: float = 120.0) -> float:
        """Wait until the manager reports `node_id` in `state`, woken by its node events;
        returns the time.time() it was seen so."""
        deadline = time.monotonic() + timeout
        while True:
            since = time.time()
            if self.node_state(node_id) == state:
                return time.time()
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineError(f"node {node_id[:12]} not {state} in {timeout:.0f} s")
            with contextlib.suppress(EngineError):  # no event in time: checked once more
                self.manager.first_event(since, "type=node", f"node={node_id}", timeout=left)

    def partition(self, node: SwarmNode) -> None:
        """Cut `node` off the swarm: its link goes down. Its engine still answers on its
        unix socket, as a node cut off from its manager but not from the daemon would."""
        _in_netns(node.netns, "link", "set", "eth0", "down")
        self.cut.append(node)

    def heal(self, timeout: float = 120.0) -> None:
        """Join every cut node again and wait until the manager reports it ready."""
        while self.cut:
            node = self.cut.pop()
            _in_netns(node.netns, "link", "set", "eth0", "up")
            self.wait_node(node.node_id(), "ready", timeout)

    def stop_engine(self, node: SwarmNode) -> None:
        """Stop `node`'s dockerd (SIGTERM: it stops its containers), as a host losing its
        engine would; its containerd and namespace stay, so `restore` starts it again."""
        self.stopped.append(node)
        node.stop()

    def restore(self, timeout: float = 120.0) -> None:
        """Start every stopped engine again and wait until the manager reports it ready."""
        while self.stopped:
            node = self.stopped.pop()
            node.start()
            self.wait_node(node.node_id(), "ready", timeout)

    def load(self, tar: Path) -> None:
        """Load a `docker save` tar on every node (no registry: each node has its own copy)."""
        for node in self.nodes:
            node.load(tar)

    def reset(self) -> None:
        """Heal any partition, start any stopped engine, remove every service, and every
        task container on every node (no waiting for the swarm to reap them: the next
        test starts from empty engines)."""
        self.heal()
        self.restore()
        services = self.manager.docker("service", "ls", "--quiet").split()
        if services:
            self.manager.docker("service", "rm", *services)
        for node in self.nodes:
            ids = node.docker("ps", "--all", "--quiet").split()
            if ids:
                node.docker("rm", "--force", "--volumes", *ids)

    def close(self) -> None:
        """Close every node (workers first), then delete the namespaces and their veths."""
        errors: list[Exception] = []
        for node in reversed(self.nodes):
            try:
                node.close()
            except Exception as exc:
                errors.append(exc)
        self.nodes.clear()
        for netns in self.namespaces:
            try:
                _delete_netns(netns)
            except Exception as exc:
                errors.append(exc)
        self.namespaces.clear()
        if errors:
            raise errors[0]


def _subnet_of(index: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(BIP.format(index), strict=False)


def _delete_netns(netns: str) -> None:
    if (NETNS_DIR / netns).exists():
        _run(["ip", "netns", "del", netns])
    if Path("/sys/class/net", netns).exists():  # a pair that never moved
        _run(["ip", "link", "del", netns])


def _remove_cgroups(parent: str) -> None:
    """Remove `parent` from every cgroup v1 hierarchy (empty once its containers died)."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        path = hierarchy / parent.lstrip("/")
        if path.is_dir():
            for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                path.rmdir()


def leftovers(tag: str) -> list[str]:
    """What of swarm `tag` is still on the machine: namespaces and links."""
    found = [p.name for p in NETNS_DIR.glob(f"{NETNS_PREFIX}{tag}*")] if NETNS_DIR.exists() else []
    found += [p.name for p in Path("/sys/class/net").glob(f"{NETNS_PREFIX}{tag}*")]
    return found


def sweep_stale_swarms() -> list[str]:
    """Delete swarm namespaces (and stray veths) whose engines belong to no live test run.

    Run after `private_dockerd.sweep_stale`, which closes their engines' directories.
    """
    live = set()
    for base in TMP.glob(f"{PREFIX}*"):
        with contextlib.suppress(OSError):
            if not orphaned(base) and (base / "netns").exists():
                live.add((base / "netns").read_text().strip())
    stale = []
    names = [p.name for p in NETNS_DIR.glob(f"{NETNS_PREFIX}*")] if NETNS_DIR.exists() else []
    names += [p.name for p in Path("/sys/class/net").glob(f"{NETNS_PREFIX}*")]
    for name in dict.fromkeys(names):
        if name not in live:
            _delete_netns(name)
            stale.append(name)
    return stale
