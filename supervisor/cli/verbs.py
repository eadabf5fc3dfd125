"""`start`, `stop`, `restart` (which wait for the outcome), `signal` and `pid`.

A verb is one request (`POST /v1/actions/{action}`): the daemon expands the names and
patterns and answers with the sequence number of the last event before it acted. The
command then follows the event stream from there until every resource it named has
settled, and prints where each ended (`web: RUNNING`). No polling: the stream says
when something changed, and a deadline bounds the wait.

When is a resource settled? The answer's state is the one *before* the verb took effect
(the supervisor acts on it in its own task), so:
- stop: STOPPED or EXITED.
- start: RUNNING, BACKOFF, FATAL or EXITED, after at least one transition (a start from
  FATAL must not count FATAL); a resource RUNNING already is settled at once.
- restart: one of those after a transition to STARTING (a RUNNING resource goes through
  STOPPING first).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from supervisor.config.durations import parse_duration

if TYPE_CHECKING:
    from supervisor.api.client import Client

EXIT_OK = 0
EXIT_FAILURE = 1

RUN_SETTLED = frozenset({"RUNNING", "BACKOFF", "FATAL", "EXITED"})
STOP_SETTLED = frozenset({"STOPPED", "EXITED"})
FAILED = frozenset({"BACKOFF", "FATAL"})


class Outcome:
    """Where each resource a verb named stands, as its events come in."""

    def __init__(self, action: str, taken: list[dict[str, Any]]) -> None:
        self.action = action
        self.state = {r["name"]: r["state"] for r in taken}
        self.detail: dict[str, str] = {}
        self.moved: set[str] = set()  # had a transition since the verb
        self.restarted: set[str] = set()  # went through STARTING since the verb

    def settled(self, name: str) -> bool:
        state = self.state[name]
        if self.action == "stop":
            return state in STOP_SETTLED
        if self.action == "start":
            return state in RUN_SETTLED and (name in self.moved or state == "RUNNING")
        return state in RUN_SETTLED and name in self.restarted

    def pending(self) -> list[str]:
        return [name for name in self.state if not self.settled(name)]

    def observe(self, event: dict[str, Any]) -> None:
        """Take one item of the event stream."""
        if "gap" in event:  # transitions were dropped: assume each of ours moved
            self.moved.update(self.state)
            self.restarted.update(self.state)
            return
        name = str(event.get("name"))
        if event.get("subject") != "resource" or name not in self.state:
            return
        self.state[name] = event["to"]
        self.detail[name] = event.get("detail") or ""
        self.moved.add(name)
        if event["to"] == "STARTING":
            self.restarted.add(name)


def follow(outcome: Outcome, events: Iterator[dict[str, Any]]) -> bool:
    """Feed `events` to `outcome` until nothing is pending; False on the deadline."""
    if not outcome.pending():
        return True
    try:
        for event in events:
            outcome.observe(event)
            if not outcome.pending():
                return True
    except TimeoutError:
        return False
    return not outcome.pending()


def cmd_verb(args: argparse.Namespace, client: Client) -> int:
    """start/stop/restart NAME...: act, then (unless --no-wait) wait and print the result."""
    timeout = parse_duration(args.timeout)
    result = client.act(args.command, args.names)
    taken: list[dict[str, Any]] = result["resources"]
    if args.no_wait:
        for r in taken:
            print(f"{args.command} {r['name']}: accepted (now {r['state']})")
        return EXIT_OK
    outcome = Outcome(args.command, taken)
    deadline = time.monotonic() + timeout
    done = outcome.pending() == [] or follow(
        outcome, client.events(since=result["seq"], deadline=deadline)
    )
    failed = False
    for name, state in outcome.state.items():
        detail = outcome.detail.get(name, "")
        if not outcome.settled(name):
            print(f"{name}: {state} (not settled after {args.timeout})")
            failed = True
        else:
            print(f"{name}: {state}" + (f" ({detail})" if state in FAILED and detail else ""))
            failed = failed or state in FAILED
    if not done:
        print(f"supervisor {args.command}: timed out after {args.timeout}", file=sys.stderr)
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_signal(args: argparse.Namespace, client: Client) -> int:
    sent = client.signal(args.name, args.signal)
    print(f"{sent['name']}: {sent['signal']} sent to pid {sent['pid']}")
    return EXIT_OK


def cmd_pid(args: argparse.Namespace, client: Client) -> int:
    """The pid of a resource's process, or with no name the daemon's."""
    if args.name is None:
        pid = client.daemon()["pid"]
        print(json.dumps({"pid": pid}) if args.json else pid)
        return EXIT_OK
    resource = client.resource(args.name)
    if args.json:
        print(json.dumps({"name": resource["name"], "pid": resource["pid"]}))
    elif resource["pid"] is not None:
        print(resource["pid"])
    if resource["pid"] is None:
        if not args.json:
            what = "a container" if resource.get("container_id") else resource["state"]
            print(f"supervisor pid: {args.name} has no process ({what})", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
