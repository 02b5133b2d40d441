"""Pure parsers for Comfy Cloud v1 responses (``cloud.comfy.org/api/*``), as docs/cloud.md describes them.

Every ``parse_*`` function takes decoded JSON and returns a frozen dataclass or raises
:class:`~comfywatch.errors.ParseError`. The Cloud differs from its published spec in ways the daemon must
tolerate, so these parsers follow what the service sends rather than ``openapi-cloud.yaml``:

* ``/api/job/{id}/status`` returns *raw* internal states (``queued_limited``, ``success``, ``lost`` ...), not
  the spec enum; unknown states are treated as in flight.
* ``create_time``/``update_time`` are documented as seconds but sent as milliseconds; values above 1e12 are
  read as milliseconds.
* ``*_micros`` billing fields carry cents; the divisor is configurable. A balance whose fields are
  all absent is unknown (``None``), never 0.
* Enum-like strings (tier, billing status) may take values nobody documented; they are kept
  (bounded in length) and the ``*_label`` properties fold them into a fixed set for metric labels.

No parsed object carries response text longer than :data:`MAX_TEXT` characters, and key-like substrings
are redacted from the free-text fields that are kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from comfywatch.errors import ParseError, Reason, classify_execution_error
from comfywatch.parse.queue import QueueItem, QueueSnapshot, snapshot_of
from comfywatch.parse.text import MAX_CHARS, bounded, sanitize

__all__ = [
    "CREDITS_PER_USD",
    "KNOWN_BILLING_STATUSES",
    "KNOWN_SUBSCRIPTION_STATUSES",
    "KNOWN_TIERS",
    "MAX_TEXT",
    "Balance",
    "BillingStatus",
    "CloudJob",
    "CloudUser",
    "ExecutionErrorInfo",
    "Features",
    "JobDetail",
    "JobGroup",
    "JobState",
    "JobStatus",
    "JobsPage",
    "OutputFile",
    "SubmitResult",
    "classify_state",
    "failure_reason",
    "parse_balance",
    "parse_billing_status",
    "parse_cloud_queue",
    "parse_features",
    "parse_job_detail",
    "parse_job_status",
    "parse_jobs_list",
    "parse_queue_remaining",
    "parse_submit",
    "parse_user",
    "trusted_balance_usd",
]

MAX_TEXT = 200
"""Longest free text (messages) kept from a response; the rest is cut off."""

CREDITS_PER_USD = 211
"""Comfy credits per US dollar (frontend ``comfyCredits.ts``, comfy-cli ``CREDITS_PER_USD``)."""

# 1e12 ms is 2001-09-09; as seconds it is 33 658 AD, so the two units cannot be confused in practice.
_MS_THRESHOLD = 1e12

KNOWN_TIERS = frozenset({"FREE", "STANDARD", "CREATOR", "PRO", "FOUNDERS_EDITION", "TEAM", "ENTERPRISE"})
KNOWN_SUBSCRIPTION_STATUSES = frozenset({"active", "ended", "canceled"})
KNOWN_BILLING_STATUSES = frozenset(
    {"awaiting_payment_method", "pending_payment", "paid", "payment_failed", "paused", "inactive"}
)


_TOKEN_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_SECRET_RE = re.compile(r"(comfyui-|cmy_|comfy_)[^\s\"',;]+|(?i:bearer)\s+[^\s\"',;]+")
_DIGITS_RE = re.compile(r"-?[0-9]{1,20}")
# Largest magnitude of an integer :func:`_int` and :func:`_number` accept: what they return ends up a float (a
# metric), and a larger integer would not convert (OverflowError) where it is used.
_MAX_FLOAT_INT = 10**300


# ---------------------------------------------------------------------------------------------------------
# Job states


class JobGroup(StrEnum):
    """The user-facing status groups of ``/api/jobs``; each raw state of ``/api/job/{id}/status`` falls in one."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# raw or grouped value -> (group, terminal). Grouped names are included because /api/jobs sends them and
# docs/backend drift may put either kind in either endpoint.
_STATE_TABLE: dict[str, tuple[JobGroup, bool]] = {
    "submitted": (JobGroup.PENDING, False),
    "queued_limited": (JobGroup.PENDING, False),
    "queued_waiting": (JobGroup.PENDING, False),
    "allocated": (JobGroup.PENDING, False),
    "preparing": (JobGroup.PENDING, False),
    "pending_execution": (JobGroup.PENDING, False),
    "waiting_to_dispatch": (JobGroup.PENDING, False),
    "pending": (JobGroup.PENDING, False),
    "executing": (JobGroup.IN_PROGRESS, False),
    "executed": (JobGroup.IN_PROGRESS, False),
    "in_progress": (JobGroup.IN_PROGRESS, False),
    "success": (JobGroup.COMPLETED, True),
    "completed": (JobGroup.COMPLETED, True),
    "error": (JobGroup.FAILED, True),
    "non_retryable_error": (JobGroup.FAILED, True),
    "lost": (JobGroup.FAILED, True),
    "failed": (JobGroup.FAILED, True),
    "erroring": (JobGroup.FAILED, False),
    "cancelled": (JobGroup.CANCELLED, True),
    "cancel_requested": (JobGroup.CANCELLED, False),
    "cancel_pending": (JobGroup.CANCELLED, False),
    "cancelling_preparing": (JobGroup.CANCELLED, False),
}


@dataclass(frozen=True, slots=True)
class JobState:
    """Classification of one raw (or grouped) job state string."""

    raw: str
    group: JobGroup | None
    """``None`` for a value nobody documented: such a job counts as in flight."""
    terminal: bool

    @property
    def known(self) -> bool:
        """Whether the value is a known raw state or group."""
        return self.group is not None

    @property
    def group_label(self) -> str:
        """The group as a bounded metric label value (``unknown`` for undocumented states)."""
        return self.group.value if self.group is not None else "unknown"


def classify_state(raw: str) -> JobState:
    """Classify a job state from ``/api/job/{id}/status`` or ``/api/jobs``; unknown values are in flight."""
    entry = _STATE_TABLE.get(raw) or _STATE_TABLE.get(raw.strip().lower())
    kept = bounded(raw, 64)
    if entry is None:
        return JobState(raw=kept, group=None, terminal=False)
    return JobState(raw=kept, group=entry[0], terminal=entry[1])


def failure_reason(raw: str, error: ExecutionErrorInfo | None = None) -> Reason | None:
    """Failure reason of a job in state ``raw``, or ``None`` when it succeeded or is still in flight.

    ``lost`` is ``lost``; ``cancelled`` is ``interrupted``; ``error``, ``non_retryable_error`` and ``failed``
    are the reason of the job's execution *error* (``oom``, ``payment`` or ``execution_error``), or
    ``execution_error`` when it has none.
    """
    state = classify_state(raw)
    if not state.terminal or state.group is JobGroup.COMPLETED:
        return None
    if state.group is JobGroup.CANCELLED:
        return Reason.INTERRUPTED
    if state.raw.strip().lower() == "lost":
        return Reason.LOST
    return Reason.EXECUTION_ERROR if error is None else error.reason


# ---------------------------------------------------------------------------------------------------------
# Result types


@dataclass(frozen=True, slots=True)
class CloudUser:
    """``GET /api/user``: the cheapest "is my key valid" probe."""

    id: str | None
    status: str
    """``active`` or ``waitlisted`` (others kept, bounded)."""

    @property
    def active(self) -> bool:
        """Whether the account is active (not waitlisted)."""
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class Balance:
    """``GET /api/billing/balance`` in US dollars (fields ``None`` when absent)."""

    balance_usd: float | None
    """First non-zero of effective, amount, prepaid, cloud credit (comfy-cli's pick); ``None`` = unknown."""
    effective_usd: float | None
    """Balance minus pending charges; may be negative."""
    amount_usd: float | None
    prepaid_usd: float | None
    cloud_credit_usd: float | None
    pending_charges_usd: float | None
    currency: str | None

    @property
    def known(self) -> bool:
        """Whether any balance field was present at all."""
        return self.balance_usd is not None

    @property
    def balance_credits(self) -> float | None:
        """The balance in Comfy credits (211 per dollar), or ``None`` when unknown."""
        return None if self.balance_usd is None else self.balance_usd * CREDITS_PER_USD


@dataclass(frozen=True, slots=True)
class BillingStatus:
    """``GET /api/billing/status``: subscription and funds, exported separately from the balance."""

    is_active: bool
    has_funds: bool
    subscription_status: str | None
    tier: str | None
    """``subscription_tier``; ``None`` when absent (no subscription)."""
    billing_status: str | None
    billing_rail: str | None
    subscription_duration: str | None
    plan_slug: str | None
    renewal_date: str | None
    cancel_at: str | None
    max_seats: int | None
    occupied_seats: int | None

    @property
    def tier_label(self) -> str:
        """Tier as a bounded label: a documented tier, ``none`` when absent, else ``other``."""
        if self.tier is None:
            return "none"
        return self.tier if self.tier in KNOWN_TIERS else "other"

    @property
    def status_label(self) -> str:
        """Subscription status as a bounded label: documented value, ``none`` or ``other``."""
        if self.subscription_status is None:
            return "none"
        return (
            self.subscription_status if self.subscription_status in KNOWN_SUBSCRIPTION_STATUSES else "other"
        )

    @property
    def billing_status_label(self) -> str:
        """Billing status as a bounded label: documented value, ``none`` or ``other``."""
        if self.billing_status is None:
            return "none"
        return self.billing_status if self.billing_status in KNOWN_BILLING_STATUSES else "other"


@dataclass(frozen=True, slots=True)
class Features:
    """``GET /api/features``; ``max_concurrent_jobs`` is the account's live concurrency limit when sent."""

    max_concurrent_jobs: int | None
    supports_preview_metadata: bool | None
    max_upload_size: int | None
    subscription_required: bool | None


@dataclass(frozen=True, slots=True)
class ExecutionErrorInfo:
    """An ``ExecutionError`` (job detail/list) or WS ``execution_error`` payload, bounded."""

    node_id: str | None
    node_type: str | None
    exception_type: str | None
    exception_message: str
    """At most :data:`MAX_TEXT` characters; never use it as a label."""
    reason: Reason
    """``oom``, ``payment`` or ``execution_error``, from the exception type and the whole message (as a local
    ComfyUI's errors are classified: :func:`~comfywatch.errors.classify_execution_error`)."""


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One output file of a finished job (``outputs[node_id][kind][i]``)."""

    node_id: str
    kind: str
    """The output key, e.g. ``images``, ``video``, ``audio``."""
    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True, slots=True)
class CloudJob:
    """A ``JobEntry`` of ``GET /api/jobs`` (times normalised to epoch milliseconds)."""

    id: str
    status: str
    state: JobState
    create_time_ms: int
    update_time_ms: int | None
    execution_start_ms: int | None
    execution_end_ms: int | None
    workflow_id: str | None
    outputs_count: int | None
    execution_error: ExecutionErrorInfo | None
    failure_reason: Reason | None

    @property
    def execution_seconds(self) -> float | None:
        """Execution time in seconds when both ends are known."""
        if self.execution_start_ms is None or self.execution_end_ms is None:
            return None
        return max(0.0, (self.execution_end_ms - self.execution_start_ms) / 1000.0)


@dataclass(frozen=True, slots=True)
class JobDetail(CloudJob):
    """``GET /api/jobs/{id}``: a :class:`CloudJob` plus outputs and ComfyUI execution status."""

    outputs: tuple[OutputFile, ...]
    status_str: str | None
    completed: bool | None


@dataclass(frozen=True, slots=True)
class JobsPage:
    """One page of ``GET /api/jobs``."""

    jobs: tuple[CloudJob, ...]
    offset: int
    limit: int
    total: int
    has_more: bool
    next_cursor: str | None

    def count_by_group(self) -> dict[str, int]:
        """Number of jobs on this page per group label (``unknown`` for undocumented states)."""
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.state.group_label] = counts.get(job.state.group_label, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class JobStatus:
    """``GET /api/job/{id}/status`` with the raw state classified."""

    id: str
    status: str
    state: JobState
    failure_reason: Reason | None
    created_ms: int | None
    updated_ms: int | None
    last_state_update_ms: int | None
    assigned_inference: str | None
    error_message: str | None
    """At most :data:`MAX_TEXT` characters; never use it as a label."""


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """A 200 answer of ``POST /api/prompt``."""

    prompt_id: str
    number: int | None
    node_error_count: int


# ---------------------------------------------------------------------------------------------------------
# Field helpers (messages name the JSON path, never the value)


def _obj(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ParseError(f"{path}: expected object")
    return value


def _str(value: object, path: str, limit: int = MAX_CHARS) -> str:
    if not isinstance(value, str):
        raise ParseError(f"{path}: expected string")
    return bounded(value, limit)


def _opt_str(value: object, path: str, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    return _str(value, path, limit)


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ParseError(f"{path}: expected boolean")
    return value


def _opt_bool(value: object, path: str) -> bool | None:
    return None if value is None else _bool(value, path)


def _int(value: object, path: str) -> int:
    """An integer (or integral float, or digit string) of at most :data:`_MAX_FLOAT_INT` in magnitude."""
    if isinstance(value, bool):
        raise ParseError(f"{path}: expected integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _DIGITS_RE.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise ParseError(f"{path}: expected integer")
    if abs(number) > _MAX_FLOAT_INT:
        raise ParseError(f"{path}: number out of range")
    return number


def _opt_int(value: object, path: str) -> int | None:
    return None if value is None else _int(value, path)


def _opt_count(value: object, path: str) -> int | None:
    number = _opt_int(value, path)
    if number is not None and number < 0:
        raise ParseError(f"{path}: expected non-negative integer")
    return number


def _number(value: object, path: str) -> float:
    """A finite JSON number or decimal string."""
    if isinstance(value, bool):
        raise ParseError(f"{path}: expected number")
    if isinstance(value, int):
        if abs(value) > _MAX_FLOAT_INT:
            raise ParseError(f"{path}: number out of range")
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParseError(f"{path}: expected finite number")
        return value
    if isinstance(value, str):
        try:
            dec = Decimal(value.strip())
        except InvalidOperation:
            raise ParseError(f"{path}: expected decimal string") from None
        if not dec.is_finite():
            raise ParseError(f"{path}: expected finite number")
        result = float(dec)
        if not math.isfinite(result):
            raise ParseError(f"{path}: number out of range")
        return result
    raise ParseError(f"{path}: expected number")


def _time_ms(value: object, path: str) -> int | None:
    """Epoch time as ms from seconds, ms (> 1e12) or an ISO-8601 string; ``None`` when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if _DIGITS_RE.fullmatch(text):
            return _time_ms(int(text), path)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ParseError(f"{path}: expected timestamp") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return round(parsed.timestamp() * 1000)
    number = _number(value, path)
    if number < 0:
        raise ParseError(f"{path}: expected non-negative timestamp")
    if number > _MS_THRESHOLD:
        return round(number)
    return round(number * 1000)


def _token(value: object) -> str | None:
    if isinstance(value, str) and _TOKEN_RE.fullmatch(value):
        return value
    return None


def _clean_text(value: object) -> str | None:
    """Free text made safe to keep: control characters collapsed, key-like words redacted, bounded."""
    if not isinstance(value, str):
        return None
    return bounded(_SECRET_RE.sub("[REDACTED]", sanitize(value).strip()), MAX_TEXT)


# ---------------------------------------------------------------------------------------------------------
# Account


def parse_user(body: object) -> CloudUser:
    """Parse ``GET /api/user`` (``{"id": ..., "status": "active"}``; ``status`` is required)."""
    obj = _obj(body, "$")
    return CloudUser(
        id=_opt_str(obj.get("id"), "id", 128),
        status=_str(obj.get("status"), "status", 64),
    )


_BALANCE_FIELDS = (
    "effective_balance_micros",
    "amount_micros",
    "prepaid_balance_micros",
    "cloud_credit_balance_micros",
)


def parse_balance(body: object, divisor: float = 100.0) -> Balance:
    """Parse ``GET /api/billing/balance`` into dollars.

    Args:
        body: the decoded response; ``*_micros`` values may be JSON numbers or decimal strings.
        divisor: units per dollar of the ``*_micros`` fields: 100 (cents, what the Cloud sends) or
            1 000 000 if it ever sends real micros.

    Raises:
        ParseError: the body is not an object or a field is not a number.
        ValueError: ``divisor`` is not a positive finite number (a configuration bug, not a response).
    """
    if not (math.isfinite(divisor) and divisor > 0):
        raise ValueError("divisor must be a positive finite number")
    obj = _obj(body, "$")

    def usd(name: str) -> float | None:
        value = obj.get(name)
        return None if value is None else _number(value, name) / divisor

    values = {name: usd(name) for name in (*_BALANCE_FIELDS, "pending_charges_micros")}
    present = [values[name] for name in _BALANCE_FIELDS if values[name] is not None]
    balance: float | None = None
    if present:
        # comfy-cli: the first non-zero field wins; all-zero is a real zero balance.
        balance = next((value for value in present if value != 0), 0.0)
    return Balance(
        balance_usd=balance,
        effective_usd=values["effective_balance_micros"],
        amount_usd=values["amount_micros"],
        prepaid_usd=values["prepaid_balance_micros"],
        cloud_credit_usd=values["cloud_credit_balance_micros"],
        pending_charges_usd=values["pending_charges_micros"],
        currency=_opt_str(obj.get("currency"), "currency", 16),
    )


def trusted_balance_usd(balance: Balance, status: BillingStatus | None) -> float | None:
    """The balance to export, or ``None`` when it cannot be trusted (a gap in the Cloud's billing data).

    Paying customers whose billing rows were mid-migration saw "$0.00": a zero (or absent) balance together
    with ``has_funds=false`` and no subscription tier is therefore unknown, not an empty account.
    """
    if balance.balance_usd is None:
        return None
    gap = status is not None and not status.has_funds and status.tier is None
    if balance.balance_usd == 0 and gap:
        return None
    return balance.balance_usd


def parse_billing_status(body: object) -> BillingStatus:
    """Parse ``GET /api/billing/status``; ``is_active`` and ``has_funds`` are required, enums are open.

    The legacy api.comfy.org rail spells ``has_funds`` as ``has_fund``; both are accepted.
    """
    obj = _obj(body, "$")
    funds = obj.get("has_funds", obj.get("has_fund"))
    return BillingStatus(
        is_active=_bool(obj.get("is_active"), "is_active"),
        has_funds=_bool(funds, "has_funds"),
        subscription_status=_opt_str(obj.get("subscription_status"), "subscription_status", 64),
        tier=_opt_str(obj.get("subscription_tier"), "subscription_tier", 64),
        billing_status=_opt_str(obj.get("billing_status"), "billing_status", 64),
        billing_rail=_opt_str(obj.get("billing_rail"), "billing_rail", 64),
        subscription_duration=_opt_str(obj.get("subscription_duration"), "subscription_duration", 64),
        plan_slug=_opt_str(obj.get("plan_slug"), "plan_slug", 64),
        renewal_date=_opt_str(obj.get("renewal_date"), "renewal_date", 64),
        cancel_at=_opt_str(obj.get("cancel_at"), "cancel_at", 64),
        max_seats=_opt_count(obj.get("max_seats"), "max_seats"),
        occupied_seats=_opt_count(obj.get("occupied_seats"), "occupied_seats"),
    )


def parse_features(body: object) -> Features:
    """Parse ``GET /api/features``; every field is optional (``max_concurrent_jobs`` is in no schema)."""
    obj = _obj(body, "$")
    limit = _opt_count(obj.get("max_concurrent_jobs"), "max_concurrent_jobs")
    return Features(
        max_concurrent_jobs=limit,
        supports_preview_metadata=_opt_bool(
            obj.get("supports_preview_metadata"), "supports_preview_metadata"
        ),
        max_upload_size=_opt_count(obj.get("max_upload_size"), "max_upload_size"),
        subscription_required=_opt_bool(obj.get("subscription_required"), "subscription_required"),
    )


# ---------------------------------------------------------------------------------------------------------
# Queue and submit


def _queue_item(value: object, path: str) -> QueueItem:
    if not isinstance(value, list) or len(value) < 2:
        raise ParseError(f"{path}: expected array of at least 2 items")
    created: int | None = None
    if len(value) > 4 and value[4] is not None:
        created = _time_ms(_obj(value[4], f"{path}[4]").get("create_time"), f"{path}[4].create_time")
    return QueueItem(
        number=float(_int(value[0], f"{path}[0]")),
        prompt_id=_str(value[1], f"{path}[1]", 128),
        client_id=None,
        create_time_ms=created,
    )


def parse_cloud_queue(body: object) -> QueueSnapshot:
    """Parse ``GET /api/queue`` (5-tuples; missing lists count as empty), bounded as a local ``/queue`` is
    (:func:`~comfywatch.parse.queue.snapshot_of`)."""
    obj = _obj(body, "$")
    lists: dict[str, list[object]] = {}
    for key in ("queue_running", "queue_pending"):
        raw = obj.get(key)
        if raw is not None and not isinstance(raw, list):
            raise ParseError(f"{key}: expected array")
        lists[key] = raw or []
    return snapshot_of(lists["queue_running"], lists["queue_pending"], _queue_item)


def parse_queue_remaining(body: object) -> int:
    """Parse ``GET /api/prompt`` (``{"exec_info": {"queue_remaining": N}}``)."""
    info = _obj(_obj(body, "$").get("exec_info"), "exec_info")
    remaining = _opt_count(info.get("queue_remaining"), "exec_info.queue_remaining")
    if remaining is None:
        raise ParseError("exec_info.queue_remaining: expected integer")
    return remaining


def parse_submit(body: object) -> SubmitResult:
    """Parse a 200 answer of ``POST /api/prompt``.

    Raises:
        ParseError: no ``prompt_id`` (a 200 carrying a top-level ``error`` object also lands here: the
            answer is not what a submit gets, an ``invalid_response``).
    """
    obj = _obj(body, "$")
    if isinstance(obj.get("error"), dict) and "prompt_id" not in obj:
        raise ParseError("error: 200 answer carries an error object")
    prompt_id = _str(obj.get("prompt_id"), "prompt_id")
    if not prompt_id or len(prompt_id) > 128:
        raise ParseError("prompt_id: expected a non-empty id")
    node_errors = obj.get("node_errors")
    count = len(node_errors) if isinstance(node_errors, dict) else 0
    # ``number`` is ignored by the Cloud and typed "number" in the spec: keep it only when integral.
    try:
        number: int | None = _opt_int(obj.get("number"), "number")
    except ParseError:
        number = None
    return SubmitResult(prompt_id=prompt_id, number=number, node_error_count=count)


# ---------------------------------------------------------------------------------------------------------
# Jobs


def _execution_error(value: object, path: str) -> ExecutionErrorInfo | None:
    if value is None:
        return None
    obj = _obj(value, path)
    kind, message = obj.get("exception_type"), obj.get("exception_message")
    return ExecutionErrorInfo(
        node_id=_token(obj.get("node_id")),
        node_type=_token(obj.get("node_type")),
        exception_type=_token(kind),
        exception_message=_clean_text(message) or "",
        reason=classify_execution_error(kind, message),
    )


def _job(obj: Mapping[str, object]) -> CloudJob:
    """The fields a list entry and a detail share."""
    job_id = _str(obj.get("id"), "id")
    if not job_id or len(job_id) > 128:
        raise ParseError("id: expected a non-empty id")
    status = _str(obj.get("status"), "status", 64)
    created = _time_ms(obj.get("create_time"), "create_time")
    if created is None:
        raise ParseError("create_time: expected timestamp")
    error = _execution_error(obj.get("execution_error"), "execution_error")
    state = classify_state(status)
    return CloudJob(
        id=job_id,
        status=state.raw,
        state=state,
        create_time_ms=created,
        update_time_ms=_time_ms(obj.get("update_time"), "update_time"),
        execution_start_ms=_time_ms(obj.get("execution_start_time"), "execution_start_time"),
        execution_end_ms=_time_ms(obj.get("execution_end_time"), "execution_end_time"),
        workflow_id=_opt_str(obj.get("workflow_id"), "workflow_id", 128),
        outputs_count=_opt_count(obj.get("outputs_count"), "outputs_count"),
        execution_error=error,
        failure_reason=failure_reason(status, error),
    )


def _job_entry(value: object, path: str) -> CloudJob:
    try:
        return _job(_obj(value, path))
    except ParseError as exc:
        raise ParseError(f"{path}.{exc}") from None


def parse_jobs_list(body: object) -> JobsPage:
    """Parse ``GET /api/jobs`` (grouped statuses; ``create_time`` in seconds or ms)."""
    obj = _obj(body, "$")
    jobs = obj.get("jobs")
    if not isinstance(jobs, list):
        raise ParseError("jobs: expected array")
    page = _obj(obj.get("pagination"), "pagination")
    offset = _opt_count(page.get("offset"), "pagination.offset")
    limit = _opt_count(page.get("limit"), "pagination.limit")
    total = _opt_count(page.get("total"), "pagination.total")
    return JobsPage(
        jobs=tuple(_job_entry(job, f"jobs[{i}]") for i, job in enumerate(jobs)),
        offset=offset or 0,
        limit=limit if limit is not None else len(jobs),
        total=total if total is not None else len(jobs),
        has_more=_bool(page.get("has_more", False), "pagination.has_more"),
        next_cursor=_opt_str(page.get("next_cursor"), "pagination.next_cursor", 512),
    )


def _outputs(value: object) -> tuple[OutputFile, ...]:
    if value is None:
        return ()
    files: list[OutputFile] = []
    for node_id, node_out in _obj(value, "outputs").items():
        if not isinstance(node_out, dict):
            raise ParseError("outputs.*: expected object")
        for kind, items in node_out.items():
            if not isinstance(items, list):
                continue  # e.g. ``animated: [true]`` flags or scalar extras
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    files.append(
                        OutputFile(
                            node_id=bounded(str(node_id), 64),
                            kind=bounded(str(kind), 32),
                            filename=bounded(item["filename"], 255),
                            subfolder=bounded(item["subfolder"], 255)
                            if isinstance(item.get("subfolder"), str)
                            else "",
                            type=bounded(item["type"], 16) if isinstance(item.get("type"), str) else "output",
                        )
                    )
    return tuple(files)


def parse_job_detail(body: object) -> JobDetail:
    """Parse ``GET /api/jobs/{id}`` (outputs, ``execution_status`` and errors only in terminal states)."""
    obj = _obj(body, "$")
    job = _job(obj)
    status_obj = obj.get("execution_status")
    status_str: str | None = None
    completed: bool | None = None
    if status_obj is not None:
        execution_status = _obj(status_obj, "execution_status")
        status_str = _opt_str(execution_status.get("status_str"), "execution_status.status_str", 32)
        completed = _opt_bool(execution_status.get("completed"), "execution_status.completed")
    return JobDetail(
        id=job.id,
        status=job.status,
        state=job.state,
        create_time_ms=job.create_time_ms,
        update_time_ms=job.update_time_ms,
        execution_start_ms=job.execution_start_ms,
        execution_end_ms=job.execution_end_ms,
        workflow_id=job.workflow_id,
        outputs_count=job.outputs_count,
        execution_error=job.execution_error,
        failure_reason=job.failure_reason,
        outputs=_outputs(obj.get("outputs")),
        status_str=status_str,
        completed=completed,
    )


def parse_job_status(body: object) -> JobStatus:
    """Parse ``GET /api/job/{id}/status``: a *raw* state (not the spec enum), ISO times."""
    obj = _obj(body, "$")
    job_id = _str(obj.get("id"), "id")
    if not job_id or len(job_id) > 128:
        raise ParseError("id: expected a non-empty id")
    status = _str(obj.get("status"), "status", 64)
    state = classify_state(status)
    return JobStatus(
        id=job_id,
        status=state.raw,
        state=state,
        failure_reason=failure_reason(status),
        created_ms=_time_ms(obj.get("created_at"), "created_at"),
        updated_ms=_time_ms(obj.get("updated_at"), "updated_at"),
        last_state_update_ms=_time_ms(obj.get("last_state_update"), "last_state_update"),
        assigned_inference=_opt_str(obj.get("assigned_inference"), "assigned_inference", 128),
        error_message=_clean_text(obj.get("error_message")) if obj.get("error_message") is not None else None,
    )
