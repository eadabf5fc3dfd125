"""`supervisor check --online` against the real 2-node swarm and a standalone engine."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PRIVATE_ENGINE_IMAGE
from tests.integration.conftest import run_cli
from tests.private_dockerd import PrivateDockerd
from tests.private_swarm import PrivateSwarm

pytestmark = pytest.mark.slow


def swarm_config(manager: str, nodes: list[str], docker_host: str) -> str:
    listed = ", ".join(f'{{ host = "{host}" }}' for host in nodes)
    return (
        "[environments.pool]\n"
        'backend = "swarm"\n'
        "[environments.pool.swarm]\n"
        f'image = "{PRIVATE_ENGINE_IMAGE}"\n'
        f'manager = {{ host = "{manager}" }}\n'
        f"nodes = [{listed}]\n"
        "[environments.local]\n"
        'backend = "docker"\n'
        "[environments.local.docker]\n"
        f'image = "{PRIVATE_ENGINE_IMAGE}"\n'
        f'docker_host = "{docker_host}"\n'
    )


def check_online(tmp_path: Path, text: str) -> tuple[int, dict[str, str]]:
    """Exit code and {key path: message} of `check --online --json` on `text`."""
    path = tmp_path / "supervisor.toml"
    path.write_text(text)
    done = run_cli("check", "--online", "--json", "-c", str(path))
    result = json.loads(done.stdout)
    return done.returncode, {p["path"]: p["message"] for p in result.get("problems", [])}


def test_check_online_passes_when_every_endpoint_answers_and_is_what_it_should_be(
    private_swarm: PrivateSwarm, tmp_path: Path
) -> None:
    """The swarm's manager, both of its nodes and a docker host that answer: exit 0."""
    manager, worker = private_swarm.nodes
    code, problems = check_online(
        tmp_path, swarm_config(manager.host, [manager.host, worker.host], worker.host)
    )
    assert (code, problems) == (0, {})


def test_check_online_names_the_key_of_each_endpoint_that_fails(
    private_swarm: PrivateSwarm,
    private_dockerds: Callable[[], PrivateDockerd],
    tmp_path: Path,
) -> None:
    """A manager that is a worker, a node in no swarm and engines that do not answer each
    fail at their own key path, and the check exits 1."""
    manager, worker = private_swarm.nodes
    alone = private_dockerds()
    gone = f"unix://{tmp_path}/nobody.sock"
    code, problems = check_online(
        tmp_path, swarm_config(manager.host, [manager.host, alone.host, gone], gone)
    )
    assert code == 1
    assert set(problems) == {
        "environments.pool.swarm.nodes.1",
        "environments.pool.swarm.nodes.2",
        "environments.local.docker.docker_host",
    }
    assert (
        "is in no swarm, not a node of the manager's swarm"
        in problems["environments.pool.swarm.nodes.1"]
    )
    assert "does not answer" in problems["environments.local.docker.docker_host"]
    code, problems = check_online(tmp_path, swarm_config(worker.host, [worker.host], worker.host))
    assert code == 1
    assert problems == {
        "environments.pool.swarm.manager": f"engine {worker.host} is not a swarm manager"
    }
