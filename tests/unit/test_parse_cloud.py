"""Pure Comfy Cloud parsers: example bodies, the raw-state table, fuzzing."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfywatch.errors import ParseError, Reason
from comfywatch.parse.cloud import (
    MAX_TEXT,
    JobGroup,
    classify_state,
    failure_reason,
    parse_balance,
    parse_billing_status,
    parse_cloud_queue,
    parse_features,
    parse_job_detail,
    parse_job_status,
    parse_jobs_list,
    parse_queue_remaining,
    parse_submit,
    parse_user,
    trusted_balance_usd,
)

JOB_ID = "4f1c2a3e-8d7b-4c6a-9e2f-1a2b3c4d5e6f"

# Example bodies in the shapes the Cloud really sends (docs/cloud.md, section 8).
BALANCE = {
    "amount_micros": 6000,
    "prepaid_balance_micros": 1000,
    "cloud_credit_balance_micros": 5000,
    "pending_charges_micros": 0,
    "effective_balance_micros": 6000,
    "currency": "usd",
}
BILLING_STATUS = {
    "is_active": True,
    "has_funds": True,
    "billing_rail": "stripe",
    "subscription_status": "active",
    "subscription_tier": "CREATOR",
    "subscription_duration": "MONTHLY",
    "plan_slug": "creator-monthly",
    "billing_status": "paid",
    "renewal_date": "2026-09-20T00:00:00Z",
    "cancel_at": None,
    "max_seats": 1,
    "occupied_seats": 1,
    "team_credit_stop": None,
}
JOB_DETAIL = {
    "id": JOB_ID,
    "status": "completed",
    "create_time": 1755684000123,
    "update_time": 1755684012345,
    "execution_start_time": 1755684003000,
    "execution_end_time": 1755684011000,
    "workflow_id": "uuid",
    "user_id": "u",
    "workspace_id": "w-1",
    "outputs": {"2": {"images": [{"filename": "comfywatch_00001_.png", "subfolder": "", "type": "output"}]}},
    "outputs_count": 1,
    "previewable_outputs_count": 1,
    "preview_output": {
        "filename": "comfywatch_00001_.png",
        "subfolder": "",
        "type": "output",
        "nodeId": "2",
        "mediaType": "images",
    },
    "execution_status": {
        "status_str": "success",
        "completed": True,
        "messages": [
            ["execution_start", {"prompt_id": JOB_ID, "timestamp": 1755684003000}],
            ["execution_success", {"prompt_id": JOB_ID, "timestamp": 1755684011000}],
        ],
    },
    "execution_meta": {},
    "workflow": {"prompt": {}, "extra_data": {"api_key_comfy_org": "[REDACTED]"}},
}
JOBS_LIST = {
    "jobs": [{"id": JOB_ID, "status": "in_progress", "create_time": 1755684000123, "workflow_id": "wf"}],
    "pagination": {"offset": 0, "limit": 100, "total": 1, "has_more": False, "next_cursor": "abc"},
}
QUEUE = {
    "queue_running": [
        [1, JOB_ID, {"1": {"class_type": "EmptyImage", "inputs": {}}}, ["2"], {"create_time": 1755684000123}]
    ],
    "queue_pending": [[2, "9a8b", {}, ["2"], {"create_time": 1755684001000}]],
}
JOB_STATUS = {
    "id": JOB_ID,
    "status": "queued_limited",
    "created_at": "2026-08-20T10:00:00Z",
    "updated_at": "2026-08-20T10:00:01Z",
    "last_state_update": "2026-08-20T10:00:01Z",
    "assigned_inference": None,
    "error_message": None,
}
FAILED_JOB = {
    "id": JOB_ID,
    "status": "failed",
    "create_time": 1755684000,
    "update_time": 1755684012,
    "execution_error": {
        "node_id": "3",
        "node_type": "KSampler",
        "exception_message": "CUDA out of memory",
        "exception_type": "OOMError",
        "traceback": [],
        "current_inputs": {},
        "current_outputs": {},
    },
}


class TestStates:
    """Raw job state table (docs/cloud.md, "Job states")."""

    @pytest.mark.parametrize(
        ("raw", "group", "terminal"),
        [
            ("submitted", JobGroup.PENDING, False),
            ("queued_limited", JobGroup.PENDING, False),
            ("queued_waiting", JobGroup.PENDING, False),
            ("allocated", JobGroup.PENDING, False),
            ("preparing", JobGroup.PENDING, False),
            ("pending_execution", JobGroup.PENDING, False),
            ("executing", JobGroup.IN_PROGRESS, False),
            ("executed", JobGroup.IN_PROGRESS, False),
            ("success", JobGroup.COMPLETED, True),
            ("error", JobGroup.FAILED, True),
            ("non_retryable_error", JobGroup.FAILED, True),
            ("lost", JobGroup.FAILED, True),
            ("erroring", JobGroup.FAILED, False),
            ("cancelled", JobGroup.CANCELLED, True),
            ("cancel_requested", JobGroup.CANCELLED, False),
            ("cancel_pending", JobGroup.CANCELLED, False),
            ("cancelling_preparing", JobGroup.CANCELLED, False),
            ("completed", JobGroup.COMPLETED, True),
            ("in_progress", JobGroup.IN_PROGRESS, False),
            ("failed", JobGroup.FAILED, True),
            ("waiting_to_dispatch", JobGroup.PENDING, False),
        ],
    )
    def test_documented_states_have_their_group_and_terminality(
        self, raw: str, group: JobGroup, terminal: bool
    ) -> None:
        """Each raw (and grouped) state maps to the documented group and terminal flag."""
        state = classify_state(raw)
        assert (state.group, state.terminal, state.known) == (group, terminal, True)

    def test_unknown_states_are_in_flight(self) -> None:
        """An undocumented state is not terminal, has no group and labels as 'unknown'."""
        state = classify_state("warming_up")
        assert (state.group, state.terminal, state.known, state.group_label) == (
            None,
            False,
            False,
            "unknown",
        )
        assert failure_reason("warming_up") is None

    @pytest.mark.parametrize(
        ("raw", "exception_type", "reason"),
        [
            ("success", None, None),
            ("executing", None, None),
            ("erroring", "OOMError", None),
            ("error", None, Reason.EXECUTION_ERROR),
            ("error", "OOMError", Reason.OOM),
            ("error", "InsufficientFundsError", Reason.PAYMENT),
            ("error", "InactiveSubscriptionError", Reason.PAYMENT),
            ("error", "PanicError", Reason.EXECUTION_ERROR),
            ("non_retryable_error", None, Reason.EXECUTION_ERROR),
            ("non_retryable_error", "InsufficientFundsError", Reason.PAYMENT),
            ("failed", "OOMError", Reason.OOM),
            ("lost", None, Reason.LOST),
            ("cancelled", None, Reason.INTERRUPTED),
        ],
    )
    def test_failure_reasons(self, raw: str, exception_type: str | None, reason: Reason | None) -> None:
        """Failures are execution_error/oom/payment by their execution error; lost and cancelled have their
        own; a failed job without an execution error is an execution_error."""
        error = {"node_id": "3", "exception_type": exception_type, "exception_message": "boom"}
        body = {**FAILED_JOB, "status": raw, "execution_error": error if exception_type else None}
        assert parse_job_detail(body).failure_reason is reason


class TestAccount:
    """/api/user, /api/billing/*, /api/features."""

    def test_user(self) -> None:
        """The internal shape {id, status} parses; status is required."""
        user = parse_user({"id": "firebase-uid", "status": "active"})
        assert (user.id, user.active) == ("firebase-uid", True)
        assert not parse_user({"status": "waitlisted"}).active
        with pytest.raises(ParseError, match="status"):
            parse_user({"id": "x"})

    def test_balance_example_is_cents(self) -> None:
        """6000 in *_micros is $60 with the default cents divisor (12,660 credits)."""
        balance = parse_balance(BALANCE)
        assert (balance.balance_usd, balance.effective_usd, balance.amount_usd) == (60.0, 60.0, 60.0)
        assert (balance.prepaid_usd, balance.cloud_credit_usd, balance.pending_charges_usd) == (
            10.0,
            50.0,
            0.0,
        )
        assert balance.currency == "usd"
        assert balance.balance_credits == pytest.approx(12660)
        assert parse_balance(BALANCE, divisor=1_000_000).balance_usd == pytest.approx(0.006)

    def test_balance_picks_the_first_non_zero_field_like_comfy_cli(self) -> None:
        """effective, amount, prepaid, cloud credit: the first non-zero wins; all-zero is a real 0."""
        assert parse_balance({"effective_balance_micros": 0, "amount_micros": 500}).balance_usd == 5.0
        body = {"effective_balance_micros": 0, "amount_micros": 0, "cloud_credit_balance_micros": 250}
        assert parse_balance(body).balance_usd == 2.5
        assert parse_balance({"amount_micros": 0, "currency": "usd"}).balance_usd == 0.0

    def test_balance_with_no_fields_is_unknown_not_zero(self) -> None:
        """All balance fields absent (or null) means unknown (None), never 0."""
        for body in ({}, {"currency": "usd"}, {"amount_micros": None, "pending_charges_micros": 7}):
            balance = parse_balance(body)
            assert balance.balance_usd is None
            assert not balance.known
            assert balance.balance_credits is None

    def test_zero_balance_with_no_funds_and_no_tier_is_a_data_gap(self) -> None:
        """$0 plus has_funds=false plus no tier is untrusted (None); with a tier or funds it is a real 0."""
        zero = parse_balance({"amount_micros": 0})
        gap = parse_billing_status({"is_active": False, "has_funds": False})
        paying = parse_billing_status({"is_active": True, "has_funds": False, "subscription_tier": "PRO"})
        assert trusted_balance_usd(zero, gap) is None
        assert trusted_balance_usd(zero, paying) == 0.0
        assert trusted_balance_usd(zero, None) == 0.0
        assert trusted_balance_usd(parse_balance(BALANCE), gap) == 60.0
        assert trusted_balance_usd(parse_balance({}), paying) is None

    def test_balance_accepts_decimal_strings_and_negative_effective(self) -> None:
        """Values may be decimal strings; effective may be negative and is kept separately."""
        balance = parse_balance({"amount_micros": "1234.5", "effective_balance_micros": "-250"})
        assert balance.effective_usd == -2.5
        assert balance.balance_usd == -2.5
        assert balance.amount_usd == pytest.approx(12.345)

    @pytest.mark.parametrize("bad", [True, "abc", "NaN", "Infinity", [], {}, float("inf"), 10**400])
    def test_balance_rejects_non_numbers(self, bad: object) -> None:
        """Booleans, junk strings, NaN/inf and containers are a ParseError naming the field."""
        with pytest.raises(ParseError, match="amount_micros"):
            parse_balance({"amount_micros": bad})

    def test_balance_divisor_must_be_positive(self) -> None:
        """A non-positive divisor is a configuration bug (ValueError), not a response problem."""
        with pytest.raises(ValueError, match="divisor"):
            parse_balance(BALANCE, divisor=0)

    def test_billing_status_example(self) -> None:
        """A full /api/billing/status parses with every field, and labels are the documented values."""
        status = parse_billing_status(BILLING_STATUS)
        assert (status.is_active, status.has_funds, status.tier, status.subscription_status) == (
            True,
            True,
            "CREATOR",
            "active",
        )
        assert (status.billing_status, status.billing_rail, status.max_seats) == ("paid", "stripe", 1)
        assert (status.tier_label, status.status_label, status.billing_status_label) == (
            "CREATOR",
            "active",
            "paid",
        )

    def test_billing_status_without_subscription_has_no_tier(self) -> None:
        """subscription_tier absent (no subscription) is None and labels as 'none'."""
        body = {**BILLING_STATUS, "is_active": False, "subscription_status": "ended"}
        del body["subscription_tier"]
        status = parse_billing_status(body)
        assert (status.tier, status.tier_label, status.status_label) == (None, "none", "ended")

    def test_billing_status_tolerates_unknown_enum_values(self) -> None:
        """Undocumented enum values are kept, and fold to 'other' as labels."""
        body = {
            **BILLING_STATUS,
            "subscription_tier": "GALACTIC",
            "billing_status": "dunning",
            "billing_rail": "x",
        }
        status = parse_billing_status(body)
        assert (status.tier, status.tier_label, status.billing_status_label) == ("GALACTIC", "other", "other")

    def test_billing_status_requires_is_active_and_has_funds(self) -> None:
        """is_active and has_funds are required booleans; the legacy has_fund spelling is accepted."""
        legacy = {"is_active": True, "has_fund": False, "subscription_tier": "PRO"}
        assert parse_billing_status(legacy).has_funds is False
        with pytest.raises(ParseError, match="is_active"):
            parse_billing_status({"has_funds": True})
        with pytest.raises(ParseError, match="has_funds"):
            parse_billing_status({"is_active": True, "has_funds": "yes"})

    def test_features(self) -> None:
        """max_concurrent_jobs is optional; the spec'd flags parse when present."""
        features = parse_features(
            {"supports_preview_metadata": True, "max_upload_size": 10, "max_concurrent_jobs": 3}
        )
        assert (
            features.max_concurrent_jobs,
            features.supports_preview_metadata,
            features.max_upload_size,
        ) == (
            3,
            True,
            10,
        )
        assert parse_features({"anything": 1}).max_concurrent_jobs is None
        assert parse_features({"max_concurrent_jobs": "5"}).max_concurrent_jobs == 5
        with pytest.raises(ParseError, match="max_concurrent_jobs"):
            parse_features({"max_concurrent_jobs": -1})


class TestQueueAndJobs:
    """/api/queue, /api/prompt, /api/jobs*, /api/job/{id}/status."""

    def test_queue_example(self) -> None:
        """/api/queue 5-tuples parse with their ms create_time."""
        queue = parse_cloud_queue(QUEUE)
        assert [(item.number, item.prompt_id) for item in queue.running] == [(1, JOB_ID)]
        assert queue.pending[0].create_time_ms == 1755684001000
        assert (queue.running_count, queue.pending_count) == (1, 1)
        assert parse_cloud_queue({}).running == ()

    def test_queue_item_errors_name_the_path(self) -> None:
        """A malformed tuple is a ParseError naming where it is."""
        with pytest.raises(ParseError, match=r"queue_pending\[0\]\[1\]"):
            parse_cloud_queue({"queue_pending": [[1, 2]]})

    @pytest.mark.parametrize(
        "big", [10**400, -(10**400), 10**300 + 1, 1e305], ids=["huge", "-huge", "bound+1", "integral-float"]
    )
    def test_integers_a_float_cannot_hold_are_refused(self, big: int | float) -> None:
        """An integer beyond 10**300 in magnitude (the bound balances' numbers have too) is a ParseError naming
        its field, in /api/features and in a /api/queue item; 10**300 itself parses and converts to a float."""
        with pytest.raises(ParseError, match=r"max_concurrent_jobs: number out of range"):
            parse_features({"max_concurrent_jobs": abs(big)})
        with pytest.raises(ParseError, match=r"queue_running\[0\]\[0\]: number out of range"):
            parse_cloud_queue({"queue_running": [[big, JOB_ID]], "queue_pending": []})
        limit = parse_cloud_queue({"queue_pending": [[10**300, JOB_ID]]}).pending[0].number
        assert float(limit) == 1e300

    def test_prompt_info_and_submit(self) -> None:
        """GET /api/prompt gives queue_remaining; a 200 submit gives the prompt id."""
        assert parse_queue_remaining({"exec_info": {"queue_remaining": 4}}) == 4
        result = parse_submit({"prompt_id": JOB_ID, "number": 0, "node_errors": {}})
        assert (result.prompt_id, result.number, result.node_error_count) == (JOB_ID, 0, 0)
        assert parse_submit({"prompt_id": JOB_ID, "number": 1.5}).number is None
        with pytest.raises(ParseError, match="error"):
            parse_submit({"error": {"type": "PAYMENT_REQUIRED", "message": "x"}})

    def test_jobs_list_example(self) -> None:
        """An /api/jobs page parses with ms times and pagination."""
        page = parse_jobs_list(JOBS_LIST)
        job = page.jobs[0]
        assert (job.id, job.state.group, job.create_time_ms, job.workflow_id) == (
            JOB_ID,
            JobGroup.IN_PROGRESS,
            1755684000123,
            "wf",
        )
        assert (page.total, page.has_more, page.next_cursor) == (1, False, "abc")
        assert page.count_by_group() == {"in_progress": 1}

    def test_create_time_in_seconds_or_milliseconds(self) -> None:
        """Values above 1e12 are ms; smaller values are seconds (the spec's unit)."""
        seconds = {**JOBS_LIST, "jobs": [{"id": "a", "status": "pending", "create_time": 1755684000}]}
        assert parse_jobs_list(seconds).jobs[0].create_time_ms == 1755684000000
        float_seconds = {
            **JOBS_LIST,
            "jobs": [{"id": "a", "status": "pending", "create_time": 1755684000.5}],
        }
        assert parse_jobs_list(float_seconds).jobs[0].create_time_ms == 1755684000500

    def test_jobs_list_entry_errors_name_the_index(self) -> None:
        """A bad entry is a ParseError naming jobs[i] and the field."""
        body = {**JOBS_LIST, "jobs": [JOBS_LIST["jobs"][0], {"id": "b", "status": "pending"}]}  # type: ignore[index]
        with pytest.raises(ParseError, match=r"jobs\[1\]\.create_time"):
            parse_jobs_list(body)

    def test_job_detail_example(self) -> None:
        """An /api/jobs/{id} detail parses: terminal success, outputs, ms times, duration."""
        detail = parse_job_detail(JOB_DETAIL)
        assert (detail.state.terminal, detail.failure_reason, detail.status_str, detail.completed) == (
            True,
            None,
            "success",
            True,
        )
        assert [(o.node_id, o.kind, o.filename, o.type) for o in detail.outputs] == [
            ("2", "images", "comfywatch_00001_.png", "output")
        ]
        assert detail.execution_seconds == 8.0
        assert detail.update_time_ms == 1755684012345

    def test_failed_job_detail_reason_comes_from_the_exception_type(self) -> None:
        """A failed job with exception_type OOMError is oom; InactiveSubscriptionError is payment."""
        detail = parse_job_detail(FAILED_JOB)
        assert detail.failure_reason is Reason.OOM
        assert detail.execution_error is not None
        assert (detail.execution_error.node_type, detail.execution_error.reason) == ("KSampler", Reason.OOM)
        assert detail.create_time_ms == 1755684000000
        payment = copy.deepcopy(FAILED_JOB)
        payment["execution_error"]["exception_type"] = "InactiveSubscriptionError"  # type: ignore[index]
        assert parse_job_detail(payment).failure_reason is Reason.PAYMENT

    def test_job_status_example_with_iso_times(self) -> None:
        """An /api/job/{id}/status answer parses: raw state, ISO times as ms, in flight."""
        status = parse_job_status(JOB_STATUS)
        assert (status.status, status.state.group, status.failure_reason) == (
            "queued_limited",
            JobGroup.PENDING,
            None,
        )
        assert status.created_ms == int(datetime(2026, 8, 20, 10, tzinfo=UTC).timestamp() * 1000)
        assert status.updated_ms == status.created_ms + 1000

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            ("lost", Reason.LOST),
            ("non_retryable_error", Reason.EXECUTION_ERROR),
            ("cancelled", Reason.INTERRUPTED),
        ],
    )
    def test_job_status_failures(self, raw: str, reason: Reason) -> None:
        """Terminal failure states carry their reason; error_message is bounded."""
        status = parse_job_status({**JOB_STATUS, "status": raw, "error_message": "x" * 5000})
        assert status.failure_reason is reason
        assert status.error_message is not None
        assert len(status.error_message) <= MAX_TEXT


class TestSecretsStayOut:
    """ParseError messages name paths, never values."""

    def test_parse_error_does_not_echo_values(self) -> None:
        """A secret in a wrongly typed field does not appear in the error message."""
        secret = "comfyui-" + "s" * 64
        with pytest.raises(ParseError) as raised:
            parse_billing_status({"is_active": secret, "has_funds": True})
        assert secret not in str(raised.value)
        with pytest.raises(ParseError) as raised:
            parse_balance({"amount_micros": secret})
        assert secret not in str(raised.value)


# ----------------------------------------------------------------------------------------------------------
# Fuzzing: only ParseError may escape, whatever the JSON.

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)

PARSERS: list[Callable[[object], object]] = [
    parse_user,
    parse_balance,
    parse_billing_status,
    parse_features,
    parse_cloud_queue,
    parse_queue_remaining,
    parse_submit,
    parse_jobs_list,
    parse_job_status,
    parse_job_detail,
]
EXAMPLES: list[tuple[Callable[[object], object], Any]] = [
    (parse_balance, BALANCE),
    (parse_billing_status, BILLING_STATUS),
    (parse_job_detail, JOB_DETAIL),
    (parse_job_detail, FAILED_JOB),
    (parse_jobs_list, JOBS_LIST),
    (parse_cloud_queue, QUEUE),
    (parse_job_status, JOB_STATUS),
    (parse_features, {"supports_preview_metadata": True, "max_concurrent_jobs": 3}),
    (parse_user, {"id": "u", "status": "active"}),
    (parse_submit, {"prompt_id": JOB_ID, "number": 0, "node_errors": {}}),
]

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_parse_error(parser: Callable[[object], object], body: object) -> None:
    with contextlib.suppress(ParseError):
        parser(body)


@st.composite
def _mutated(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with some members kept, some dropped, some replaced by arbitrary JSON, recursively."""
    action = draw(st.sampled_from(["keep", "keep", "keep", "recurse", "replace"]))
    if action == "replace":
        return draw(JSON)
    if isinstance(value, dict) and action == "recurse":
        result = {}
        for key, item in value.items():
            if not draw(st.booleans()) or draw(st.integers(0, 5)):
                result[key] = draw(_mutated(item))
        return result
    if isinstance(value, list) and action == "recurse":
        return [draw(_mutated(item)) for item in value]
    return value


@FUZZ
@given(data=st.data(), body=JSON)
def test_fuzz_arbitrary_json_only_raises_parse_error(data: st.DataObject, body: object) -> None:
    """Every parser either returns or raises ParseError for arbitrary JSON."""
    parser = data.draw(st.sampled_from(PARSERS))
    _only_parse_error(parser, body)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_examples_only_raise_parse_error(data: st.DataObject) -> None:
    """Mutations of the example bodies either parse or raise ParseError."""
    parser, example = data.draw(st.sampled_from(EXAMPLES))
    _only_parse_error(parser, data.draw(_mutated(example)))


@FUZZ
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [
                "effective_balance_micros",
                "amount_micros",
                "prepaid_balance_micros",
                "cloud_credit_balance_micros",
            ]
        ),
        st.integers(-(10**9), 10**9) | st.none(),
    )
)
def test_fuzz_balance_is_unknown_exactly_when_no_field_is_present(fields: dict[str, int | None]) -> None:
    """balance_usd is None iff every balance field is absent or null; otherwise a finite number."""
    balance = parse_balance(fields)
    present = [value for value in fields.values() if value is not None]
    if present:
        assert balance.balance_usd is not None
        assert math.isfinite(balance.balance_usd)
        assert balance.balance_usd == next((v for v in _ordered(fields) if v), 0) / 100
    else:
        assert balance.balance_usd is None


def _ordered(fields: dict[str, int | None]) -> list[int]:
    order = [
        "effective_balance_micros",
        "amount_micros",
        "prepaid_balance_micros",
        "cloud_credit_balance_micros",
    ]
    return [value for name in order if (value := fields.get(name)) is not None]


@FUZZ
@given(raw=st.text(max_size=80))
def test_fuzz_any_state_string_classifies(raw: str) -> None:
    """classify_state and failure_reason accept any string; unknown ones are never terminal."""
    state = classify_state(raw)
    assert len(state.raw) <= 64
    if not state.known:
        assert not state.terminal
        assert failure_reason(raw) is None
