"""Jobs of the simulated Comfy Cloud: the job record, raw states, tier limits and prompt checking.

Raw states and their groups are what ``/api/job/{id}/status`` really returns (``success``, ``lost``...), not
the enum of the published spec. Pure data and functions; the scheduler lives in ``cloud_model``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "FAULTS",
    "GROUP_OF",
    "OUTPUT_NODE_TYPES",
    "SLOT_STATES",
    "TERMINAL_STATES",
    "TIER_CONCURRENCY",
    "WAITING_STATES",
    "PromptPlan",
    "SimJob",
    "check_prompt",
    "safe_prefix",
]

FAULTS: Final[Mapping[str, str]] = {
    "http_401": "every authenticated request gets 401 UNAUTHORIZED, as for a revoked key",
    "http_402": "submits get 402 PAYMENT_REQUIRED and /api/billing/status says has_funds: false",
    "http_429_rate": "every authenticated request gets an untyped 429 RATE_LIMITED with Retry-After: 5",
    "http_429_queue_limit": "submits get 429 QUEUE_LIMIT, as when the account's pending queue is full",
    "http_429_payment": "submits get 429 with a billing error type (FREE_TIER_EXHAUSTED)",
    "http_5xx": "authenticated requests get 500 (503 'Failed to enqueue job' on submit); /health 503",
    "slow": "every response except signed-URL downloads is delayed by slow_ms (default 3000)",
    "stuck_jobs": "jobs never get a concurrency slot: they wait in submitted/queued_limited until cleared",
    "balance_error": "/api/billing/balance answers 500; everything else works",
    "insufficient_funds_runtime": "accepted jobs fail at run time with InsufficientFundsError (non_retryable_error)",
    "oom": "accepted jobs fail at run time with OOMError",
    "lost": "accepted jobs end in state lost: no execution_error, no charge",
    "inactive_subscription": "/api/billing/status says is_active: false; submits get 402 'subscription required'",
}
"""Fault switches understood by :class:`~comfywatch.sim.cloud.SimCloud`, each with the one line saying what it does."""

# docs "Parallel Execution" (Standard 1, Creator 3, Pro 5) plus comfy-cli's defaults for the others.
TIER_CONCURRENCY: dict[str, int] = {
    "FREE": 1,
    "STANDARD": 1,
    "CREATOR": 3,
    "PRO": 5,
    "FOUNDERS_EDITION": 1,
    "TEAM": 25,
}

WAITING_STATES = ("submitted", "queued_limited")
"""Jobs without a concurrency slot: ``queue_pending`` of ``/api/queue``."""
SLOT_STATES = ("pending_execution", "executing")
"""Jobs holding a concurrency slot: ``queue_running`` of ``/api/queue``."""
TERMINAL_STATES = frozenset({"success", "error", "non_retryable_error", "lost", "cancelled"})

GROUP_OF: dict[str, str] = {
    "submitted": "pending",
    "queued_limited": "pending",
    "pending_execution": "pending",
    "executing": "in_progress",
    "success": "completed",
    "error": "failed",
    "non_retryable_error": "failed",
    "lost": "failed",
    "cancelled": "cancelled",
}
"""Raw state -> the user-facing group ``/api/jobs`` reports."""

OUTPUT_NODE_TYPES: dict[str, str] = {"SaveImage": "output", "PreviewImage": "temp", "PreviewAny": "text"}
"""Core output nodes the simulator can "run", with the kind of output each produces."""

_PREFIX_RE = re.compile(r"[^A-Za-z0-9_\-]+")


@dataclass(slots=True)
class SimJob:
    """One submitted prompt and everything the endpoints report about it (times are epoch ms)."""

    id: str
    owner: int
    number: int
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    output_nodes: list[str]
    workflow_id: str
    create_ms: int
    state: str = "submitted"
    state_ms: int = 0
    slot_ms: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    error_message: str | None = None
    messages: list[list[Any]] = field(default_factory=list)
    pending_cents: int = 0
    files: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        """Whether the job reached a final raw state."""
        return self.state in TERMINAL_STATES

    @property
    def waiting(self) -> bool:
        """Whether the job waits for a concurrency slot."""
        return self.state in WAITING_STATES

    @property
    def holds_slot(self) -> bool:
        """Whether the job occupies one of the tier's concurrency slots."""
        return self.state in SLOT_STATES

    @property
    def group(self) -> str:
        """The user-facing status group of the raw state."""
        return GROUP_OF.get(self.state, "pending")

    @property
    def update_ms(self) -> int:
        """Last change of the job."""
        return max(self.create_ms, self.state_ms)

    def node_ids(self) -> list[str]:
        """Node ids in submission order."""
        return list(self.prompt)

    def class_type(self, node_id: str) -> str:
        """``class_type`` of a node of this job."""
        node = self.prompt.get(node_id)
        return str(node.get("class_type", "")) if isinstance(node, dict) else ""


@dataclass(frozen=True, slots=True)
class PromptPlan:
    """A prompt that passed the simulator's checks."""

    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    output_nodes: list[str]
    workflow_id: str | None


def _prompt_error(kind: str, message: str, details: str = "") -> dict[str, Any]:
    """ComfyUI's ``PromptErrorResponse`` shape, which the Cloud's 400 for an invalid prompt follows."""
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }


def check_prompt(body: object) -> PromptPlan | dict[str, Any]:
    """Check a ``POST /api/prompt`` body; return the plan or the 400 error body.

    Only structural checks (like ComfyUI before node validation): the simulator knows no node catalogue,
    so any ``class_type`` runs, and only core output nodes count as outputs.
    """
    if not isinstance(body, dict):
        return _prompt_error("invalid_prompt", "Request body must be a JSON object")
    prompt = body.get("prompt")
    if prompt is None:
        return _prompt_error("no_prompt", "No prompt provided", "No prompt provided")
    if not isinstance(prompt, dict):
        return _prompt_error("invalid_prompt", "Prompt must be an object")
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            return _prompt_error(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'",
            )
    outputs = [node_id for node_id, node in prompt.items() if node["class_type"] in OUTPUT_NODE_TYPES]
    if not outputs:
        return _prompt_error("prompt_no_outputs", "Prompt has no outputs")
    extra = body.get("extra_data")
    workflow_id = body.get("workflow_id")
    return PromptPlan(
        prompt=prompt,
        extra_data=extra if isinstance(extra, dict) else {},
        output_nodes=outputs,
        workflow_id=workflow_id if isinstance(workflow_id, str) else None,
    )


def safe_prefix(value: object, default: str = "ComfyUI") -> str:
    """A ``filename_prefix`` reduced to a safe flat file name part."""
    if not isinstance(value, str):
        return default
    cleaned = _PREFIX_RE.sub("_", value).strip("_")[:64]
    return cleaned or default
