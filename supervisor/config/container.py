"""`kind = "container"`: a Docker container, supervised like a process.

Pure: imports nothing from the package but `config.types`. Field names match
`ProcessConfig` wherever the meaning is the same (`command`, `env`, `cwd`, `user`,
`stop_signal`, `success_exit_codes`, timeouts, `restart`, probes). Published ports are
bound to 127.0.0.1 only, whatever is asked: exposing a container is a host's decision.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, ClassVar, Literal

from pydantic import StringConstraints, field_validator

from supervisor.config.output import RotationOverrides
from supervisor.config.types import (
    HOUR,
    IN_PLACE_FIELDS,
    MIB,
    TIB,
    Between,
    Bytes,
    Command,
    Cpus,
    EngineUrl,
    EnvName,
    EnvValue,
    ExitCode,
    Failures,
    Grace,
    Interval,
    Model,
    Name,
    PidsLimit,
    ResourceSpec,
    RestartOverrides,
    Seconds,
    SignalName,
    Timeout,
)

MIN_MEMORY = 6 * MIB  # the Docker engine refuses less
# Memory for a container: Docker's minimum up to what any host here could have.
Memory = Annotated[int, Bytes(MIN_MEMORY, TIB)]
ContainerPath = Annotated[str, StringConstraints(pattern=r"^/", max_length=4096)]
# "source:/target" or "source:/target:ro"; the source is a host path or a volume name.
Volume = Annotated[str, StringConstraints(pattern=r"^[^:\x00]+:/[^:\x00]*(:(ro|rw))?$")]
ContainerPort = Annotated[str, StringConstraints(pattern=r"^\d{1,5}(/(tcp|udp))?$")]


class ContainerProbeConfig(Model):
    """A command run inside the container (`docker exec`); exit code 0 is healthy."""

    exec: Command
    timeout: Annotated[float, Seconds(0, HOUR, low_open=True)] = 2.0
    interval: Interval = 5.0
    failures: Failures = 3


class ContainerConfig(ResourceSpec):
    """`kind = "container"`: `image` run with limits, on 127.0.0.1-only published ports."""

    # A container's stop signal is fixed when it is created: a change needs a new one.
    in_place_fields: ClassVar[frozenset[str]] = IN_PLACE_FIELDS - {"stop_signal"}

    kind: Literal["container"]
    image: Annotated[str, StringConstraints(min_length=1)]
    command: Command | None = None  # None: the image's own CMD
    env: dict[EnvName, EnvValue] = {}
    cwd: ContainerPath | None = None
    user: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.:-]{0,127}$")] | None
    ) = None
    volumes: list[Volume] = []
    # container port -> host port (0: the engine picks)
    ports: dict[ContainerPort, Annotated[int, Between(0, 65535)]] = {}
    memory: Memory | None = None
    cpus: Cpus | None = None
    pids_limit: PidsLimit | None = None
    network: str | None = None  # "none", "bridge", "host" or a network name; None: default
    init: bool = True
    read_only: bool = False
    tmpfs: dict[
        ContainerPath, Annotated[str, StringConstraints(max_length=256)]
    ] = {}  # mount point -> options ("size=64m")
    docker_host: EngineUrl | None = None  # None: DOCKER_HOST, else the local socket
    adopt: bool = False
    autostart: bool = True
    depends_on: list[Name] = []
    start_timeout: Timeout = 30.0
    stop_signal: SignalName | None = None  # None: the image's STOPSIGNAL, else SIGTERM
    stop_timeout: Grace = 10.0
    success_exit_codes: list[ExitCode] = [0]
    startup: ContainerProbeConfig | None = None
    health: ContainerProbeConfig | None = None
    restart: RestartOverrides = RestartOverrides()
    log: RotationOverrides = RotationOverrides()  # over [defaults.log]; `target` is the engine's

    @field_validator("ports")
    @classmethod
    def _valid_ports(cls, ports: dict[str, int]) -> dict[str, int]:
        for port in ports:
            if not 1 <= int(port.split("/")[0]) <= 65535:
                raise ValueError(f"container port {port!r} must be between 1 and 65535")
        return ports

    def docker_hosts(self) -> list[str | None]:
        return [self.docker_host]

    def adoptable(self) -> bool:
        return self.adopt

    def fingerprint(self) -> str:
        """A hash of the settings that shape the container itself (adoption must match it)."""
        shape = self.model_dump_json(
            include={
                "image", "command", "env", "cwd", "user", "volumes", "ports", "memory",
                "cpus", "pids_limit", "network", "init", "read_only", "tmpfs", "stop_signal",
            }
        )  # fmt: skip
        return hashlib.sha256(shape.encode()).hexdigest()[:16]
