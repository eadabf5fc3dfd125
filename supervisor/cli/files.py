"""`supervisor session put|get|ls`: files in and out of a session's sandbox.

A directory travels as a tar, made and unpacked here: what comes back is extracted with
tarfile's `data` filter, so an archive from the sandbox cannot write outside `LOCAL`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.api.client import Client

EXIT_OK = 0


def _remote_for(local: Path, remote: str | None) -> str:
    if remote is None:
        return local.name
    return remote + local.name if remote.endswith("/") else remote


def cmd_put(args: argparse.Namespace, client: Client) -> int:
    local = Path(args.local)
    remote = _remote_for(local, args.remote)
    if local.is_dir():
        with tempfile.TemporaryFile() as spool:
            with tarfile.open(fileobj=spool, mode="w") as archive:
                for child in sorted(local.iterdir()):
                    archive.add(child, arcname=child.name)
            spool.seek(0)
            client.put_files(args.id, remote, spool, tar=True)
    else:
        with local.open("rb") as source:
            client.put_files(args.id, remote, source)
    return EXIT_OK


def cmd_get(args: argparse.Namespace, client: Client) -> int:
    name = PurePosixPath(args.remote).name or "workdir"
    local = Path(args.local) if args.local is not None else Path(name)
    with tempfile.TemporaryFile() as spool:
        is_dir = client.get_files(args.id, args.remote, spool)
        spool.seek(0)
        if is_dir:
            local.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=spool, mode="r:") as archive:
                archive.extractall(local, filter="data")
        else:
            target = local / name if local.is_dir() else local
            with target.open("wb") as out:
                shutil.copyfileobj(spool, out)
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, client: Client) -> int:
    listing = client.list_files(args.id, args.remote)
    if args.json:
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    for entry in listing["entries"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["mtime"]))
        mark = "/" if entry["type"] == "dir" else ""
        print(f"{entry['type']:<7} {entry['mode']:04o} {entry['size']:>10} {when} "
              f"{entry['name']}{mark}")  # fmt: skip
    return EXIT_OK


FILE_COMMANDS: dict[str, Callable[[argparse.Namespace, Client], int]] = {
    "put": cmd_put,
    "get": cmd_get,
    "ls": cmd_ls,
}
