"""The private swarm fixture: two Ready nodes in namespaces, and gone without a trace."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import PRIVATE_ENGINE_IMAGE
from tests.private_dockerd import mounts_under, processes_naming
from tests.private_swarm import CGROUP_ROOT, PrivateSwarm, leftovers

pytestmark = pytest.mark.slow


def machine_links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


def test_the_swarm_has_two_ready_nodes_each_with_the_image(private_swarm: PrivateSwarm) -> None:
    """The fixture's swarm lists two nodes, both Ready and Active, one of them the leader,
    and each node's engine has the sandbox image without any registry."""
    nodes = private_swarm.node_list()
    assert len(nodes) == 2
    assert {n["Status"] for n in nodes} == {"Ready"}
    assert {n["Availability"] for n in nodes} == {"Active"}
    assert sorted(n["ManagerStatus"] for n in nodes) == ["", "Leader"]
    assert {n["ID"] for n in nodes} == {node.node_id() for node in private_swarm.nodes}
    for node in private_swarm.nodes:
        assert node.docker("image", "ls", "--quiet", PRIVATE_ENGINE_IMAGE).strip()


def test_a_swarm_closes_without_a_trace(private_engine_image: Path) -> None:
    """A swarm that ran a service on each node leaves no namespace, veth, process, mount,
    cgroup or directory once closed, and the machine's own links are as they were."""
    links = machine_links()
    swarm = PrivateSwarm.create(2)
    try:
        bases = [node.base for node in swarm.nodes]
        cgroups = [node.cgroup_parent for node in swarm.nodes]
        assert not machine_links() - links  # the veths live in the namespaces only
        swarm.load(private_engine_image)
        began = time.time()
        swarm.manager.docker(
            "service", "create", "--detach", "--no-resolve-image", "--mode", "global",
            "--restart-condition", "none", "--endpoint-mode", "dnsrr", "--name", "spread",
            PRIVATE_ENGINE_IMAGE, "sleep", "infinity",
        )  # fmt: skip
        for node in swarm.nodes:  # the global service's task runs on every node
            node.first_event(began, "type=container", "event=start")
    finally:
        tag = swarm.tag
        swarm.close()
    assert leftovers(tag) == []
    assert machine_links() == links
    for base in bases:
        assert not processes_naming(base)
        assert not mounts_under(base)
        assert not base.exists()
    for parent in cgroups:
        assert not list(CGROUP_ROOT.glob(f"*/{parent.lstrip('/')}"))
