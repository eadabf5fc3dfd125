"""Exec request validation: env names and values, a confined cwd, bounded stdin."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from supervisor.api.requests import MAX_ENV, MAX_STDIN, ExecRequest


def test_env_cwd_and_stdin_are_taken() -> None:
    """Valid options come through unchanged."""
    body = ExecRequest.model_validate(
        {"command": ["ls"], "env": {"_A1": "x y"}, "cwd": "a/b", "stdin": "in\n"}
    )
    assert (body.env, body.cwd, body.stdin) == ({"_A1": "x y"}, "a/b", "in\n")


@pytest.mark.parametrize(
    "bad",
    [
        {"env": {"1A": "x"}},
        {"env": {"A-B": "x"}},
        {"env": {"": "x"}},
        {"env": {"A": "nul\x00"}},
        {"env": {f"V{i}": "x" for i in range(MAX_ENV + 1)}},
        {"env": {"A": 1}},
        {"cwd": "/etc"},
        {"cwd": ".."},
        {"cwd": "a/../../b"},
        {"cwd": ""},
        {"cwd": "a\x00b"},
        {"stdin": "x" * (MAX_STDIN + 1)},
        {"stdin": b"bytes"},
    ],
)
def test_bad_options_are_refused(bad: dict[str, object]) -> None:
    """Names are shell-style identifiers, nothing holds NUL, cwd stays in the work dir."""
    with pytest.raises(ValidationError):
        ExecRequest.model_validate({"command": ["ls"], **bad})
