"""The container config model: sizes, ports, volumes and the adoption fingerprint."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from supervisor.config.container import MIN_MEMORY, ContainerConfig
from supervisor.config.types import parse_size


def container(**fields: Any) -> ContainerConfig:
    return ContainerConfig.model_validate({"kind": "container", "image": "debian", **fields})


def test_defaults_match_the_process_kind() -> None:
    """Unset fields mean what they mean for processes; init is on and nothing is adopted."""
    c = container()
    assert (c.init, c.adopt, c.autostart, c.read_only) == (True, False, True, False)
    assert (c.start_timeout, c.stop_timeout, c.success_exit_codes) == (30.0, 10.0, [0])
    assert c.command is None
    assert c.restart.policy is None


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 1024**2), ("2g", 2 * 1024**3), ("1.5G", 1536 * 1024**2), ("64MiB", 64 << 20)],
)
def test_memory_sizes_are_docker_style_binary_units(text: str, size: int) -> None:
    """Sizes read like Docker's: k, m, g are powers of 1024."""
    assert container(memory=text).memory == size


@pytest.mark.parametrize("bad", ["1m", "lots", "-5m", "12q", True, 1.5])
def test_bad_sizes_say_what_to_write(bad: object) -> None:
    """A size below Docker's minimum or in no known unit is refused with a hint."""
    with pytest.raises(ValidationError, match=r"6m|512m"):
        container(memory=bad)


@given(st.integers(min_value=MIN_MEMORY, max_value=1 << 50))
def test_sizes_in_bytes_round_trip(size: int) -> None:
    """A plain byte count is taken as it is, and its "k" form parses back to it."""
    assert parse_size(size) == size
    if size % 1024 == 0:
        assert parse_size(f"{size // 1024}k") == size


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"ports": {"0": 8080}}, "ports"),
        ({"ports": {"80/sctp": 0}}, "ports"),
        ({"ports": {"80": 70000}}, "ports"),
        ({"volumes": ["relative"]}, "volumes"),
        ({"volumes": ["/src:dst"]}, "volumes"),
        ({"tmpfs": {"tmp": ""}}, "tmpfs"),
        ({"cwd": "relative"}, "cwd"),
        ({"cpus": 0}, "cpus"),
        ({"pids_limit": 0}, "pids_limit"),
        ({"docker_host": "docker.sock"}, "docker_host"),
        ({"health": {"http": "http://x/"}}, "health"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_fields_are_refused(fields: dict[str, Any], where: str) -> None:
    """Each malformed field is an error located at that field."""
    with pytest.raises(ValidationError) as info:
        container(**fields)
    assert any(where in (str(loc) for loc in e["loc"]) for e in info.value.errors())


def test_valid_ports_volumes_and_probes() -> None:
    """Ports map container to host (0: any), volumes are docker-style, probes are exec-only."""
    c = container(
        ports={"8080": 0, "53/udp": 5353},
        volumes=["/srv/data:/data:ro", "cache:/cache"],
        health={"exec": ["true"], "interval": "1s"},
        stop_signal="INT",
    )
    assert c.ports == {"8080": 0, "53/udp": 5353}
    assert c.health is not None
    assert (c.health.exec, c.health.interval, c.health.failures) == (["true"], 1.0, 3)
    assert c.stop_signal == "SIGINT"


def test_fingerprint_covers_the_container_shape_only() -> None:
    """Changing the image or env changes the fingerprint; timeouts and probes do not."""
    base = container(env={"A": "1"})
    assert base.fingerprint() == container(env={"A": "1"}, stop_timeout=3).fingerprint()
    assert base.fingerprint() == container(env={"A": "1"}, health={"exec": ["true"]}).fingerprint()
    assert base.fingerprint() != container(env={"A": "2"}).fingerprint()
    assert base.fingerprint() != container(env={"A": "1"}, image="other").fingerprint()
