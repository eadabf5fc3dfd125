"""`kind = "container"`: a Docker container, supervised like a process.

Pure: imports nothing from the package but `config.types`. Field names match
`ProcessConfig` wherever the meaning is the same (`command`, `env`, `cwd`, `user`,
`stop_signal`, `success_exit_codes`, timeouts, `restart`, probes). Published ports are
bound to 127.0.0.1 only, whatever is asked: exposing a container is a host's decision.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, StringConstraints, field_validator

from supervisor.config.types import (
    IN_PLACE_FIELDS,
    Command,
    Duration,
    Model,
    Name,
    PositiveDuration,
    RestartOverrides,
    SignalName,
    engine_url,
)

MIN_MEMORY = 6 * 1024 * 1024  # the Docker engine refuses less
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_HINT = 'use e.g. "512m", "2g" or a number of bytes'


def parse_size(value: object) -> int:
    """Bytes from "512m", "1.5g", "64k" (powers of 1024, as Docker reads them) or an int.

    Raises:
        ValueError: with a message that says what to write instead.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size, got {value!r} ({_SIZE_HINT})")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value.strip())
        if match is None:
            raise ValueError(f"invalid size {value!r} ({_SIZE_HINT})")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size < MIN_MEMORY:
        raise ValueError(f"must be at least 6m (Docker's minimum), got {value!r}")
    return size


Memory = Annotated[int, BeforeValidator(parse_size)]
ContainerPath = Annotated[str, StringConstraints(pattern=r"^/")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[^=\x00]+$")]
# "source:/target" or "source:/target:ro"; the source is a host path or a volume name.
Volume = Annotated[str, StringConstraints(pattern=r"^[^:\x00]+:/[^:\x00]*(:(ro|rw))?$")]
Port = Annotated[str, StringConstraints(pattern=r"^\d{1,5}(/(tcp|udp))?$")]


class ContainerProbeConfig(Model):
    """A command run inside the container (`docker exec`); exit code 0 is healthy."""

    exec: Command
    timeout: PositiveDuration = 2.0
    interval: PositiveDuration = 5.0
    failures: int = Field(3, ge=1)


class ContainerConfig(Model):
    """`kind = "container"`: `image` run with limits, on 127.0.0.1-only published ports."""

    # A container's stop signal is fixed when it is created: a change needs a new one.
    in_place_fields: ClassVar[frozenset[str]] = IN_PLACE_FIELDS - {"stop_signal"}

    kind: Literal["container"]
    image: Annotated[str, StringConstraints(min_length=1)]
    command: Command | None = None  # None: the image's own CMD
    env: dict[EnvName, str] = {}
    cwd: ContainerPath | None = None
    user: str | None = None
    volumes: list[Volume] = []
    ports: dict[Port, Annotated[int, Field(ge=0, le=65535)]] = {}  # container -> host (0: any)
    memory: Memory | None = None
    cpus: float | None = Field(None, gt=0, le=1024)
    pids_limit: int | None = Field(None, ge=1)
    network: str | None = None  # "none", "bridge", "host" or a network name; None: default
    init: bool = True
    read_only: bool = False
    tmpfs: dict[ContainerPath, str] = {}  # mount point -> options ("size=64m")
    docker_host: str | None = None  # None: DOCKER_HOST, else the local socket
    adopt: bool = False
    autostart: bool = True
    depends_on: list[Name] = []
    start_timeout: PositiveDuration = 30.0
    stop_signal: SignalName | None = None  # None: the image's STOPSIGNAL, else SIGTERM
    stop_timeout: Duration = 10.0
    success_exit_codes: list[Annotated[int, Field(ge=0, le=255)]] = [0]
    startup: ContainerProbeConfig | None = None
    health: ContainerProbeConfig | None = None
    restart: RestartOverrides = RestartOverrides()

    @field_validator("ports")
    @classmethod
    def _valid_ports(cls, ports: dict[str, int]) -> dict[str, int]:
        for port in ports:
            if not 1 <= int(port.split("/")[0]) <= 65535:
                raise ValueError(f"container port {port!r} must be between 1 and 65535")
        return ports

    @field_validator("docker_host")
    @classmethod
    def _engine_url(cls, value: str | None) -> str | None:
        return engine_url(value)

    def fingerprint(self) -> str:
        """A hash of the settings that shape the container itself (adoption must match it)."""
        shape = self.model_dump_json(
            include={
                "image", "command", "env", "cwd", "user", "volumes", "ports", "memory",
                "cpus", "pids_limit", "network", "init", "read_only", "tmpfs", "stop_signal",
            }
        )  # fmt: skip
        return hashlib.sha256(shape.encode()).hexdigest()[:16]
