"""Deephaven sandboxes against real servers: scripts, scope reset, credentials, timeouts.

A server takes seconds to start, so each test brings up exactly one and checks a whole
life on it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from supervisor.config.environment import DeephavenScriptFeatureConfig, EnvironmentConfig
from supervisor.launchers.deephaven.client import ConnectSpec, open_client
from supervisor.launchers.docker import DockerEngine, open_docker_engine
from supervisor.launchers.local import LocalLauncher
from supervisor.sandbox.backends.deephaven import DeephavenBackend, ScopeResetFeature
from supervisor.sandbox.environment import Environment, open_environment
from supervisor.sandbox.features import DeephavenScriptFeature, Feature
from tests.integration.test_docker import docker_cli, labelled, remove_labelled

pytestmark = pytest.mark.slow

DH_IMAGE = "supervisor-test/deephaven:bookworm"  # built by tests/provision_deephaven_image.sh
START = 90.0


@asynccontextmanager
async def environment(
    launcher: LocalLauncher,
    features: Sequence[Feature],
    *,
    docker: DockerEngine | None = None,
    **overrides: Any,
) -> AsyncIterator[Environment]:
    config = EnvironmentConfig.model_validate(
        {
            "backend": "deephaven",
            "min_ready": 1,
            "max_size": 1,
            "acquire_timeout": START,
            "keepalive_interval": 60,
            "housekeep_interval": 60,
            "deephaven": {"heap": "512m"},
            **overrides,
        }
    )
    assert config.deephaven is not None
    backend = DeephavenBackend(
        launcher, config.deephaven, environment="dh", docker=docker, start_timeout=START
    )
    with trio.fail_after(START + 30):
        async with open_environment("dh", config, backend, features) as env:
            yield env


async def test_next_session_sees_no_leftovers_but_keeps_setup_globals(
    launcher: LocalLauncher,
) -> None:
    """Scripts run in the server; a session's globals are gone for the next one, setup's stay."""
    setup = DeephavenScriptFeature(
        "globals",
        DeephavenScriptFeatureConfig.model_validate(
            {"kind": "deephaven_script", "setup": "kept = 7"}
        ),
    )
    started = trio.current_time()
    async with environment(launcher, [setup, ScopeResetFeature()]) as env:
        bring_up = trio.current_time() - started
        async with env.session() as session:
            first = session.sandbox.id
            assert (await session.run_script("leftover = kept * 6")).exit_code == 0
            round_trip = trio.current_time()
            assert (await session.run_script("assert leftover == 42")).exit_code == 0
            round_trip = trio.current_time() - round_trip
            failed = await session.run_script("raise ValueError('boom')")
            assert failed.exit_code == 1
            assert "ValueError: boom" in failed.stderr
            assert "\tat " not in failed.stderr
            refused = await session.exec(["ls"])
            assert refused.exit_code == 127
            assert "script" in refused.stderr
            connection = session.connection()

            # The credentials open a working session of the client's own.
            client = await open_client(launcher)
            try:
                spec = ConnectSpec(
                    connection["host"],
                    connection["port"],
                    connection["auth_type"],
                    connection["token"],
                )
                await client.connect(spec, 20)
                await client.run_script("assert leftover == 42", 10)
            finally:
                await client.close()
        async with env.session() as session:
            assert session.sandbox.id == first
            gone = await session.run_script("leftover")
            assert gone.exit_code == 1
            assert "NameError" in gone.stderr
            assert (await session.run_script("assert kept == 7")).exit_code == 0
    assert bring_up < 60, f"bring-up took {bring_up:.1f}s"
    assert round_trip < 1, f"a script took {round_trip:.3f}s"


@pytest.fixture
async def engine() -> AsyncIterator[DockerEngine]:
    instance_id = f"test-{uuid.uuid4().hex[:12]}"
    try:
        async with open_docker_engine(None, instance_id) as engine:
            yield engine
    finally:
        await remove_labelled(instance_id)


async def test_docker_server_with_an_overrun_script_is_not_reused(
    launcher: LocalLauncher, engine: DockerEngine
) -> None:
    """A containerised server serves scripts; one that overran its timeout is not reused."""
    if not await docker_cli("image", "ls", "-q", DH_IMAGE):
        pytest.fail(f"{DH_IMAGE} is not built (tests/provision_deephaven_image.sh builds it)")
    async with environment(
        launcher,
        [ScopeResetFeature()],
        docker=engine,
        min_ready=0,
        deephaven={"launch": "docker", "image": DH_IMAGE, "heap": "512m"},
    ) as env:
        async with env.session() as session:
            sandbox = session.sandbox
            assert len(await labelled(engine.instance_id)) == 1
            assert (await session.run_script("x = 1")).exit_code == 0
            overrun = await session.run_script("import time; time.sleep(3)", timeout=0.5)
            assert overrun.timed_out
            assert overrun.exit_code is None
            # The same session goes on, on a new helper, once the server is free again.
            assert (await session.run_script("assert x == 1", timeout=20)).exit_code == 0
        with trio.fail_after(30):
            await sandbox.offline.wait()
        assert "overran" in str(sandbox.state_error)
        assert env.stats()["sandboxes"]["READY"] == 0  # min_ready 0: nothing replaces it
        assert await labelled(engine.instance_id) == []
