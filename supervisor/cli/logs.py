"""`supervisor logs NAME [-f] [-n N] [--stderr]`: a program's output, as it printed it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.api.client import Client


def add_logs_command(commands: Any, client: argparse.ArgumentParser) -> None:
    logs = commands.add_parser(
        "logs",
        parents=[client],
        help="print a program's output (its last lines; -f follows it)",
        description="Print the last lines a process, container or launched Deephaven "
        "server wrote to stdout (or stderr), as it wrote them; with -f, go on printing what "
        "it writes until interrupted (Ctrl-C). Exits 1 for an unknown name or a resource "
        "that keeps no output.",
    )
    logs.add_argument("name", help="the resource's name")
    logs.add_argument("-f", "--follow", action="store_true", help="follow the output live")
    logs.add_argument(
        "-n",
        "--lines",
        type=int,
        default=20,
        metavar="N",
        help="how many of the last lines to print first (default: 20; 0: none)",
    )
    logs.add_argument("--stderr", action="store_true", help="show stderr instead of stdout")


def cmd_logs(args: argparse.Namespace, client: Client) -> int:
    if not 0 <= args.lines <= 100_000:
        raise ValueError("-n must be from 0 to 100000")
    out = sys.stdout.buffer
    pieces = client.logs(
        args.name,
        stream="stderr" if args.stderr else "stdout",
        lines=args.lines,
        follow=args.follow,
    )
    try:
        for piece in pieces:
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `supervisor logs NAME | head`
        sys.stderr.close()
        return 0
    if args.follow:
        print(
            "supervisor logs: the stream ended (the daemon stopped, the container ended, "
            "or this reader fell behind)",
            file=sys.stderr,
        )
    return 0
