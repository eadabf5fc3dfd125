"""`backend = "process"`: a sandbox is a private directory, isolated by bubblewrap.

With `isolation = "bubblewrap"` (the default) each sandbox is one long-lived set of
namespaces (`launchers.isolation`): its own host uid, user, pid, ipc, uts and cgroup
namespaces, no network unless `network = "host"`, the host read-only but for its work
directory (seen as /home/sandbox), a private /tmp, a minimal /dev, its own /proc, the
daemon's state directory and the other sandboxes hidden, and a cgroup capping the memory
and the processes of everything it runs. An agent inside (PID 1) forks each command, so
an exec costs what an unisolated one does. Between sessions `SessionReset` (appended last to
the environment's features) kills what the session left running and empties /tmp,
/dev/shm and IPC; the work directory is the features' to clean, as before.

A host without bwrap, a daemon that is not root (it gives each sandbox its own uid and
cgroup) or a kernel that refuses the namespaces make the environment MISCONFIGURED at
start, with what to do: there is no silent fallback. `isolation = "none"` is the old
backend, chosen explicitly (and warned about at start): commands run as the daemon's
user in the sandbox's directory, with only the rlimits.

Either way every command gets the configured rlimits through `prlimit(1)` exec'ing it
(so they hold from its first instruction, the daemon keeps its cheap vfork spawn and no
shell ever parses the user's argv), a scrubbed environment, its own process group
(killed on timeout, and when its leader exits), and output beyond `output_limit`
drained and dropped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog
import trio

from supervisor.config.environment import CgroupLimits, ProcessLimits, UidRange
from supervisor.errors import (
    MisconfiguredError,
    SandboxFileError,
    SandboxStateError,
    UnsafePathError,
)
from supervisor.launchers.isolation import bubblewrap, cgroups, roots
from supervisor.launchers.isolation.namespace import Isolation, Namespace, remove_cgroup
from supervisor.launchers.isolation.uids import UidLeases
from supervisor.launchers.local import LocalLauncher
from supervisor.sandbox.backends import hostfs
from supervisor.sandbox.capture import Spawner, run_captured
from supervisor.sandbox.features import Feature
from supervisor.sandbox.files import Download, Listing, clean_path
from supervisor.sandbox.instance import PLAIN, ExecOptions, ExecResult

if TYPE_CHECKING:
    from supervisor.sandbox.sandbox import Sandbox
    from supervisor.sandbox.session import Session

PRLIMIT = shutil.which("prlimit") or "/usr/bin/prlimit"
log = structlog.get_logger("supervisor.sandbox.process")


def rlimits(limits: ProcessLimits) -> dict[str, tuple[int, int]]:
    """The configured limits as setrlimit values, by resource name."""
    found = {
        "RLIMIT_CPU": None if limits.cpu_time is None else max(1, round(limits.cpu_time)),
        "RLIMIT_AS": limits.memory,
        "RLIMIT_NOFILE": limits.open_files,
        "RLIMIT_NPROC": limits.processes,
        "RLIMIT_FSIZE": limits.file_size,
    }
    return {name: (value, value) for name, value in found.items() if value is not None}


def limit_prefix(limits: ProcessLimits) -> list[str]:
    """The `prlimit ... --` argv prefix that applies `limits` (empty when none are set)."""
    flags = {
        "RLIMIT_CPU": "cpu",
        "RLIMIT_AS": "as",
        "RLIMIT_NOFILE": "nofile",
        "RLIMIT_NPROC": "nproc",
        "RLIMIT_FSIZE": "fsize",
    }
    args = [f"--{flags[name]}={value}" for name, (value, _) in rlimits(limits).items()]
    return [PRLIMIT, *args, "--"] if args else []


@dataclass(frozen=True, slots=True)
class IsolationSpec:
    """The `process` backend's isolation settings, from the environment's config."""

    network: bool = False  # True: the host's network
    uids: UidRange = field(default_factory=UidRange)
    cgroup: CgroupLimits = field(default_factory=CgroupLimits)
    hide: tuple[Path, ...] = ()  # host directories the sandboxes must not see
    leases: Path | None = None  # where uid leases are kept (default: host-wide)


class ProcessInstance:
    """One process sandbox: a directory that commands run in (inside its namespace, if
    isolated)."""

    def __init__(
        self, backend: ProcessBackend, workdir: Path, namespace: Namespace | None = None
    ) -> None:
        self._backend = backend
        self.workdir = workdir
        self.namespace = namespace
        # Not the daemon's environment: it may hold secrets (tokens, passwords) that the
        # code run in a sandbox has no business seeing.
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "PWD": str(workdir),
        }
        self._stopped = False

    async def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        options: ExecOptions = PLAIN,
    ) -> ExecResult:
        if self._stopped or not self.workdir.is_dir():
            raise SandboxStateError(f"sandbox directory {self.workdir} is gone")
        if self.namespace is not None:
            # Inside, the namespace confines the path: the work directory is all it sees.
            home = Path(bubblewrap.SANDBOX_HOME)
            spawner: Spawner = self.namespace
            cwd = home / options.cwd if options.cwd else home
            env = bubblewrap.sandbox_environment(options.env)
        else:
            spawner = self._backend.launcher
            cwd = self.workdir / options.cwd if options.cwd else self.workdir
            if not cwd.resolve().is_relative_to(self.workdir.resolve()):
                raise UnsafePathError(f"cwd {options.cwd!r} leads out of the sandbox directory")
            env = {**self._env, **(options.env or {})}
        return await run_captured(
            spawner,
            [*self._backend.prefix, *argv],
            cwd=cwd,
            env=env,
            timeout=timeout,
            output_limit=self._backend.output_limit,
            stdin=options.stdin,
            output=options.output,
            more=options.input,
            signals=options.signals,
        )

    async def run_script(
        self, script: str, *, timeout: float, options: ExecOptions = PLAIN
    ) -> ExecResult:
        return await self.exec(["sh", "-c", script], timeout=timeout, options=options)

    async def put(self, source: Path, dest: str) -> None:
        target = (self.workdir / dest).resolve()
        if not target.is_relative_to(self.workdir.resolve()):
            raise ValueError(f"destination {dest!r} leaves the sandbox directory")
        owner = None if self.namespace is None else self.namespace.uid

        def copy() -> None:
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
                copied = target
            else:
                final = target / source.name if target.is_dir() else target
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, final)
                copied = final
            if owner is not None:  # the sandbox's uid owns what is put in its directory
                _chown_tree(self.workdir, copied, owner)

        await trio.to_thread.run_sync(copy)

    async def upload(self, dest: str, data: IO[bytes], *, tar: bool, limit: int) -> None:
        path = clean_path(dest)
        owner = None if self.namespace is None else self.namespace.uid
        with _file_errors(self.workdir, dest):
            if tar:
                await trio.to_thread.run_sync(
                    hostfs.extract_tar, self.workdir, path, data, owner, limit
                )
            else:
                await trio.to_thread.run_sync(hostfs.write_file, self.workdir, path, data, owner)

    async def download(self, path: str, limit: int) -> Download:
        clean = clean_path(path)
        with _file_errors(self.workdir, path):
            return await trio.to_thread.run_sync(hostfs.read, self.workdir, clean, limit)

    async def listdir(self, path: str) -> Listing:
        clean = clean_path(path)
        with _file_errors(self.workdir, path):
            return await trio.to_thread.run_sync(
                hostfs.listdir, self.workdir, clean, abandon_on_cancel=True
            )

    async def reset(self) -> None:
        """Between sessions: nothing left running, /tmp and IPC empty (isolated only)."""
        if self.namespace is not None:
            await self.namespace.reset()

    async def check(self) -> None:
        if not self.workdir.is_dir():
            raise SandboxStateError(f"sandbox directory {self.workdir} is gone")
        if self.namespace is not None:
            await self.namespace.ping()

    async def wait_dead(self) -> str:
        if self.namespace is None:
            await trio.sleep_forever()
        assert self.namespace is not None
        return await self.namespace.wait_dead()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.namespace is not None:
            await self.namespace.close()
        await trio.to_thread.run_sync(shutil.rmtree, self.workdir, True)
        if self.namespace is not None:
            await self._backend.released()

    def connection(self) -> dict[str, Any]:
        if self.namespace is None:
            return {"workdir": str(self.workdir)}
        return {
            "workdir": str(self.workdir),
            "sandbox_workdir": bubblewrap.SANDBOX_HOME,
            "uid": self.namespace.uid,
        }


@contextlib.contextmanager
def _file_errors(workdir: Path, path: str) -> Iterator[None]:
    """What the file system refused (a full disk, say) is the request's failure; a work
    directory that is gone is the sandbox's."""
    try:
        yield
    except OSError as exc:
        if not workdir.is_dir():
            raise SandboxStateError(f"sandbox directory {workdir} is gone") from exc
        reason = exc.strerror or type(exc).__name__
        raise SandboxFileError(f"{path[:200]}: {reason}") from None


def _chown_tree(top: Path, path: Path, uid: int) -> None:
    """`path` and everything under it, and its directories up to `top`, to `uid`."""
    for directory in (path, *path.parents):
        if not directory.is_relative_to(top) or directory == top:
            break
        os.lchown(directory, uid, uid)
    if path.is_dir() and not path.is_symlink():
        for base, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.lchown(os.path.join(base, name), uid, uid)


class SessionReset(Feature):
    """Resets an isolated process sandbox after every session (appended last)."""

    name = "process_reset"

    async def teardown_session(self, sandbox: Sandbox, session: Session) -> None:
        instance = sandbox.instance
        if not isinstance(instance, ProcessInstance):
            raise TypeError("process_reset only works in a process sandbox")
        await instance.reset()


class ProcessBackend:
    """Makes process sandboxes under `root` (for the daemon: `roots.sandboxes_root` when
    isolated, the state dir otherwise); isolated by bubblewrap when given an `isolation`
    spec."""

    name = "process"

    def __init__(
        self,
        launcher: LocalLauncher,
        root: Path,
        limits: ProcessLimits,
        output_limit: int,
        *,
        isolation: IsolationSpec | None = None,
        environment: str = "",
    ) -> None:
        self.launcher = launcher
        self.root = root
        self.limits = limits
        self.prefix = limit_prefix(limits)
        self.output_limit = output_limit
        self.spec = isolation
        self.environment = environment
        self.isolation: Isolation | None = None
        self._live = 0  # isolated sandboxes up: at 0, their cgroup group and root go too
        self._claim = roots.Claim(root)
        self._claiming = trio.Lock()

    async def reset(self) -> None:
        """Remove what a previous run left (directories, cgroups: isolated, those of any
        dead daemon), and prove that a sandbox can be made here (called once, at start).

        Raises:
            MisconfiguredError: isolation cannot work here (no bwrap, not root, ...).
        """
        if self.spec is None:
            await trio.to_thread.run_sync(shutil.rmtree, self.root, True)
            log.warning(
                "sandbox_isolation_off",
                environment=self.environment,
                detail="commands run as the daemon's user, with rlimits only",
            )
            return
        self.isolation = isolation = await trio.to_thread.run_sync(self._prepare, self.spec)
        hierarchies = [hierarchy for hierarchy, _ in isolation.cgroup.parts]
        swept = await trio.to_thread.run_sync(roots.sweep, hierarchies)
        if swept:
            log.info("sandbox_leftovers_removed", environment=self.environment, count=len(swept))
        if not await remove_cgroup(isolation.cgroup):
            raise SandboxStateError(f"cgroup of a previous run still busy: {isolation.cgroup}")
        await self._claimed()
        probe = self.root / ".probe"
        try:
            await trio.to_thread.run_sync(lambda: probe.mkdir(mode=0o700, exist_ok=True))
            try:
                namespace = await Namespace.open(self.launcher, isolation, probe, "probe")
            except SandboxStateError as exc:
                raise MisconfiguredError(f"bubblewrap cannot make a sandbox here: {exc}") from exc
            await namespace.close()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, probe, True)
                await self.released()

    def _prepare(self, spec: IsolationSpec) -> Isolation:
        if os.geteuid() != 0:
            raise MisconfiguredError(
                "isolated sandboxes need the daemon to run as root (each sandbox gets a "
                'uid and a cgroup of its own); run it as root, or set isolation = "none"'
            )
        layout = bubblewrap.SandboxLayout(
            bwrap=bubblewrap.find_bwrap(),
            python=bubblewrap.find_python(),
            network=spec.network,
            hide=spec.hide,
        )
        group = cgroups.Cgroup.environment(cgroups.discover(), roots.group_name(self.root))
        leases = spec.leases or roots.SANDBOXES / roots.LEASES
        return Isolation(
            layout,
            UidLeases(leases, spec.uids),
            group,
            memory=spec.cgroup.memory,
            processes=spec.cgroup.processes,
        )

    async def _claimed(self) -> None:
        """One more isolated sandbox: the first claims the environment's directory."""
        self._live += 1
        try:
            async with self._claiming:  # one claim at a time, never beside a release
                if not self._claim.held:
                    await trio.to_thread.run_sync(self._claim.take)
        except BaseException:
            self._live -= 1
            raise

    async def create(self, sandbox_id: str) -> ProcessInstance:
        name = sandbox_id.replace("/", "__").replace(":", "_")
        workdir = self.root / name
        if self.spec is not None:
            if self.isolation is None:
                raise SandboxStateError("the backend was not reset before its first sandbox")
            await self._claimed()

        def make() -> None:
            if workdir.exists():  # left by a run that was killed: start clean
                shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True, mode=0o700)

        try:
            try:
                await trio.to_thread.run_sync(make)
            except OSError as exc:
                raise SandboxStateError(
                    f"cannot create {workdir}: {os.strerror(exc.errno or 0)}"
                ) from exc
            if self.isolation is None:
                return ProcessInstance(self, workdir)
            namespace = await Namespace.open(self.launcher, self.isolation, workdir, name)
        except BaseException:
            if self.spec is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(shutil.rmtree, workdir, True)
                    await self.released()
            raise
        return ProcessInstance(self, workdir, namespace)

    async def released(self) -> None:
        """One isolated sandbox is gone; after the last, remove what they shared (the
        environment's cgroup group and directory) and drop the claim, so a stopped daemon
        leaves nothing."""
        self._live -= 1
        if self.isolation is None:
            return
        async with self._claiming:
            if self._live or not self._claim.held:
                return  # a sandbox came (or is coming) meanwhile: it claims again after us
            await remove_cgroup(self.isolation.cgroup)

            def remove_root() -> None:
                for directory in (self.root, self.root.parent):
                    with contextlib.suppress(OSError):  # not empty: another environment's
                        directory.rmdir()
                self._claim.drop()

            await trio.to_thread.run_sync(remove_root)
