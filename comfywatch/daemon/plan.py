"""The plan: which checks a target gets, at what interval and with what time budget — decided in one place,
from the configuration and the target's context alone (the scheduler only runs what this returns)."""

from __future__ import annotations

import structlog

from comfywatch.checks import POLL_GROUP, CheckSpec
from comfywatch.checks import jobs as jobs_check
from comfywatch.checks import network as network_check
from comfywatch.checks import queue as queue_check
from comfywatch.checks import system as system_check
from comfywatch.checks.canary import CanaryRunner, apply_result, check_outcome
from comfywatch.checks.cloud import cloud_checks
from comfywatch.checks.context import TargetContext, ssl_context_for
from comfywatch.config import Config
from comfywatch.workflows import WorkflowError, load_workflow

__all__ = ["plan_checks"]

log = structlog.get_logger("comfywatch.daemon")


def plan_checks(config: Config, runtime: TargetContext) -> list[CheckSpec]:
    """Every check of one target: the polls and network check of a local server, a Cloud account's checks,
    and the canary of either."""
    target = runtime.config
    interval = config.interval_of(target)
    # A check should end before its next run is due (or max_instances=1 skips runs), but never before its
    # own request timeout (a request cut by the check's deadline would go uncounted), nor after the interval.
    request_timeout = config.timeout_of(target)
    budget = min(max(request_timeout + 0.5, min(request_timeout * 2, interval * 0.9)), interval)
    specs: list[CheckSpec] = []
    if target.kind == "local" and runtime.local is not None:
        api, state = runtime.local, runtime.state
        wanted = target.checks or ("system", "queue", "jobs")
        if "system" in wanted:
            specs.append(CheckSpec("system", interval, budget, lambda: system_check.run(api, state), POLL_GROUP))
        if "queue" in wanted:
            specs.append(CheckSpec("queue", interval, budget, lambda: queue_check.run(api, state), POLL_GROUP))
        if "jobs" in wanted:
            specs.append(CheckSpec("jobs", interval, budget, lambda: jobs_check.run(api, state), POLL_GROUP))
    if target.kind == "local":
        # Twice the request timeout: DNS, connect and (https) two TLS handshakes run in sequence.
        specs.append(CheckSpec("network", max(interval, 300.0), budget + request_timeout,
                               lambda: network_check.run(target, runtime.state, request_timeout)))
    if target.kind == "cloud":
        specs.extend(cloud_checks(config, runtime))
    if target.kind == "local" and runtime.local is not None and target.canary_enabled:
        specs.extend(_local_canary(runtime))
    return specs


def _local_canary(runtime: TargetContext) -> list[CheckSpec]:
    target, local = runtime.config, runtime.local
    assert local is not None
    canary = target.canary
    try:
        workflow = load_workflow(canary.workflow, canary.canary_name, canary.verify)
    except WorkflowError as exc:
        log.error("canary_workflow_invalid", target=target.name, problem=str(exc))
        return []
    state = runtime.state
    runner = CanaryRunner(
        local, workflow, timeout=canary.timeout, when_busy=canary.when_busy,
        ssl_context=ssl_context_for(target), on_result=lambda result: apply_result(state, result),
        on_accepted=lambda prompt_id: state.seen_jobs.add_all([prompt_id]),
    )
    runtime.extras["canary"] = runner
    state.canary(workflow.name)  # the series exist from the start, before the first run

    async def run_canary() -> None:
        check_outcome(await runner.run())

    return [CheckSpec("canary", canary.interval, canary.timeout + 10.0, run_canary)]
