"""The `supervisor` command: run the daemon, or validate a config."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from supervisor import __version__
from supervisor.config.load import DEFAULT_PATH, load_default, load_file
from supervisor.config.schema import Config
from supervisor.errors import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supervisor",
        description="Keep processes, containers, Deephaven servers and sandbox pools alive.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config_help = (
        f"config file (default: $SUPERVISOR_CONFIG, else {DEFAULT_PATH} if it exists, "
        "else the embedded default)"
    )
    run = commands.add_parser(
        "run",
        help="run the daemon in the foreground",
        description="Run the daemon in the foreground until SIGTERM or SIGINT (this is what "
        "systemd runs). Exits 0 after a graceful stop, 1 if the config is invalid.",
    )
    run.add_argument("-c", "--config", type=Path, help=config_help)

    check = commands.add_parser(
        "check",
        help="validate a config file and print every problem",
        description="Validate a config file. Prints every problem with its key path and "
        "exits 1, or prints a summary and exits 0.",
    )
    check.add_argument("-c", "--config", type=Path, help=config_help)
    return parser


def resolve_config(path: Path | None) -> tuple[Config, Path | None]:
    """Load the config named on the command line, in the environment, or the default."""
    if path is None and os.environ.get("SUPERVISOR_CONFIG"):
        path = Path(os.environ["SUPERVISOR_CONFIG"])
    if path is None and DEFAULT_PATH.exists():
        path = DEFAULT_PATH
    if path is None:
        return load_default(), None
    return load_file(path), path


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config, path = resolve_config(args.config)
    except ConfigError as exc:
        print(f"{exc.source}: invalid config ({len(exc.problems)} problem(s))", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILURE
    source = str(path) if path else "<embedded default>"
    names = ", ".join(config.resources) or "none"
    envs = ", ".join(config.environments) or "none"
    print(f"{source}: OK")
    print(f"  resources ({len(config.resources)}): {names}")
    print(f"  environments ({len(config.environments)}): {envs}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from supervisor.daemon import run_daemon
    from supervisor.observability.logging import configure_logging

    try:
        config, path = resolve_config(args.config)
    except ConfigError as exc:
        print(f"{exc.source}: invalid config, not starting", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILURE
    configure_logging(config.daemon.log_format, config.daemon.log_level)
    trio.run(lambda: run_daemon(config, config_path=path))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "check": cmd_check}
    return handlers[args.command](args)
