"""Tests for comfywatch.daemon.slots: how targets are batched into poll jobs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.daemon.slots import Slot, SlotTable, first_offset


def test_targets_fill_a_slot_before_a_new_one_is_made() -> None:
    """With batch 3, targets 1-3 share slot 0 and the 4th opens slot 1 (reported as created)."""
    table: SlotTable[str] = SlotTable(batch=3)
    created = [table.add(f"t{i}", 15.0, f"m{i}")[1] for i in range(4)]
    assert created == [True, False, False, True]
    first, second = table.slot_of("t0"), table.slot_of("t3")
    assert first is table.slot_of("t2") and first is not None and first.index == 0
    assert second is not None and second.index == 1 and list(second.members) == ["t3"]
    assert first.members == {"t0": "m0", "t1": "m1", "t2": "m2"}


def test_intervals_never_share_a_slot() -> None:
    """A slot is one scheduler job with one interval: targets polled every 15 s and 60 s are apart."""
    table: SlotTable[str] = SlotTable(batch=10)
    fast, _ = table.add("fast", 15.0, "a")
    slow, created = table.add("slow", 60.0, "b")
    assert created and fast is not slow and slow.interval == 60.0
    assert fast.job_id != slow.job_id


def test_removing_the_last_member_returns_the_emptied_slot() -> None:
    """Only an emptied slot is returned (its job must go); a slot with members left stays."""
    table: SlotTable[str] = SlotTable(batch=2)
    table.add("a", 15.0, "a")
    table.add("b", 15.0, "b")
    assert table.remove("a") is None
    emptied = table.remove("b")
    assert isinstance(emptied, Slot) and not emptied.members
    assert len(table) == 0 and table.slot_of("b") is None
    assert table.remove("never-added") is None


def test_churn_does_not_move_other_targets() -> None:
    """A target leaving frees its place for the next one; nobody else changes slot (discovery churn)."""
    table: SlotTable[str] = SlotTable(batch=2)
    for name in ("a", "b", "c", "d"):
        table.add(name, 15.0, name)
    before = {name: table.slot_of(name) for name in ("a", "c", "d")}
    table.remove("b")
    slot, created = table.add("e", 15.0, "e")
    assert not created and slot is before["a"]
    assert {name: table.slot_of(name) for name in ("a", "c", "d")} == before


def test_a_freed_index_is_reused() -> None:
    """Slot indexes stay small (they set the start offsets): an emptied slot's index is taken again."""
    table: SlotTable[str] = SlotTable(batch=1)
    for name in ("a", "b", "c"):
        table.add(name, 15.0, name)
    table.remove("b")
    slot, created = table.add("d", 15.0, "d")
    assert created and slot.index == 1


def test_re_adding_a_target_replaces_its_entry() -> None:
    """A changed target is re-added under the same name: one entry, the new member."""
    table: SlotTable[str] = SlotTable(batch=5)
    table.add("a", 15.0, "old")
    slot, _ = table.add("a", 15.0, "new")
    assert slot.members == {"a": "new"} and len(table) == 1


def test_batch_must_be_positive() -> None:
    """A batch of 0 would never hold a target."""
    with pytest.raises(ValueError, match="batch"):
        SlotTable(batch=0)


def test_slot_zero_runs_at_once_and_offsets_stay_within_the_interval() -> None:
    """A single target is polled at start-up; later slots start inside the first interval."""
    assert first_offset(0, 15.0) == 0.0
    assert all(0.0 <= first_offset(index, 15.0) < 15.0 for index in range(1000))


@given(st.integers(min_value=2, max_value=400))
def test_start_offsets_are_spread_over_the_interval(slots: int) -> None:
    """However many slots exist, no gap between consecutive start times exceeds 3/slots of the interval
    (the golden-ratio sequence's bound), so a fleet's polls never bunch up in part of the cycle."""
    starts = sorted(first_offset(index, 1.0) for index in range(slots))
    gaps = [b - a for a, b in zip(starts, [*starts[1:], starts[0] + 1.0], strict=True)]
    assert max(gaps) <= 3.0 / slots


@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=30)), max_size=200),
       st.integers(min_value=1, max_value=7))
def test_every_target_is_in_exactly_one_slot_within_the_batch(ops: list[tuple[bool, int]], batch: int) -> None:
    """Any sequence of adds and removes keeps every live target in one slot, and no slot over the batch."""
    table: SlotTable[int] = SlotTable(batch=batch)
    live: set[str] = set()
    for add, number in ops:
        name = f"t{number}"
        if add:
            table.add(name, 15.0, number)
            live.add(name)
        else:
            table.remove(name)
            live.discard(name)
    members = [name for slot in table.slots() for name in slot.members]
    assert sorted(members) == sorted(live)
    assert all(0 < len(slot.members) <= batch for slot in table.slots())
    assert all(table.slot_of(name) is not None for name in live)
