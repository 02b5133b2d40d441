"""Rendezvous (highest-random-weight) hashing of target names onto N replicas.

Every target has exactly one owner; going from N to N+1 replicas moves only the ~1/(N+1) of targets
that the new replica wins, so canaries never run twice and little state is lost when scaling.
"""

from __future__ import annotations

import hashlib

__all__ = ["owner", "owns", "parse_shard"]


def _weight(name: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{shard}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(name: str, count: int) -> int:
    """The shard in ``range(count)`` that owns target *name*."""
    if count <= 1:
        return 0
    return max(range(count), key=lambda shard: _weight(name, shard))


def owns(name: str, index: int, count: int) -> bool:
    """Whether shard *index* of *count* owns target *name*: ``owner(name, count) == index``, found cheaply.

    A replica filters the whole fleet on every reload, and owner() weighs every shard: with 1000 shards, a
    fleet of 50,000 targets takes 50 million hashes. Most targets are decided by the first shard found that
    outweighs this one, about ln(count) shards in, so a fleet costs a few hashes per target.
    """
    if count <= 1:
        return index == 0
    if not 0 <= index < count:
        return False
    mine = _weight(name, index)
    for shard in range(count):
        if shard == index:
            continue
        weight = _weight(name, shard)
        # On a tie owner() picks the lowest shard (max keeps the first maximum): so does this.
        if weight > mine or (weight == mine and shard < index):
            return False
    return True


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N); raises ValueError unless 0 <= i < N."""
    left, sep, right = text.strip().partition("/")
    if not sep or not left.isdigit() or not right.isdigit():
        raise ValueError('expected "i/N", e.g. "0/3"')
    index, count = int(left), int(right)
    if count < 1 or not 0 <= index < count:
        raise ValueError('expected "i/N" with 0 <= i < N')
    return index, count
