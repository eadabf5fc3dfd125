"""The daemon's side of the Enterprise client helper: a logged-in helper for a factory.

Shared by the `deephaven-enterprise` resources (a factory, its configured sessions) and the
`deephaven-enterprise` sandbox backend (workers made per session): each opens its own
helper (`enterprise_worker.py`) and logs in with the factory's settings, so that a crash
or hang of one costs that one alone. The password is read at each login, never stored,
and reaches the helper only over its private socket; the variable `password_env` names is
removed from the helper's environment and its output is redacted.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import structlog
import trio

from supervisor.config.deephaven_enterprise import DeephavenEnterpriseConfig
from supervisor.errors import HelperGoneError, MisconfiguredError, StartError
from supervisor.launchers.deephaven.client import DeephavenClient, open_client
from supervisor.launchers.deephaven.output import Redactor
from supervisor.launchers.deephaven.server import python_for
from supervisor.launchers.local import LocalLauncher, scrubbed_environment

# Found, not imported: the daemon itself must never load the Core+ client.
_WORKER_SPEC = importlib.util.find_spec("supervisor.launchers.deephaven.enterprise_worker")
assert _WORKER_SPEC is not None
assert _WORKER_SPEC.origin is not None
WORKER = _WORKER_SPEC.origin


async def login_request(config: DeephavenEnterpriseConfig, client_name: str) -> dict[str, Any]:
    """The helper's `login` request for factory `config`; the password is read now.

    Raises:
        MisconfiguredError: the password variable is unset or its file unreadable.
    """
    request: dict[str, Any] = {
        "connection_json_url": config.connection_json_url,
        "connection_timeout": config.connection_timeout,
        "truststore": None if config.truststore is None else str(config.truststore),
        "auth": config.auth,
        "client_name": client_name,
    }
    if config.auth == "password":
        request["username"] = config.username
        request["password"] = await _password(config)
    else:
        request["private_key_file"] = str(config.private_key_file)
    return request


async def _password(config: DeephavenEnterpriseConfig) -> str:
    if config.password_env is not None:
        value = os.environ.get(config.password_env, "")
        if not value:
            raise MisconfiguredError(f"password_env: ${config.password_env} is unset or empty")
        return value
    assert config.password_file is not None
    try:
        value = (await trio.Path(config.password_file).read_text()).rstrip("\r\n")
    except OSError as exc:
        raise MisconfiguredError(
            f"password_file: cannot read {config.password_file}: {exc.strerror}"
        ) from None
    if not value:
        raise MisconfiguredError(f"password_file: {config.password_file} is empty")
    return value


async def open_logged_in(
    launcher: LocalLauncher,
    config: DeephavenEnterpriseConfig,
    client_name: str,
    log: Any = None,
) -> DeephavenClient:
    """A new helper, logged in to factory `config`'s system; its output goes to `log`.

    Raises:
        StartError: the system did not answer; UnauthorizedError or MisconfiguredError
            when retrying cannot help.
    """
    login = await login_request(config, client_name)
    redact = Redactor([str(login.get("password") or "")])
    output_log = log if log is not None else structlog.get_logger("supervisor.output")

    def relay(stream: str, line: str) -> None:
        output_log.info("output", stream=stream, line=redact(line))

    python = python_for(config.python_venv)
    if not await trio.Path(python).is_file():
        raise MisconfiguredError(f"python_venv: no Python at {python}")
    env = scrubbed_environment()
    if config.password_env is not None:
        env.pop(config.password_env, None)
    try:
        client = await open_client(launcher, on_output=relay, worker=WORKER, python=python, env=env)
    except HelperGoneError as exc:
        raise StartError(str(exc)) from None  # its own output says why; no traceback here
    await client.start_call("login", config.connection_timeout, **login)
    return client
