"""The `supervisor` command: run the daemon, validate a config, or talk to a running daemon.

Exit codes, one meaning each: 0 ok; 1 failed (a refused request, a resource that ended
FATAL or BACKOFF); 2 usage (argparse); 3 unknown name (a resource, group, environment or
session the daemon does not know); 4 daemon unreachable. `session exec` is the exception:
it passes its command's code through (cli.exec).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.cli.exec import EXIT_EXEC_FAILED, cmd_exec
from supervisor.cli.logs import cmd_logs
from supervisor.cli.parser import build_parser
from supervisor.cli.render import format_environments, format_event, format_status
from supervisor.cli.verbs import cmd_pid, cmd_signal, cmd_verb
from supervisor.config.paths import DEFAULT_CONFIG, default_socket_path
from supervisor.errors import (
    ConfigError,
    ConfigProblem,
    DaemonUnavailableError,
    RequestError,
    StateDirError,
)

if TYPE_CHECKING:
    from supervisor.api.client import Client
    from supervisor.config.schema import Config

# Heavy modules (trio, pydantic, httpx) are imported inside the commands that need them:
# `supervisor status` is typed by people and run by scripts, so it has to start fast.

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse's own
EXIT_UNKNOWN = 3
EXIT_UNAVAILABLE = 4


def resolve_config(path: Path | None) -> tuple[Config, Path | None]:
    """Load the config named on the command line, in the environment, or the default."""
    from supervisor.config.load import load_default, load_file

    if path is None and os.environ.get("SUPERVISOR_CONFIG"):
        path = Path(os.environ["SUPERVISOR_CONFIG"])
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    if path is None:
        return load_default(), None
    return load_file(path), path


def print_problems(exc: ConfigError, headline: str) -> None:
    print(f"{exc.source}: {headline} ({len(exc.problems)} problem(s))", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _online_problems(config: Config) -> list[ConfigProblem]:
    import trio

    from supervisor.runtime.online import check_online

    return trio.run(check_online, config)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config, path = resolve_config(args.config)
    except ConfigError as exc:
        if args.json:
            problems = [{"path": p.path, "message": p.message} for p in exc.problems]
            print(json.dumps({"source": exc.source, "ok": False, "problems": problems}, indent=2))
        else:
            print_problems(exc, "invalid config")
        return EXIT_FAILURE
    source = str(path) if path else "<embedded default>"
    if args.online and (failed := _online_problems(config)):
        if args.json:
            found = [{"path": p.path, "message": p.message} for p in failed]
            print(json.dumps({"source": source, "ok": False, "problems": found}, indent=2))
        else:
            print_problems(ConfigError(source, failed), "endpoints failed")
        return EXIT_FAILURE
    if args.json:
        summary = {
            "source": source,
            "ok": True,
            "resources": list(config.resources),
            "environments": list(config.environments),
            "groups": config.groups,
        }
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    names = ", ".join(config.resources) or "none"
    envs = ", ".join(config.environments) or "none"
    print(f"{source}: OK")
    print(f"  resources ({len(config.resources)}): {names}")
    print(f"  environments ({len(config.environments)}): {envs}")
    if config.groups:
        groups = "; ".join(f"{g} = {', '.join(m)}" for g, m in config.groups.items())
        print(f"  groups ({len(config.groups)}): {groups}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    import trio
    from prometheus_client import disable_created_metrics

    from supervisor.api.server import ApiBindError
    from supervisor.observability.logging import configure_logging
    from supervisor.runtime.daemon import run_daemon

    try:
        config, path = resolve_config(args.config)
    except ConfigError as exc:
        print_problems(exc, "invalid config, not starting")
        return EXIT_FAILURE
    configure_logging(config.daemon.log_format, config.daemon.log_level)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double a scrape and say nothing useful here
    failures: list[BaseException] = []
    try:
        trio.run(lambda: run_daemon(config, config_path=path))
    except* (ConfigError, ApiBindError, StateDirError) as group:
        failures.extend(leaves(group))
    for failure in failures:
        if isinstance(failure, ConfigError):
            print_problems(failure, "cannot start")
        else:
            print(f"cannot start: {failure}", file=sys.stderr)
    return EXIT_FAILURE if failures else EXIT_OK


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside a (nested) exception group: the causes a person can act on."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def connect(args: argparse.Namespace) -> Client:
    """A client for the daemon named by --url/--socket, the environment or the config."""
    return connector(args)()


def connector(args: argparse.Namespace) -> Callable[[], Client]:
    """Makes clients for the daemon named by --url/--socket, the environment or the
    config (resolved once: `supervisor mcp` makes one client per tool call)."""
    from supervisor.api.client import Client

    if args.url:
        token = args.token_file.read_text().strip() if args.token_file else None
        return lambda: Client.connect(url=args.url, token=token, ca_file=args.ca_file)
    if args.ca_file:
        raise ValueError("--ca-file goes with an https:// --url")
    path: Path | str
    if args.socket:
        path = args.socket
    elif os.environ.get("SUPERVISOR_SOCKET"):
        path = os.environ["SUPERVISOR_SOCKET"]
    elif args.config or os.environ.get("SUPERVISOR_CONFIG") or DEFAULT_CONFIG.exists():
        config, _ = resolve_config(args.config)
        path = config.daemon.socket_path
    else:
        path = default_socket_path()
    return lambda: Client.connect(socket_path=path)


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve MCP over stdio: stdout carries the protocol, so every message goes to stderr."""
    try:
        from supervisor.mcp.link import DaemonLink
        from supervisor.mcp.server import run_stdio
    except ImportError as exc:
        print(
            f"supervisor mcp: the MCP SDK is not installed ({exc.name}): "
            "pip install 'supervisor-daemon[mcp]'",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    from supervisor.observability.logging import configure_logging

    try:
        config, _ = resolve_config(args.config)
        make = connector(args)
    except ConfigError as exc:
        print_problems(exc, "cannot read the config")
        return EXIT_FAILURE
    except (OSError, ValueError) as exc:
        print(f"supervisor mcp: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    configure_logging("json", "warning")
    run_stdio(config.mcp, DaemonLink(make))
    return EXIT_OK


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    """Every resource and environment, or (with names) just the resources named."""
    resources = client.resources(args.names)
    environments = [] if args.names else client.environments()
    if args.json:
        shown: dict[str, object] = {"resources": resources}
        if not args.names:
            shown["environments"] = environments
        print(json.dumps(shown, indent=2))
        return EXIT_OK
    print(format_status(resources, now=time.time()))
    if environments:
        print()
        print(format_environments(environments))
    return EXIT_OK


def cmd_reload(args: argparse.Namespace, client: Client) -> int:
    try:
        plan = client.reload(dry_run=args.dry_run)
    except RequestError as exc:
        if exc.code != "invalid_config" or not isinstance(exc.body, dict):
            raise
        print(
            "reload refused: the config is invalid; the daemon keeps running on its old config",
            file=sys.stderr,
        )
        for problem in exc.body["error"].get("problems", []):
            print(f"  {problem['path']}: {problem['message']}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(plan, indent=2))
    return EXIT_OK


def cmd_events(args: argparse.Namespace, client: Client) -> int:
    try:
        for event in client.events(since=args.since):
            print(json.dumps(event) if args.json else format_event(event), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `supervisor events | head`
        sys.stderr.close()
        return EXIT_OK
    return EXIT_OK


def cmd_credentials(args: argparse.Namespace, client: Client) -> int:
    print(json.dumps(client.credentials(args.name), indent=2))
    return EXIT_OK


def _seconds(text: str | None) -> float | None:
    from supervisor.config.durations import parse_duration

    return None if text is None else parse_duration(text)


def cmd_session(args: argparse.Namespace, client: Client) -> int:
    from supervisor.cli.files import FILE_COMMANDS

    action = args.session_command
    if action in FILE_COMMANDS:
        return FILE_COMMANDS[action](args, client)
    if action == "acquire":
        labels = {}
        for label in args.label:
            key, equals, value = label.partition("=")
            if not key or not equals:
                raise ValueError(f"--label takes KEY=VALUE, got {label!r}")
            labels[key] = value
        result = client.acquire(
            args.environment,
            ttl=_seconds(args.ttl),
            wait=_seconds(args.wait),
            labels=labels or None,
            idempotency_key=args.idempotency_key,
        )
        print(json.dumps(result, indent=2) if args.json else result["session_id"])
        return EXIT_OK
    if action == "exec":
        return cmd_exec(args, client)
    if action == "heartbeat":
        result = client.heartbeat(args.id)
        print(
            f"lease extended until {time.strftime('%H:%M:%S', time.localtime(result['lease_expires_at'] or 0))}"
        )
        return EXIT_OK
    if action == "release":
        warning = client.release(args.id)
        if warning is not None:
            print(f"released, but: {warning['teardown_error']}", file=sys.stderr)
        return EXIT_OK
    print(json.dumps(client.session(args.id), indent=2))
    return EXIT_OK


def cmd_environment(args: argparse.Namespace, client: Client) -> int:
    result = client.restart_environment(args.name)
    print(f"environment {result['name']}: restarting (was {result['status']})")
    return EXIT_OK


CLIENT_COMMANDS: dict[str, Callable[[argparse.Namespace, Client], int]] = {
    "environment": cmd_environment,
    "credentials": cmd_credentials,
    "session": cmd_session,
    "status": cmd_status,
    "start": cmd_verb,
    "stop": cmd_verb,
    "restart": cmd_verb,
    "reload": cmd_reload,
    "events": cmd_events,
    "logs": cmd_logs,
    "signal": cmd_signal,
    "pid": cmd_pid,
}


def cmd_completion(args: argparse.Namespace) -> int:
    """A bash or zsh completion script, generated from the parser (shtab)."""
    import shtab

    try:
        print(shtab.complete(build_parser(), shell=args.shell))
    except BrokenPipeError:  # `supervisor completion bash | head`
        sys.stderr.close()
    return EXIT_OK


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; what follows `--` is the command of `session exec`.

    argparse alone cannot: it matches the `id` and `CMD...` positionals in one go, so
    `session exec ID --timeout 5s -- sleep 60` would leave `sleep 60` unrecognised.
    """
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    command: list[str] | None = None
    if "--" in words:
        cut = words.index("--")
        words, command = words[:cut], words[cut + 1 :]
    args = parser.parse_args(words)
    if command is not None:
        if getattr(args, "session_command", None) != "exec":
            parser.error("'--' is only used by `session exec ID -- CMD...`")
        args.argv = [*args.argv, *command]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "check":
        return cmd_check(args)
    if args.command == "completion":
        return cmd_completion(args)
    if args.command == "mcp":
        return cmd_mcp(args)
    # `session exec` exits with its command's code: its own failures are 125 (cli.exec).
    failed = EXIT_EXEC_FAILED if getattr(args, "session_command", None) == "exec" else None
    try:
        with connect(args) as client:
            return CLIENT_COMMANDS[args.command](args, client)
    except DaemonUnavailableError as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        return failed or EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    except RequestError as exc:
        print(f"supervisor {args.command}: {exc.message}", file=sys.stderr)
        return failed or (EXIT_UNKNOWN if exc.code == "not_found" else EXIT_FAILURE)
    except ValueError as exc:  # a bad duration on the command line
        print(f"supervisor {args.command}: {exc}", file=sys.stderr)
        return failed or EXIT_FAILURE
    except ConfigError as exc:
        print_problems(exc, "cannot read the config to find the daemon")
        return failed or EXIT_FAILURE
    except OSError as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        return failed or EXIT_FAILURE
