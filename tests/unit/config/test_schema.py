"""Whole-config rules: what a config needs from the installation it runs on."""

from __future__ import annotations

import sys

import pytest

from supervisor.config import schema
from supervisor.config.load import load_text
from supervisor.errors import ConfigError

CONTAINER = '[resources.box]\nkind = "container"\nimage = "supervisor-test/sandbox:bookworm"\n'
DOCKER_POOL = '[environments.pool]\nbackend = "docker"\ndocker = { image = "supervisor-test/sandbox:bookworm" }\n'
PROCESS = '[resources.p]\nkind = "process"\ncommand = ["true"]\n'


def test_a_docker_using_config_without_the_docker_extra_is_refused_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each resource and environment that needs Docker is named, with the pip line."""
    monkeypatch.setattr(schema, "docker_sdk_installed", lambda: False)
    with pytest.raises(ConfigError) as info:
        load_text(CONTAINER + DOCKER_POOL + PROCESS)
    found = {p.path: p.message for p in info.value.problems}
    assert set(found) == {"resources.box", "environments.pool"}
    assert "pip install 'supervisor-daemon[docker]'" in found["resources.box"]


def test_a_config_without_docker_needs_no_docker_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A processes-only config loads whether or not the docker extra is installed."""
    monkeypatch.setattr(schema, "docker_sdk_installed", lambda: False)
    assert set(load_text(PROCESS).resources) == {"p"}


def test_the_docker_sdk_is_found_without_being_imported() -> None:
    """The check looks the package up; importing it would cost every config its weight."""
    had = "docker" in sys.modules
    assert schema.docker_sdk_installed()  # the test extra installs it
    assert ("docker" in sys.modules) == had
