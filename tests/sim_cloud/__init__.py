"""Helpers for the simulated Comfy Cloud tests: a served simulator, a fake clock and spec validation.

Two OpenAPI documents judge the simulator's answers:

* ``published()``: tests/fixtures/spec/openapi-cloud.yaml verbatim.
* ``documented()``: the same file with the corrections docs/cloud.md describes (see ``_document``). A test
  that relies on a correction names it, and :func:`assert_conforms` then also proves the published file
  really rejects the answer, so no correction is applied silently or without need.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml
from aiohttp import web
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from comfywatch.sim.cloud.app import create_cloud_app
from comfywatch.sim.cloud.model import SimCloud
from tests.fixtures import SPEC

KEY = "comfyui-" + "a1" * 32
OTHER_KEY = "comfyui-" + "b2" * 32
HOST = "https://cloud.comfy.org"

CANARY: dict[str, Any] = {
    "prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "comfywatch"}},
    },
    "extra_data": {},
}
"""A Cloud canary graph: two core nodes, no model to load."""

RAW_STATES = [
    "submitted",
    "queued_limited",
    "queued_waiting",
    "allocated",
    "preparing",
    "pending_execution",
    "executing",
    "executed",
    "success",
    "error",
    "non_retryable_error",
    "lost",
    "erroring",
    "cancelled",
    "cancel_requested",
    "cancel_pending",
    "cancelling_preparing",
]
"""Every raw state ``/api/job/{id}/status`` can report (the published enum lists none of the terminal ones)."""

# Names of the corrections applied by ``_document``; tests pass them to ``assert_conforms``.
RAW_STATUS = "raw job states, not the published enum"
QUEUE_TUPLE = "QueueItem oneOf is unsatisfiable for 5-tuples"
UNDECLARED = "endpoint or status missing from the public spec (billing, cancel, /health, 401/429/500)"


class FakeClock:
    """A settable epoch-millisecond clock for ``SimCloud.clock``."""

    def __init__(self, start_ms: int = 1_755_684_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def tick(self, ms: int) -> None:
        """Move time forward."""
        self.now += ms


@dataclass
class Served:
    """A simulator served on an ephemeral loopback port with a client session carrying the key."""

    sim: SimCloud
    base: str
    http: aiohttp.ClientSession
    anon: aiohttp.ClientSession


@asynccontextmanager
async def serve(sim: SimCloud) -> AsyncIterator[Served]:
    """Run ``create_cloud_app(sim)`` on 127.0.0.1:0 and yield sessions bound to it."""
    runner = web.AppRunner(create_cloud_app(sim))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    try:
        async with (
            aiohttp.ClientSession(base, headers={"X-API-Key": KEY}) as http,
            aiohttp.ClientSession(base) as anon,
        ):
            yield Served(sim=sim, base=base, http=http, anon=anon)
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------------------------------------
# Spec validation


@functools.cache
def _spec_dict() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SPEC / "openapi-cloud.yaml").read_text("utf-8"))
    return loaded


@functools.cache
def published() -> OpenAPI:
    """The public Comfy Cloud v1 spec, verbatim."""
    return OpenAPI.from_dict(copy.deepcopy(_spec_dict()))


_ERROR = {"$ref": "#/components/schemas/ErrorResponse"}


def _json(schema: dict[str, Any], description: str = "correction, see docs/cloud.md") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _document(spec: dict[str, Any]) -> dict[str, Any]:
    """Apply the corrections docs/cloud.md describes to a copy of the published spec."""
    schemas = spec["components"]["schemas"]
    # RAW_STATUS: /api/job/{id}/status returns raw internal states; "completed" does not exist there.
    schemas["JobStatusResponse"]["properties"]["status"]["enum"] = RAW_STATES
    # QUEUE_TUPLE: two "type: object" alternatives make oneOf fail for the workflow and metadata items.
    queue_items = schemas["QueueItem"]["items"]
    queue_items["anyOf"] = queue_items.pop("oneOf")
    # WS: `executing` carries node null when a prompt finishes.
    schemas["WebSocketExecutingMessage"]["properties"]["data"]["properties"]["node"]["nullable"] = True
    # comfy-cli reads the live concurrency limit, max_concurrent_jobs, from /api/features.
    features = spec["paths"]["/api/features"]["get"]["responses"]["200"]["content"]["application/json"]
    features["schema"]["properties"]["max_concurrent_jobs"] = {"type": "integer", "minimum": 1}
    # UNDECLARED: 401 on any authenticated call, untyped 429 rate limiting, 500.
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete", "head"):
                continue
            responses = operation.get("responses", {})
            for status in ("401", "429", "500"):
                if path != "/api/system_stats" and status not in responses:
                    responses[status] = _json(_ERROR)
    money = {"type": "integer"}
    spec["paths"]["/api/billing/balance"] = {
        "get": {
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["amount_micros", "currency"],
                        "properties": {
                            "amount_micros": money,
                            "prepaid_balance_micros": money,
                            "cloud_credit_balance_micros": money,
                            "pending_charges_micros": money,
                            "effective_balance_micros": money,
                            "currency": {"type": "string"},
                        },
                    }
                ),
                **{status: _json(_ERROR) for status in ("401", "429", "500")},
            }
        }
    }
    text = {"type": "string", "nullable": True}
    spec["paths"]["/api/billing/status"] = {
        "get": {
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": [
                            "is_active",
                            "has_funds",
                            "max_seats",
                            "occupied_seats",
                            "team_credit_stop",
                        ],
                        "properties": {
                            "is_active": {"type": "boolean"},
                            "has_funds": {"type": "boolean"},
                            "billing_rail": {
                                "type": "string",
                                "enum": ["legacy_stripe", "metronome", "stripe"],
                            },
                            "subscription_status": {
                                "type": "string",
                                "enum": ["active", "ended", "canceled"],
                            },
                            "subscription_tier": {
                                "type": "string",
                                "enum": ["FREE", "STANDARD", "CREATOR", "PRO", "FOUNDERS_EDITION", "TEAM"],
                            },
                            "subscription_duration": {"type": "string", "enum": ["MONTHLY", "ANNUAL"]},
                            "plan_slug": {"type": "string"},
                            "billing_status": {
                                "type": "string",
                                "enum": [
                                    "awaiting_payment_method",
                                    "pending_payment",
                                    "paid",
                                    "payment_failed",
                                    "paused",
                                    "inactive",
                                ],
                            },
                            "renewal_date": {**text, "format": "date-time"},
                            "cancel_at": text,
                            "max_seats": {"type": "integer"},
                            "occupied_seats": {"type": "integer"},
                            "team_credit_stop": {"nullable": True},
                        },
                    }
                ),
                **{status: _json(_ERROR) for status in ("401", "404", "429", "500")},
            }
        }
    }
    spec["paths"]["/api/jobs/{job_id}/cancel"] = {
        "post": {
            "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["cancelled"],
                        "properties": {"cancelled": {"type": "boolean"}},
                    }
                ),
                **{status: _json(_ERROR) for status in ("400", "401", "403", "404", "429", "500")},
            },
        }
    }
    plain = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    spec["paths"]["/health"] = {
        "get": {
            "security": [],
            "responses": {
                "200": {"description": "healthy", **plain},
                "503": {"description": "unhealthy", **plain},
            },
        }
    }
    return spec


@functools.cache
def documented() -> OpenAPI:
    """The public spec with the corrections docs/cloud.md describes."""
    return OpenAPI.from_dict(_document(copy.deepcopy(_spec_dict())))


@dataclass(frozen=True)
class Captured:
    """One HTTP exchange, kept for validation."""

    method: str
    url: str
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The decoded JSON body."""
        return json.loads(self.body)


async def call(
    session: aiohttp.ClientSession, method: str, path: str, *, allow_redirects: bool = False, **kwargs: Any
) -> Captured:
    """Make one request and keep everything needed to validate the answer."""
    async with session.request(method, path, allow_redirects=allow_redirects, **kwargs) as response:
        body = await response.read()
        return Captured(
            method=method.lower(),
            url=str(response.url),
            status=response.status,
            headers=dict(response.headers),
            body=body,
        )


def _mock(captured: Captured) -> tuple[MockRequest, MockResponse]:
    parts = urlsplit(captured.url)
    args: dict[str, str] = {}
    for pair in filter(None, parts.query.split("&")):
        name, _, value = pair.partition("=")
        args[name] = value
    request = MockRequest(HOST, captured.method, parts.path, args=args)
    mimetype = captured.headers.get("Content-Type", "").split(";")[0].strip()
    body = captured.body if captured.body else b""
    response = MockResponse(
        body, status_code=captured.status, headers=captured.headers, content_type=mimetype
    )
    return request, response


def assert_conforms(captured: Captured, correction: str | None = None) -> None:
    """Validate an answer against the published spec, or against a named correction of it.

    With ``correction``, the published spec must reject the answer (proving the correction is needed) and
    the documented spec must accept it.
    """
    request, response = _mock(captured)
    if correction is None:
        published().validate_response(request, response)
        return
    try:
        published().validate_response(request, response)
    except OpenAPIError:
        pass  # any rejection (schema, unknown path, undeclared status) proves the correction is needed
    else:
        raise AssertionError(f"published spec accepts {captured.method} {captured.url}: drop '{correction}'")
    documented().validate_response(request, response)


@functools.cache
def _ws_validator(schema: str) -> OAS30Validator:
    components = _document(copy.deepcopy(_spec_dict()))["components"]
    return OAS30Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": components},
        format_checker=oas30_format_checker,
    )


_WS_SCHEMAS = {
    "status": "WebSocketStatusMessage",
    "execution_start": "WebSocketExecutionStartMessage",
    "execution_cached": "WebSocketExecutionCachedMessage",
    "executing": "WebSocketExecutingMessage",
    "executed": "WebSocketExecutedMessage",
    "execution_success": "WebSocketExecutionSuccessMessage",
    "execution_error": "WebSocketExecutionErrorMessage",
    "execution_interrupted": "WebSocketExecutionInterruptedMessage",
}


def ws_errors(message: dict[str, Any]) -> list[str]:
    """Schema violations of one WebSocket text frame (documented spec: ``executing.node`` may be null)."""
    kind = message.get("type")
    if kind not in _WS_SCHEMAS:
        return [f"undocumented message type {kind!r}"]
    base = [error.message for error in _ws_validator("WebSocketMessage").iter_errors(message)]
    return base + [error.message for error in _ws_validator(_WS_SCHEMAS[kind]).iter_errors(message)]


TERMINAL = frozenset({"success", "error", "non_retryable_error", "lost", "cancelled"})


async def submit(served: Served, body: dict[str, Any] | None = None) -> str:
    """Submit a workflow (the canary by default) and return its prompt id."""
    answer = await call(served.http, "POST", "/api/prompt", json=body or CANARY)
    assert answer.status == 200, answer.body
    prompt_id: str = answer.json()["prompt_id"]
    return prompt_id


async def wait_terminal(served: Served, job_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll ``/api/job/{id}/status`` until the job is terminal (deadline, not a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        body: dict[str, Any] = (await call(served.http, "GET", f"/api/job/{job_id}/status")).json()
        if body["status"] in TERMINAL:
            return body
        if loop.time() > deadline:
            raise AssertionError(f"job still {body['status']} after {timeout}s")
        await asyncio.sleep(0.005)
