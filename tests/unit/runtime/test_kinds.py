"""The kinds registry (supervisor/runtime/kinds.py): one place per kind."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from supervisor.config.environment import EnvironmentConfig, FeatureConfig
from supervisor.config.schema import ResourceConfig
from supervisor.runtime.kinds import BACKENDS, FEATURES, RESOURCES

PACKAGE = Path(__file__).parents[3] / "supervisor"


def tags(union: object) -> set[str]:
    """The `kind` literals of a tagged union of config models."""
    members = typing.get_args(typing.get_args(union)[0])
    return {tag for m in members for tag in typing.get_args(m.model_fields["kind"].annotation)}


def test_every_configurable_kind_has_a_builder_and_no_more() -> None:
    """The config's unions and the registry's tables name the same kinds."""
    assert set(RESOURCES) == tags(ResourceConfig)
    assert set(FEATURES) == tags(FeatureConfig)
    backends = typing.get_args(EnvironmentConfig.model_fields["backend"].annotation)
    assert set(BACKENDS) == set(backends)


KIND_CLASSES = {
    "ProcessConfig", "ContainerConfig", "DeephavenConfig", "DeephavenEnterpriseConfig",
    "CommandFeatureConfig", "FilesFeatureConfig", "DeephavenScriptFeatureConfig",
    "PluginFeatureConfig", "ProcessResource", "ContainerResource", "DeephavenResource",
    "EnterpriseFactoryResource", "EnterpriseSessionResource", "ProcessBackend",
    "DockerBackend", "DeephavenBackend", "SwarmBackend", "SwarmSandboxConfig",
}  # fmt: skip


def test_no_module_dispatches_on_a_kind_with_isinstance() -> None:
    """Outside the registry, nothing asks `isinstance(x, SomeKind)` to decide what to do:
    kinds answer for themselves (a class may still check its own kind)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "kinds.py":
            continue
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance"):
                continue
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            foreign = (names & KIND_CLASSES) - defined
            if foreign:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {sorted(foreign)}")
    assert found == []
