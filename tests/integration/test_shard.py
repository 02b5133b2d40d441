"""Sharding: rendezvous assignment is stable and balanced, and ``--shard i/N`` replicas split the fleet.

Property tests check the hashing itself; the integration tests run two real daemons (``--shard 0/2`` and
``--shard 1/2``) in-process over the same configuration and one simulator serving every target.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfywatch.daemon.service import Daemon
from comfywatch.daemon.shard import owner, owns, parse_shard
from comfywatch.sim.admin import SimHandle, start_sim
from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.procs import comfywatch_run
from tests.helpers import Metrics, daemon_at, eventually, scrape

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.:", min_size=1, max_size=63)
FLEET = [f"gpu-{i:04d}" for i in range(4000)]


@given(name=names, count=st.integers(min_value=1, max_value=64))
def test_every_name_has_exactly_one_stable_owner(name: str, count: int) -> None:
    """owner() is in range, repeatable, and exactly one shard of N claims each name."""
    first = owner(name, count)
    assert 0 <= first < count
    assert owner(name, count) == first
    assert [i for i in range(count) if owns(name, i, count)] == [first]


@given(name=names, count=st.integers(min_value=1, max_value=64))
def test_adding_a_replica_only_moves_names_to_the_new_one(name: str, count: int) -> None:
    """Going from N to N+1 shards, a name either stays where it was or moves to the new shard N."""
    assert owner(name, count + 1) in {owner(name, count), count}


@settings(max_examples=40)
@given(seed=st.integers(min_value=0, max_value=2**32), count=st.integers(min_value=2, max_value=8))
def test_random_fleets_are_spread_over_every_shard(seed: int, count: int) -> None:
    """No shard of 500 distinct random names is empty or holds more than twice its fair share."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_.:"
    fleet: set[str] = set()
    while len(fleet) < 500:
        fleet.add("".join(rng.choices(alphabet, k=rng.randint(3, 63))))
    load = Counter(owner(name, count) for name in fleet)
    fair = len(fleet) / count
    assert set(load) == set(range(count))
    assert max(load.values()) < 2 * fair


@pytest.mark.parametrize("count", [2, 3, 5, 8, 16])
def test_shards_are_balanced(count: int) -> None:
    """4000 targets over N shards: every shard within 15 % of the mean."""
    load = Counter(owner(name, count) for name in FLEET)
    mean = len(FLEET) / count
    assert set(load) == set(range(count))
    assert all(abs(n - mean) / mean < 0.15 for n in load.values()), load


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 10])
def test_adding_a_replica_moves_about_one_in_n_plus_one(count: int) -> None:
    """N -> N+1 moves ~1/(N+1) of 4000 targets (within 20 % of that), all of them onto the new shard."""
    moved = [name for name in FLEET if owner(name, count) != owner(name, count + 1)]
    expected = len(FLEET) / (count + 1)
    assert abs(len(moved) - expected) / expected < 0.2, (len(moved), expected)
    assert {owner(name, count + 1) for name in moved} == {count}


@pytest.mark.parametrize(("text", "parsed"), [("0/1", (0, 1)), ("2/3", (2, 3)), (" 1/2 ", (1, 2))])
def test_parse_shard_accepts_i_of_n(text: str, parsed: tuple[int, int]) -> None:
    """``"i/N"`` parses to (i, N)."""
    assert parse_shard(text) == parsed


@pytest.mark.parametrize("text", ["", "1", "2/2", "3/2", "0/0", "-1/2", "a/b", "1/2/3"])
def test_parse_shard_rejects_everything_else(text: str) -> None:
    """Anything but 0 <= i < N is a ValueError."""
    with pytest.raises(ValueError, match="i/N"):
        parse_shard(text)


# ---------------------------------------------------------------------------------------------------------
# Two replicas over one configuration.

TARGETS = 16


def fleet_config(sim: SimHandle) -> str:
    """TARGETS local targets (system check only, no canary, no WebSocket) on one simulator."""
    lines = ['[defaults]\ninterval = "1s"\ntimeout = "500ms"\nwebsocket_monitor = false\n']
    for index in range(TARGETS):
        lines.append(f'[[targets]]\nname = "gpu-{index:02d}"\nurl = "{sim.target_url(index)}"\nchecks = ["system"]\n'
                     "  [targets.canary]\n  enabled = false\n")
    return "\n".join(lines)


def replica(config_path: Path, shard: str) -> contextlib.AbstractAsyncContextManager[tuple[Daemon, str]]:
    """The daemon as ``comfywatch run --shard <shard>`` would build it, in this loop on an ephemeral port."""
    return daemon_at(config_path, shard=shard)


def up_names(metrics: Metrics) -> set[str]:
    return {labels["target"] for labels, value in metrics.find("comfyui_up") if value == 1.0}


def all_names(metrics: Metrics) -> set[str]:
    return {labels["target"] for labels, _ in metrics.find("comfyui_target_info")}


async def test_two_replicas_own_disjoint_sets_covering_every_target(tmp_path: Path) -> None:
    """--shard 0/2 and 1/2 over one config poll disjoint target sets whose union is the whole fleet."""
    async with await start_sim(targets=TARGETS) as sim:
        config_path = tmp_path / "comfywatch.toml"
        config_path.write_text(fleet_config(sim), encoding="utf-8")
        async with replica(config_path, "0/2") as (d0, base0), replica(config_path, "1/2") as (d1, base1):
            expected = [{n for n in (f"gpu-{i:02d}" for i in range(TARGETS)) if owner(n, 2) == s} for s in (0, 1)]
            m0 = await eventually(lambda: scrape(f"{base0}/metrics"), lambda m: up_names(m) == expected[0],
                                  what="shard 0 polls its targets")
            m1 = await eventually(lambda: scrape(f"{base1}/metrics"), lambda m: up_names(m) == expected[1],
                                  what="shard 1 polls its targets")
            assert all_names(m0) == expected[0] and all_names(m1) == expected[1]
            assert all_names(m0).isdisjoint(all_names(m1))
            assert all_names(m0) | all_names(m1) == {f"gpu-{i:02d}" for i in range(TARGETS)}
            assert set(d0.runtimes) == expected[0] and set(d1.runtimes) == expected[1]
            for metrics, index, daemon in ((m0, "0", d0), (m1, "1", d1)):
                assert metrics.value("comfywatch_shard_info", shard=index, shards="2") == 1.0
                assert metrics.value("comfywatch_targets", kind="local") == float(len(daemon.runtimes))


async def test_shard_applies_to_discovered_targets(tmp_path: Path) -> None:
    """file_sd targets are split by the same hash as configured ones."""
    async with await start_sim(targets=TARGETS) as sim:
        sd = tmp_path / "fleet.yml"
        sd.write_text("".join(f"- targets: ['{sim.target_url(i)}']\n  labels: {{name: 'sd-{i:02d}'}}\n"
                              for i in range(TARGETS)), encoding="utf-8")
        config_path = tmp_path / "comfywatch.toml"
        config_path.write_text(f'[defaults]\ninterval = "1h"\nwebsocket_monitor = false\n\n[discovery]\n'
                               f'files = ["{sd}"]\n', encoding="utf-8")
        async with replica(config_path, "1/3") as (daemon, _base):
            assert set(daemon.runtimes) == {f"sd-{i:02d}" for i in range(TARGETS) if owner(f"sd-{i:02d}", 3) == 1}


async def test_invalid_shard_on_the_command_line_exits_2(tmp_path: Path) -> None:
    """``--shard 2/2`` is a usage error: the daemon refuses to start (exit 2) instead of owning nothing."""
    config_path = tmp_path / "comfywatch.toml"
    config_path.write_text('[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\n', encoding="utf-8")
    daemon = Daemon(config_path, env={}, listen="127.0.0.1:0", shard="2/2")
    assert await asyncio.wait_for(daemon.run(install_signals=False), 10) == 2


@pytest.mark.e2e
def test_cli_shard_flag_selects_the_replicas_targets(tmp_path: Path) -> None:
    """``comfywatch run --shard 1/2`` as a real process exports only shard 1's targets and its shard info."""
    import urllib.request

    from tests.e2e.procs import simulate

    with simulate(tmp_path, "--targets", str(TARGETS)) as sim:
        lines = ['[defaults]\ninterval = "1s"\ntimeout = "500ms"\nwebsocket_monitor = false\n']
        for index in range(TARGETS):
            lines.append(f'[[targets]]\nname = "gpu-{index:02d}"\nurl = "{sim.url}/t/{index}"\n'
                         'checks = ["system"]\n  [targets.canary]\n  enabled = false\n')
        with comfywatch_run(tmp_path, "\n".join(lines), "--shard", "1/2") as daemon:
            expected = {f"gpu-{i:02d}" for i in range(TARGETS) if owner(f"gpu-{i:02d}", 2) == 1}
            deadline = time.monotonic() + 20 * TIMEOUT_FACTOR
            while True:
                with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=5) as response:
                    metrics = Metrics(response.read().decode())
                if up_names(metrics) == expected or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert up_names(metrics) == expected
            assert all_names(metrics) == expected
            assert metrics.value("comfywatch_shard_info", shard="1", shards="2") == 1.0
