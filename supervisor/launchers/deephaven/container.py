"""A Deephaven server as a container of the `ghcr.io/deephaven/server` image.

Why it is built this way:
- JVM arguments go in `START_OPTS`, the image's documented interface for them; the key is
  not one (`docker inspect` shows a container's whole config to anyone with the socket).
- The PSK goes in a `deephaven.prop` of its own, 0600 in a 0700 directory, bind-mounted
  read-only over the image's (the documented way to configure the image), and deleted
  from the host once the container runs or fails to (the mount keeps it readable inside).
  That file sets the console type from `session_type` too, since it replaces the image's.
- The key file is a bind mount, so it needs an engine on this host (a remote
  `DOCKER_HOST` would mount a path of its own machine).
- The host port is the engine's pick on 127.0.0.1 unless the config fixes one: there is
  no race to lose between picking a port and binding it.
- Its output stays with the engine (as a `container` resource's does) and is read back
  through the engine's log stream with the key redacted on the way (`read_server_output`):
  the server prints its PSK at start-up, and a piece of the stream may end inside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncGenerator
from contextlib import aclosing

from supervisor.config.deephaven import PSK_HANDLER, DeephavenConfig
from supervisor.errors import MisconfiguredError
from supervisor.launchers.deephaven.output import StreamRedactor
from supervisor.launchers.deephaven.server import ANONYMOUS_HANDLER
from supervisor.launchers.docker import RESOURCE_LABEL, ContainerHandle, ContainerSpec, DockerEngine

CONTAINER_PORT = "10000/tcp"
# Where ghcr.io/deephaven/server reads its configuration (DEEPHAVEN_CONFIG_DIR).
CONTAINER_CONFIG_DIR = "/opt/deephaven/config"


async def run_server_container(
    docker: DockerEngine, name: str, config: DeephavenConfig, token: str
) -> ContainerHandle:
    """Run the server image as `deephaven-NAME`; its server may not answer yet.

    Raises:
        StartError: the engine refused or did not answer.
        MisconfiguredError: the token cannot be written in Deephaven's format.
    """
    opts = [f"-Xmx{config.heap_mb}m"] if config.heap_mb is not None else []
    opts += config.jvm_args
    properties = None
    if config.auth_type == PSK_HANDLER:
        try:
            properties = server_properties(token, config.session_type)
        except ValueError as exc:
            raise MisconfiguredError(f"token: {exc}") from None
        # Named outright, so our file is the one read whatever the image's environment.
        opts.append(f"-Ddeephaven.configDir={CONTAINER_CONFIG_DIR}")
    else:
        opts.append(f"-DAuthHandlers={ANONYMOUS_HANDLER}")
    key_dir = None
    try:
        volumes = list(config.volumes)
        if properties is not None:
            key_dir = tempfile.mkdtemp(prefix="supervisor-dh-")  # 0700
            key_file = _write_private(os.path.join(key_dir, "deephaven.prop"), properties)
            volumes.append(f"{key_file}:{CONTAINER_CONFIG_DIR}/deephaven.prop:ro")
        spec = ContainerSpec(
            image=config.docker_image,
            name=f"deephaven-{name}",
            env={**config.env, "START_OPTS": " ".join(opts)},
            labels={RESOURCE_LABEL: name},
            init=True,
            memory=config.memory,
            cpus=config.cpus,
            volumes=tuple(volumes),
            # None: the engine picks a free host port on 127.0.0.1 (no race to lose).
            ports={CONTAINER_PORT: config.port if isinstance(config.port, int) else None},
        )
        return await docker.run(spec)
    finally:
        if key_dir is not None:  # started or not, no copy stays: a container keeps its mount
            shutil.rmtree(key_dir, ignore_errors=True)


async def read_server_output(
    docker: DockerEngine,
    container_id: str,
    token: str,
    *,
    stream: str,
    lines: int,
    follow: bool,
) -> AsyncGenerator[bytes, None]:
    """A server container's output from its engine (`DockerEngine.logs`: the last `lines`
    lines, then with `follow` b"" once open and each piece as it comes), `token` redacted.

    Raises:
        DockerError: the container is gone, or the engine failed or did not answer.
    """
    redact = StreamRedactor([token])
    async with aclosing(docker.logs(container_id, stream, lines, follow)) as pieces:
        async for piece in pieces:
            passed = redact.feed(piece)
            if passed or not piece:  # b"": a follow's stream is open
                yield passed
    if rest := redact.flush():
        yield rest


def server_properties(psk: str, console: str) -> str:
    """A `deephaven.prop` that sets the PSK: Deephaven's defaults, console type, key.

    Raises:
        ValueError: the key cannot be written in Deephaven's format.
    """
    if not psk or psk[0].isspace() or ord(psk[0]) <= 0x20:
        raise ValueError("a launched server's token cannot be empty or start with whitespace")
    return (
        "# Written by supervisor-daemon for one container; mounted read-only.\n"
        "includefiles=dh-defaults.prop\n"
        f"deephaven.console.type={_escape(console)}\n"
        f"authentication.psk={_escape(psk)}\n"
    )


def _escape(value: str) -> str:
    # Deephaven's parser turns \uXXXX into a character (and \n, \t, ... into controls):
    # anything but ASCII letters and digits is written that way, so no value breaks a line.
    units = value.encode("utf-16-be")
    out = []
    for i in range(0, len(units), 2):
        unit = int.from_bytes(units[i : i + 2], "big")
        char = chr(unit)
        out.append(char if char.isascii() and char.isalnum() else f"\\u{unit:04x}")
    return "".join(out)


def _write_private(path: str, text: str) -> str:
    """Write `text` to a new file, mode 0600 whatever the umask; return its path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
    return path
