"""`[environments.NAME.swarm]`: sandboxes as one-replica services on a Docker Swarm.

The manager endpoint makes and removes services; each node's engine endpoint runs the
exec, file and event traffic for the tasks placed on it. Each endpoint has its own TLS.

Settings a Swarm service cannot carry on the engines this targets (Docker 20.10, API
1.41) are refused here rather than dropped, so a sandbox is never less isolated than its
config says: `no_new_privileges` and `runtime` have no service field, and a service
cannot join the `none` network (only swarm-scoped networks, `bridge` and `host`).
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from supervisor.config.types import (
    MIB,
    TIB,
    Bytes,
    Command,
    Cpus,
    EngineUrl,
    FilePath,
    Model,
    PidsLimit,
    Seconds,
    Timeout,
)

_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.-]{1,128}\s*(==|!=)\s*\S{1,128}$")


def _constraint(value: str) -> str:
    if _CONSTRAINT.match(value) is None:
        raise ValueError(
            f"expected a placement constraint such as node.labels.pool==sandboxes, got {value[:80]!r}"
        )
    return value


# A node attribute or label test, as `docker service create --constraint` takes it.
Constraint = Annotated[str, AfterValidator(_constraint)]
# A spread preference's descriptor: `node.labels.zone` spreads tasks over its values.
SpreadDescriptor = Annotated[
    str, StringConstraints(pattern=r"^node\.labels\.[A-Za-z0-9_.-]{1,128}$")
]
CapName = Annotated[str, StringConstraints(pattern=r"^[A-Z_]{1,32}$")]


class EngineTls(Model):
    """Client TLS for one engine at tcp://: a certificate and key, and the CA that signs
    the engine's certificate (without `ca` the engine's certificate is not verified)."""

    cert: FilePath
    key: FilePath
    ca: FilePath | None = None


class EngineEndpoint(Model):
    """How the daemon reaches one engine."""

    host: EngineUrl
    tls: EngineTls | None = None

    @model_validator(mode="after")
    def _tls_needs_tcp(self) -> Self:
        if self.tls is not None and self.host.startswith("unix://"):
            raise ValueError("tls applies to a tcp:// or https:// host, not a unix socket")
        return self


class SwarmSandboxConfig(Model):
    """How a `swarm` sandbox's service is made, and where the swarm's engines are."""

    manager: EngineEndpoint
    nodes: Annotated[list[EngineEndpoint], Field(min_length=1, max_length=1024)]
    image: Annotated[str, StringConstraints(min_length=1)]
    constraints: list[Constraint] = []
    spread: list[SpreadDescriptor] = []
    cpus: Cpus | None = None
    memory: Annotated[int, Bytes(6 * MIB, TIB)] | None = None
    pids_limit: PidsLimit | None = 256
    network: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "bridge"
    read_only: bool = True
    workdir: Annotated[str, StringConstraints(pattern=r"^/", max_length=4096)] = "/work"
    tmpfs_size: Annotated[int, Bytes(MIB, TIB)] = 256 * MIB
    command: Command = ["sleep", "infinity"]
    user: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")] | None
    ) = "65534:65534"
    cap_drop: list[CapName] = ["ALL"]
    cap_add: list[CapName] = []
    no_new_privileges: bool = False
    runtime: str | None = None
    start_timeout: Timeout = 60.0
    stop_timeout: Annotated[float, Seconds(0, 300)] = 2.0  # SIGTERM, then SIGKILL

    # Field validators, so that `check` names the very key it refuses.
    @field_validator("no_new_privileges")
    @classmethod
    def _no_nnp(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "Swarm services cannot set no-new-privileges on Docker 20.10; "
                'use backend = "docker" where it is required'
            )
        return value

    @field_validator("runtime")
    @classmethod
    def _no_runtime(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "Swarm services cannot choose a runtime on Docker 20.10; "
                "make it the nodes' default-runtime instead"
            )
        return value

    @field_validator("network")
    @classmethod
    def _no_none(cls, value: str) -> str:
        if value == "none":
            raise ValueError(
                'a service cannot join "none": use "bridge" or a swarm network '
                "(sandboxes then have a network)"
            )
        return value

    def endpoints(self) -> list[EngineEndpoint]:
        """The manager and every node, once each (by host)."""
        seen: dict[str, EngineEndpoint] = {}
        for endpoint in (self.manager, *self.nodes):
            seen.setdefault(endpoint.host, endpoint)
        return list(seen.values())
