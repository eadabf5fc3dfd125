"""A pool's free slot numbers (supervisor/sandbox/slots.py)."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from supervisor.sandbox.slots import FreeSlots


def test_slots_are_handed_out_lowest_first_and_reused() -> None:
    """take() gives 0, 1, 2...; a slot given back is the next one taken."""
    free = FreeSlots(4)
    assert [free.take() for _ in range(3)] == [0, 1, 2]
    free.give_back(1)
    assert free.take() == 1
    assert free.take() == 3
    assert not free


def test_a_huge_limit_allocates_nothing_up_front() -> None:
    """A limit of ten million costs what two used slots cost, not ten million entries."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        free = FreeSlots(10_000_000)
        free.resize(10_000_000, taken={0, 1})
        assert tracemalloc.get_traced_memory()[0] - before < 10_000
    finally:
        tracemalloc.stop()


def test_shrinking_below_a_held_slot_never_hands_it_out_twice() -> None:
    """A slot above a shrunk limit that is still held is not handed out after growing back."""
    free = FreeSlots(10)
    held = {free.take() for _ in range(10)}
    free.resize(5, taken=held)
    assert not free
    free.resize(10, taken={7})  # 7 is still shutting down; the others are gone
    handed = [free.take() for _ in range(9)]
    assert 7 not in handed
    assert sorted(handed) == [0, 1, 2, 3, 4, 5, 6, 8, 9]


@given(
    st.lists(
        st.tuples(st.sampled_from(["take", "back", "resize"]), st.integers(0, 20)), max_size=60
    )
)
def test_no_slot_is_ever_held_twice_or_above_the_limit(ops: list[tuple[str, int]]) -> None:
    """Any sequence of takes, give-backs and resizes: every slot taken is below the limit
    at the time and not already held."""
    free = FreeSlots(5)
    held: set[int] = set()
    for op, n in ops:
        if op == "take" and free:
            slot = free.take()
            assert slot < free.limit
            assert slot not in held
            held.add(slot)
        elif op == "back" and held:
            slot = sorted(held)[n % len(held)]
            held.discard(slot)
            free.give_back(slot)
        elif op == "resize":
            free.resize(n, taken=held)
