"""The SDK's unix-socket connection, minus its leak: a failed connect() closes its socket.

The SDK leaves a socket whose connect() failed to the garbage collector; while an engine is
down that is one ResourceWarning per reconnect attempt (an error under the test suite's
`filterwarnings`). The fix subclasses the SDK's transport, so this module imports the SDK
at its top: only `sdk.make_clients` imports it, when the first engine opens.
"""

from __future__ import annotations

import socket

import docker
from docker.transport.unixconn import (
    UnixHTTPAdapter,
    UnixHTTPConnection,
    UnixHTTPConnectionPool,
)


class _UnixConnection(UnixHTTPConnection):  # type: ignore[misc]
    """The SDK's unix connection, minus its leak: a failed connect() closes its socket."""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_socket)
        except BaseException:
            sock.close()  # the SDK leaves this to the GC: a ResourceWarning per retry
            raise
        self.sock = sock


class _UnixPool(UnixHTTPConnectionPool):  # type: ignore[misc]
    def _new_conn(self) -> _UnixConnection:
        return _UnixConnection(self.base_url, self.socket_path, self.timeout)


class _UnixAdapter(UnixHTTPAdapter):  # type: ignore[misc]
    def get_connection(self, url: str, proxies: object = None) -> _UnixPool:
        with self.pools.lock:
            pool: _UnixPool | None = self.pools.get(url)
            if pool is None:
                pool = self.pools[url] = _UnixPool(
                    url, self.socket_path, self.timeout, maxsize=self.max_pool_size
                )
        return pool


def fix_unix_adapter(api: docker.APIClient) -> docker.APIClient:
    """Swap in `_UnixAdapter` on a unix-socket client (no I/O has happened yet)."""
    original = getattr(api, "_custom_adapter", None)
    if isinstance(original, UnixHTTPAdapter):
        adapter = _UnixAdapter(
            "http+unix://" + original.socket_path,
            original.timeout,
            max_pool_size=original.max_pool_size,
        )
        original.close()
        api._custom_adapter = adapter  # noqa: SLF001 - the SDK keeps its adapter there
        api.mount("http+docker://", adapter)
    return api
