"""Every failure the docker SDK can raise becomes one of our errors at the boundary."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
import trio

from supervisor.launchers.docker.sdk import (
    ContainerNotFoundError,
    DockerError,
    EngineUnavailableError,
    docker_errors,
    make_clients,
)


def _sdk_exceptions() -> list[type[Any]]:
    return [
        obj
        for _, obj in inspect.getmembers(docker.errors, inspect.isclass)
        if issubclass(obj, docker.errors.DockerException)
    ]


def _instance(cls: type[Any]) -> Exception:
    args: tuple[Any, ...] = ("boom",)
    kwargs: dict[str, Any] = {}
    if issubclass(cls, docker.errors.APIError):
        kwargs = {"explanation": "it broke"}
    elif cls is docker.errors.ContainerError:
        args = ("c", 1, "true", "img", b"")
    elif cls is docker.errors.BuildError:
        args = ("reason", [])
    elif cls is docker.errors.StreamParseError:
        args = (ValueError("x"),)
    error: Exception = cls(*args, **kwargs)
    return error


@pytest.mark.parametrize("cls", _sdk_exceptions(), ids=lambda c: c.__name__)
def test_every_sdk_exception_is_mapped(cls: type[Any]) -> None:
    """No docker.errors class escapes the boundary unmapped."""
    with pytest.raises(DockerError) as info, docker_errors("do it"):
        raise _instance(cls)
    assert str(info.value).startswith("do it: ")


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("refused"),
        requests.ReadTimeout("slow"),
        ConnectionRefusedError(111, "refused"),
        trio.TooSlowError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unreachable_engine_is_engine_unavailable(exc: BaseException) -> None:
    """Connection failures and deadlines mean the engine is unavailable, not the container."""
    with pytest.raises(EngineUnavailableError), docker_errors("list"):
        raise exc


def test_missing_container_and_missing_image_differ() -> None:
    """A 404 on a container is ContainerNotFoundError; a missing image says we never pull."""
    with pytest.raises(ContainerNotFoundError), docker_errors("inspect"):
        raise docker.errors.NotFound("no such container")
    with pytest.raises(DockerError, match="never pulls") as info, docker_errors("create"):
        raise docker.errors.ImageNotFound("no such image")
    assert not isinstance(info.value, ContainerNotFoundError)


def test_other_exceptions_pass_through() -> None:
    """Bugs are not disguised as engine errors."""
    with pytest.raises(KeyError), docker_errors("x"):
        raise KeyError("bug")


def test_a_tcp_docker_host_uses_the_cli_tls_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker_host = "tcp://..." with DOCKER_CERT_PATH and DOCKER_TLS_VERIFY: TLS, verified."""
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("not a real certificate")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    api, events = make_clients("tcp://engine.example:2376", None, 5.0)
    try:
        assert api.base_url == "https://engine.example:2376"
        assert api.verify == str(tmp_path / "ca.pem")
    finally:
        api.close()
        events.close()
