"""The pool's bookkeeping (supervisor/sandbox/pool.py): slots, idle sandboxes, waiters,
sessions and size, driven directly with stand-in sandboxes (no environment, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supervisor.sandbox.pool import Pool, Waiter
from supervisor.sandbox.status import SandboxStatus

S = SandboxStatus


@dataclass(eq=False)
class StandIn:
    """What the pool reads of a sandbox: its slot, status and reusability."""

    slot: int
    generation: int = 0
    reusable: bool = True
    status: SandboxStatus = S.READY

    def acquire(self) -> None:
        self.status = S.ACQUIRED


def add(pool: Pool, waiter: Waiter | None = None) -> Any:
    return pool.add(StandIn, waiter)


def test_max_size_bounds_the_sandboxes_that_are_not_offline() -> None:
    """Each added sandbox holds a slot until it is removed: no room past max_size."""
    pool = Pool(min_ready=0, max_size=2)
    first, second = add(pool), add(pool)
    assert (first.slot, second.slot) == (0, 1)
    assert not pool.has_room
    pool.remove(first)
    assert pool.has_room
    assert pool.live == 1


def test_a_dead_sandboxs_slot_goes_to_its_replacement_one_generation_up() -> None:
    """Rule 18: replaced in its slot as slot:generation+1, counted as dead and replaced."""
    pool = Pool(min_ready=1, max_size=3)
    add(pool)
    dead = add(pool)
    pool.remove(dead)
    replacement = add(pool)
    assert (replacement.slot, replacement.generation) == (1, 1)
    assert pool.take_tally() == {"dead": 1, "replaced": 1, "expired": 0}
    assert pool.take_tally() == {"dead": 0, "replaced": 0, "expired": 0}


def test_a_sandbox_grown_for_a_waiter_goes_to_that_waiter() -> None:
    """A reserved sandbox serves its waiter even when an older waiter is queued."""
    pool = Pool(min_ready=0, max_size=2)
    older, mine = Waiter(), Waiter()
    pool.enqueue(older)
    sandbox = add(pool, mine)
    assert pool.offer(sandbox)
    assert mine.sandbox is sandbox
    assert sandbox.status is S.ACQUIRED
    assert not older.done


def test_a_ready_sandbox_goes_to_the_oldest_waiter_still_waiting() -> None:
    """FIFO, skipping a waiter that gave up; what was reserved for one that gave up goes on."""
    pool = Pool(min_ready=0, max_size=2)
    gone, first, second = Waiter(), Waiter(), Waiter()
    sandbox = add(pool, gone)
    for waiter in (first, second):
        pool.enqueue(waiter)
    gone.give_up()
    assert pool.offer(sandbox)
    assert first.sandbox is sandbox
    assert not second.done
    assert pool.waiting == 1


def test_with_nobody_waiting_a_ready_sandbox_idles_until_a_waiter_comes() -> None:
    """Idle sandboxes serve queued waiters in arrival order."""
    pool = Pool(min_ready=0, max_size=2)
    a, b = add(pool), add(pool)
    assert pool.offer(a)
    assert pool.offer(b)
    assert pool.idle() == [a, b]
    waiter = Waiter()
    pool.enqueue(waiter)
    pool.serve_waiters()
    assert waiter.sandbox is a
    pool.left_ready(a)
    assert pool.first_idle() is b


def test_shrinking_takes_idle_sandboxes_above_the_new_max_out_of_service() -> None:
    """resize returns the idle ones to shut down; a busy one above it is refused when READY."""
    pool = Pool(min_ready=0, max_size=3)
    idle_low, busy, idle_high = add(pool), add(pool), add(pool)
    for sandbox in (idle_low, idle_high):
        pool.offer(sandbox)
    assert pool.resize(min_ready=0, max_size=1) == [idle_high]
    assert pool.idle() == [idle_low]
    assert not pool.offer(busy)  # its session ended: its slot is gone, shut it down
    assert (pool.min_ready, pool.max_size) == (0, 1)


def test_a_one_off_sandbox_is_tracked_apart_from_the_slots() -> None:
    """Rule 14: numbered on its own, counted as live, reserved for its caller."""
    pool = Pool(min_ready=0, max_size=0)
    waiter = Waiter()
    one_off = pool.add_one_off(StandIn, waiter)
    assert pool.sandboxes() == [one_off]
    assert pool.offer(one_off)
    assert waiter.sandbox is one_off
    pool.remove(one_off)
    assert pool.sandboxes() == []
    assert pool.live == 0


def test_failing_the_waiters_empties_the_queue() -> None:
    """Every waiter still waiting gets the error, in order; the queue is empty after."""
    pool = Pool(min_ready=0, max_size=1)
    waiters = [Waiter(), Waiter()]
    for waiter in waiters:
        pool.enqueue(waiter)
    error = RuntimeError("shutting down")
    pool.fail_waiters(error)
    assert all(waiter.error is error for waiter in waiters)
    assert not pool.queued


def test_the_session_table_counts_sessions_until_they_are_over() -> None:
    """A session is found by id while in progress; ending it twice is harmless."""

    @dataclass
    class Held:
        id: str

    pool = Pool(min_ready=0, max_size=1)
    session: Any = Held("s-1")
    pool.session_started(session)
    assert pool.session("s-1") is session
    assert pool.sessions == 1
    pool.session_over(session)
    pool.session_over(session)
    assert pool.session("s-1") is None
    assert pool.sessions == 0
