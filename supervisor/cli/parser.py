"""The command line's grammar: every command, option and help text."""

from __future__ import annotations

import argparse
import signal as signals
from pathlib import Path
from typing import Any

from supervisor import __version__
from supervisor.cli.exec import add_exec_options
from supervisor.cli.logs import add_logs_command
from supervisor.config.paths import DEFAULT_CONFIG

CONFIG_HELP = (
    f"config file (default: $SUPERVISOR_CONFIG, else {DEFAULT_CONFIG} if it exists, "
    "else the embedded default)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supervisor",
        description="Keep processes, containers, Deephaven servers and sandbox pools alive.",
        epilog="Client commands reach the daemon through --socket (default: $SUPERVISOR_SOCKET, "
        "else daemon.control_socket of the config) or --url with --token-file (and "
        "--ca-file for an https:// URL whose certificate the system does not trust).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the daemon in the foreground",
        description="Run the daemon in the foreground until SIGTERM or SIGINT (this is what "
        "systemd runs). Exits 0 after a graceful stop, 1 if the config is invalid or the "
        "control socket or HTTP port cannot be bound.",
    )
    run.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)

    check = commands.add_parser(
        "check",
        help="validate a config file and print every problem",
        description="Validate a config file. Prints every problem with its key path and "
        "exits 1, or prints a summary and exits 0.",
    )
    check.add_argument("-c", "--config", type=Path, help=CONFIG_HELP)
    check.add_argument(
        "--online",
        action="store_true",
        help="also check that the endpoints answer: each Docker engine, a swarm's manager "
        "(a manager) and nodes (nodes of its swarm); a failure names its key path",
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    client = argparse.ArgumentParser(add_help=False)
    where = client.add_argument_group("how to reach the daemon")
    where.add_argument("--socket", type=Path, help="the daemon's control socket")
    where.add_argument("--url", help="the daemon's HTTP address, e.g. http://127.0.0.1:9310")
    where.add_argument("--token-file", type=Path, help="file holding the API token (with --url)")
    where.add_argument(
        "--ca-file",
        type=Path,
        help="CA certificate (PEM) to verify an https:// --url with (default: the system's)",
    )
    where.add_argument("-c", "--config", type=Path, help="read the socket path from this config")

    add_operator_commands(commands, client)
    reload = client_verb(
        commands,
        client,
        "reload",
        "re-read the config file and apply the changes",
        "Ask the daemon to re-read its config file and apply the changes.",
    )
    reload.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    events = client_verb(
        commands,
        client,
        "events",
        "follow state changes as they happen",
        "Print one line per state change until interrupted (Ctrl-C).",
    )
    events.add_argument(
        "--since",
        type=int,
        metavar="SEQ",
        help="replay from after this sequence number (0: everything kept)",
    )
    events.add_argument("--json", action="store_true", help="print each event as a JSON line")
    credentials = client_verb(
        commands,
        client,
        "credentials",
        "print how to connect to a Deephaven resource (includes its token)",
        "Print host, port, auth type and token of a Deephaven resource as JSON. "
        "Only over the control socket or with the API token: treat the output as a secret.",
    )
    credentials.add_argument("name", help="the resource's name")
    add_logs_command(commands, client)
    add_session_commands(commands, client)
    environment = commands.add_parser(
        "environment",
        help="act on a sandbox environment",
        description="Act on a sandbox environment (a pool).",
    )
    env_verbs = environment.add_subparsers(
        dest="environment_command", required=True, metavar="ACTION"
    )
    env_restart = client_verb(
        env_verbs,
        client,
        "restart",
        "rebuild the environment now (its sessions end)",
        "Shut the environment down and build it again from its config: its "
        "sessions end, its sandboxes are replaced, and a failing one is retried at once.",
    )
    env_restart.add_argument("name", help="the environment's name")
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for SHELL, generated from this parser. "
        "bash: `supervisor completion bash > /etc/bash_completion.d/supervisor`; zsh: "
        "`supervisor completion zsh > ~/.zfunc/_supervisor` (with ~/.zfunc in $fpath).",
    )
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    client_verb(
        commands,
        client,
        "mcp",
        "serve MCP (for agents) over stdin/stdout",
        "Serve the Model Context Protocol over stdin/stdout, for an agent that "
        "starts this command: sandbox, resource and Deephaven tools, as enabled by [mcp] in "
        "the config, "
        "each a call to the running daemon. Sandbox sessions acquired through it are "
        "released when stdin closes. Needs the mcp extra: pip install "
        "'supervisor-daemon[mcp]'.",
    )
    return parser


def client_verb(
    commands: Any, client: argparse.ArgumentParser, verb: str, about: str, description: str
) -> argparse.ArgumentParser:
    """A command that asks the daemon: it takes `client`'s options (how to reach it)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        verb, parents=[client], help=about, description=description
    )
    return parser


def session_verb(
    verbs: Any, client: argparse.ArgumentParser, verb: str, about: str, description: str
) -> argparse.ArgumentParser:
    """A session action: a client command whose first argument is the session id."""
    parser = client_verb(verbs, client, verb, about, description)
    parser.add_argument("id", help="the session id")
    return parser


PATTERNS_HELP = (
    "resource names or patterns: NAME, NAME:I (an instance), GROUP or GROUP:* (a group's "
    "members), NAME:* (every instance), a shell glob (web*), or all"
)
EXIT_CODES = (
    "Exit codes: 0 ok, 1 failed (a resource ended FATAL or BACKOFF, or did not settle in "
    "time), 2 usage, 3 unknown name, 4 daemon unreachable."
)


def signal_argument(text: str) -> str:
    """A signal name (HUP, SIGUSR1) or number, checked here so a typo is a usage error."""
    name = text.strip().upper()
    if name.isdigit():
        try:
            return signals.Signals(int(name)).name
        except ValueError:
            raise argparse.ArgumentTypeError(f"unknown signal number {text}") from None
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in signals.Signals.__members__:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r} (e.g. HUP, USR1, TERM)")
    return name


def add_operator_commands(commands: Any, client: argparse.ArgumentParser) -> None:
    """status, start/stop/restart, signal, pid."""
    status = client_verb(
        commands,
        client,
        "status",
        "show resources (all, or those named)",
        "Show resources: name, kind, state, liveness, uptime, restarts, pid or "
        "container, and detail; with no NAME, every resource and the environments. " + EXIT_CODES,
    )
    status.add_argument("names", nargs="*", metavar="NAME", help=PATTERNS_HELP)
    status.add_argument(
        "--json", action="store_true", help="print the API's JSON instead of a table"
    )
    for verb, text in (
        ("start", "start resources now (FATAL, EXITED and BACKOFF included)"),
        ("stop", "stop resources and keep them stopped"),
        ("restart", "stop resources if running, then start them"),
    ):
        sub = client_verb(
            commands,
            client,
            verb,
            text,
            text[0].upper() + text[1:] + ", then wait until each has settled "
            "and print its state (web: RUNNING). " + EXIT_CODES,
        )
        sub.add_argument("names", nargs="+", metavar="NAME", help=PATTERNS_HELP)
        sub.add_argument("--timeout", default="60s", help='wait at most this long (default "60s")')
        sub.add_argument(
            "--no-wait", action="store_true", help="return once the daemon has the request"
        )
    signal = client_verb(
        commands,
        client,
        "signal",
        "send a signal to a resource's process",
        "Send SIGNAL to the process of a running resource (the process itself, "
        "not its group). Exits 1 if it is not running. " + EXIT_CODES,
    )
    signal.add_argument("name", help="the resource's name")
    signal.add_argument(
        "signal", type=signal_argument, metavar="SIGNAL", help="a name (HUP, USR1) or number"
    )
    pid = client_verb(
        commands,
        client,
        "pid",
        "print a resource's pid (with no name: the daemon's)",
        "Print the pid of a resource's process, or with no NAME the daemon's. "
        "Exits 1 if the resource has no process now. " + EXIT_CODES,
    )
    pid.add_argument("name", nargs="?", help="the resource's name")
    pid.add_argument("--json", action="store_true", help='print {"name", "pid"} as JSON')


def add_session_commands(commands: Any, client: argparse.ArgumentParser) -> None:
    session = commands.add_parser(
        "session",
        help="acquire, use and release a sandbox session",
        description="Sessions lease one sandbox of an environment: acquire one, run commands "
        "in it, heartbeat to keep the lease, release it when done.",
    )
    verbs = session.add_subparsers(dest="session_command", required=True, metavar="ACTION")
    acquire = client_verb(
        verbs,
        client,
        "acquire",
        "acquire a session; prints its id",
        "Acquire a session in ENV and print its id (or, with --json, everything "
        "the daemon returned, including connection details). Exits 1 with the reason when "
        "the pool is overloaded or in an outage.",
    )
    acquire.add_argument("environment", metavar="ENV", help="the environment's name")
    acquire.add_argument("--ttl", help='end the session after this long (e.g. "30m")')
    acquire.add_argument("--wait", help='wait at most this long for a sandbox (e.g. "5s", 0)')
    acquire.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="tag the session"
    )
    acquire.add_argument(
        "--idempotency-key", help="a retried acquire with the same key returns the same session"
    )
    acquire.add_argument("--json", action="store_true", help="print the full response")
    exec_ = session_verb(
        verbs,
        client,
        "exec",
        "run a command in the session's sandbox",
        "Run a command (no shell: the arguments after -- are the argv) or a "
        "--script in the session's sandbox. Prints its output as it comes and exits with its "
        "exit code (128+N if signal N ended it), 124 when it timed out, or 125 when the exec "
        "itself failed (daemon unreachable, session unknown or ended, sandbox broken).",
    )
    add_exec_options(exec_)
    exec_.add_argument("argv", nargs="*", metavar="CMD", help="the command and its arguments")
    add_file_commands(verbs, client)
    for verb, text in (
        ("heartbeat", "extend the session's lease"),
        ("release", "end the session and give the sandbox back"),
        ("show", "print the session as JSON"),
    ):
        session_verb(verbs, client, verb, text, text[0].upper() + text[1:] + ".")


def add_file_commands(verbs: Any, client: argparse.ArgumentParser) -> None:
    put = session_verb(
        verbs,
        client,
        "put",
        "copy a local file or directory into the session's sandbox",
        "Copy LOCAL into the sandbox as REMOTE (relative to its workdir; by "
        "default LOCAL's name; ending in / means inside that directory). A directory goes "
        "as a tar, its contents extracted under REMOTE. Limited to the environment's "
        "file_limit.",
    )
    put.add_argument("local", metavar="LOCAL", help="the file or directory to copy")
    put.add_argument("remote", metavar="REMOTE", nargs="?", help="where, in the workdir")
    get = session_verb(
        verbs,
        client,
        "get",
        "copy a file or directory out of the session's sandbox",
        "Copy REMOTE (relative to the sandbox's workdir) to LOCAL (by default "
        "REMOTE's name here; an existing directory means inside it). A directory comes as "
        "a tar and is extracted into LOCAL.",
    )
    get.add_argument("remote", metavar="REMOTE", help="the file or directory, in the workdir")
    get.add_argument("local", metavar="LOCAL", nargs="?", help="where to put it")
    ls = session_verb(
        verbs,
        client,
        "ls",
        "list a directory of the session's sandbox",
        "List REMOTE (a directory relative to the sandbox's workdir; the "
        "workdir by default): type, mode, size, modification time and name.",
    )
    ls.add_argument("remote", metavar="REMOTE", nargs="?", default=".", help="the directory")
    ls.add_argument("--json", action="store_true", help="print the daemon's answer")
