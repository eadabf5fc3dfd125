"""Instances and groups: how the names an operator writes become the resources that run.

`instances = N` on a process resource `web` makes N resources `web:0` ... `web:N-1`, each
with `SUPERVISOR_INSTANCE=<i>` in its environment and `{instance}` replaced by `i` in its
command's arguments. The expansion happens once, after validation (`Config.expanded`):
everything downstream (the daemon, reload plans, the API) sees plain resources, so a
reload that changes N adds or removes only the instances past the smaller count.

`[groups]` name sets of resources; a member written `web` stands for all of web's
instances. `all` names every resource, so it cannot be a resource or a group.

Pure: imports nothing from the package but `config.types`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from supervisor.config.types import ResourceSpec

ALL = "all"  # every resource, in start/stop/restart/status
INSTANCE_ENV = "SUPERVISOR_INSTANCE"
INSTANCE_PLACEHOLDER = "{instance}"


def instance_names(name: str, count: int) -> list[str]:
    """The names of `count` instances of `name`: name:0 ... name:count-1."""
    return [f"{name}:{i}" for i in range(count)]


def _members(ref: str, counts: Mapping[str, int]) -> list[str]:
    """The resources `ref` (a name or `name:i`) stands for."""
    if ":" in ref:
        return [ref]
    count = counts.get(ref)
    return [ref] if count is None else instance_names(ref, count)


def _counts(resources: Mapping[str, ResourceSpec]) -> dict[str, int]:
    return {n: c for n, spec in resources.items() if (c := spec.instance_count()) is not None}


def expand_resources(resources: Mapping[str, ResourceSpec]) -> dict[str, ResourceSpec]:
    """Every resource as it runs: instances spelled out, `depends_on` on a resource with
    instances meaning all of them."""
    counts = _counts(resources)
    expanded: dict[str, ResourceSpec] = {}
    for name, spec in resources.items():
        depends_on: list[str] = getattr(spec, "depends_on", [])
        deps = [d for dep in depends_on for d in _members(dep, counts)]
        if name in counts:
            for i, instance in enumerate(instance_names(name, counts[name])):
                expanded[instance] = spec.as_instance(i, deps)
        elif deps != depends_on:
            expanded[name] = spec.model_copy(update={"depends_on": deps})
        else:
            expanded[name] = spec
    return expanded


def expand_groups(
    resources: Mapping[str, ResourceSpec], groups: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Each group's members as resource names (instances spelled out, no repeats)."""
    counts = _counts(resources)
    return {
        group: list(dict.fromkeys(n for ref in members for n in _members(ref, counts)))
        for group, members in groups.items()
    }


def group_problems(
    resources: Mapping[str, ResourceSpec], groups: Mapping[str, Sequence[str]]
) -> list[tuple[str, str]]:
    """What is wrong with `[groups]` and the reserved name `all`: (path, message) pairs."""
    found: list[tuple[str, str]] = []
    reserved = f"{ALL!r} is reserved: it names every resource (e.g. `supervisor restart all`)"
    if ALL in resources:
        found.append((f"resources.{ALL}", reserved))
    if ALL in groups:
        found.append((f"groups.{ALL}", reserved))
    counts = _counts(resources)
    known = ", ".join(sorted(resources)) or "none"
    for group, members in groups.items():
        if group in resources:
            found.append(
                (f"groups.{group}", f"a resource is already named {group!r}: rename the group")
            )
        for i, ref in enumerate(members):
            name, colon, index = ref.partition(":")
            path = f"groups.{group}.{i}"
            if name not in resources:
                found.append((path, f"no resource named {name!r} (known: {known})"))
            elif colon and name not in counts:
                found.append((path, f"{name!r} has no `instances`: write {name!r}"))
            elif colon and int(index) >= counts[name]:
                found.append(
                    (path, f"{name!r} has {counts[name]} instances ({name}:0 ... "
                     f"{name}:{counts[name] - 1})")
                )  # fmt: skip
    return found
