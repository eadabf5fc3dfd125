"""The daemon's resource set: each resource is one task, from start-up to removal."""

from __future__ import annotations

import trio
import trio.testing

from supervisor.config.diff import plan_reload
from supervisor.config.load import load_text
from supervisor.launchers.local import LocalLauncher
from supervisor.runtime.kinds import Context
from supervisor.runtime.resources import ResourceSet
from supervisor.supervision.bus import EventBus
from supervisor.supervision.states import State


def sleepers(*names: str) -> str:
    return "".join(
        f'[resources.{n}]\nkind = "process"\ncommand = ["sleep", "100"]\n' for n in names
    )


def tasks_in_run() -> int:
    """Every task of this trio run, counted from the root down."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def test_served_resources_are_one_task_each_once_started(launcher: LocalLauncher) -> None:
    """After start-up each resource is its supervisor's task alone: no starter task and
    no wrapper task per resource."""
    config = load_text(sleepers(*(f"r{i}" for i in range(8))))
    resources = ResourceSet(EventBus(), None)
    async with trio.open_nursery() as nursery:
        before = tasks_in_run()
        with trio.fail_after(10):
            await resources.start(config, Context(launcher=launcher), nursery)
        assert {s.state for s in resources.snapshots()} == {State.RUNNING}
        # 8 supervisors, and the launcher's reaper and pipe reader (one each for all).
        assert tasks_in_run() == before + 8 + 2
        with trio.fail_after(10):
            await resources.stop()
        nursery.cancel_scope.cancel()


async def test_a_resource_a_reload_removes_leaves_no_task_behind(
    launcher: LocalLauncher,
) -> None:
    """Removing a resource stops it, then its supervisor's task ends."""
    old, new = load_text(sleepers("a", "b")), load_text(sleepers("a"))
    resources = ResourceSet(EventBus(), None)
    ctx = Context(launcher=launcher)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            await resources.start(old, ctx, nursery)
            tasks = tasks_in_run()
            removed = await resources.apply(new, plan_reload(old, new), ctx)
            while tasks_in_run() != tasks - 1:
                await trio.testing.wait_all_tasks_blocked()
        assert removed == [("b", "process")]
        assert list(resources.supervisors) == ["a"]
        with trio.fail_after(10):
            await resources.stop()
        nursery.cancel_scope.cancel()
