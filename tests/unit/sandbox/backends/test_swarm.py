"""Which engine is which swarm node (supervisor/sandbox/backends/swarm.py), over fake engines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from supervisor.config.swarm import SwarmSandboxConfig
from supervisor.launchers.docker import DockerEngine
from supervisor.sandbox.backends.swarm import SwarmBackend


@dataclass
class FakeServices:
    node: str
    asked: int = 0

    async def node_id(self) -> str:
        self.asked += 1
        return self.node


@dataclass
class FakeEngine:
    """An engine that tells its node id and counts its reconnects."""

    services: FakeServices
    reconnects: int = 0


def backend(*engines: FakeEngine) -> SwarmBackend:
    config = SwarmSandboxConfig.model_validate(
        {"image": "i", "manager": {"host": "unix:///m.sock"}, "nodes": [{"host": "unix:///n"}]}
    )
    nodes = [cast(DockerEngine, e) for e in engines]
    return SwarmBackend(nodes[0], nodes, config, environment="env", output_limit=1024)


async def test_a_node_s_engine_is_asked_once_until_it_reconnects() -> None:
    """The node id an engine told is kept; after that engine reconnects it is asked again
    (a restarted engine may be a new node), and a node id no engine tells is None."""
    a, b = FakeEngine(FakeServices("node-a")), FakeEngine(FakeServices("node-b"))
    swarm = backend(a, b)
    assert await swarm.engine_of("node-b") is cast(DockerEngine, b)
    assert await swarm.engine_of("node-a") is cast(DockerEngine, a)
    assert (a.services.asked, b.services.asked) == (1, 1)
    assert await swarm.engine_of("node-b") is cast(DockerEngine, b)
    assert b.services.asked == 1
    b.reconnects += 1
    b.services.node = "node-b2"  # it left the swarm and joined again
    assert await swarm.engine_of("node-b") is None
    assert await swarm.engine_of("node-b2") is cast(DockerEngine, b)
    assert a.services.asked == 1  # a's answer still holds
