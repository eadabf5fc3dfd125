"""Runs a user's script in a Deephaven server's Python console and keeps what it printed.

This file is a program for the server, not a module of the daemon: `client.capture_program`
sends its text, and the server runs it in a namespace of its own with the script, the
output limit and the console's globals. Standard library only (plus `deephaven`, which
only the server has); it must not import the daemon's package.

Why it is built this way:
- pydeephaven's `run_script` returns nothing: a script's prints go to the server's log,
  and an error comes back as a Java exception's text. So the script runs here, compiled
  and executed in the console's own globals (the names it defines stay for the next
  script, as with a plain `run_script`), with `sys.stdout` and `sys.stderr` swapped for
  writers that keep at most `limit` bytes each; the rest is dropped and flagged, so a
  chatty script cannot fill the server's heap.
- Only the script's own thread is captured: anything else that prints meanwhile (a table
  listener, another client's script) still goes to the server's log.
- An exception is exit 1 with the traceback Python would print, our frame left out;
  `SystemExit` exits as `python -c` would.
- The result goes back as a one-column table of JSON chunks bound to `RESULT`, read with
  one Flight DoGet. A silent success binds none (the previous one is dropped first), and
  the console's answer lists the variables a script created or updated, so the helper
  fetches only when there is something to read. The scope reset removes `RESULT`.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

RESULT = "__supervisor_result__"
FILENAME = "<script>"
_CHUNK = 32768  # characters per row of the result table: small Arrow records


class CappedWriter(io.TextIOBase):
    """`sys.<name>` while a script runs: keeps the first `limit` UTF-8 bytes its thread writes.

    Other threads, and anyone still holding it after the run (a logging handler made by
    the script), write to the current `sys.<name>`, or to `fallback` (the stream it
    replaced) while that is this writer.
    """

    encoding = "utf-8"

    def __init__(self, name: str, limit: int) -> None:
        super().__init__()
        self._name = name
        self._fallback = getattr(sys, name)
        self._limit = limit
        self._owner: int | None = threading.get_ident()
        self._data = bytearray()
        self.truncated = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if threading.get_ident() != self._owner:
            return int(self._elsewhere().write(text) or 0)
        data = text.encode("utf-8", "replace")  # a lone surrogate becomes "?"
        room = self._limit - len(self._data)
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        self._data += data
        return len(text)

    def flush(self) -> None:
        if threading.get_ident() != self._owner:
            self._elsewhere().flush()

    def release(self) -> None:
        """The run is over: from now on everything is written elsewhere."""
        self._owner = None

    def getvalue(self) -> str:
        return self._data.decode("utf-8", "replace")

    def _elsewhere(self) -> Any:
        current = getattr(sys, self._name)
        return self._fallback if current is self else current


def run(source: str, limit: int, scope: dict[str, Any]) -> dict[str, Any]:
    """Execute `source` in `scope`, capturing its output; return exit code and output."""
    out, err = CappedWriter("stdout", limit), CappedWriter("stderr", limit)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    exit_code = 0
    try:
        code = compile(source, FILENAME, "exec", dont_inherit=True)
        exec(code, scope)  # noqa: S102 - running the user's script is the point
    except SystemExit as exc:
        exit_code = _exit_status(exc.code, err)
    except Exception as exc:
        # The first frame is ours (the exec or the compile above): leave it out.
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        err.write("".join(traceback.format_exception(type(exc), exc, tb)))
        exit_code = 1
    finally:
        sys.stdout, sys.stderr = saved
        out.release()
        err.release()
    return {
        "exit_code": exit_code,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "truncated": out.truncated or err.truncated,
    }


def _exit_status(code: object, err: CappedWriter) -> int:
    """What `python -c` exits with for `SystemExit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    err.write(f"{code}\n")
    return 1


def main(
    source: str,
    limit: int,
    scope: dict[str, Any],
    publish: Callable[[str], object] | None = None,
) -> None:
    """Run `source` and bind its result to `scope[RESULT]` if there is anything to say."""
    scope.pop(RESULT, None)
    result = run(source, limit, scope)
    if result["exit_code"] != 0 or result["stdout"] or result["stderr"] or result["truncated"]:
        scope[RESULT] = (publish or result_table)(json.dumps(result))


def result_table(text: str) -> object:
    """`text` as a one-column table of chunks, in order (ASCII JSON: any cut is safe)."""
    from deephaven import new_table  # noqa: PLC0415 - only the server has it
    from deephaven.column import string_col  # noqa: PLC0415

    chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)]
    return new_table([string_col("chunk", chunks)])
