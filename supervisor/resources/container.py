"""`kind = "container"`: a Docker container, run and watched through its engine's events.

Ready means running, or, when a `startup` (else `health`) probe is set, that probe
passing inside the container. With `adopt = true` a container left running by an earlier
daemon of this state directory (same instance id, same resource, same settings hash) is
taken over instead of replaced, so a daemon restart does not restart the service.

Its output is the engine's: kept by the json-file driver, rotated by `max-size`/`max-file`
from the resource's `log` settings, and read back through the engine's log stream
(`supervisor logs`), so the daemon holds none of it. It lives as long as its container:
one that ended is removed, and its output with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from contextlib import aclosing

import structlog
import trio

from supervisor.config.container import ContainerConfig, ContainerProbeConfig
from supervisor.config.output import LogConfig
from supervisor.errors import MisconfiguredError, NotRunningError, StartError
from supervisor.launchers.docker import (
    CONFIG_HASH_LABEL,
    RESOURCE_LABEL,
    ContainerHandle,
    ContainerNotFoundError,
    ContainerSpec,
    DockerEngine,
    DockerError,
)
from supervisor.supervision.policy import Termination, exit_is_success
from supervisor.supervision.resource import (
    CheckResult,
    CheckSettings,
    Handle,
    OutputSource,
    ResourceBase,
)
from supervisor.supervision.states import Liveness

PROBE_OUTPUT_LIMIT = 4096
READY_POLL = 0.5  # how often a `health` probe is tried while STARTING (no `startup` set)

log = structlog.get_logger("supervisor.container")


class ContainerResource(ResourceBase):
    """Runs `image` with its limits on `engine`; probes it with `docker exec` if asked."""

    kind = "container"

    def __init__(
        self,
        name: str,
        config: ContainerConfig,
        engine: DockerEngine,
        log: LogConfig | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._engine = engine
        self._success = frozenset(config.success_exit_codes)
        self._log = log or LogConfig()
        self._handle: ContainerHandle | None = None

    def reconfigure(self, config: ContainerConfig) -> None:
        """Apply settings that need no new container (probes, exit codes)."""
        self.config = config
        self._success = frozenset(config.success_exit_codes)

    @property
    def check_settings(self) -> CheckSettings | None:
        health = self.config.health
        if health is None:
            return None
        return CheckSettings(health.interval, health.timeout, health.failures)

    def spec(self) -> ContainerSpec:
        """What `start` asks the engine to run."""
        c = self.config
        return ContainerSpec(
            image=c.image,
            name=f"supervisor-{self.name}",
            command=c.command,
            env={"SUPERVISOR_RESOURCE": self.name, **c.env},
            labels={RESOURCE_LABEL: self.name, CONFIG_HASH_LABEL: self.fingerprint()},
            init=c.init,
            memory=c.memory,
            cpus=c.cpus,
            pids_limit=c.pids_limit,
            network=c.network,
            read_only=c.read_only,
            tmpfs=c.tmpfs,
            workdir=c.cwd,
            user=c.user,
            volumes=c.volumes,
            ports=dict(c.ports),
            stop_signal=c.stop_signal,
            log_max_bytes=self._log.max_bytes,
            log_files=self._log.backups + 1,
        )

    def fingerprint(self) -> str:
        """The config's fingerprint, with the output settings when they are not the default
        (so containers made before `log` existed are still adopted)."""
        fingerprint = self.config.fingerprint()
        if (self._log.max_bytes, self._log.backups) == (LogConfig().max_bytes, LogConfig().backups):
            return fingerprint
        rotation = f"{fingerprint}/{self._log.max_bytes}/{self._log.backups}"
        return hashlib.sha256(rotation.encode()).hexdigest()[:16]

    async def start(self) -> Handle:
        handle = await self._adopt() if self.config.adopt else None
        if handle is None:
            handle = await self._engine.run(self.spec())
        self._handle = handle
        return handle

    def output(self) -> OutputSource:
        return self

    async def read(self, stream: str, lines: int, follow: bool) -> AsyncGenerator[bytes, None]:
        """The output of the running container, from the engine's log stream; a follow
        ends when the container does."""
        handle = self._handle
        if handle is None or handle.exited:
            raise NotRunningError(f"{self.name} has no running container (its output goes with it)")
        try:
            async with aclosing(self._engine.logs(handle.id, stream, lines, follow)) as pieces:
                async for piece in pieces:
                    yield piece
        except ContainerNotFoundError:
            raise NotRunningError(f"{self.name}: its container is gone") from None

    async def _adopt(self) -> ContainerHandle | None:
        """Take over a running container with our settings; remove stale ones of ours."""
        fingerprint = self.fingerprint()
        adopted: ContainerHandle | None = None
        try:
            for found in await self._engine.find(self.name):
                if (
                    adopted is None
                    and found.state == "running"
                    and found.labels.get(CONFIG_HASH_LABEL) == fingerprint
                ):
                    adopted = await self._engine.attach(found.id)
                    if adopted.exited:  # died between the listing and the inspect
                        await adopted.stop(0.0)
                        adopted = None
                    else:
                        log.info("container_adopted", resource=self.name, container=found.id[:12])
                        continue
                await self._engine.remove_owned(found)
        except DockerError as exc:
            raise StartError(f"adopt: {exc}") from exc
        return adopted

    async def ready(self, handle: Handle) -> None:
        probe = self.config.startup or self.config.health
        if probe is None:
            return
        interval = self.config.startup.interval if self.config.startup else READY_POLL
        while True:
            result = await self._probe(handle, probe)
            if result.ok:
                return
            if result.liveness is Liveness.MISCONFIGURED:
                raise MisconfiguredError(result.detail)
            await trio.sleep(interval)

    async def check(self, handle: Handle) -> CheckResult:
        assert self.config.health is not None
        return await self._probe(handle, self.config.health)

    def is_success(self, term: Termination) -> bool:
        return exit_is_success(term, self._success)

    async def _probe(self, handle: Handle, probe: ContainerProbeConfig) -> CheckResult:
        assert isinstance(handle, ContainerHandle)
        try:
            result = await self._engine.exec(
                handle.id, probe.exec, timeout=probe.timeout, output_limit=PROBE_OUTPUT_LIMIT
            )
        except DockerError as exc:
            return CheckResult(Liveness.UNKNOWN, f"exec probe: {exc}")
        if result.exit_code == 0:
            return CheckResult(Liveness.ONLINE)
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        tail = " | ".join(output.splitlines()[-3:])
        if result.timed_out:
            detail = f"exec probe timed out after {probe.timeout:g}s"
        else:
            detail = f"exec probe exited with code {result.exit_code}"
        detail += f": {tail}" if tail else ""
        # 126/127: the probe command is not in the image (or not executable).
        if result.exit_code in (126, 127):
            return CheckResult(Liveness.MISCONFIGURED, detail)
        return CheckResult(Liveness.OFFLINE, detail)
