"""Jobs of the simulated Cloud: per-tier concurrency, bounded queue, billing drain, cancelling, listing."""

from __future__ import annotations

from typing import Any

import pytest

from comfywatch.errors import Failure, Reason, classify_status
from comfywatch.parse.cloud import (
    parse_balance,
    parse_cloud_queue,
    parse_job_status,
    parse_jobs_list,
)
from comfywatch.sim.cloud.model import SimCloud
from tests.sim_cloud import KEY, OTHER_KEY, FakeClock, Served, call, serve, submit


def refusal(status: int, body: Any) -> Failure:
    """The simulator's refusal as comfywatch's clients classify it (errors.classify_status)."""
    failure = classify_status(status, body)
    assert failure is not None
    return failure


def _clocked(**kwargs: object) -> tuple[SimCloud, FakeClock]:
    sim = SimCloud(api_keys=[KEY, OTHER_KEY], **kwargs)  # type: ignore[arg-type]
    clock = FakeClock()
    sim.clock = clock
    return sim, clock


async def _raw_states(served: Served, job_ids: list[str]) -> list[str]:
    states = []
    for job_id in job_ids:
        states.append((await call(served.http, "GET", f"/api/job/{job_id}/status")).json()["status"])
    return states


@pytest.mark.parametrize(("tier", "limit"), [("STANDARD", 1), ("CREATOR", 3), ("PRO", 5)])
async def test_running_jobs_never_exceed_the_tier_limit(tier: str, limit: int) -> None:
    """At every instant at most 1/3/5 jobs hold a slot; the rest wait in queued_limited; all finish."""
    sim, clock = _clocked(tier=tier, exec_ms=100)
    async with serve(sim) as served:
        job_ids = [await submit(served) for _ in range(limit + 3)]
        features = (await call(served.http, "GET", "/api/features")).json()
        assert features["max_concurrent_jobs"] == limit
        states = await _raw_states(served, job_ids)
        assert states == ["pending_execution"] * limit + ["queued_limited"] * 3
        seen_running = 0
        for _ in range(40):
            queue = parse_cloud_queue((await call(served.http, "GET", "/api/queue")).json())
            assert len(queue.running) <= limit
            seen_running = max(seen_running, len(queue.running))
            clock.tick(25)
        assert seen_running == limit
        assert await _raw_states(served, job_ids) == ["success"] * (limit + 3)


async def test_jobs_start_in_submission_order_as_slots_free() -> None:
    """A waiting job gets the slot the moment the running one finishes, oldest first (ms timestamps)."""
    sim, clock = _clocked(tier="STANDARD", exec_ms=100)
    sim.dispatch_ms = 10
    async with serve(sim) as served:
        first, second = await submit(served), await submit(served)
        clock.tick(1000)
        jobs = {
            job.id: job for job in parse_jobs_list((await call(served.http, "GET", "/api/jobs")).json()).jobs
        }
        assert jobs[first].execution_start_ms == jobs[first].create_time_ms + 10
        assert jobs[first].execution_end_ms == jobs[first].execution_start_ms + 100  # type: ignore[operator]
        assert jobs[second].execution_start_ms == jobs[first].execution_end_ms + 10  # type: ignore[operator]
        assert jobs[second].execution_seconds == 0.1


async def test_bounded_pending_queue_answers_queue_limit() -> None:
    """Once queue_limit jobs wait, a submit gets 429 QUEUE_LIMIT; a freed place accepts again."""
    sim, clock = _clocked(tier="STANDARD", queue_limit=2, exec_ms=100)
    async with serve(sim) as served:
        await submit(served)  # running
        await submit(served)
        await submit(served)
        refused = await call(served.http, "POST", "/api/prompt", json={"prompt": _canary()})
        assert refused.status == 429
        assert refused.json()["error"]["type"] == "QUEUE_LIMIT"
        assert refusal(429, refused.json()).reason is Reason.QUEUE_FULL
        other = await call(served.anon, "POST", "/api/prompt", json={"prompt": _canary()}, headers=_other())
        assert other.status == 200, "the queue is per user"
        clock.tick(120)
        assert (await call(served.http, "POST", "/api/prompt", json={"prompt": _canary()})).status == 200


async def test_balance_drains_by_a_fixed_cost_per_finished_job() -> None:
    """Each finished job costs job_cost_cents; executing jobs show as pending charges."""
    sim, clock = _clocked(balance_cents=6000, exec_ms=100)
    sim.job_cost_cents = 7
    async with serve(sim) as served:
        for _ in range(3):
            await submit(served)
        clock.tick(50)
        during = (await call(served.http, "GET", "/api/billing/balance")).json()
        assert (during["amount_micros"], during["pending_charges_micros"]) == (6000, 21)
        assert during["effective_balance_micros"] == 5979
        clock.tick(1000)
        after = parse_balance((await call(served.http, "GET", "/api/billing/balance")).json())
        assert after.amount_usd == pytest.approx(59.79)
        assert after.balance_usd == pytest.approx(59.79)
        assert (after.pending_charges_usd, after.currency) == (0.0, "usd")
        assert sim.snapshot()["balance"]["balance_cents"] == 5979


async def test_effective_balance_goes_negative_and_then_submits_are_refused() -> None:
    """A job costing more than the balance drives effective negative; the next submit gets 402."""
    sim, clock = _clocked(balance_cents=3, exec_ms=100)
    sim.job_cost_cents = 5
    async with serve(sim) as served:
        await submit(served)
        clock.tick(50)
        during = parse_balance((await call(served.http, "GET", "/api/billing/balance")).json())
        assert during.effective_usd == pytest.approx(-0.02)
        assert during.balance_usd == pytest.approx(-0.02)
        clock.tick(1000)
        after = (await call(served.http, "GET", "/api/billing/balance")).json()
        assert (after["amount_micros"], after["effective_balance_micros"]) == (0, -2)
        status = (await call(served.http, "GET", "/api/billing/status")).json()
        assert status["has_funds"] is False
        refused = await call(served.http, "POST", "/api/prompt", json={"prompt": _canary()})
        assert refused.status == 402
        assert refusal(402, refused.json()).error_type == "PAYMENT_REQUIRED"


async def test_cancel_interrupt_and_queue_delete() -> None:
    """Single cancel, /api/interrupt and POST /api/queue all end jobs in raw state cancelled."""
    sim, clock = _clocked(tier="STANDARD", exec_ms=1000)
    async with serve(sim) as served:
        running, waiting, third, fourth = [await submit(served) for _ in range(4)]
        clock.tick(20)
        assert await _raw_states(served, [running, waiting]) == ["executing", "queued_limited"]
        deleted = await call(served.http, "POST", "/api/queue", json={"delete": [waiting, "not-a-job"]})
        assert deleted.json() == {"deleted": [waiting], "cleared": False}
        assert (await call(served.http, "POST", "/api/interrupt")).status == 200
        cancelled = parse_job_status((await call(served.http, "GET", f"/api/job/{running}/status")).json())
        assert (cancelled.status, cancelled.failure_reason) == ("cancelled", Reason.INTERRUPTED)
        # the freed slot went to the oldest waiting job
        assert await _raw_states(served, [third, fourth]) == ["pending_execution", "queued_limited"]
        cancel = await call(served.http, "POST", f"/api/jobs/{fourth}/cancel")
        assert cancel.json() == {"cancelled": True}
        again = await call(served.http, "POST", f"/api/jobs/{fourth}/cancel")
        assert again.json() == {"cancelled": False}
        bad = await call(served.http, "POST", "/api/queue", json={"clear": True, "extra": 1})
        assert bad.status == 400
        assert sim.snapshot()["jobs"] == {"cancelled": 3, "pending_execution": 1}


async def test_jobs_list_filters_by_group_and_paginates() -> None:
    """/api/jobs filters by comma-separated groups, sorts newest first and pages with has_more."""
    sim, clock = _clocked(tier="STANDARD", exec_ms=100)
    async with serve(sim) as served:
        done = await submit(served)
        clock.tick(500)
        running = await submit(served)
        waiting = await submit(served)
        listing = parse_jobs_list((await call(served.http, "GET", "/api/jobs")).json())
        assert [job.id for job in listing.jobs] == [waiting, running, done]
        assert listing.count_by_group() == {"pending": 2, "completed": 1}
        pending = await call(served.http, "GET", "/api/jobs", params={"status": "pending,in_progress"})
        assert [job["id"] for job in pending.json()["jobs"]] == [waiting, running]
        page = parse_jobs_list(
            (await call(served.http, "GET", "/api/jobs", params={"limit": "1", "offset": "1"})).json()
        )
        assert ([job.id for job in page.jobs], page.total, page.has_more) == ([running], 3, True)
        oldest = await call(served.http, "GET", "/api/jobs", params={"sort_order": "asc", "limit": "1"})
        assert oldest.json()["jobs"][0]["id"] == done
        for bad in ({"limit": "0"}, {"status": "weird"}, {"sort_by": "name"}):
            assert (await call(served.http, "GET", "/api/jobs", params=bad)).status == 400


async def test_users_see_only_their_own_jobs() -> None:
    """Each key is a user: another user's job is 403 on detail and absent from the list and queue."""
    sim, _ = _clocked()
    async with serve(sim) as served:
        mine = await submit(served)
        theirs = (
            await call(served.anon, "POST", "/api/prompt", json={"prompt": _canary()}, headers=_other())
        ).json()
        listing = (await call(served.http, "GET", "/api/jobs")).json()
        assert [job["id"] for job in listing["jobs"]] == [mine]
        assert (await call(served.http, "GET", f"/api/jobs/{theirs['prompt_id']}")).status == 403
        assert (await call(served.http, "GET", f"/api/history_v2/{theirs['prompt_id']}")).status == 404
        user = (await call(served.anon, "GET", "/api/user", headers=_other())).json()
        assert user["id"] != (await call(served.http, "GET", "/api/user")).json()["id"]


async def test_submit_rejects_malformed_prompts_like_comfyui() -> None:
    """No prompt, non-JSON bodies and prompts without output nodes get 400 with ComfyUI error types."""
    sim, _ = _clocked()
    async with serve(sim) as served:
        cases = [
            ({"json": {}}, "no_prompt"),
            ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, "invalid_prompt"),
            ({"json": {"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}}, "prompt_no_outputs"),
        ]
        for kwargs, kind in cases:
            answer = await call(served.http, "POST", "/api/prompt", **kwargs)  # type: ignore[arg-type]
            assert answer.status == 400
            assert answer.json()["error"]["type"] == kind
            # A body without a prompt is a malformed request; the other two are ComfyUI's validation.
            expected = Reason.INVALID_REQUEST if kind == "no_prompt" else Reason.VALIDATION
            assert refusal(400, answer.json()).reason is expected
        assert sim.snapshot()["jobs_submitted"] == 0


async def test_old_finished_jobs_are_forgotten_beyond_the_bound() -> None:
    """Memory stays bounded: beyond max_jobs_kept the oldest finished jobs (and their files) are dropped."""
    sim, clock = _clocked(exec_ms=10)
    sim.max_jobs_kept = 3
    async with serve(sim) as served:
        job_ids = []
        for _ in range(5):
            job_ids.append(await submit(served))
            clock.tick(100)
        await call(served.http, "GET", "/api/jobs")
        assert list(sim.jobs) == job_ids[-3:]
        assert (await call(served.http, "GET", f"/api/jobs/{job_ids[0]}")).status == 404


async def test_snapshot_is_json_and_counts_requests_by_route() -> None:
    """snapshot() reports faults, jobs by raw state, balance and request counts per route template."""
    sim, clock = _clocked()
    async with serve(sim) as served:
        job_id = await submit(served)
        await call(served.http, "GET", f"/api/job/{job_id}/status")
        clock.tick(1000)
        await call(served.http, "GET", f"/api/job/{job_id}/status")
        snap = sim.snapshot()
    assert snap["requests"]["/api/job/{job_id}/status"] == 2
    assert snap["requests_by_method"]["POST /api/prompt"] == 1
    assert snap["jobs"] == {"success": 1}
    assert snap["key_leaks"] == 0
    assert KEY not in str(snap)


def _canary() -> dict[str, object]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }


def _other() -> dict[str, str]:
    return {"X-API-Key": OTHER_KEY}
