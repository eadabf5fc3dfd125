"""The client helper's proxy: failures classified by gRPC status, tokens out of reprs, and
the program a script's output is captured with."""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest

from supervisor.errors import DeephavenClientError
from supervisor.launchers.deephaven import script_capture
from supervisor.launchers.deephaven.client import (
    _LIVENESS_BY_CODE,
    BASELINE_SCRIPT,
    RESET_SCOPE_SCRIPT,
    ConnectSpec,
    ScriptOutput,
    capture_program,
    classify,
)
from supervisor.supervision.states import Liveness

GRPC_CODES = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]


@pytest.mark.parametrize("code", GRPC_CODES)
def test_every_grpc_status_is_classified(code: str) -> None:
    """Every status maps to a liveness; only the documented ones to something specific."""
    expected = _LIVENESS_BY_CODE.get(code, Liveness.UNKNOWN)
    assert classify(code) is expected
    assert set(_LIVENESS_BY_CODE) <= set(GRPC_CODES)


def test_the_documented_classes_of_failure() -> None:
    """Refused -> OFFLINE, bad credentials -> UNAUTHORIZED, bad settings -> MISCONFIGURED."""
    assert classify("UNAVAILABLE") is Liveness.OFFLINE
    assert classify("UNAUTHENTICATED") is Liveness.UNAUTHORIZED
    assert classify(None, "settings") is Liveness.MISCONFIGURED
    assert classify(None, "ValueError") is Liveness.UNKNOWN


def test_connect_specs_keep_the_token_out_of_reprs() -> None:
    spec = ConnectSpec("h", 1, "Basic", token="s3cret")
    assert "s3cret" not in repr(spec)
    assert spec.request()["auth_token"] == "s3cret"


class FakeDeephaven:
    """The two calls the capture program makes in a server, recording the table."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tables: list[list[str]] = []
        deephaven = types.ModuleType("deephaven")
        column = types.ModuleType("deephaven.column")
        deephaven.new_table = self.new_table  # type: ignore[attr-defined]
        column.string_col = lambda name, values: (name, list(values))  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "deephaven", deephaven)
        monkeypatch.setitem(sys.modules, "deephaven.column", column)

    def new_table(self, columns: list[tuple[str, list[str]]]) -> str:
        [(name, chunks)] = columns
        assert name == "chunk"
        self.tables.append(chunks)
        return f"<table {len(self.tables)}>"


def in_console(program: str, console: dict[str, Any]) -> None:
    """Run `program` as the server's console does: top-level code in its globals."""
    exec(compile(program, "<console>", "exec", dont_inherit=True), console)  # noqa: S102


def test_the_capture_program_runs_in_the_console_and_leaves_only_the_users_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The script's globals persist; ours do not; the result table holds the output."""
    server = FakeDeephaven(monkeypatch)
    console: dict[str, Any] = {}
    in_console(capture_program("x = 41", 1024), console)
    assert set(console) == {"__builtins__", "x"}
    assert server.tables == []  # a silent success makes no table
    script = "x += 1\nprint('x is', x, '\\u00e9' * 40000)"
    in_console(capture_program(script, 1 << 20), console)
    assert console[script_capture.RESULT] == "<table 1>"
    [chunks] = server.tables
    assert len(chunks) > 1  # long output is split into rows, rejoined in order
    output = ScriptOutput.from_json(json.loads("".join(chunks)))
    assert output == ScriptOutput(0, "x is 42 " + "\u00e9" * 40000 + "\n")


def test_the_capture_program_quotes_any_script_safely(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quotes, backslashes and triple quotes in a script are the script's, not ours."""
    server = FakeDeephaven(monkeypatch)
    script = "print('''a\\\\b\"\"\"''' + \"'\")"
    in_console(capture_program(script, 1024), {})
    assert json.loads("".join(server.tables[0]))["stdout"] == 'a\\b"""\'\n'


def test_the_scope_reset_removes_the_last_result() -> None:
    """A session's output never reaches the next session, though dunder names stay."""
    console: dict[str, Any] = {"setup": 1}
    in_console(BASELINE_SCRIPT, console)
    console.update({script_capture.RESULT: "t", "user": 2})
    in_console(RESET_SCOPE_SCRIPT, console)
    assert "setup" in console
    assert "__supervisor_baseline__" in console
    assert script_capture.RESULT not in console
    assert "user" not in console


@pytest.mark.parametrize(
    "answer", [[], {"exit_code": "x"}, {"stdout": ""}, "text", {"exit_code": None}]
)
def test_a_malformed_script_result_is_an_error(answer: object) -> None:
    with pytest.raises(DeephavenClientError):
        ScriptOutput.from_json(answer)


def test_no_result_is_a_silent_success() -> None:
    assert ScriptOutput.from_json(None) == ScriptOutput(0, "", "", False)
