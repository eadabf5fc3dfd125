"""Our Swarm services on a manager engine: create, follow their task, list and remove.

Why it is built this way:
- A service here is one replica with restart condition `none`: the daemon decides what
  replaces a dead task, as it does for a dead container, so Swarm must not race it.
- The image is never resolved against a registry (the CLI's `--no-resolve-image`): the
  SDK sends the spec as written and each node runs the image it has locally.
- `endpoint_mode = dnsrr`: no virtual IP, so no IPVS on the nodes.
- A manager reports no task events (20.10 has service and node events only), so placement
  is learnt by asking for the service's task, backing off from 50 ms to 1 s, under the
  caller's deadline. Deaths are not learnt here: the node's engine reports its
  container's end on its own event stream (`Containers` on that engine).
- Nothing leaks: a service is named before it is created and removed by name when
  creation fails or is cancelled; every service, and its task's container, carries
  `supervisor.instance=<id>`, so a restarted daemon finds and removes what it left.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
import trio

from supervisor.launchers.docker.containers import INSTANCE_LABEL
from supervisor.launchers.docker.sdk import ContainerNotFoundError, EngineClient, docker_errors

log = structlog.get_logger("supervisor.docker")

PLACEMENT_BACKOFF = (0.05, 1.0)  # first and longest pause between task queries


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One replica of a container, as a Swarm service; `name` is a prefix."""

    image: str
    name: str
    command: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)  # service and container
    user: str | None = None
    workdir: str | None = None
    read_only: bool = False
    init: bool = True
    cap_drop: Sequence[str] = ()
    cap_add: Sequence[str] = ()
    tmpfs: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # path -> size, mode
    memory: int | None = None  # bytes
    cpus: float | None = None
    pids_limit: int | None = None
    network: str | None = None
    constraints: Sequence[str] = ()
    spread: Sequence[str] = ()  # node label descriptors
    stop_grace: float = 2.0  # seconds

    def task_template(self, labels: Mapping[str, str]) -> dict[str, Any]:
        """The API's TaskTemplate (API 1.41)."""
        container: dict[str, Any] = {
            "Image": self.image,
            "Labels": dict(labels),
            "Env": [f"{k}={v}" for k, v in self.env.items()],
            "Init": self.init,
            "ReadOnly": self.read_only,
            "StopGracePeriod": round(self.stop_grace * 1e9),
            "Mounts": [
                {
                    "Type": "tmpfs",
                    "Target": path,
                    "TmpfsOptions": {"SizeBytes": size, "Mode": mode},
                }
                for path, (size, mode) in self.tmpfs.items()
            ],
        }
        optional = {
            "Command": list(self.command) or None,
            "User": self.user,
            "Dir": self.workdir,
            "CapabilityDrop": list(self.cap_drop) or None,
            "CapabilityAdd": list(self.cap_add) or None,
        }
        container.update({k: v for k, v in optional.items() if v is not None})
        limits = {
            "MemoryBytes": self.memory,
            "NanoCPUs": round(self.cpus * 1e9) if self.cpus else None,
            "Pids": self.pids_limit,
        }
        template: dict[str, Any] = {
            "ContainerSpec": container,
            "Resources": {"Limits": {k: v for k, v in limits.items() if v is not None}},
            "RestartPolicy": {"Condition": "none"},
            "Placement": {
                "Constraints": list(self.constraints),
                "Preferences": [{"Spread": {"SpreadDescriptor": d}} for d in self.spread],
            },
        }
        if self.network:
            template["Networks"] = [{"Target": self.network}]
        return template


@dataclass(frozen=True, slots=True)
class Task:
    """Where a service's task is, and how it is doing."""

    id: str
    node_id: str | None
    state: str  # new, pending, assigned, ..., running, failed, rejected, ...
    container_id: str | None
    error: str | None

    @property
    def ended(self) -> bool:
        return self.state in ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")


@dataclass(frozen=True, slots=True)
class OwnedService:
    """A service that carries our instance label."""

    id: str
    name: str
    labels: Mapping[str, str]


class Services:
    """The services of one swarm (through a manager) that carry our instance label."""

    def __init__(self, client: EngineClient, instance_id: str) -> None:
        self.instance_id = instance_id
        self._client = client
        self._api = client.api

    async def create(self, spec: ServiceSpec) -> OwnedService:
        """Create the service; nothing is left behind if this fails or is cancelled.

        Raises:
            DockerError: the manager refused or did not answer.
        """
        name = f"{spec.name}-{secrets.token_hex(4)}"
        labels = {**spec.labels, INSTANCE_LABEL: self.instance_id}
        create = partial(
            self._api.create_service,
            spec.task_template(labels),
            name=name,
            labels=labels,
            mode={"Replicated": {"Replicas": 1}},
            endpoint_spec={"Mode": "dnsrr"},
        )
        try:
            with docker_errors(f"create service {name}"):
                # Not abandoned on cancel: we must learn whether the service exists.
                created = await trio.to_thread.run_sync(create, limiter=self._client.limiter)
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(self._client.timeout):
                await self.remove(name)
            raise
        log.info("service_created", service=created["ID"][:12], name=name, image=spec.image)
        return OwnedService(created["ID"], name, labels)

    async def task(self, service_id: str) -> Task | None:
        """The service's newest task, if Swarm made one yet."""
        found = await self._client.call(
            "list tasks", self._api.tasks, filters={"service": service_id}
        )
        if not found:
            return None
        newest = max(found, key=lambda t: str(t.get("CreatedAt", "")))
        status = newest.get("Status") or {}
        container = (status.get("ContainerStatus") or {}).get("ContainerID")
        return Task(
            newest["ID"], newest.get("NodeID"), str(status.get("State", "")), container or None,
            status.get("Err"),
        )  # fmt: skip

    async def placed(
        self, service_id: str, abandon: Callable[[Task], bool] = lambda _: False
    ) -> Task:
        """Wait for the service's task to run (or end, or be `abandon`ed: returned as it
        is); the caller bounds the wait."""
        pause, longest = PLACEMENT_BACKOFF
        while True:
            task = await self.task(service_id)
            if task is not None and (
                task.ended or (task.state == "running" and task.container_id) or abandon(task)
            ):
                return task
            await trio.sleep(pause)
            pause = min(pause * 2, longest)

    async def list_owned(self, **labels: str) -> list[OwnedService]:
        """Every service with our instance label (and `labels`)."""
        wanted = [f"{INSTANCE_LABEL}={self.instance_id}", *(f"{k}={v}" for k, v in labels.items())]
        found = await self._client.call(
            "list services", self._api.services, filters={"label": wanted}
        )
        owned = []
        for s in found:
            spec = s.get("Spec") or {}
            labels_of = spec.get("Labels") or {}
            if labels_of.get(INSTANCE_LABEL) == self.instance_id:  # never trust the filter
                owned.append(OwnedService(s["ID"], str(spec.get("Name", "")), labels_of))
        return owned

    async def remove(self, ref: str) -> None:
        """Remove service `ref` (id or name); already gone is done.

        Raises:
            DockerError: the manager refused or did not answer.
        """
        with contextlib.suppress(ContainerNotFoundError):
            await self._client.call(f"remove service {ref}", self._api.remove_service, ref)

    async def node_id(self) -> str:
        """The swarm node id of this engine ("" when it is in no swarm)."""
        info = await self._client.call("engine info", self._api.info)
        return str((info.get("Swarm") or {}).get("NodeID") or "")
