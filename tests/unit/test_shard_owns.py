"""shard.owns: the same answer as ``owner(name, count) == index``, at a few hashes per name instead of count.

A replica filters the whole fleet with owns() on every reload; owner() stays the definition of the assignment.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.daemon import shard
from comfywatch.daemon.shard import owner, owns

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"


@given(st.text(alphabet=ALPHABET, min_size=1, max_size=63), st.integers(min_value=1, max_value=40))
def test_owns_is_owner_equal_to_index(name: str, count: int) -> None:
    """For every shard of the count, and for indexes outside it, owns() says what owner() says."""
    assert [owns(name, index, count) for index in range(-1, count + 2)] == [
        owner(name, count) == index for index in range(-1, count + 2)]


@pytest.mark.parametrize("count", [1, 2, 7])
def test_ties_go_to_the_lowest_shard_as_in_owner(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Were two shards to weigh the same, owner() picks the lower: owns() gives the name to that one only."""
    monkeypatch.setattr(shard, "_weight", lambda name, index: 7 if index in {count // 2, count - 1} else index % 3)
    expected = owner("tied", count)
    assert [owns("tied", index, count) for index in range(count)] == [index == expected for index in range(count)]


def test_a_fleet_costs_a_few_hashes_per_target_at_a_thousand_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 names filtered for one shard of 1000 weigh fewer than 20 shards per name on average (weighing all of
    them would be 1000), and the names owned are the ones owner() gives that shard."""
    names = [f"10.{i // 256}.{i % 256}.1:8188" for i in range(2000)]
    expected = [name for name in names if owner(name, 1000) == 17]
    weighed = 0
    original = shard._weight

    def counted(name: str, index: int) -> int:
        nonlocal weighed
        weighed += 1
        return original(name, index)

    monkeypatch.setattr(shard, "_weight", counted)
    assert [name for name in names if owns(name, 17, 1000)] == expected
    assert weighed < 20 * len(names)
