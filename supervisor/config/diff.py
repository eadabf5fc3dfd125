"""Old config vs new config -> a reload plan (pure).

The point of a plan is to touch as little as possible: this is where supervisord is
weakest (an edit restarts the whole group). A resource restarts only when a field that
shapes the running process changed; policy, timeouts, probes and ordering apply in place;
everything else is left alone, same pid, no transition.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from pydantic import SecretStr

from supervisor.config.schema import Config
from supervisor.config.types import ResourceSpec

# Environment fields that shape its sandboxes: changing one replaces the environment.
# Everything else (sizes, timeouts, intervals, leases) is applied to the running pool.
ENVIRONMENT_RECREATE_FIELDS = frozenset(
    {
        "backend",
        "limits",
        "docker",
        "deephaven",
        "features",
        "output_limit",
        "isolation",
        "network",
        "uids",
        "cgroup",
    }
)
# [daemon] keys the running daemon cannot change without restarting itself.
DAEMON_RESTART_FIELDS = frozenset(
    {
        "control_socket",
        "http",
        "api_token_file",
        "api_read_token_file",
        "generate_api_token",
        "tls",
        "state_dir",
        "log_dir",
        "log_format",
        "log_level",
        "limits",
    }
)


@dataclass(frozen=True, slots=True)
class EnvironmentPlan:
    """What a reload does to each environment: `resized` ones keep their sandboxes."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    recreated: tuple[str, ...] = ()
    resized: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "recreated": list(self.recreated),
            "resized": list(self.resized),
            "unchanged": list(self.unchanged),
        }


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does to each resource, by name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    daemon_restart_needed: tuple[str, ...] = ()
    environments: EnvironmentPlan = field(default_factory=EnvironmentPlan)

    def to_json(self) -> dict[str, object]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "restarted": list(self.restarted),
            "updated": list(self.updated),
            "unchanged": list(self.unchanged),
            "daemon_restart_needed": list(self.daemon_restart_needed),
            "environments": self.environments.to_json(),
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


def plan_digest(old: Config, new: Config) -> str:
    """A hash of the two configs a plan is made from: the same pair, the same plan.

    Secrets count (a changed token is a changed config) but only their hash leaves.
    """

    def plain(value: object) -> object:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, (set, frozenset)):
            return sorted(map(str, value))
        return str(value)

    both = [old.model_dump(mode="python"), new.model_dump(mode="python")]
    text = json.dumps(both, default=plain, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def plan_environments(old: Config, new: Config) -> EnvironmentPlan:
    added, recreated, resized, unchanged = [], [], [], []
    for name, after in new.environments.items():
        before = old.environments.get(name)
        if before is None:
            added.append(name)
        elif any(getattr(before, f) != getattr(after, f) for f in ENVIRONMENT_RECREATE_FIELDS):
            recreated.append(name)
        elif before != after:
            resized.append(name)
        else:
            unchanged.append(name)
    removed = [name for name in old.environments if name not in new.environments]
    return EnvironmentPlan(
        tuple(added), tuple(removed), tuple(recreated), tuple(resized), tuple(unchanged)
    )


def _needs_restart(before: ResourceSpec, after: ResourceSpec) -> bool:
    if type(before) is not type(after):
        return True
    in_place = type(before).in_place_fields
    fields = type(before).model_fields
    return any(getattr(before, f) != getattr(after, f) for f in fields if f not in in_place)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Classify every resource of `old` and `new`."""
    added, removed, restarted, updated, unchanged = [], [], [], [], []
    for name in new.resources:
        if name not in old.resources:
            added.append(name)
            continue
        before, after = old.resources[name], new.resources[name]
        # Output settings are fixed when a resource is built: a change takes a new one.
        if _needs_restart(before, after) or old.log_for(name) != new.log_for(name):
            restarted.append(name)
        elif before != after or old.restart_for(name) != new.restart_for(name):
            updated.append(name)
        else:
            unchanged.append(name)
    # An Enterprise session holds its factory's object: a rebuilt factory rebuilds them.
    for name, spec in new.resources.items():
        rebuilt = any(other in restarted for other in spec.rebuilt_with())
        if rebuilt and name not in restarted and name not in added:
            for bucket in (updated, unchanged):
                if name in bucket:
                    bucket.remove(name)
            restarted.append(name)
    order = {name: i for i, name in enumerate(new.start_order())}
    restarted.sort(key=order.__getitem__)  # factories before their sessions
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
        plan_environments(old, new),
    )
