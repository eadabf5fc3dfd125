"""Docker containers for resources and sandboxes: the only code that calls the docker SDK.

One module per responsibility: `engine` (one engine: its requests and its event-stream
reader), `engines` (the daemon's engines, one per `docker_host`), `containers` (run,
adopt, stop, remove, labels), `exec` (commands in a container), `services` (Swarm
services on a manager), `nodes` (the manager's view of its nodes), `probe` (one look
at an engine), `events` (per-container watches fed by the stream), `sdk` (the blocking
SDK's edges: threads, deadlines, error mapping) and `unix_adapter` (a fix to the SDK's
transport).

Importing this package does not import the SDK: `sdk` loads it when the first engine
opens, so a daemon that supervises only processes never pays for it.
"""

from __future__ import annotations

from supervisor.launchers.docker.containers import (
    CONFIG_HASH_LABEL,
    INSTANCE_LABEL,
    RESOURCE_LABEL,
    ContainerHandle,
    ContainerSpec,
    OwnedContainer,
)
from supervisor.launchers.docker.engine import DockerEngine, open_docker_engine
from supervisor.launchers.docker.engines import DockerEngines
from supervisor.launchers.docker.exec import ExecResult
from supervisor.launchers.docker.nodes import NodeStates
from supervisor.launchers.docker.probe import EngineFacts, probe_engine
from supervisor.launchers.docker.sdk import (
    ContainerNotFoundError,
    DockerError,
    EngineUnavailableError,
    TLSFiles,
)
from supervisor.launchers.docker.services import OwnedService, Services, ServiceSpec, Task

__all__ = [
    "CONFIG_HASH_LABEL",
    "INSTANCE_LABEL",
    "RESOURCE_LABEL",
    "ContainerHandle",
    "ContainerNotFoundError",
    "ContainerSpec",
    "DockerEngine",
    "DockerEngines",
    "DockerError",
    "EngineFacts",
    "EngineUnavailableError",
    "ExecResult",
    "NodeStates",
    "OwnedContainer",
    "OwnedService",
    "ServiceSpec",
    "Services",
    "TLSFiles",
    "Task",
    "open_docker_engine",
    "probe_engine",
]
