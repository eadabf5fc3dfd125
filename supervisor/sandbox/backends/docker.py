"""`backend = "docker"`: a sandbox is one long-lived container that commands are exec'd in.

Why it is built this way:
- Least privilege by default: the container runs as a non-root `user` (65534, nobody),
  with every capability dropped (`cap_drop = ["ALL"]`), `no-new-privileges` (no setuid
  gain) and an optional `runtime` (gVisor's `runsc` where installed), beside the
  read-only root, `network = "none"` and the pids limit.
- The container only idles (`command`, `sleep infinity` by default, under an init); every
  command is a `docker exec` in the workdir, killed with its process group at its timeout
  by the engine layer. The root filesystem is read-only by default and the workdir (and
  /tmp) are size-capped tmpfs mounts, so nothing a session writes survives the container.
- A container is ready only when an exec has worked in it: a command that exits at once or
  an image without coreutils' `timeout` is caught at bring-up, not by the first client.
- Errors are split at this edge. An engine that does not answer, a container that is gone
  and engine-side failures (5xx, conflicts) are the sandbox's (`SandboxStateError`: retried,
  counted towards an outage). A request the engine rejects as wrong (4xx: a missing image
  or network, bad limits) is the config's (`SandboxConfigError`), returned to the caller
  at once, since retrying cannot help.
- Files are put by piping a tar into `tar -x` through an exec: the engine's archive upload
  writes beside a tmpfs mount, not into it, and refuses a read-only container outright.
- Death is pushed by the engine's event stream (`ContainerHandle.wait`); the keepalive is
  a real request to the engine, so an engine outage is noticed even though events are not.
"""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import trio

from supervisor.config.environment import DockerSandboxConfig
from supervisor.errors import SandboxError, SandboxStateError, StartError
from supervisor.launchers.docker import (
    ContainerHandle,
    ContainerSpec,
    DockerEngine,
    DockerError,
    EngineUnavailableError,
)
from supervisor.launchers.docker import ExecResult as EngineResult
from supervisor.sandbox.backends import ExecResult
from supervisor.sandbox.backends.docker_files import DockerFiles
from supervisor.sandbox.files import Download, Listing
from supervisor.sandbox.instance import PLAIN, ExecOptions

ENVIRONMENT_LABEL = "supervisor.environment"
SANDBOX_LABEL = "supervisor.sandbox"
PROBE_TIMEOUT = 10.0
PUT_TIMEOUT = 120.0
CONTAINER_TMP = "/tmp"  # noqa: S108 - inside the container, a private tmpfs
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class SandboxConfigError(SandboxError):
    """A sandbox cannot be made with these settings (missing image, bad limits)."""


def safe_name(sandbox_id: str) -> str:
    """`sandbox_id` as it may appear in a container's (or a service's) name."""
    return _UNSAFE_NAME.sub("-", sandbox_id).strip("-.")


def _http_status(exc: BaseException | None) -> int | None:
    """The engine's HTTP status somewhere on `exc`'s cause chain, if it answered at all."""
    while exc is not None:
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            return status
        exc = exc.__cause__
    return None


def classify(exc: BaseException, what: str) -> SandboxError:
    """A failure to run a container as the sandbox's (state error) or the config's."""
    cause = exc.__cause__ if isinstance(exc, StartError) and exc.__cause__ else exc
    if isinstance(cause, EngineUnavailableError):
        return SandboxStateError(f"{what}: {exc}")
    status = _http_status(cause)
    if status is None:
        # A DockerError without a status: the SDK refused a setting before sending it.
        wrong = isinstance(cause, DockerError)
    else:
        # 404 here is a missing image or network (not a container: none exists yet).
        wrong = 400 <= status < 500 and status != 409
    return (SandboxConfigError if wrong else SandboxStateError)(f"{what}: {exc}")


@contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    """Docker failures during work in a running sandbox are the sandbox's."""
    try:
        yield
    except DockerError as exc:
        raise SandboxStateError(f"{what}: {exc}") from exc


def _tmpfs_owner(user: str | None) -> str:
    """Mount options that give the workdir to the container's user (a numeric `uid[:gid]`
    owns it; a user by name, which only the image can resolve, gets a sticky 1777)."""
    uid, _, gid = (user or "0").partition(":")
    if uid.isdigit() and (not gid or gid.isdigit()):
        return f"uid={uid},gid={gid or uid},mode=0755"
    return "mode=1777"


def _result(raw: EngineResult) -> ExecResult:
    return ExecResult(
        None if raw.timed_out else raw.exit_code,
        raw.stdout.decode(errors="replace"),
        raw.stderr.decode(errors="replace"),
        raw.duration_s,
        timed_out=raw.timed_out,
        truncated=raw.truncated,
    )


def _tar(source: Path, arcname: str) -> bytes:
    """`source` as an in-memory tar owned by root, named `arcname` ("." for a directory)."""

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(source, arcname=arcname, filter=owned_by_root)
    return buffer.getvalue()


class DockerInstance:
    """One docker sandbox: a running container and its workdir."""

    def __init__(
        self,
        engine: DockerEngine,
        handle: ContainerHandle,
        sandbox_id: str,
        *,
        workdir: str,
        output_limit: int,
        stop_timeout: float,
    ) -> None:
        self.sandbox_id = sandbox_id
        self._engine = engine
        self.handle = handle
        self.workdir = workdir
        self.output_limit = output_limit
        self.stop_timeout = stop_timeout
        self._files = DockerFiles(engine, handle.id, workdir, output_limit)
        self._stopping = False

    @property
    def container_id(self) -> str:
        return self.handle.id

    async def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        options: ExecOptions = PLAIN,
    ) -> ExecResult:
        if not argv:
            raise ValueError("argv must not be empty")
        workdir = self.workdir
        if options.cwd:  # checked by the API: relative, no ".."
            workdir = posixpath.join(self.workdir, options.cwd)
        with _engine_errors(f"exec in container {self.handle.ident}"):
            raw = await self._engine.exec(
                self.handle.id,
                argv,
                timeout=timeout,
                output_limit=self.output_limit,
                workdir=workdir,
                env=options.env,
                stdin=options.stdin,
                output=options.output,
                more=options.input,
                signals=options.signals,
            )
        return _result(raw)

    async def run_script(
        self, script: str, *, timeout: float, options: ExecOptions = PLAIN
    ) -> ExecResult:
        return await self.exec(["sh", "-c", script], timeout=timeout, options=options)

    async def put(self, source: Path, dest: str) -> None:
        """Copy `source` to `dest` like the process backend: a directory's contents into
        `dest`; a file into `dest` when that is a directory, else as `dest`.

        Raises:
            ValueError: `dest` leaves the workdir.
            FileNotFoundError: `source` does not exist.
            SandboxConfigError: the container refused the files (no space, say).
        """
        target = posixpath.normpath(posixpath.join(self.workdir, dest))
        if target != self.workdir and not target.startswith(self.workdir.rstrip("/") + "/"):
            raise ValueError(f"destination {dest!r} leaves the sandbox workdir {self.workdir}")
        if not await trio.Path(source).exists():
            raise FileNotFoundError(f"{source} does not exist")
        if await trio.Path(source).is_dir():
            directory, arcname = target, "."
        elif dest.endswith("/") or await self._is_dir(target):
            directory, arcname = target, source.name
        else:
            directory, arcname = posixpath.split(target)
        data = await trio.to_thread.run_sync(_tar, source, arcname)
        # The directory comes as an argument, never as shell text.
        argv = ["sh", "-c", 'mkdir -p -- "$1" && exec tar -x --no-same-owner -C "$1"', "sh"]
        with _engine_errors(f"put {source.name} into container {self.handle.ident}"):
            raw = await self._engine.exec_input(
                self.handle.id,
                [*argv, directory],
                data,
                timeout=PUT_TIMEOUT,
                output_limit=self.output_limit,
            )
        if raw.exit_code != 0:
            detail = raw.stderr.decode(errors="replace").strip()[-500:]
            raise SandboxConfigError(
                f"put {source} into {target} failed (exit {raw.exit_code}): {detail}"
            )

    async def upload(self, dest: str, data: IO[bytes], *, tar: bool, limit: int) -> None:
        with _engine_errors(f"put files into container {self.handle.ident}"):
            await self._files.upload(dest, data, tar=tar, limit=limit)

    async def download(self, path: str, limit: int) -> Download:
        with _engine_errors(f"get files from container {self.handle.ident}"):
            return await self._files.download(path, limit)

    async def listdir(self, path: str) -> Listing:
        with _engine_errors(f"list files in container {self.handle.ident}"):
            return await self._files.listdir(path)

    async def _is_dir(self, path: str) -> bool:
        result = await self.exec(["test", "-d", path], timeout=PROBE_TIMEOUT)
        return result.exit_code == 0

    async def check(self) -> None:
        if self.handle.exited:
            raise SandboxStateError(f"container {self.handle.ident} has exited")
        # A real request: the event stream cannot tell a quiet engine from a gone one.
        with _engine_errors(f"check container {self.handle.ident}"):
            found = await self._engine.list_owned(**{SANDBOX_LABEL: self.sandbox_id})
        state = next((c.state for c in found if c.id == self.handle.id), None)
        if state != "running":
            raise SandboxStateError(
                f"container {self.handle.ident} is {state or 'gone'}, not running"
            )

    async def wait_dead(self) -> str:
        term = await self.handle.wait()
        if self._stopping:
            await trio.sleep_forever()  # our own stop is no death
        return f"container {self.handle.ident} {term.detail}"

    async def stop(self) -> None:
        self._stopping = True
        await self.handle.stop(self.stop_timeout)

    def connection(self) -> dict[str, Any]:
        return {"container_id": self.handle.id, "workdir": self.workdir}


class DockerBackend:
    """Makes docker sandboxes from `config` on `engine`, labelled with their environment."""

    name = "docker"

    def __init__(
        self,
        engine: DockerEngine,
        config: DockerSandboxConfig,
        *,
        environment: str,
        output_limit: int,
        stop_timeout: float = 2.0,
    ) -> None:
        self.engine = engine
        self.config = config
        self.environment = environment
        self.output_limit = output_limit
        self.stop_timeout = stop_timeout

    async def reset(self) -> None:
        return None  # the daemon removes a previous run's containers before anything starts

    def spec(self, sandbox_id: str) -> ContainerSpec:
        """The container for `sandbox_id`, from the config."""
        config = self.config
        owner = _tmpfs_owner(config.user)
        tmpfs = {config.workdir: f"rw,exec,nosuid,nodev,size={config.tmpfs_size},{owner}"}
        if config.read_only and config.workdir != CONTAINER_TMP:
            tmpfs[CONTAINER_TMP] = f"rw,nosuid,nodev,size={config.tmpfs_size},mode=1777"
        return ContainerSpec(
            image=config.image,
            name="sandbox-" + safe_name(sandbox_id),
            command=list(config.command),
            env={"HOME": config.workdir},
            labels={ENVIRONMENT_LABEL: self.environment, SANDBOX_LABEL: sandbox_id},
            init=True,
            memory=config.memory,
            cpus=config.cpus,
            pids_limit=config.pids_limit,
            network=config.network,
            read_only=config.read_only,
            tmpfs=tmpfs,
            workdir=config.workdir,
            user=config.user,
            cap_drop=config.cap_drop,
            cap_add=config.cap_add,
            security_opt=["no-new-privileges"] if config.no_new_privileges else [],
            runtime=config.runtime,
        )

    async def create(self, sandbox_id: str) -> DockerInstance:
        """Run the container and prove an exec works in it.

        Raises:
            SandboxStateError: the engine is unreachable or failed.
            SandboxConfigError: the engine rejected the settings, or the container cannot
                run commands (it exited at once, or its image has no `timeout`).
        """
        what = f"sandbox {sandbox_id}"
        try:
            handle = await self.engine.run(self.spec(sandbox_id))
        except StartError as exc:
            raise classify(exc, what) from exc
        instance = DockerInstance(
            self.engine,
            handle,
            sandbox_id,
            workdir=self.config.workdir,
            output_limit=self.output_limit,
            stop_timeout=self.stop_timeout,
        )
        try:
            await prove_exec(instance, what, self.config.command, self.config.image)
        except BaseException:
            with trio.CancelScope(shield=True):
                await instance.stop()
            raise
        return instance


async def prove_exec(
    instance: DockerInstance, what: str, command: Sequence[str], image: str
) -> None:
    """Raise unless a command runs in `instance`'s container (a sandbox is ready only then).

    Raises:
        SandboxStateError: the engine failed.
        SandboxConfigError: the container exited at once, or its image cannot run `true`.
    """
    try:
        result = await instance.exec(["true"], timeout=PROBE_TIMEOUT)
    except SandboxStateError:
        if not instance.handle.exited:
            raise
        result = None
    if result is None or instance.handle.exited:
        with trio.move_on_after(1.0):
            await instance.handle.wait()
        raise SandboxConfigError(
            f"{what}: the container exited right after it started "
            f"(command {list(command)}); it must keep running"
        )
    if result.exit_code != 0:
        detail = (result.stderr or result.stdout).strip()[-300:]
        raise SandboxConfigError(
            f"{what}: a probe command failed in image {image} "
            f"(exit {result.exit_code}: {detail}); the image needs sh and coreutils"
        )
