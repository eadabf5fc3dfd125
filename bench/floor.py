"""The floor: the least a trio program must do to keep N children alive.

Usage: python floor.py N COMMAND [ARG...]. Every copy runs in its own session, is awaited
(trio waits on a pidfd, as the daemon does) and is started again at once when it exits.
SIGTERM or SIGINT kills the children and exits 0. The daemon is measured against this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import trio


async def keep_alive(argv: list[str], live: set[trio.Process]) -> None:
    """Run `argv`, await its exit, run it again at once: forever."""
    while True:
        proc = await trio.lowlevel.open_process(
            argv, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        live.add(proc)
        await proc.wait()
        live.discard(proc)  # not in a finally: on cancellation it must stay to be killed


async def main(n: int, argv: list[str]) -> None:
    live: set[trio.Process] = set()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(keep_alive, argv, live)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    # Each child leads its own session, so nothing else would end it when we exit.
    for proc in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), sys.argv[2:])
