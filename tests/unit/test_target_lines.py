"""Tests for comfywatch.export.target_encoder: a target's /metrics lines, kept between scrapes, are never stale.

The reference is a fresh encoding (new caches) of the same state: whatever sequence of changes a state goes
through, by whichever code path, the kept lines must be byte for byte what a fresh encoding gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.errors import Reason, SkipReason
from comfywatch.export.collector import DaemonInfo, ScrapeClock, metrics_body
from comfywatch.export.target_encoder import FAMILIES, TargetLines, chunks, encode, is_current, snapshot
from comfywatch.parse.phases import PhaseTimes
from comfywatch.parse.system import parse_system_stats
from comfywatch.state import TargetState
from comfywatch.state.trackers import QueueView
from tests.fixtures import load_json
from tests.strategies import FUZZ

NOW = 1_795_641_200.0

seconds = st.floats(0, 1e4, allow_nan=False)
reasons = st.sampled_from([Reason.OOM, Reason.TIMEOUT, Reason.CONNECT, Reason.LOST, Reason.SERVER_ERROR])
endpoints = st.sampled_from(["system_stats", "queue", "history", "jobs"])
canaries = st.sampled_from(["preview-image", "echo-text"])
checks = st.sampled_from(["system", "queue", "jobs", "network"])

Change = Callable[[TargetState], None]


def _system(ram_free: int, devices: int, renamed: bool) -> Change:
    """New system stats, with *devices* copies of the recorded device (the first one *renamed*)."""
    def change(state: TargetState) -> None:
        stats = parse_system_stats(load_json("system_stats.json"))
        device = stats.devices[0]
        names = [f"{device.name} #{i}" if renamed and i == 0 else device.name for i in range(devices)]
        state.system = dataclasses.replace(stats, ram_free=ram_free, devices=tuple(
            dataclasses.replace(device, name=name, index=i) for i, name in enumerate(names)))

    return change


def _queue(running: int, age: float, stalled: bool) -> Change:
    def change(state: TargetState) -> None:
        state.queue = QueueView(running, 2, "p" if running else None, age, age / 2, stalled, False)

    return change


def _canary(name: str, runs: int, phase: float, reason: Reason, observed: float) -> Change:
    def change(state: TargetState) -> None:
        canary = state.canary(name)
        canary.runs, canary.success = runs, float(runs % 2)
        canary.phases["total"] = phase  # in place: the kept lines must still follow
        canary.failures[reason] = canary.failures.get(reason, 0) + 1
        canary.duration.observe(observed)

    return change


def _check(name: str, duration: float | None, overruns: int) -> Change:
    def change(state: TargetState) -> None:
        check = state.check(name)
        check.duration, check.overruns, check.last_success = duration, overruns, NOW + overruns

    return change


def _attribute(name: str, value: float | int | None) -> Change:
    def change(state: TargetState) -> None:
        setattr(state, name, value)

    return change


def _phases(processing: float, tls: float | None) -> Change:
    def change(state: TargetState) -> None:
        state.phases = PhaseTimes(None, None, None, processing, processing / 3)
        state.network_phases = {"dns": 0.001, "connect": 0.002, "tls": tls}

    return change


changes = st.one_of(
    st.builds(_system, st.integers(0, 10**11), st.integers(0, 2), st.booleans()),
    st.builds(_queue, st.integers(0, 1), seconds, st.booleans()),
    st.builds(_canary, canaries, st.integers(0, 50), seconds, reasons, seconds),
    st.builds(_check, checks, st.none() | seconds, st.integers(0, 3)),
    # These gauges are floats wherever the daemon sets them (an int 0 after a float 0.0 is the same value, kept,
    # but would be spelled "0" by a fresh encoding).
    st.builds(_attribute, st.sampled_from(["up", "tls_not_after", "websocket_connected"]),
              st.none() | st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(_phases, seconds, st.none() | seconds),
    st.builds(lambda e, code, s: lambda state: state.on_exchange(e, code, s), endpoints,
              st.none() | st.sampled_from([200, 503]), seconds),
    st.builds(lambda e, r: lambda state: state.on_failure(e, r), endpoints, reasons),
    st.builds(lambda r, s: lambda state: state.count_finished_job(r, s), st.none() | reasons, st.none() | seconds),
    st.builds(lambda c: lambda state: state.skippable([c]), checks),
    st.builds(lambda c, r: lambda state: state.on_skip(c, r), checks, st.sampled_from(list(SkipReason))),
)


def fresh(state: TargetState, with_target: bool = True) -> tuple[bytes | None, ...]:
    """The target's lines encoded from scratch (no kept section, block or line head)."""
    return encode(TargetLines(state, with_target), state, snapshot(state, NOW), NOW)


class TestKeptLines:
    @FUZZ
    @given(kind=st.sampled_from(["local", "cloud"]), full=st.booleans(),
           steps=st.lists(st.lists(changes, max_size=4), max_size=8))
    def test_kept_lines_equal_a_fresh_encoding_after_any_changes(self, kind: str, full: bool,
                                                                   steps: list[list[Change]]) -> None:
        """After every batch of changes (applied between two scrapes), the lines a scrape gets equal a fresh
        encoding: no kept section, counter block or histogram outlives a change of its values."""
        state = TargetState("t", kind, "https://h" if kind == "cloud" else "http://h", endpoints=["system_stats"],
                            labels={"rack": "r1"}, full_detail=full)
        for batch in [[], *steps]:
            for change in batch:
                change(state)
            for with_target in (True, False):
                assert chunks(state, with_target, NOW) == fresh(state, with_target)

    def test_kept_device_heads_follow_the_devices(self) -> None:
        """The devices' line heads are kept between polls, and made again when a device is added, renamed or
        removed."""
        state = TargetState("t", "local", "http://h", endpoints=["system_stats"], labels={"rack": "r1"})
        for devices, renamed in [(1, False), (2, False), (2, True), (1, True), (0, False), (1, False)]:
            _system(10**9, devices, renamed)(state)
            assert chunks(state, True, NOW) == fresh(state, True)
        lines = state.label_cache[True]
        assert isinstance(lines, TargetLines)
        kept = lines.device_heads[1]
        _system(10**8, 1, False)(state)  # the same device, less free memory: its heads are reused
        assert chunks(state, True, NOW) == fresh(state, True)
        assert lines.device_heads[1] is kept

    def test_unchanged_target_is_not_encoded_again(self) -> None:
        """A second scrape with nothing changed reuses the encoding itself (same objects)."""
        state = TargetState("t", "local", "http://h", endpoints=["queue"])
        state.set_up(True)
        first = chunks(state, True, NOW)
        assert chunks(state, True, NOW) is first
        state.on_exchange("queue", 200, 0.01)
        assert chunks(state, True, NOW) is not first

    def test_retry_after_counts_down_between_scrapes(self) -> None:
        """The one value that changes with time alone (a Cloud Retry-After) is current at every scrape."""
        state = TargetState("c", "cloud", "https://cloud.comfy.org", endpoints=[])
        assert state.cloud is not None
        state.cloud.retry_after_until = NOW + 30
        for elapsed in (0.0, 10.0, 29.5, 40.0):
            text = b"\n".join(chunk for chunk in chunks(state, True, NOW + elapsed) if chunk)
            assert f"comfy_cloud_retry_after_seconds{{target=\"c\"}} {max(0.0, 30 - elapsed)!r}".encode() in text

    def test_is_current_follows_changes(self) -> None:
        """is_current says whether the kept lines still show the state (what the daemon's encode ahead does)."""
        state = TargetState("t", "local", "http://h", endpoints=["queue"])
        assert not is_current(state, NOW)
        chunks(state, True, NOW)
        assert is_current(state, NOW)
        state.check("system").overruns += 1
        assert not is_current(state, NOW)

    def test_check_skips_are_counted_by_check_and_reason_for_skippable_checks_only(self) -> None:
        """Checks the account's limits can skip show every reason at 0 from the start, labelled with the target and
        not its discovery labels (a daemon-scoped family, absent from /probe); a skip counts once."""
        state = TargetState("c", "cloud", "https://cloud.comfy.org", endpoints=[], labels={"rack": "r1"})
        state.skippable(["auth", "billing"])
        metrics = bytes(metrics_body([state], daemon=DaemonInfo(), openmetrics=False)).decode()
        skips = sorted(line for line in metrics.splitlines() if line.startswith("comfywatch_check_skips_total{"))
        assert skips == sorted(f'comfywatch_check_skips_total{{target="c",check="{check}",reason="{reason}"}} 0'
                               for check in ("auth", "billing") for reason in ("retry_after", "request_budget"))
        chunks(state, True, NOW)
        state.on_skip("auth", SkipReason.REQUEST_BUDGET)
        assert not is_current(state, NOW)
        text = b"\n".join(chunk for chunk in chunks(state, True, NOW) if chunk)
        assert b'comfywatch_check_skips_total{target="c",check="auth",reason="request_budget"} 1' in text
        assert b"comfywatch_check_skips_total" not in b"".join(chunk for chunk in chunks(state, False, NOW) if chunk)
        local = TargetState("l", "local", "http://h", endpoints=["queue"])
        assert "comfywatch_check_skips_total{" not in bytes(metrics_body([local], daemon=DaemonInfo(),
                                                                        openmetrics=False)).decode()

    def test_one_block_per_family(self) -> None:
        """Chunks align with FAMILIES; a family the target has nothing in is None, never an empty block."""
        state = TargetState("t", "local", "http://h", endpoints=[])
        encoded = chunks(state, True, NOW)
        assert len(encoded) == len(FAMILIES)
        assert b"" not in encoded
        assert encoded[FAMILIES.index(next(m for m in FAMILIES if m.name == "comfyui_queue_running"))] is None

    @pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
    def test_non_finite_values_and_sums(self, value: float) -> None:
        """Non-finite gauges and histogram sums are spelled +Inf/-Inf/NaN in the kept lines too."""
        state = TargetState("t", "local", "http://h", endpoints=["queue"])
        state.tls_not_after = value
        state.request_durations["queue"].sum = value
        state.request_durations["queue"].count = 1
        text = bytes(metrics_body([state], daemon=DaemonInfo(), openmetrics=False)).decode()
        spelled = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}[repr(value)]
        assert f'comfyui_tls_cert_not_after_timestamp_seconds{{target="t"}} {spelled}' in text
        assert f'comfyui_request_duration_seconds_sum{{target="t",endpoint="queue"}} {spelled}' in text


class TestScrapeClock:
    def test_no_scrape_expected_before_the_first(self) -> None:
        """Nobody scraping: nothing is encoded ahead."""
        assert not ScrapeClock().expects_scrape_within(100.0, 1e9)

    def test_after_one_scrape_scrapes_are_expected_as_often_as_polls(self) -> None:
        """One scrape seen, interval unknown: assume the usual set-up (scraped about as often as polled)."""
        clock = ScrapeClock()
        clock.scraped(100.0)
        assert clock.expects_scrape_within(101.0, 15.0)
        assert clock.expects_scrape_within(159.0, 15.0)
        assert not clock.expects_scrape_within(100.0 + 15.0 * ScrapeClock.GIVE_UP_AFTER + 1, 15.0)

    def test_stopped_scrapes_stop_the_encoding_ahead(self) -> None:
        """Scrapes every 60 s that stop: after GIVE_UP_AFTER intervals without one, nothing is encoded ahead
        until the next scrape."""
        clock = ScrapeClock()
        clock.scraped(100.0)
        clock.scraped(160.0)
        assert clock.expects_scrape_within(160.0 + 60.0 * ScrapeClock.GIVE_UP_AFTER - 1, 15.0)
        assert not clock.expects_scrape_within(160.0 + 60.0 * ScrapeClock.GIVE_UP_AFTER + 1, 60.0)
        clock.scraped(500.0)
        assert clock.expects_scrape_within(501.0, 1e9)

    @pytest.mark.parametrize(("now", "horizon", "expected"), [
        (161.0, 15.0, False),  # next scrape at 220: 59 s away
        (205.0, 15.0, True),   # 15 s away
        (219.9, 1.0, True),
        (230.0, 15.0, False),  # 220 was missed: the next one is expected at 280
        (270.0, 15.0, True),
        (161.0, 60.0, True),   # polled every 60 s: every poll is the last before a scrape
    ])
    def test_next_scrape_one_interval_after_the_last(self, now: float, horizon: float, expected: bool) -> None:
        """Scrapes every 60 s: a target polled every *horizon* s is encoded only at its last poll before one."""
        clock = ScrapeClock()
        clock.scraped(100.0)
        clock.scraped(160.0)
        assert clock.expects_scrape_within(now, horizon) is expected

    def test_polls_as_often_as_scrapes_encode_every_poll(self) -> None:
        """Scrape and poll intervals equal (the common set-up): every poll's end is the last before a scrape."""
        clock = ScrapeClock()
        clock.scraped(0.0)
        clock.scraped(15.0)
        assert all(clock.expects_scrape_within(15.0 + offset / 10, 15.0) for offset in range(0, 300))


def _names(state: TargetState) -> list[str]:
    """The series of *state*'s lines, as ``name{labels}``."""
    return [line.split(b" ")[0].decode() for chunk in fresh(state) if chunk for line in chunk.split(b"\n")]


class TestDetail:
    def test_lean_counters_appear_when_first_counted(self) -> None:
        """Without full detail a reason, an overrun, a job duration appear with their first occurrence; only
        the target's main poll request is timed."""
        state = TargetState("t", "local", "http://h", endpoints=["system_stats", "queue", "history"])
        state.check("system").last_success = NOW
        state.canary("preview-image")
        before = _names(state)
        assert not any("request_failures" in name or "overruns" in name or "canary_failures" in name
                       or "job_duration" in name for name in before), before
        assert [n for n in before if n.startswith("comfyui_job_failures_total")] == [
            f'comfyui_job_failures_total{{target="t",reason="{r}"}}' for r in ("execution_error", "oom", "lost")]
        # The canary's bucket at 30 s: ComfyUICanarySlow compares its 75th percentile with it.
        assert 'comfyui_canary_duration_seconds_bucket{target="t",canary="preview-image",le="30.0"}' in before
        state.on_exchange("queue", 200, 0.01)
        state.on_failure("queue", Reason.TIMEOUT)
        state.canary("preview-image").failures[Reason.OOM] = 1
        state.check("system").overruns = 1
        state.count_finished_job(None, 3.0)
        after = set(_names(state)) - set(before)
        assert {'comfyui_request_failures_total{target="t",endpoint="queue",reason="timeout"}',
                'comfywatch_check_overruns_total{target="t",check="system"}',
                'comfyui_canary_failures_total{target="t",canary="preview-image",reason="oom"}',
                'comfyui_job_duration_seconds_count{target="t"}'} <= after
        assert not any(name.startswith("comfyui_request_duration_seconds") for name in after), after
        state.on_exchange("system_stats", 200, 0.01)
        assert 'comfyui_request_duration_seconds_count{target="t",endpoint="system_stats"}' in _names(state)

    def test_lean_cloud_counts_refusals_from_zero(self) -> None:
        """A Comfy Cloud account's 402s and 429s are counted by alerts from zero, on every endpoint it uses."""
        state = TargetState("c", "cloud", "https://cloud.comfy.org", endpoints=["user", "billing_balance"])
        state.on_exchange("prompt", 200, 0.1)
        failures = sorted(n for n in _names(state) if n.startswith("comfyui_request_failures_total"))
        assert failures == sorted(f'comfyui_request_failures_total{{target="c",endpoint="{e}",reason="{r}"}}'
                                  for e in ("user", "billing_balance", "prompt") for r in ("payment", "rate_limited"))

    def test_full_detail_has_every_reason_at_zero(self) -> None:
        state = TargetState("t", "local", "http://h", endpoints=["system_stats", "queue"], full_detail=True)
        state.check("system").last_success = NOW
        state.canary("preview-image")
        names = _names(state)
        assert 'comfyui_request_failures_total{target="t",endpoint="queue",reason="timeout"}' in names
        assert 'comfywatch_check_overruns_total{target="t",check="system"}' in names
        assert 'comfyui_canary_failures_total{target="t",canary="preview-image",reason="oom"}' in names
        assert 'comfyui_request_duration_seconds_count{target="t",endpoint="queue"}' in names
        assert 'comfyui_job_duration_seconds_count{target="t"}' in names
        assert len(names) > 2 * len(_names(TargetState("t", "local", "http://h", endpoints=["system_stats", "queue"])))
