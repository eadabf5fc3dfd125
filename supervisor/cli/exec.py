"""`supervisor session exec ID -- CMD...`: a streamed exec, with `docker exec`'s exit codes.

The output is written to our own stdout and stderr as it arrives. We exit with the
command's code (128+N when a signal N ended it), 124 when it ran out of time, and 125
when the exec itself failed: the daemon unreachable, the session unknown or ended, a
refused option, the sandbox broken under the command. So a script can tell the
command's failure from ours, as with `docker exec`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.config.durations import parse_duration
from supervisor.errors import ClientError, RequestError

if TYPE_CHECKING:
    from supervisor.api.client import Client

EXIT_TIMED_OUT = 124
EXIT_EXEC_FAILED = 125


def add_exec_options(parser: argparse.ArgumentParser) -> None:
    """The flags of `session exec`, besides the session id and the command."""
    parser.add_argument(
        "--script", help="run this script instead of a command (sh; Python on deephaven)"
    )
    parser.add_argument("--timeout", help='kill the command after this long (e.g. "30s")')
    parser.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set an environment variable for the command (repeatable)",
    )
    parser.add_argument(
        "-w", "--cwd", metavar="DIR", help="run in DIR, relative to the sandbox's work directory"
    )
    parser.add_argument(
        "--stdin",
        metavar="FILE",
        help="feed FILE (UTF-8 text; - for this command's own stdin) to the command",
    )


def _env(pairs: list[str]) -> dict[str, str] | None:
    env: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not key or not equals:
            raise ValueError(f"--env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env or None


def _stdin(source: str | None) -> str | None:
    if source is None:
        return None
    data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    return data.decode(errors="replace")


def _exit_code(final: dict[str, Any]) -> int:
    if final["timed_out"]:
        print(f"supervisor: timed out after {final['duration_s']:.1f}s", file=sys.stderr)
        return EXIT_TIMED_OUT
    code = final["exit_code"]
    if code is None:
        print("supervisor: the command's exit code is unknown", file=sys.stderr)
        return EXIT_EXEC_FAILED
    return int(code) if 0 <= code <= 255 else 128 + abs(int(code))


def cmd_exec(args: argparse.Namespace, client: Client) -> int:
    """Stream the exec's output; return the exit code described above."""
    if bool(args.argv) == bool(args.script):
        print("supervisor session exec: give a command after -- or --script", file=sys.stderr)
        return EXIT_EXEC_FAILED
    outputs = {"stdout": sys.stdout, "stderr": sys.stderr}
    try:
        frames = client.exec_stream(
            args.id,
            args.argv or None,
            script=args.script,
            timeout=None if args.timeout is None else parse_duration(args.timeout),
            env=_env(args.env),
            cwd=args.cwd,
            stdin=_stdin(args.stdin),
        )
        for frame in frames:
            if "stream" in frame:
                out = outputs[frame["stream"]]
                out.write(frame["data"])
                out.flush()
            elif "error" in frame:
                print(f"supervisor: {frame['error']['message']}", file=sys.stderr)
                return EXIT_EXEC_FAILED
            else:
                if frame["truncated"]:
                    print(
                        "supervisor: output truncated at the daemon's output_limit", file=sys.stderr
                    )
                return _exit_code(frame)
    except ClientError as exc:
        message = exc.message if isinstance(exc, RequestError) else str(exc)
        print(f"supervisor session exec: {message}", file=sys.stderr)
        return EXIT_EXEC_FAILED
    except (ValueError, OSError) as exc:  # a bad flag, an unreadable --stdin file
        print(f"supervisor session exec: {exc}", file=sys.stderr)
        return EXIT_EXEC_FAILED
    return EXIT_EXEC_FAILED  # not reached: the stream ends with a final frame or raises
