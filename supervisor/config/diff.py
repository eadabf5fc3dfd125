"""Old config vs new config -> a reload plan (pure).

The point of a plan is to touch as little as possible: this is where supervisord is
weakest (an edit restarts the whole group). A resource restarts only when a field that
shapes the running process changed; policy, timeouts, probes and ordering apply in place;
everything else is left alone, same pid, no transition.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.config.schema import Config

# Fields baked into a running process: changing one needs a new process.
RESTART_FIELDS = frozenset({"kind", "command", "cwd", "env", "user", "group", "log_output"})
# [daemon] keys the running daemon cannot change without restarting itself.
DAEMON_RESTART_FIELDS = frozenset(
    {"control_socket", "http", "api_token_file", "state_dir", "log_format", "log_level"}
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does to each resource, by name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    daemon_restart_needed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "restarted": list(self.restarted),
            "updated": list(self.updated),
            "unchanged": list(self.unchanged),
            "daemon_restart_needed": list(self.daemon_restart_needed),
        }

    def summary(self) -> str:
        parts = [
            f"{len(names)} {label}"
            for label, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("restarted", self.restarted),
                ("updated", self.updated),
                ("unchanged", self.unchanged),
            )
            if names
        ]
        return ", ".join(parts) or "nothing configured"


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Classify every resource of `old` and `new`."""
    added, removed, restarted, updated, unchanged = [], [], [], [], []
    for name in new.resources:
        if name not in old.resources:
            added.append(name)
            continue
        before, after = old.resources[name], new.resources[name]
        if any(getattr(before, f) != getattr(after, f) for f in RESTART_FIELDS):
            restarted.append(name)
        elif before != after or old.restart_for(name) != new.restart_for(name):
            updated.append(name)
        else:
            unchanged.append(name)
    removed = [name for name in old.resources if name not in new.resources]
    daemon = sorted(
        f for f in DAEMON_RESTART_FIELDS if getattr(old.daemon, f) != getattr(new.daemon, f)
    )
    return ReloadPlan(
        tuple(added),
        tuple(removed),
        tuple(restarted),
        tuple(updated),
        tuple(unchanged),
        tuple(daemon),
    )
