"""Features: capabilities installed in every sandbox, with hooks around its life.

A feature is one object per environment; its hooks receive the sandbox they act on.
Sandbox features run `setup`/`teardown` once per sandbox, `setup_session`/
`teardown_session` around each session, and `housekeep` on their own interval. An
environment-scoped feature (`sandbox_scoped = False`) runs `setup`, `teardown` and
`housekeep` once for the whole environment, with `sandbox=None`.

Built-ins: `command`, `files`, `deephaven_script`. Third-party features come from the
`supervisor.features` entry-point group: the entry point is a callable taking the
feature's name and its `options` as keyword arguments and returning a `Feature`.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.config.environment import (
    CommandFeatureConfig,
    DeephavenScriptFeatureConfig,
    FilesFeatureConfig,
    PluginFeatureConfig,
)
from supervisor.errors import FeatureCommandError, MisconfiguredError
from supervisor.launchers.local import LocalLauncher, scrubbed_environment
from supervisor.sandbox.capture import run_captured
from supervisor.sandbox.instance import ExecResult

if TYPE_CHECKING:
    from supervisor.sandbox.sandbox import Sandbox
    from supervisor.sandbox.session import Session

ENTRY_POINT_GROUP = "supervisor.features"


class Feature:
    """Base class with no-op hooks; override the ones the feature needs."""

    name: str = "feature"
    housekeep_interval: float | None = None
    sandbox_scoped: bool = True

    async def setup(self, sandbox: Sandbox | None) -> None: ...
    async def teardown(self, sandbox: Sandbox | None) -> None: ...
    async def setup_session(self, sandbox: Sandbox, session: Session | None) -> None: ...
    async def teardown_session(self, sandbox: Sandbox, session: Session) -> None: ...
    async def housekeep(self, sandbox: Sandbox | None) -> None: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _check(name: str, hook: str, result: ExecResult) -> None:
    if result.timed_out:
        raise FeatureCommandError(
            f"feature {name}: {hook} timed out after {result.duration_s:.1f}s"
        )
    if result.exit_code != 0:
        tail = (result.stderr or result.stdout).strip()[-500:]
        raise FeatureCommandError(
            f"feature {name}: {hook} exited with {result.exit_code}" + (f": {tail}" if tail else "")
        )


class CommandFeature(Feature):
    """Runs a command per hook, in the sandbox (or on the host for environment scope)."""

    def __init__(
        self,
        name: str,
        config: CommandFeatureConfig,
        launcher: LocalLauncher,
        host_dir: Path,
        output_limit: int,
    ) -> None:
        self.name = name
        self.config = config
        self.housekeep_interval = config.housekeep_interval
        self.sandbox_scoped = config.scope == "sandbox"
        self._launcher = launcher
        self._host_dir = host_dir
        self._output_limit = output_limit

    async def _run(self, hook: str, argv: Sequence[str] | None, sandbox: Sandbox | None) -> None:
        if argv is None:
            return
        if sandbox is not None:
            result = await sandbox.instance_exec(argv, timeout=self.config.timeout)
        else:
            self._host_dir.mkdir(parents=True, exist_ok=True)
            result = await run_captured(
                self._launcher,
                argv,
                cwd=self._host_dir,
                env=scrubbed_environment(),
                timeout=self.config.timeout,
                output_limit=self._output_limit,
            )
        _check(self.name, hook, result)

    async def setup(self, sandbox: Sandbox | None) -> None:
        await self._run("setup", self.config.setup, sandbox)

    async def teardown(self, sandbox: Sandbox | None) -> None:
        await self._run("teardown", self.config.teardown, sandbox)

    async def setup_session(self, sandbox: Sandbox, session: Session | None) -> None:
        await self._run("setup_session", self.config.setup_session, sandbox)

    async def teardown_session(self, sandbox: Sandbox, session: Session) -> None:
        await self._run("teardown_session", self.config.teardown_session, sandbox)

    async def housekeep(self, sandbox: Sandbox | None) -> None:
        await self._run("housekeep", self.config.housekeep, sandbox)


class FilesFeature(Feature):
    """Copies `source` to `dest` in each sandbox at setup."""

    def __init__(self, name: str, config: FilesFeatureConfig) -> None:
        self.name = name
        self.config = config
        self.housekeep_interval = config.housekeep_interval

    async def setup(self, sandbox: Sandbox | None) -> None:
        assert sandbox is not None
        if not self.config.source.exists():
            raise FeatureCommandError(f"feature {self.name}: {self.config.source} does not exist")
        await sandbox.instance_put(self.config.source, self.config.dest)


class DeephavenScriptFeature(Feature):
    """Runs scripts in a Deephaven sandbox's server at setup and around sessions."""

    def __init__(self, name: str, config: DeephavenScriptFeatureConfig) -> None:
        self.name = name
        self.config = config
        self.housekeep_interval = config.housekeep_interval

    async def _script(self, hook: str, script: str | None, sandbox: Sandbox | None) -> None:
        if script is None or sandbox is None:
            return
        _check(self.name, hook, await sandbox.instance_script(script, timeout=self.config.timeout))

    async def setup(self, sandbox: Sandbox | None) -> None:
        await self._script("setup", self.config.setup, sandbox)

    async def setup_session(self, sandbox: Sandbox, session: Session | None) -> None:
        await self._script("setup_session", self.config.setup_session, sandbox)

    async def teardown_session(self, sandbox: Sandbox, session: Session) -> None:
        await self._script("teardown_session", self.config.teardown_session, sandbox)


def load_plugin(name: str, config: PluginFeatureConfig) -> Feature:
    """Build a third-party feature from its entry point.

    Raises:
        MisconfiguredError: no such entry point, or it did not return a Feature.
    """
    found = entry_points(group=ENTRY_POINT_GROUP, name=config.entry_point)
    if not found:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)) or ["none"]
        raise MisconfiguredError(
            f"feature {name}: no entry point {config.entry_point!r} in group "
            f"{ENTRY_POINT_GROUP} (installed: {', '.join(known)})"
        )
    factory = next(iter(found)).load()
    feature = factory(name=name, **config.options)
    if not isinstance(feature, Feature):
        raise MisconfiguredError(
            f"feature {name}: entry point {config.entry_point!r} returned "
            f"{type(feature).__name__}, not a supervisor.sandbox.Feature"
        )
    if config.housekeep_interval is not None:
        feature.housekeep_interval = config.housekeep_interval
    return feature
