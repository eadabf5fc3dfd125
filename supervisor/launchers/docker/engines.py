"""The daemon's Docker engines: one client per `docker_host`, opened on first need.

Opening is async (the event-stream reader starts), resource construction is not: the
daemon opens every engine a config names (`open_for`) before it builds the resources
that use them, including on reload. An engine that does not answer is still "open":
its resources start failing (and retrying) until it does. The docker SDK loads with the
first engine opened (`sdk.make_clients`), so a config without a docker-using kind (no
container, docker sandbox or docker-launched Deephaven server) never loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import trio

from supervisor.launchers.docker.containers import OwnedContainer
from supervisor.launchers.docker.engine import DockerEngine, open_docker_engine
from supervisor.launchers.docker.sdk import TLSFiles


class DockerEngines:
    """Engines by `docker_host` (None: the local one), living in the daemon's nursery."""

    def __init__(self, nursery: trio.Nursery, instance_id: str) -> None:
        self._nursery = nursery
        self._instance_id = instance_id
        self._engines: dict[str | None, DockerEngine] = {}

    def __getitem__(self, host: str | None) -> DockerEngine:
        return self._engines[host]

    def get(self, host: str | None) -> DockerEngine | None:
        return self._engines.get(host)

    def __len__(self) -> int:
        return len(self._engines)

    async def open_for(
        self, hosts: Iterable[str | None], tls: Mapping[str, TLSFiles] | None = None
    ) -> list[str | None]:
        """Open an engine for each of `hosts` not open yet (with its client TLS from
        `tls`, by host); returns the new ones."""
        new = [h for h in dict.fromkeys(hosts) if h not in self._engines]
        for host in new:
            files = (tls or {}).get(host) if host is not None else None
            self._engines[host] = await self._nursery.start(self._hold, host, files)
        return new

    async def _hold(
        self,
        host: str | None,
        tls: TLSFiles | None,
        *,
        task_status: trio.TaskStatus[DockerEngine],
    ) -> None:
        async with open_docker_engine(host, self._instance_id, tls=tls) as engine:
            task_status.started(engine)
            await trio.sleep_forever()

    async def reap_orphans(
        self, host: str | None, keep: Callable[[OwnedContainer], bool]
    ) -> list[OwnedContainer]:
        """Remove what a previous run of this instance left on `host`, except `keep`."""
        return await self._engines[host].reap_orphans(keep=keep)
