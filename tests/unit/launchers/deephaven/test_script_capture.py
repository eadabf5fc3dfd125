"""The program a Deephaven console runs a script in: output captured, capped, and confined."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.launchers.deephaven.script_capture import RESULT, main, run


def test_output_and_globals_of_a_successful_script() -> None:
    """Both streams are returned, and the names the script defines stay in the scope."""
    scope: dict[str, Any] = {"kept": 6}
    result = run(
        "import sys\nanswer = kept * 7\nprint(answer)\nsys.stderr.write('w\\n')", 100, scope
    )
    assert result == {"exit_code": 0, "stdout": "42\n", "stderr": "w\n", "truncated": False}
    assert scope["answer"] == 42


def test_an_exception_is_exit_1_with_the_traceback_python_prints() -> None:
    """The traceback starts at the script: the capturing frame is left out."""
    result = run("print('before')\ndef f():\n    raise KeyError('k')\nf()", 1000, {})
    assert result["exit_code"] == 1
    assert result["stdout"] == "before\n"
    assert result["stderr"].splitlines() == [
        "Traceback (most recent call last):",
        '  File "<script>", line 4, in <module>',
        '  File "<script>", line 3, in f',
        "KeyError: 'k'",
    ]


def test_a_syntax_error_is_reported_as_python_reports_it() -> None:
    result = run("def f(:\n    pass", 1000, {})
    assert result["exit_code"] == 1
    assert result["stderr"].splitlines()[0] == '  File "<script>", line 1'
    assert result["stderr"].splitlines()[-1] == "SyntaxError: invalid syntax"


@pytest.mark.parametrize(
    ("code", "exit_code", "stderr"),
    [("None", 0, ""), ("0", 0, ""), ("3", 3, ""), ("'bye'", 1, "bye\n")],
)
def test_system_exit_exits_as_python_c_would(code: str, exit_code: int, stderr: str) -> None:
    result = run(f"import sys\nsys.exit({code})", 100, {})
    assert (result["exit_code"], result["stderr"]) == (exit_code, stderr)


def test_user_code_gets_no_future_flags_from_ours() -> None:
    """This module postpones annotations; a script must not inherit that."""
    scope: dict[str, Any] = {}
    run("def f(x: int) -> None: pass", 100, scope)
    assert scope["f"].__annotations__ == {"x": int, "return": None}


@given(st.lists(st.text(), max_size=20), st.integers(1, 64))
def test_each_stream_keeps_at_most_limit_bytes(writes: list[str], limit: int) -> None:
    """No more than `limit` UTF-8 bytes are kept; `truncated` says whether any were dropped."""
    script = "import sys\nfor w in WRITES:\n    sys.stdout.write(w)\n    sys.stderr.write(w)"
    result = run(script, limit, {"WRITES": writes})
    whole = "".join(writes).encode("utf-8", "replace")
    for stream in ("stdout", "stderr"):
        kept = result[stream].encode("utf-8")
        # A cut inside a character leaves one replacement character (3 bytes) at most.
        assert len(kept) <= limit + 2
        assert whole.startswith(kept.removesuffix("\ufffd".encode()))
    assert result["truncated"] == (len(whole) > limit)


def test_other_threads_still_write_to_the_servers_streams(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only the script's thread is captured; a listener printing meanwhile is not."""
    script = (
        "import threading\n"
        "t = threading.Thread(target=print, args=('from a thread',))\n"
        "t.start(); t.join()\n"
        "print('from the script')"
    )
    result = run(script, 100, {})
    assert result["stdout"] == "from the script\n"
    assert capsys.readouterr().out == "from a thread\n"


def test_streams_are_restored_and_a_kept_writer_writes_through(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After the run (even a failed one) `sys.stdout` is back, and a writer the script
    kept (a logging handler, say) writes to whatever `sys.stdout` is now."""
    before = sys.stdout, sys.stderr
    scope: dict[str, Any] = {}
    run("import sys\nkept = sys.stdout\nraise RuntimeError", 100, scope)
    assert (sys.stdout, sys.stderr) == before
    scope["kept"].write("later\n")
    assert capsys.readouterr().out == "later\n"


def test_a_result_is_bound_only_when_there_is_something_to_say() -> None:
    """A silent success binds nothing (and drops the last result); anything else binds
    its result, JSON-encoded, through `publish`."""
    published: list[str] = []
    scope: dict[str, Any] = {RESULT: "stale"}
    main("x = 1", 100, scope, publish=published.append)
    assert RESULT not in scope
    assert published == []
    main("print(x)", 100, scope, publish=lambda text: ("table", text))
    assert scope[RESULT] == (
        "table",
        '{"exit_code": 0, "stdout": "1\\n", "stderr": "", "truncated": false}',
    )


def test_a_write_of_bytes_is_refused_as_by_a_text_stream() -> None:
    result = run("import sys\nsys.stdout.write(b'x')", 1000, {})
    assert result["exit_code"] == 1
    assert "TypeError: write() argument must be str, not bytes" in result["stderr"]


def test_the_capture_is_per_thread_even_when_called_from_a_worker_thread() -> None:
    """The owner is the thread that runs the script, whichever it is (the server's
    console runs scripts on a scheduler thread)."""
    results: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: results.append(run("print('hi')", 100, {})))
    worker.start()
    worker.join()
    assert results[0]["stdout"] == "hi\n"
