"""State of one simulated Comfy Cloud account: jobs and their scheduling, billing, faults and counters.

Time is simulated: a job holds a concurrency slot for ``dispatch_ms`` in ``pending_execution`` and then
``exec_ms`` in ``executing``. Nothing here sleeps; :meth:`SimCloud.advance` applies every transition due by
the clock (``clock`` returns epoch ms and may be replaced in tests), and the HTTP layer calls it on each
request and from a ticker so WebSocket events flow without polling. No aiohttp in this module.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from comfywatch.sim.cloud import render
from comfywatch.sim.cloud.jobs import FAULTS, OUTPUT_NODE_TYPES, TIER_CONCURRENCY, PromptPlan, SimJob, safe_prefix

__all__ = ["Listener", "SignedFile", "SimCloud"]

Listener = Callable[[int, dict[str, Any]], None]
"""Receives ``(owner, websocket_message)`` for every event of a user's jobs."""

_SUBSCRIPTION_MESSAGE = "A cloud subscription is required to queue workflows."
_CREDITS_MESSAGE = "Insufficient credits. Add credits to continue."


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SignedFile:
    """An output file behind a signed URL."""

    owner: int
    filename: str
    width: int
    height: int
    color: int  # 0xRRGGBB, as EmptyImage's input


class SimCloud:
    """A simulated Comfy Cloud account with fault switches (see ``FAULTS``).

    Every key in ``api_keys`` is one user with its own queue and concurrency slots; billing (tier and
    balance) is shared, like the seats of one workspace. Attributes that tests and the sim CLI may change at
    any time: ``tier``, ``balance_cents``, ``exec_ms``, ``dispatch_ms``, ``queue_limit``, ``job_cost_cents``,
    ``retry_after_s`` (``None`` leaves the ``Retry-After`` header out), ``slow_ms``, ``payment_error_type``
    (``error.type`` of the ``http_402`` fault), ``billing_429_type`` (of ``http_429_payment``),
    ``reject_leaks`` (signed URL answers 400 when credentials are sent), ``clock``.
    """

    def __init__(
        self,
        *,
        api_keys: Sequence[str],
        faults: Iterable[str] = (),
        tier: str = "CREATOR",
        balance_cents: int = 6000,
        exec_ms: int = 50,
        queue_limit: int = 20,
    ) -> None:
        """Create the account; raises ValueError on no keys or an unknown fault name."""
        if isinstance(api_keys, str) or not api_keys or not all(api_keys):
            raise ValueError("api_keys must be a non-empty sequence of non-empty strings")
        self._owners: dict[str, int] = {}
        for key in api_keys:
            self._owners.setdefault(key, len(self._owners))
        self.faults: frozenset[str] = _checked_faults(faults)
        self.tier = tier
        self.balance_cents = balance_cents
        self._prepaid_cap = max(0, balance_cents // 6)
        self.exec_ms = exec_ms
        self.dispatch_ms = 10
        self.queue_limit = queue_limit
        self.job_cost_cents = 5
        self.retry_after_s: int | None = 5
        self.slow_ms = 3000
        self.payment_error_type = "PAYMENT_REQUIRED"
        self.billing_429_type = "FREE_TIER_EXHAUSTED"
        self.reject_leaks = False
        self.max_jobs_kept = 1000
        self.clock: Callable[[], int] = _wall_ms
        self.jobs: dict[str, SimJob] = {}
        #: Prompt ids removed from history views by POST /api/history (the jobs themselves stay in /api/jobs).
        self.history_deleted: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.requests_by_method: Counter[str] = Counter()
        self.key_leaks = 0
        self.signed_fetches = 0
        self.ws_connections = 0
        self._number = 0
        self._file_counter = 0
        self._files: dict[str, SignedFile] = {}
        self._blobs: dict[str, str] = {}
        self._secret = secrets.token_bytes(32)
        self._listeners: list[Listener] = []

    # -- configuration -----------------------------------------------------------------------------------

    def set_faults(self, names: Iterable[str]) -> None:
        """Replace the active faults; raises ValueError naming any unknown fault.

        Time is settled first so that a cleared ``stuck_jobs`` frees its jobs from this moment on.
        """
        wanted = _checked_faults(names)
        self.advance()
        self.faults = wanted
        self.advance()

    def add_listener(self, listener: Listener) -> None:
        """Receive every WebSocket event from now on."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop delivering events to ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- identity and billing ----------------------------------------------------------------------------

    def owner_for_key(self, key: str | None) -> int | None:
        """The user index of an API key, or ``None`` (wrong key, missing key or the ``http_401`` fault)."""
        if key is None or "http_401" in self.faults:
            return None
        for known, owner in self._owners.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return owner
        return None

    @staticmethod
    def user_id(owner: int) -> str:
        """The (Firebase-uid-like) id ``/api/user`` reports for a user."""
        return f"simuser{owner + 1:04d}"

    @staticmethod
    def workspace_id(owner: int) -> str:
        """The workspace id job details carry."""
        return f"w-sim-{owner + 1}"

    @property
    def subscription_active(self) -> bool:
        """False under the ``inactive_subscription`` fault."""
        return "inactive_subscription" not in self.faults

    def concurrency_limit(self) -> int:
        """Jobs one user may run at once (Standard 1, Creator 3, Pro 5; unknown tiers 1)."""
        return TIER_CONCURRENCY.get(self.tier.upper(), 1)

    def pending_cents(self) -> int:
        """Charges reserved by executing jobs."""
        return sum(job.pending_cents for job in self.jobs.values())

    def effective_cents(self) -> int:
        """Balance minus pending charges; may be negative."""
        return self.balance_cents - self.pending_cents()

    def has_funds(self) -> bool:
        """What ``/api/billing/status`` says in ``has_funds``."""
        return "http_402" not in self.faults and self.effective_cents() > 0

    def balance_body(self) -> dict[str, Any]:
        """``/api/billing/balance``: despite their names the ``*_micros`` fields hold cents; credit drains first."""
        amount = max(0, self.balance_cents)
        prepaid = min(amount, self._prepaid_cap)
        return {
            "amount_micros": amount,
            "prepaid_balance_micros": prepaid,
            "cloud_credit_balance_micros": amount - prepaid,
            "pending_charges_micros": self.pending_cents(),
            "effective_balance_micros": self.effective_cents(),
            "currency": "usd",
        }

    def billing_status_body(self) -> dict[str, Any]:
        """``/api/billing/status``; ``subscription_tier`` is absent without a subscription."""
        body: dict[str, Any] = {
            "is_active": self.subscription_active,
            "has_funds": self.has_funds() and self.subscription_active,
            "billing_rail": "stripe",
            "max_seats": 1,
            "occupied_seats": 1,
            "team_credit_stop": None,
            "cancel_at": None,
        }
        if self.subscription_active:
            body.update(
                {
                    "subscription_status": "active",
                    "subscription_tier": self.tier,
                    "subscription_duration": "MONTHLY",
                    "plan_slug": f"{self.tier.lower()}-monthly",
                    "billing_status": "paid",
                    "renewal_date": render.iso(self.clock() + 30 * 86_400_000),
                }
            )
        else:
            body.update({"subscription_status": "ended", "billing_status": "inactive", "renewal_date": None})
        return body

    def features_body(self, owner: int | None) -> dict[str, Any]:
        """``/api/features``; ``max_concurrent_jobs`` only for an authenticated, subscribed user."""
        body: dict[str, Any] = {"supports_preview_metadata": True, "max_upload_size": 104_857_600}
        if owner is not None:
            if self.subscription_active:
                body["max_concurrent_jobs"] = self.concurrency_limit()
            else:
                body["subscription_required"] = True
        return body

    # -- submitting ----------------------------------------------------------------------------------------

    def submit_refusal(self, owner: int) -> tuple[int, dict[str, Any]] | None:
        """The 402/429 a submit gets before a job is created, or ``None`` to accept it."""
        if not self.subscription_active:
            return 402, render.prompt_error("PAYMENT_REQUIRED", _SUBSCRIPTION_MESSAGE)
        if "http_402" in self.faults:
            return 402, render.prompt_error(self.payment_error_type, _CREDITS_MESSAGE)
        if self.effective_cents() <= 0:
            return 402, render.prompt_error("PAYMENT_REQUIRED", _CREDITS_MESSAGE)
        if "http_429_payment" in self.faults:
            return 429, render.prompt_error(
                self.billing_429_type, "Your plan does not allow more runs right now."
            )
        if "http_429_queue_limit" in self.faults or len(self.waiting(owner)) >= self.queue_limit:
            return 429, render.prompt_error("QUEUE_LIMIT", "Queue limit reached. Retry when jobs finish.")
        return None

    def submit(self, owner: int, plan: PromptPlan) -> SimJob:
        """Accept a checked prompt for ``owner`` and schedule it."""
        now = self.clock()
        self.advance(now)
        self._number += 1
        job = SimJob(
            id=str(uuid.uuid4()),
            owner=owner,
            number=self._number,
            prompt=plan.prompt,
            extra_data=plan.extra_data,
            output_nodes=plan.output_nodes,
            workflow_id=plan.workflow_id or str(uuid.uuid5(uuid.NAMESPACE_OID, repr(sorted(plan.prompt)))),
            create_ms=now,
            state_ms=now,
        )
        self.jobs[job.id] = job
        self._emit_status(owner)
        self._fill_slots(owner, now)
        self._prune()
        return job

    # -- queries -------------------------------------------------------------------------------------------

    def jobs_of(self, owner: int) -> list[SimJob]:
        """All remembered jobs of a user, oldest first."""
        return [job for job in self.jobs.values() if job.owner == owner]

    def waiting(self, owner: int) -> list[SimJob]:
        """Jobs of a user without a slot, oldest first."""
        return [job for job in self.jobs.values() if job.owner == owner and job.waiting]

    def active(self, owner: int) -> list[SimJob]:
        """Jobs of a user holding a slot, oldest first."""
        return [job for job in self.jobs.values() if job.owner == owner and job.holds_slot]

    def queue_remaining(self, owner: int) -> int:
        """Running plus waiting jobs of a user."""
        return sum(1 for job in self.jobs.values() if job.owner == owner and not job.terminal)

    def file_for(self, owner: int, filename: str) -> SignedFile | None:
        """An output file of one of the user's jobs."""
        spec = self._files.get(filename)
        return spec if spec is not None and spec.owner == owner else None

    # -- cancelling ----------------------------------------------------------------------------------------

    def cancel(self, job: SimJob) -> bool:
        """Cancel a job that has not finished; True when it was cancelled now."""
        if job.terminal:
            return False
        now = self.clock()
        was_executing = job.state == "executing"
        had_slot = job.holds_slot
        job.pending_cents = 0
        self._set_state(job, "cancelled", now)
        if job.start_ms is not None:
            job.end_ms = now
        if was_executing:
            first = job.node_ids()[0]
            interrupted = {
                "prompt_id": job.id,
                "node_id": first,
                "node_type": job.class_type(first),
                "executed": [],
                "timestamp": now,
            }
            job.messages.append(["execution_interrupted", interrupted])
            self._emit(job.owner, render.ws("execution_interrupted", interrupted))
        self._emit_status(job.owner)
        if had_slot:
            self._emit(job.owner, render.ws("executing", {"node": None, "prompt_id": job.id}))
        self._fill_slots(job.owner, now)
        return True

    def interrupt(self, owner: int, prompt_id: str | None = None) -> SimJob | None:
        """``POST /api/interrupt``: cancel the given running job, else the user's oldest running one."""
        running = self.active(owner)
        if prompt_id is not None:
            running = [job for job in running if job.id == prompt_id]
        if not running:
            return None
        self.cancel(running[0])
        return running[0]

    # -- simulated time ------------------------------------------------------------------------------------

    def next_due_ms(self) -> int | None:
        """When the next transition is due (for the ticker), or ``None`` when nothing is scheduled."""
        dues = [due for job in self.jobs.values() if (due := self._due(job)) is not None]
        return min(dues) if dues else None

    def advance(self, now: int | None = None) -> None:
        """Apply, in time order, every transition due at or before ``now`` (default: the clock)."""
        if now is None:
            now = self.clock()
        while True:
            candidates = [
                (due, job.number, job) for job in self.jobs.values() if (due := self._due(job)) is not None
            ]
            if not candidates:
                break
            due, _, job = min(candidates, key=lambda item: (item[0], item[1]))
            if due > now:
                break
            self._step(job, due)
        for owner in {job.owner for job in self.jobs.values() if job.waiting}:
            self._fill_slots(owner, now)

    def _due(self, job: SimJob) -> int | None:
        if job.state == "pending_execution" and job.slot_ms is not None:
            return job.slot_ms + self.dispatch_ms
        if job.state == "executing" and job.start_ms is not None:
            return job.start_ms + self.exec_ms
        return None

    def _step(self, job: SimJob, at: int) -> None:
        if job.state == "pending_execution":
            self._start(job, at)
        else:
            self._finish(job, at)
            self._fill_slots(job.owner, at)

    def _fill_slots(self, owner: int, at: int) -> None:
        stuck = "stuck_jobs" in self.faults
        free = self.concurrency_limit() - len(self.active(owner))
        for job in self.waiting(owner):
            if not stuck and free > 0:
                job.slot_ms = at
                self._set_state(job, "pending_execution", at)
                free -= 1
            elif job.state == "submitted":
                self._set_state(job, "queued_limited", at)

    def _start(self, job: SimJob, at: int) -> None:
        job.start_ms = at
        job.pending_cents = self.job_cost_cents
        self._set_state(job, "executing", at)
        first = job.node_ids()[0]
        start = {"prompt_id": job.id, "timestamp": at}
        cached = {"nodes": [], "prompt_id": job.id, "timestamp": at}
        job.messages = [["execution_start", start], ["execution_cached", cached]]
        self._emit(job.owner, render.ws("execution_start", start))
        self._emit(job.owner, render.ws("execution_cached", cached))
        self._emit(
            job.owner, render.ws("executing", {"node": first, "display_node": first, "prompt_id": job.id})
        )

    def _finish(self, job: SimJob, at: int) -> None:
        job.end_ms = at
        charge, job.pending_cents = job.pending_cents, 0
        if "lost" in self.faults:
            # A lost job just stops: no execution_error, no charge; only polling its status shows it.
            job.error_message = "Job lost: the worker stopped responding."
            self._set_state(job, "lost", at)
            self._emit_status(job.owner)
            return
        if "insufficient_funds_runtime" in self.faults:
            # [unverified] a funds failure cannot succeed on retry, so it ends non_retryable_error.
            self._fail(
                job, at, "non_retryable_error", "InsufficientFundsError", "Insufficient funds to run job."
            )
            return
        self.balance_cents -= charge
        if "oom" in self.faults:
            self._fail(job, at, "error", "OOMError", "Allocation on device would exceed allowed memory.")
            return
        for node_id in job.node_ids()[1:]:
            self._emit(
                job.owner,
                render.ws("executing", {"node": node_id, "display_node": node_id, "prompt_id": job.id}),
            )
        for node_id in job.output_nodes:
            output = self._make_output(job, node_id)
            job.outputs[node_id] = output
            executed = {"node": node_id, "display_node": node_id, "output": output, "prompt_id": job.id}
            self._emit(job.owner, render.ws("executed", executed))
        success = {"prompt_id": job.id, "timestamp": at}
        job.messages.append(["execution_success", success])
        self._set_state(job, "success", at)
        self._emit(job.owner, render.ws("execution_success", success))
        self._emit_status(job.owner)
        self._emit(job.owner, render.ws("executing", {"node": None, "prompt_id": job.id}))

    def _fail(self, job: SimJob, at: int, state: str, exception_type: str, message: str) -> None:
        job.error = render.execution_error(job, exception_type, message)
        job.error_message = message
        payload = {"prompt_id": job.id, **job.error, "executed": [], "timestamp": at}
        job.messages.append(["execution_error", payload])
        self._set_state(job, state, at)
        self._emit(job.owner, render.ws("execution_error", payload))
        self._emit_status(job.owner)
        self._emit(job.owner, render.ws("executing", {"node": None, "prompt_id": job.id}))

    def _make_output(self, job: SimJob, node_id: str) -> dict[str, Any]:
        node = job.prompt[node_id]
        kind = OUTPUT_NODE_TYPES[node["class_type"]]
        if kind == "text":
            return {"text": ["comfywatch sim"]}
        self._file_counter += 1
        if kind == "output":
            prefix = safe_prefix(_inputs(node).get("filename_prefix"))
            filename = f"{prefix}_{self._file_counter:05d}_.png"
        else:
            filename = f"ComfyUI_temp_sim{job.number % 100000:05d}_{self._file_counter:05d}_.png"
        width, height, color = _image_spec(job, node)
        self._files[filename] = SignedFile(
            owner=job.owner, filename=filename, width=width, height=height, color=color
        )
        job.files.append(filename)
        return {"images": [{"filename": filename, "subfolder": "", "type": kind}]}

    def _set_state(self, job: SimJob, state: str, at: int) -> None:
        job.state = state
        job.state_ms = at

    def _emit(self, owner: int, message: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(owner, message)

    def _emit_status(self, owner: int) -> None:
        self._emit(
            owner,
            render.ws("status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining(owner)}}}),
        )

    def _prune(self) -> None:
        excess = len(self.jobs) - self.max_jobs_kept
        if excess <= 0:
            return
        for job in [job for job in self.jobs.values() if job.terminal][:excess]:
            del self.jobs[job.id]
            self.history_deleted.discard(job.id)
            for filename in job.files:
                self._files.pop(filename, None)
                self._blobs.pop(_blob_of(job.owner, filename), None)

    # -- signed URLs ---------------------------------------------------------------------------------------

    def sign(self, spec: SignedFile, expires_s: int = 900) -> str:
        """Path and query of a GCS-style signed URL for an output file (served by ``/_signed/{blob}``)."""
        blob = _blob_of(spec.owner, spec.filename)
        self._blobs[blob] = spec.filename
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock() / 1000))
        signature = self._signature(blob, date, str(expires_s))
        return (
            f"/_signed/{blob}?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sim%40comfy-sim"
            f"&X-Goog-Date={date}&X-Goog-Expires={expires_s}&X-Goog-SignedHeaders=host"
            f"&X-Goog-Signature={signature}"
        )

    def signed_file(self, blob: str, date: str, expires: str, signature: str) -> SignedFile | str:
        """The file behind a signed URL, or a GCS error code such as ``SignatureDoesNotMatch``."""
        if not hmac.compare_digest(self._signature(blob, date, expires), signature):
            return "SignatureDoesNotMatch"
        try:
            signed_at = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
            lifetime = int(expires)
        except (ValueError, OverflowError):
            return "SignatureDoesNotMatch"
        if self.clock() / 1000 > signed_at + lifetime:
            return "ExpiredToken"
        spec = self._files.get(self._blobs.get(blob, ""))
        return spec if spec is not None else "NoSuchKey"

    def _signature(self, blob: str, date: str, expires: str) -> str:
        return hmac.new(self._secret, f"{blob}\n{date}\n{expires}".encode(), hashlib.sha256).hexdigest()

    # -- reporting -----------------------------------------------------------------------------------------

    def count_request(self, method: str, route: str) -> None:
        """Count one request by route template (bounded: never the raw path)."""
        self.requests[route] += 1
        self.requests_by_method[f"{method} {route}"] += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for the sim admin API and tests."""
        states = Counter(job.state for job in self.jobs.values())
        return {
            "faults": sorted(self.faults),
            "tier": self.tier,
            "concurrency_limit": self.concurrency_limit(),
            "queue_limit": self.queue_limit,
            "exec_ms": self.exec_ms,
            "slow_ms": self.slow_ms,
            "retry_after_s": self.retry_after_s,
            "balance": {
                "balance_cents": self.balance_cents,
                "pending_cents": self.pending_cents(),
                "effective_cents": self.effective_cents(),
                "job_cost_cents": self.job_cost_cents,
            },
            "jobs": dict(sorted(states.items())),
            "jobs_submitted": self._number,
            "requests": dict(sorted(self.requests.items())),
            "requests_by_method": dict(sorted(self.requests_by_method.items())),
            "key_leaks": self.key_leaks,
            "signed_fetches": self.signed_fetches,
            "ws_connections": self.ws_connections,
        }


def _checked_faults(names: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(names)
    unknown = sorted(wanted - FAULTS.keys())
    if unknown:
        known = ", ".join(sorted(FAULTS))
        raise ValueError(f"unknown cloud fault(s): {', '.join(unknown)}; known: {known}")
    return wanted


def _blob_of(owner: int, filename: str) -> str:
    return hashlib.sha256(f"{owner}:{filename}".encode()).hexdigest()[:40]


def _inputs(node: object) -> dict[str, Any]:
    inputs = node.get("inputs") if isinstance(node, dict) else None
    return inputs if isinstance(inputs, dict) else {}


def _image_spec(job: SimJob, node: dict[str, Any]) -> tuple[int, int, int]:
    """Size and colour of the image an output node saves: from an upstream ``EmptyImage`` when linked."""
    width, height, color = 64, 64, 0
    link = _inputs(node).get("images")
    source = job.prompt.get(str(link[0])) if isinstance(link, list) and link else None
    if isinstance(source, dict) and source.get("class_type") == "EmptyImage":
        inputs = _inputs(source)
        width = _clamp(inputs.get("width"), 64)
        height = _clamp(inputs.get("height"), 64)
        raw_color = inputs.get("color")
        color = raw_color if isinstance(raw_color, int) and 0 <= raw_color <= 0xFFFFFF else 0
    return width, height, color


def _clamp(value: object, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return min(max(value, 1), 512)
    return default
