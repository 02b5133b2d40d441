"""The plan: which checks a target gets, at what interval and with what time budget — decided in one place,
from the configuration and the target's context alone (the scheduler only runs what this returns)."""

from __future__ import annotations

import structlog

from comfywatch.checks import POLL_GROUP, Check, CheckSpec
from comfywatch.checks import catalog as catalog_check
from comfywatch.checks import cloud as cloud_check
from comfywatch.checks import jobs as jobs_check
from comfywatch.checks import network as network_check
from comfywatch.checks import queue as queue_check
from comfywatch.checks import system as system_check
from comfywatch.checks.budget import DailyBudget
from comfywatch.checks.canary import CanaryApi, CanaryRunner, apply_result
from comfywatch.checks.catalog import CatalogCheck, FleetReads
from comfywatch.checks.context import TargetContext, ssl_context_for
from comfywatch.clients.cloud import CloudApi
from comfywatch.clients.local import LocalApi
from comfywatch.config import Config, TargetConfig
from comfywatch.workflows import CanaryWorkflow, WorkflowError, load_workflow

__all__ = ["plan_checks"]

log = structlog.get_logger("comfywatch.daemon")

#: A local server's polls, in the order they run.
LOCAL_POLLS: dict[str, Check] = {"system": system_check.run, "queue": queue_check.run, "jobs": jobs_check.run}


def plan_checks(config: Config, context: TargetContext, catalogs: FleetReads | None = None) -> list[CheckSpec]:
    """Every check of one target: the polls, network and catalogue checks of a local server (the catalogue's reads
    in turn with the rest of the fleet's *catalogs*), a Cloud account's checks, and the canary of either."""
    if context.local is not None:
        return _local_checks(config, context, context.local, catalogs)
    if context.cloud is not None:
        return _cloud_checks(config, context, context.cloud)
    return []


def _local_checks(config: Config, context: TargetContext, local: LocalApi,
                  catalogs: FleetReads | None) -> list[CheckSpec]:
    target, interval, request_timeout = context.config, context.interval, context.request_timeout
    # A check should end before its next run is due (or max_instances=1 skips runs), but never before its
    # own request timeout (a request cut by the check's deadline would go uncounted), nor after the interval.
    time_budget = min(max(request_timeout + 0.5, min(request_timeout * 2, interval * 0.9)), interval)
    wanted = target.checks or ("system", "queue", "jobs")
    specs = [CheckSpec(name, interval, time_budget, check, POLL_GROUP)
             for name, check in LOCAL_POLLS.items() if name in wanted]
    # Twice the request timeout: DNS, connect and (https) two TLS handshakes run in sequence.
    specs.append(CheckSpec("network", max(interval, 300.0), time_budget + request_timeout, network_check.run))
    watched = [watch.path for watch in config.workflows if watch.watches(target)]
    catalog = CatalogCheck(watched, config.defaults.catalog_interval, catalogs)
    # /object_info may take the server seconds to build: the client gives it 30 s at least.
    specs.append(CheckSpec("catalog", catalog_check.CHECK_INTERVAL, catalog_check.CHECK_INTERVAL - 5.0, catalog.check))
    workflow = _canary_workflow(target)
    if workflow is not None:
        runner = _canary_runner(local, workflow, context)
        context.state.canary(workflow.name)  # the series exist from the start, before the first run
        specs.append(CheckSpec("canary", target.canary.interval, target.canary.timeout + 10.0, runner.check))
    return specs


def _cloud_checks(config: Config, context: TargetContext, api: CloudApi) -> list[CheckSpec]:
    target, interval, state = context.config, context.interval, context.state
    time_budget = cloud_check.time_budget(context)
    specs = [
        CheckSpec("auth", interval, time_budget, cloud_check.check_auth),
        CheckSpec("billing", max(interval, 60.0), time_budget, cloud_check.check_billing),
        CheckSpec("features", max(interval, 300.0), time_budget, cloud_check.check_features),
        CheckSpec("queue", interval, time_budget, cloud_check.check_queue),
        CheckSpec("jobs", max(interval, 30.0), time_budget, cloud_check.check_jobs),
    ]
    state.skippable(spec.name for spec in specs)
    api_key = context.credentials.api_key
    workflow = _canary_workflow(target) if api_key else None
    if api_key and workflow is not None:
        canary = target.canary
        budget = DailyBudget(config.resolved_state_dir() / "canary-budget.json", f"{target.name}:{workflow.name}",
                             canary.max_runs_per_day)
        if canary.max_runs_per_day > 0 and canary.interval * canary.max_runs_per_day < 86_400:
            # Not an error, but rarely what was meant: the day's runs go in a burst, then nothing until 00:00 UTC.
            log.warning("cloud_canary_budget_spent_early", target=target.name, interval_s=canary.interval,
                        max_runs_per_day=canary.max_runs_per_day,
                        hours_covered=round(canary.interval * canary.max_runs_per_day / 3600, 2),
                        advice="set the canary interval to at least 24h / max_runs_per_day")
        state.canary(workflow.name).runs_today = budget.used() or 0
        runner = _canary_runner(cloud_check.CloudCanaryApi(api, api_key), workflow, context)
        check = cloud_check.BudgetedCanary(runner, budget)
        specs.append(CheckSpec("canary", canary.interval, canary.timeout + 10.0, check.run))
    return specs


def _canary_runner(api: CanaryApi, workflow: CanaryWorkflow, context: TargetContext) -> CanaryRunner:
    """The target's canary, local or Cloud: its results go to the target's state, and the prompts it submits
    are marked as counted so the jobs check never takes them for a user's jobs."""
    target, state = context.config, context.state
    return CanaryRunner(
        api, workflow, timeout=target.canary.timeout, when_busy=target.canary.when_busy,
        ssl_context=ssl_context_for(target), on_result=lambda result: apply_result(state, result),
        on_accepted=lambda prompt_id: state.seen_jobs.add_all([prompt_id]),
    )


def _canary_workflow(target: TargetConfig) -> CanaryWorkflow | None:
    """The workflow of the target's canary; None when it has none (or its workflow is invalid: logged)."""
    if not target.canary_enabled:
        return None
    canary = target.canary
    try:
        return load_workflow(canary.workflow, canary.canary_name, canary.verify)
    except WorkflowError as exc:
        log.error("canary_workflow_invalid", target=target.name, problem=str(exc))
        return None
