"""`[environments.NAME]`: isolation settings of the process backend, and docker's defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from supervisor.config.environment import EnvironmentConfig


def test_process_sandboxes_are_isolated_by_default() -> None:
    """bubblewrap, no network, a uid range of its own and cgroup caps, unless told otherwise."""
    config = EnvironmentConfig()
    assert config.isolation == "bubblewrap"
    assert config.network == "none"
    assert config.uids.first >= 1000
    assert config.cgroup.memory is not None
    assert config.cgroup.processes is not None


@pytest.mark.parametrize("field", [{"network": "host"}, {"isolation": "none"}])
def test_process_isolation_keys_are_refused_on_other_backends(field: dict[str, str]) -> None:
    """`network`/`isolation` belong to the process backend: elsewhere they are an error."""
    with pytest.raises(ValidationError, match='only for backend "process"'):
        EnvironmentConfig.model_validate({"backend": "docker", "docker": {"image": "x"}, **field})


def test_isolation_none_takes_no_isolation_settings() -> None:
    """`isolation = "none"` with a `network` (or uids, cgroup) is a contradiction."""
    with pytest.raises(ValidationError, match='need isolation = "bubblewrap"'):
        EnvironmentConfig.model_validate({"isolation": "none", "network": "host"})


def test_a_uid_range_must_fit_under_the_largest_uid() -> None:
    """first + count - 1 may not pass 4294967294."""
    with pytest.raises(ValidationError, match="at most 4294967294"):
        EnvironmentConfig.model_validate({"uids": {"first": 4_294_967_000, "count": 1000}})


def test_docker_sandboxes_drop_privileges_by_default() -> None:
    """Not root, no capabilities, no-new-privileges; the runtime is the engine's default."""
    docker = EnvironmentConfig.model_validate(
        {"backend": "docker", "docker": {"image": "x"}}
    ).docker
    assert docker is not None
    assert docker.user == "65534:65534"
    assert docker.cap_drop == ["ALL"]
    assert docker.no_new_privileges is True
    assert docker.runtime is None
