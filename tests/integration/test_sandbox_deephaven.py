"""Deephaven sandboxes against real servers: scripts, scope reset, credentials, timeouts.

A server takes seconds to start, so each test brings up exactly one and checks a whole
life on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from supervisor.config.environment import DeephavenScriptFeatureConfig, EnvironmentConfig
from supervisor.launchers.deephaven.client import ConnectSpec, open_client
from supervisor.launchers.docker import DockerEngine
from supervisor.launchers.local import LocalLauncher
from supervisor.sandbox.backends.deephaven import (
    DeephavenBackend,
    DeephavenInstance,
    ScopeResetFeature,
)
from supervisor.sandbox.environment import Environment, open_environment
from supervisor.sandbox.features import DeephavenScriptFeature, Feature
from tests.integration.conftest import DH_IMAGE
from tests.integration.test_docker import labelled

pytestmark = pytest.mark.slow

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
        launcher,
        config.deephaven,
        environment="dh",
        docker=docker,
        start_timeout=START,
        output_limit=config.output_limit,
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


def median_ms(durations: list[float]) -> float:
    return sorted(durations)[len(durations) // 2] * 1000


async def test_a_script_returns_its_output_and_its_traceback_within_the_cap(
    launcher: LocalLauncher,
) -> None:
    """stdout and stderr come back, cut at output_limit; an exception is exit 1 with
    Python's traceback, and the sandbox stays in service with the session's globals."""
    async with environment(launcher, [ScopeResetFeature()], output_limit="1k") as env:
        async with env.session() as session:
            sandbox = session.sandbox
            printed = await session.run_script(
                "import sys\nanswer = 6 * 7\nprint('answer', answer)\nprint('warn', file=sys.stderr)"
            )
            assert (printed.exit_code, printed.stdout, printed.stderr) == (
                0,
                "answer 42\n",
                "warn\n",
            )
            assert not printed.truncated

            failed = await session.run_script(
                "print('before')\ndef broken():\n    return answer / 0\nbroken()"
            )
            assert (failed.exit_code, failed.stdout) == (1, "before\n")
            assert failed.stderr.splitlines() == [
                "Traceback (most recent call last):",
                '  File "<script>", line 4, in <module>',
                '  File "<script>", line 3, in broken',
                "ZeroDivisionError: division by zero",
            ]
            syntax = await session.run_script("def f(:")
            assert syntax.exit_code == 1
            assert syntax.stderr.endswith("SyntaxError: invalid syntax\n")
            assert (await session.run_script("import sys; sys.exit(3)")).exit_code == 3

            chatty = await session.run_script("print('x' * 5000)\nprint('y' * 10)")
            assert (chatty.exit_code, chatty.stdout, chatty.truncated) == (0, "x" * 1024, True)

            assert (await session.run_script("assert answer == 42")).exit_code == 0
            assert sandbox.state_error is None

            # What capturing costs: the same client, the same scripts, with and without.
            instance = sandbox.instance
            assert isinstance(instance, DeephavenInstance)
            client = instance.handle.client
            costs: dict[str, list[float]] = {}
            for label, run in [
                ("plain run_script", lambda: client.run_script("y = 1", 20)),
                ("captured, silent", lambda: instance.run_script("y = 1", timeout=20)),
                ("captured, prints", lambda: instance.run_script("print(y)", timeout=20)),
                ("captured, raises", lambda: instance.run_script("1 / 0", timeout=20)),
            ]:
                for _ in range(25):
                    started = trio.current_time()
                    await run()
                    costs.setdefault(label, []).append(trio.current_time() - started)
            for label, durations in costs.items():
                print(f"{label}: median {median_ms(durations):.1f} ms")
            assert median_ms(costs["captured, prints"]) < 1000
            await client.run_script("assert '__supervisor_result__' in globals()", 20)
        async with env.session() as session:
            assert session.sandbox is sandbox
            # Uncaptured, so nothing of ours touches the scope first: the reset removed
            # the last session's output.
            await instance.handle.client.run_script(
                "assert '__supervisor_result__' not in globals()", 20
            )


async def test_docker_server_with_an_overrun_script_is_not_reused(
    launcher: LocalLauncher, dh_engine: DockerEngine
) -> None:
    """A containerised server serves scripts and returns their output; one that overran its
    timeout is not reused."""
    async with environment(
        launcher,
        [ScopeResetFeature()],
        docker=dh_engine,
        min_ready=0,
        deephaven={"launch": "docker", "image": DH_IMAGE, "heap": "512m"},
    ) as env:
        async with env.session() as session:
            sandbox = session.sandbox
            assert len(await labelled(dh_engine.instance_id)) == 1
            assert (await session.run_script("x = 1")).exit_code == 0
            printed = await session.run_script("print('from a container', x)")
            assert (printed.exit_code, printed.stdout) == (0, "from a container 1\n")
            overrun = await session.run_script("import time; time.sleep(3)", timeout=0.5)
            assert overrun.timed_out
            assert overrun.exit_code is None
            # The same session goes on, on a new helper, once the server is free again.
            assert (await session.run_script("assert x == 1", timeout=20)).exit_code == 0
        with trio.fail_after(30):
            await sandbox.offline.wait()
        assert "overran" in str(sandbox.state_error)
        assert env.stats()["sandboxes"]["READY"] == 0  # min_ready 0: nothing replaces it
        assert await labelled(dh_engine.instance_id) == []
