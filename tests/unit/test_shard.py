"""Tests for comfywatch.daemon.shard: rendezvous hashing is stable, balanced and moves little when scaling."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfywatch.config import ConfigError, load_config
from comfywatch.daemon.shard import owner, owns, parse_shard

NAMES = [f"target-{i}" for i in range(1000)]
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-"
target_names = st.text(alphabet=ALPHABET, min_size=1, max_size=63)


@st.composite
def name_sets(draw: st.DrawFn) -> set[str]:
    """1000 distinct target names of random length and shape (from a drawn seed: fast to generate)."""
    rnd = random.Random(draw(st.integers(min_value=0, max_value=2**64)))
    names: set[str] = set()
    while len(names) < 1000:
        names.add("".join(rnd.choices(ALPHABET, k=rnd.randint(1, 63))))
    return names


def slack(total: int, probability: float) -> float:
    """Five standard deviations of a binomial count: a fair hash stays inside (p < 1e-6 per check)."""
    return 5 * math.sqrt(total * probability * (1 - probability))


class TestOwner:
    @given(target_names, st.integers(min_value=1, max_value=64))
    def test_in_range_and_deterministic(self, name: str, count: int) -> None:
        """The owner is one of the shards and the same on every call."""
        first = owner(name, count)
        assert 0 <= first < count
        assert owner(name, count) == first

    @pytest.mark.parametrize("count", [1, 0, -3])
    def test_single_or_no_shard(self, count: int) -> None:
        """With one shard (or a nonsensical count) everything belongs to shard 0."""
        assert all(owner(name, count) == 0 for name in NAMES[:50])

    @given(target_names, st.integers(min_value=1, max_value=16))
    def test_exactly_one_replica_owns(self, name: str, count: int) -> None:
        """Exactly one replica of N claims each target: canaries never run twice, none is orphaned."""
        assert sum(owns(name, index, count) for index in range(count)) == 1

    def test_stable_across_versions(self) -> None:
        """Owners are pinned: changing the hash would reshuffle every deployment's targets."""
        assert [owner("studio-gpu-1", n) for n in (2, 3, 5, 8)] == [1, 2, 2, 7]
        assert [owner("cloud", n) for n in (2, 3, 5, 8)] == [1, 1, 4, 4]
        assert [owner("local", n) for n in (2, 3, 5, 8)] == [0, 0, 3, 3]


class TestBalance:
    @pytest.mark.parametrize("count", range(3, 9))
    def test_fixed_names_balanced(self, count: int) -> None:
        """1000 targets spread over 3..8 shards within five standard deviations of an even split."""
        sizes = Counter(owner(name, count) for name in NAMES)
        assert set(sizes) == set(range(count))
        expected = len(NAMES) / count
        for size in sizes.values():
            assert abs(size - expected) <= slack(len(NAMES), 1 / count)

    @settings(max_examples=20)
    @given(name_sets(), st.integers(min_value=3, max_value=8))
    def test_any_names_balanced(self, names: set[str], count: int) -> None:
        """Any 1000 distinct names are balanced too (the hash does not depend on name shape)."""
        sizes = Counter(owner(name, count) for name in names)
        for shard in range(count):
            assert abs(sizes[shard] - len(names) / count) <= slack(len(names), 1 / count)


class TestScaling:
    @pytest.mark.parametrize("count", range(3, 9))
    def test_adding_a_replica_moves_about_one_share(self, count: int) -> None:
        """Going from N to N+1 replicas moves ~1/(N+1) of the targets, all of them to the new replica."""
        moved = [name for name in NAMES if owner(name, count) != owner(name, count + 1)]
        assert {owner(name, count + 1) for name in moved} == {count}
        assert abs(len(moved) - len(NAMES) / (count + 1)) <= slack(len(NAMES), 1 / (count + 1))

    @settings(max_examples=20)
    @given(name_sets(), st.integers(min_value=3, max_value=8))
    def test_adding_a_replica_property(self, names: set[str], count: int) -> None:
        """For any names, only targets the new replica wins move, and about 1/(N+1) of them do."""
        moved = [name for name in names if owner(name, count) != owner(name, count + 1)]
        assert all(owner(name, count + 1) == count for name in moved)
        assert abs(len(moved) - len(names) / (count + 1)) <= slack(len(names), 1 / (count + 1))

    @given(st.lists(target_names, min_size=1, max_size=50), st.integers(min_value=2, max_value=10))
    def test_removing_the_last_replica_moves_only_its_targets(self, names: list[str], count: int) -> None:
        """Scaling down from N to N-1 moves only the targets of the replica that went away."""
        for name in names:
            if owner(name, count) != count - 1:
                assert owner(name, count - 1) == owner(name, count)


class TestParseShard:
    @pytest.mark.parametrize(
        ("text", "parsed"), [("0/1", (0, 1)), ("0/3", (0, 3)), (" 2/3 ", (2, 3)), ("9/10", (9, 10))]
    )
    def test_valid(self, text: str, parsed: tuple[int, int]) -> None:
        """ "i/N" with 0 <= i < N parses."""
        assert parse_shard(text) == parsed

    @pytest.mark.parametrize("text", ["", "3", "3/3", "4/3", "0/0", "-1/3", "a/3", "1/b", "1 / 3", "1/3/5", "1.0/3"])
    def test_invalid(self, text: str) -> None:
        """Anything else is a ValueError naming the expected form."""
        with pytest.raises(ValueError, match='expected "i/N"'):
            parse_shard(text)

    @pytest.mark.parametrize("text", ["0/1", "2/3", "3/3", "0/0", "x/2"])
    def test_agrees_with_config(self, text: str) -> None:
        """The config's server.shard accepts exactly what parse_shard accepts."""
        try:
            expected: tuple[int, int] | None = parse_shard(text)
        except ValueError:
            expected = None
        try:
            server = load_config(None, {"COMFYWATCH_SERVER__SHARD": text}).server
            got: tuple[int, int] | None = (server.shard_index, server.shard_count)
        except ConfigError:
            got = None
        assert got == expected
