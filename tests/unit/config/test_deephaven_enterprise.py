"""`kind = "deephaven-enterprise"` settings: the two roles, defaults, and errors naming the key."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from supervisor.config.deephaven_enterprise import DeephavenEnterpriseConfig
from supervisor.config.load import load_text
from supervisor.errors import (
    ConfigError,
    DeephavenClientError,
    MisconfiguredError,
    UnauthorizedError,
)
from supervisor.launchers.deephaven.client import classify, start_error
from supervisor.resources.deephaven_names import FullName
from supervisor.supervision.states import Liveness

URL = "https://dh.example.com:8000/iris/connection.json"
FACTORY = {"connection_json_url": URL, "auth": "password", "username": "u", "password_env": "P"}


def config(**fields: Any) -> DeephavenEnterpriseConfig:
    return DeephavenEnterpriseConfig.model_validate({"kind": "deephaven-enterprise", **fields})


def problems(**fields: Any) -> list[str]:
    """Errors as `config.load` shows them: dotted key path, then the message."""
    with pytest.raises(ValidationError) as info:
        config(**fields)
    return [
        ".".join(str(p) for p in e["loc"]) + ": " + e["msg"].removeprefix("Value error, ")
        for e in info.value.errors()
    ]


def test_factory_defaults() -> None:
    """A factory waits 10 s to connect and is pinged with a 5 s deadline."""
    factory = config(**FACTORY)
    assert factory.is_factory
    assert (factory.connection_timeout, factory.liveness.timeout) == (10.0, 5.0)
    assert factory.depends_on == []


def test_session_depends_on_its_factory() -> None:
    """A session's factory is added to depends_on (once), so it starts after it."""
    assert config(factory="prod", pq_name="Risk").depends_on == ["prod"]
    assert config(factory="prod", pq_name="Risk", depends_on=["db", "prod"]).depends_on == [
        "db",
        "prod",
    ]


def test_worker_settings() -> None:
    """A worker session takes heap (in GB for the controller), JVM args and auto-delete."""
    worker = config(factory="prod", heap="2.5g", jvm_args=["-Dx=1"], auto_delete_timeout="0s")
    assert (worker.heap_gb, worker.jvm_args, worker.auto_delete_timeout) == (2.5, ["-Dx=1"], 0.0)
    assert worker.programming_language == "python"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "set connection_json_url (a factory"),
        ({**FACTORY, "factory": "x"}, "factory: a resource is either a factory"),
        ({**FACTORY, "connection_json_url": "dh:8000"}, "connection_json_url: expected an http(s)"),
        ({**FACTORY, "password_file": "/p"}, "password_file: set only one of password_env"),
        ({**FACTORY, "private_key_file": "/k"}, 'private_key_file: only used with auth = "private'),
        ({**FACTORY, "pq_name": "Risk"}, "pq_name: only used by a session"),
        ({**FACTORY, "username": None}, 'username is required with auth = "password"'),
        ({**FACTORY, "password_env": None}, "needs one of password_env or password_file"),
        ({"connection_json_url": URL, "auth": "private_key"}, "private_key_file is required"),
        ({"connection_json_url": URL}, "auth is required"),
        ({"factory": "prod"}, "a session needs pq_name"),
        ({"factory": "prod", "pq_name": "Risk", "heap": "1g"}, "heap: only used to create a"),
        ({"factory": "prod", "username": "u"}, "username: only used by a factory"),
        ({"factory": "prod", "heap": "lots"}, "heap: invalid heap size"),
        ({"factory": "prod", "heap": "1g", "programming_language": "java"}, "programming_language"),
    ],
)
def test_errors_name_the_key(fields: dict[str, Any], expected: str) -> None:
    """Every mistake is reported with the key to change (or the keys to choose between)."""
    found = problems(**fields)
    assert any(expected in p for p in found), found


def test_private_key_factory() -> None:
    """auth = "private_key" needs only the key file (the user is in it)."""
    factory = config(connection_json_url=URL, auth="private_key", private_key_file="/k")
    assert factory.auth == "private_key"
    assert problems(
        connection_json_url=URL, auth="private_key", private_key_file="/k", username="u"
    )


@pytest.mark.parametrize(
    ("type_", "expected"),
    [
        ("settings", Liveness.MISCONFIGURED),
        ("unauthorized", Liveness.UNAUTHORIZED),
        ("offline", Liveness.OFFLINE),
        ("RuntimeError", Liveness.UNKNOWN),
    ],
)
def test_helper_failure_types_classify(type_: str, expected: Liveness) -> None:
    """Failures without a gRPC status are classified by the type the helper gave them."""
    assert classify(None, type_) is expected


def test_start_errors_keep_unauthorized_apart() -> None:
    """A rejected login is an UnauthorizedError; bad settings a MisconfiguredError."""
    assert isinstance(
        start_error(DeephavenClientError("x", type_="unauthorized")), UnauthorizedError
    )
    assert isinstance(
        start_error(DeephavenClientError("x", code="UNAUTHENTICATED")), UnauthorizedError
    )
    misconfigured = start_error(DeephavenClientError("x", type_="settings"))
    assert type(misconfigured) is MisconfiguredError
    assert not isinstance(
        start_error(DeephavenClientError("x", code="UNAVAILABLE")), MisconfiguredError
    )


def test_enterprise_full_names() -> None:
    """Factories are enterprise:factory:SYSTEM, sessions enterprise:SYSTEM:NAME."""
    assert str(FullName.enterprise_factory("prod")) == "enterprise:factory:prod"
    assert str(FullName.enterprise("prod", "risk")) == "enterprise:prod:risk"
    assert FullName.parse("enterprise:prod:risk") == FullName.enterprise("prod", "risk")


ENVIRONMENT = f"""
[resources.prod]
kind = "deephaven-enterprise"
connection_json_url = "{URL}"
auth = "password"
username = "u"
password_env = "P"

[resources.feed]
kind = "deephaven-enterprise"
factory = "prod"
pq_name = "Feed"

[environments.ent]
backend = "deephaven-enterprise"
"""


def load_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_an_enterprise_environment_serves_one_session_per_worker() -> None:
    """Its sandboxes are never reused (max_sessions_per_sandbox is 1), heap defaults to 4g."""
    loaded = load_text(ENVIRONMENT + '[environments.ent.deephaven_enterprise]\nfactory = "prod"\n')
    env = loaded.environments["ent"]
    assert env.max_sessions_per_sandbox == 1
    assert env.deephaven_enterprise is not None
    assert (env.deephaven_enterprise.heap, env.deephaven_enterprise.auto_delete_timeout) == (
        "4g",
        600.0,
    )


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("", 'backend "deephaven-enterprise" needs a [deephaven_enterprise] table'),
        (
            '[environments.ent.deephaven_enterprise]\nfactory = "feed"\n',
            "environments.ent.deephaven_enterprise.factory: 'feed' is not a "
            "deephaven-enterprise factory resource",
        ),
        (
            'max_sessions_per_sandbox = 2\n[environments.ent.deephaven_enterprise]\nfactory = "prod"\n',
            "max_sessions_per_sandbox: a deephaven-enterprise worker serves one session",
        ),
    ],
)
def test_enterprise_environment_errors_name_the_key(table: str, expected: str) -> None:
    """The table is required, its factory must be a factory, and a worker is not reused."""
    found = load_problems(ENVIRONMENT + table)
    assert any(expected in p for p in found), found
