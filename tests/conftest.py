"""Suite-wide settings, and private Docker engines for tests that restart one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.private_dockerd import PrivateDockerd, save_image, sweep_stale
from tests.private_swarm import PrivateSwarm, sweep_stale_swarms

# These machines are shared and noisy: properties are what we test, not generation speed.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

PRIVATE_ENGINE_IMAGE = "supervisor-test/sandbox:bookworm"


@pytest.fixture(scope="session")
def private_engine_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The sandbox test image, saved from the machine's engine once a session (a tar)."""
    sweep_stale()  # engines of runs that were killed before they could tear down
    tar = save_image(PRIVATE_ENGINE_IMAGE, tmp_path_factory.mktemp("private-dockerd") / "image.tar")
    yield tar
    tar.unlink(missing_ok=True)


@pytest.fixture
def private_dockerds(private_engine_image: Path) -> Iterator[Callable[[], PrivateDockerd]]:
    """Starts private Docker engines on demand, the sandbox image loaded in each; all of
    them are removed after the test, whatever it did (see tests/private_dockerd.py)."""
    engines: list[PrivateDockerd] = []

    def start() -> PrivateDockerd:
        engine = PrivateDockerd.create()
        engines.append(engine)
        engine.load(private_engine_image)
        return engine

    try:
        yield start
    finally:
        errors = []
        for engine in reversed(engines):
            try:
                engine.close()
            except Exception as exc:  # close the others anyway; report the first
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def private_dockerd(private_dockerds: Callable[[], PrivateDockerd]) -> PrivateDockerd:
    """One private Docker engine (`host` for DOCKER_HOST; `stop`, `start`, `restart`)."""
    return private_dockerds()


@pytest.fixture(scope="session")
def private_swarm_once(private_engine_image: Path) -> Iterator[PrivateSwarm]:
    """A real 2-node swarm (see tests/private_swarm.py), built once a test run, the sandbox
    image loaded on each node; everything of it is removed at the end of the run."""
    sweep_stale_swarms()
    swarm = PrivateSwarm.create(2)
    try:
        swarm.load(private_engine_image)
        yield swarm
    finally:
        swarm.close()


@pytest.fixture
def private_swarm(private_swarm_once: PrivateSwarm) -> Iterator[PrivateSwarm]:
    """The run's swarm, emptied of services after each test, whatever the test did."""
    yield private_swarm_once
    private_swarm_once.reset()
