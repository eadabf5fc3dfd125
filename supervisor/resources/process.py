"""`kind = "process"`: a local command, supervised the way supervisord supervises programs."""

from __future__ import annotations

import signal

import structlog
import trio

from supervisor.config.schema import ProcessConfig
from supervisor.config.types import HealthProbeConfig, StartupProbeConfig
from supervisor.errors import MisconfiguredError, NoOutputError
from supervisor.launchers.journald import journal_streams
from supervisor.launchers.local import LocalLauncher, resolve_credentials, scrubbed_environment
from supervisor.observability.output import OutputLog
from supervisor.resources.probes import run_probe
from supervisor.supervision.policy import Termination, exit_is_success
from supervisor.supervision.resource import (
    CheckResult,
    CheckSettings,
    Handle,
    OutputSource,
    ResourceBase,
)
from supervisor.supervision.states import Liveness


class ProcessResource(ResourceBase):
    """Starts `command` with its env, user and working directory; probes it if asked."""

    kind = "process"
    __slots__ = ("_launcher", "_output", "config", "name")  # one per resource

    def __init__(
        self,
        name: str,
        config: ProcessConfig,
        launcher: LocalLauncher,
        output: OutputLog | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._launcher = launcher
        self._output = output

    @property
    def _to_journald(self) -> bool:
        return self._output is not None and self._output.settings.target == "journald"

    def output(self) -> OutputSource:
        if self._to_journald:
            raise NoOutputError(
                f"{self.name}'s output goes to journald: see `journalctl -t {self.name}`"
            )
        if self._output is None:
            return super().output()
        return self._output

    def _environment(self) -> dict[str, str]:
        # Built when needed, not kept: a copy of the environment per resource was the
        # largest per-resource memory cost at 1,000 resources.
        return scrubbed_environment({"SUPERVISOR_RESOURCE": self.name, **self.config.env})

    def reconfigure(self, config: ProcessConfig) -> None:
        """Apply settings that need no new process (probes, exit codes, stop signal)."""
        self.config = config

    @property
    def check_settings(self) -> CheckSettings | None:
        health = self.config.health
        if health is None:
            return None
        return CheckSettings(health.interval, health.timeout, health.failures)

    async def start(self) -> Handle:
        credentials = resolve_credentials(self.config.user, self.config.group)
        journald = self._to_journald
        # The daemon reads none of a journald child's output: no tail, no relay.
        outputs = await journal_streams(self.name) if journald else None
        if self._output is not None:
            self._output.started()
        return await self._launcher.spawn(
            self.config.command,
            cwd=self.config.cwd,
            env=self._environment(),
            credentials=credentials,
            stop_signal=signal.Signals[self.config.stop_signal],
            on_output=self._relay if self.config.log_output and not journald else None,
            on_chunk=None if journald else self._output,
            record_as=self.name,
            outputs=outputs,
        )

    async def ready(self, handle: Handle) -> None:
        startup = self.config.startup
        if startup is None:
            return
        while True:
            result = CheckResult(Liveness.OFFLINE)
            with trio.move_on_after(startup.timeout):
                result = await self._probe(startup)
            if result.ok:
                return
            if result.liveness is Liveness.MISCONFIGURED:
                raise MisconfiguredError(result.detail)
            await trio.sleep(startup.interval)

    async def check(self, handle: Handle) -> CheckResult:
        assert self.config.health is not None
        return await self._probe(self.config.health)

    def is_success(self, term: Termination) -> bool:
        return exit_is_success(term, self.config.success_exit_codes)

    async def _probe(self, spec: StartupProbeConfig | HealthProbeConfig) -> CheckResult:
        return await run_probe(
            spec,
            self._launcher,
            cwd=self.config.cwd,
            env=self._environment(),
            credentials=resolve_credentials(self.config.user, self.config.group),
        )

    def _relay(self, stream: str, line: str) -> None:
        # Only with `log_output = true`, so a bound logger is not kept per resource.
        structlog.get_logger("supervisor.output").info(
            "output", resource=self.name, stream=stream, line=line
        )
