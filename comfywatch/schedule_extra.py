"""Checks beyond polling: canaries (local and Cloud) and the Comfy Cloud account checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from comfywatch.workflows import WorkflowError, load_workflow

if TYPE_CHECKING:
    from comfywatch.daemon import CheckSpec, Daemon
    from comfywatch.runtime import TargetRuntime

__all__ = ["extra_checks"]

log = structlog.get_logger("comfywatch.daemon")


def extra_checks(daemon: Daemon, runtime: TargetRuntime) -> list[CheckSpec]:
    from comfywatch.checks.canary import CanaryRunner, apply_result, check_outcome
    from comfywatch.daemon import CheckSpec
    from comfywatch.runtime import ssl_context_for

    config = daemon.config
    assert config is not None
    target = runtime.config
    specs: list[CheckSpec] = []
    if target.kind == "cloud":
        from comfywatch.checks.cloud import cloud_checks

        specs.extend(cloud_checks(daemon, runtime))
    if target.kind == "local" and runtime.local is not None and target.canary_enabled:
        canary = target.canary
        try:
            workflow = load_workflow(canary.workflow, canary.canary_name, canary.verify)
        except WorkflowError as exc:
            log.error("canary_workflow_invalid", target=target.name, problem=str(exc))
            return specs
        state = runtime.state
        runner = CanaryRunner(
            runtime.local, workflow, timeout=canary.timeout, when_busy=canary.when_busy,
            ssl_context=ssl_context_for(target), on_result=lambda result: apply_result(state, result),
            on_accepted=lambda prompt_id: state.seen_jobs.add_all([prompt_id]),
        )
        runtime.extras["canary"] = runner
        state.canary(workflow.name)  # the series exist from the start, before the first run

        async def run_canary() -> None:
            check_outcome(await runner.run())

        specs.append(CheckSpec("canary", canary.interval, canary.timeout + 10.0, run_canary))
    return specs
