"""`backend = "swarm"`: a sandbox is a one-replica Swarm service, used through its node.

Why it is built this way:
- The manager only places: it creates the service (restart condition none, dnsrr, the
  image as the node has it; see `launchers.docker.services`) and says which node runs
  its task. Everything after that goes to that node's engine, as for a `docker` sandbox:
  exec, files and the keepalive, and the death, which the node's own event stream
  reports (a manager has no container events). So a `SwarmInstance` is a
  `DockerInstance` on the node's engine that also removes its service when it stops.
- A lost node is a partial outage, not a death: the manager reports the node down
  (`launchers.docker.nodes`, pushed by its node events) and every sandbox placed there
  ends as lost (`SandboxLostError`: its session ends `lost`, 410 to its client). So
  does a sandbox whose container dies with its node's engine (a dockerd stopped kills
  its containers before the manager sees the node down): a death after which that
  engine does not answer is a loss. Its
  replacement is a new service, which the manager places on a node still up; sandboxes
  on the other nodes are untouched. Its stop removes the container through the node's
  engine when that still answers (a partition), and the service in any case: a node
  that returns learns from the manager that its task is gone, and its engine removes
  the container (pinned by test_swarm_node_loss.py, both tests).
- Which engine is which node is asked, not configured: each node endpoint's engine
  tells its swarm node id, learnt once and again whenever a task lands on a node not
  known yet (a node that joined later, an engine that was down). What an engine told is
  forgotten when it reconnects: a restarted engine may have left and joined anew.
- Isolation is never silently weaker than configured: what a 20.10 service cannot
  carry is refused by the config (`config.swarm`); the tmpfs workdir is owned through
  its mode (a service's tmpfs takes no uid), 0777 unless the user is root. A service's
  tmpfs is always `noexec` on 20.10: run scripts with `sh script`, not `./script`.
- A task that cannot start (no node satisfies the constraints, the image is missing on
  the chosen node) leaves no service behind and is a state error: capacity can return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
import trio

from supervisor.config.swarm import SwarmSandboxConfig
from supervisor.errors import SandboxLostError, SandboxStateError
from supervisor.launchers.docker import (
    DockerEngine,
    DockerError,
    NodeStates,
    OwnedService,
    ServiceSpec,
    Task,
)
from supervisor.sandbox.backends.docker import (
    CONTAINER_TMP,
    ENVIRONMENT_LABEL,
    SANDBOX_LABEL,
    DockerInstance,
    classify,
    prove_exec,
    safe_name,
)

log = structlog.get_logger("supervisor.sandbox")

ENGINE_ANSWER_TIMEOUT = 5.0  # after a death: a node engine silent this long is gone


class SwarmInstance(DockerInstance):
    """One swarm sandbox: its service, and its task's container on the node's engine."""

    def __init__(
        self,
        manager: DockerEngine,
        service: OwnedService,
        node_id: str,
        engine: DockerEngine,
        **kwargs: Any,
    ) -> None:
        super().__init__(engine, **kwargs)
        self.engine = engine  # the node's
        self._manager = manager
        self._nodes: NodeStates = manager.nodes()
        self.service = service
        self.node_id = node_id

    async def wait_dead(self) -> str:
        """The container's death, or the loss of its node (raised).

        Raises:
            SandboxLostError: the manager reports the node down, or the container died
                with its node's engine (it no longer answers).
        """
        first: list[tuple[bool, str]] = []  # (lost, what)
        async with trio.open_nursery() as nursery:

            async def node_down() -> None:
                first.append((True, await self._nodes.wait_down(self.node_id)))
                nursery.cancel_scope.cancel()

            async def died() -> None:
                first.append((False, await DockerInstance.wait_dead(self)))
                nursery.cancel_scope.cancel()

            nursery.start_soon(node_down)
            nursery.start_soon(died)
        lost, what = first[0]
        if lost:
            raise SandboxLostError(
                f"sandbox {self.sandbox_id} is lost: the swarm manager reports its node "
                f"{self.node_id[:12]} {what}"
            )
        if not await self._engine_answers():
            raise SandboxLostError(
                f"sandbox {self.sandbox_id} is lost: its node {self.node_id[:12]}'s engine "
                f"stopped ({what})"
            )
        return what

    async def _engine_answers(self) -> bool:
        # A stopping dockerd closes its listener before it stops its containers, so a
        # death it caused finds no new connection taken; an ordinary one finds it answering.
        return await self.engine.accepts_connections(ENGINE_ANSWER_TIMEOUT)

    async def stop(self) -> None:
        await super().stop()
        with trio.CancelScope(shield=True), trio.move_on_after(30.0):
            try:
                await self._manager.services.remove(self.service.id)
            except DockerError as exc:  # its container is gone; reset() removes it later
                log.warning("service_not_removed", service=self.service.name, error=str(exc))

    def connection(self) -> dict[str, Any]:
        return {**super().connection(), "service": self.service.name, "node_id": self.node_id}


class SwarmBackend:
    """Makes swarm sandboxes from `config` through `manager`, used through `nodes`."""

    name = "swarm"

    def __init__(
        self,
        manager: DockerEngine,
        nodes: Sequence[DockerEngine],
        config: SwarmSandboxConfig,
        *,
        environment: str,
        output_limit: int,
    ) -> None:
        self.manager = manager
        self.nodes = list(nodes)
        self.config = config
        self.environment = environment
        self.output_limit = output_limit
        # node id -> (its engine, that engine's reconnect count when it told us)
        self._by_node: dict[str, tuple[DockerEngine, int]] = {}

    async def reset(self) -> None:
        """Remove the services a previous run of this daemon left for this environment
        (their containers on the nodes are reaped as each node's engine opens)."""
        owned = await self.manager.services.list_owned(**{ENVIRONMENT_LABEL: self.environment})
        for service in owned:
            await self.manager.services.remove(service.id)
            log.warning("orphan_reaped", kind="service", service=service.name)

    def spec(self, sandbox_id: str) -> ServiceSpec:
        """The service for `sandbox_id`, from the config."""
        config = self.config
        # 0o777, not 1777: the engine drops a mode with the sticky bit (pinned by
        # test_a_pool_of_six_spreads_over_both_nodes_and_serves_exec_and_files).
        mode = 0o755 if (config.user or "0").partition(":")[0] in ("0", "root") else 0o777
        tmpfs = {config.workdir: (config.tmpfs_size, mode)}
        if config.read_only and config.workdir != CONTAINER_TMP:
            tmpfs[CONTAINER_TMP] = (config.tmpfs_size, 0o777)
        return ServiceSpec(
            image=config.image,
            name="sandbox-" + safe_name(sandbox_id),
            command=list(config.command),
            env={"HOME": config.workdir},
            labels={ENVIRONMENT_LABEL: self.environment, SANDBOX_LABEL: sandbox_id},
            user=config.user,
            # No working dir: the engine turns a tmpfs working dir to 0755 (root's); each
            # exec names the workdir instead.
            read_only=config.read_only,
            cap_drop=config.cap_drop,
            cap_add=config.cap_add,
            tmpfs=tmpfs,
            memory=config.memory,
            cpus=config.cpus,
            pids_limit=config.pids_limit,
            network=config.network,
            constraints=config.constraints,
            spread=config.spread,
            stop_grace=config.stop_timeout,
        )

    async def create(self, sandbox_id: str) -> SwarmInstance:
        """Create the service, wait for its task to run, and prove an exec works in it.

        Raises:
            SandboxStateError: an engine is unreachable, or the task could not run.
            SandboxConfigError: the manager rejected the settings, or the container
                cannot run commands.
        """
        what = f"sandbox {sandbox_id}"
        services = self.manager.services
        try:
            service = await services.create(self.spec(sandbox_id))
        except DockerError as exc:
            raise classify(exc, what) from exc
        try:
            return await self._start(service, sandbox_id, what)
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(30.0):
                try:
                    await services.remove(service.id)
                except DockerError as exc:
                    log.warning("service_not_removed", service=service.name, error=str(exc))
            raise

    async def _start(self, service: OwnedService, sandbox_id: str, what: str) -> SwarmInstance:
        try:
            with trio.fail_after(self.config.start_timeout):
                task = await self.manager.services.placed(service.id, abandon=self._on_down_node)
        except trio.TooSlowError:
            raise SandboxStateError(
                f"{what}: its task did not run within {self.config.start_timeout:g} s "
                "(no node satisfies the constraints, or none has capacity)"
            ) from None
        except DockerError as exc:
            raise SandboxStateError(f"{what}: {exc}") from exc
        if not task.ended and self._on_down_node(task):
            # A node whose engine just stopped is still up for the manager a while; a
            # task placed there then never runs, nor is placed elsewhere (restart none).
            raise SandboxStateError(
                f"{what}: its task was placed on node {str(task.node_id)[:12]}, now down"
            )
        if task.ended or task.node_id is None or task.container_id is None:
            raise SandboxStateError(f"{what}: its task {task.state}: {task.error or 'no reason'}")
        engine = await self.engine_of(task.node_id)
        if engine is None:
            raise SandboxStateError(
                f"{what}: its task runs on node {task.node_id[:12]}, whose engine is not "
                "among the configured nodes"
            )
        try:
            handle = await engine.attach(task.container_id)
        except DockerError as exc:
            raise SandboxStateError(f"{what}: {exc}") from exc
        instance = SwarmInstance(
            self.manager,
            service,
            task.node_id,
            engine,
            handle=handle,
            sandbox_id=sandbox_id,
            workdir=self.config.workdir,
            output_limit=self.output_limit,
            stop_timeout=self.config.stop_timeout,
        )
        try:
            await prove_exec(instance, what, self.config.command, self.config.image)
        except BaseException:
            with trio.CancelScope(shield=True):
                await DockerInstance.stop(instance)  # the caller removes the service
            raise
        return instance

    def _on_down_node(self, task: Task) -> bool:
        nodes = self.manager.nodes()
        return task.node_id is not None and nodes.state(task.node_id) in ("down", "removed")

    async def engine_of(self, node_id: str) -> DockerEngine | None:
        """The configured engine of swarm node `node_id` (asking the nodes on a miss)."""
        self._by_node = {
            node: (engine, seen)
            for node, (engine, seen) in self._by_node.items()
            if engine.reconnects == seen  # a reconnected engine may be a new node now
        }
        if node_id not in self._by_node:
            known = {id(engine) for engine, _ in self._by_node.values()}
            for engine in self.nodes:
                if id(engine) in known:
                    continue
                seen = engine.reconnects
                try:
                    with trio.move_on_after(10.0):
                        found = await engine.services.node_id()
                        if found:
                            self._by_node[found] = (engine, seen)
                except DockerError:
                    continue  # that engine is down: asked again on the next miss
        entry = self._by_node.get(node_id)
        return entry[0] if entry is not None else None
