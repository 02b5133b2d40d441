"""JSON bodies, WebSocket messages and PNG bytes of the simulated Comfy Cloud (pure functions).

Shapes are what the service really sends where the published OpenAPI spec differs (docs/cloud.md): raw
states on ``/api/job/{id}/status``, grouped states and millisecond times on ``/api/jobs*``, ComfyUI-style
WebSocket events with Cloud exception types.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from comfywatch.sim.cloud.jobs import SimJob

__all__ = [
    "error_body",
    "execution_error",
    "history_detail",
    "history_entry",
    "iso",
    "job_detail",
    "job_entry",
    "job_status",
    "prompt_error",
    "queue_item",
    "redact_extra_data",
    "system_stats",
    "ws",
]

_SECRET_KEY_RE = re.compile(r"api_key|token|secret|password|auth", re.IGNORECASE)


def iso(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC with a ``Z`` suffix."""
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def error_body(code: str, message: str) -> dict[str, Any]:
    """An ``ErrorResponse`` (``code`` + ``message``)."""
    return {"code": code, "message": message}


def prompt_error(kind: str, message: str) -> dict[str, Any]:
    """A ``PromptErrorResponse``: only ``error.type`` tells the causes of a 402 or 429 on submit apart."""
    return {"error": {"type": kind, "message": message}}


def redact_extra_data(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra_data`` as the Cloud echoes it: secrets such as ``api_key_comfy_org`` replaced."""
    return {key: "[REDACTED]" if _SECRET_KEY_RE.search(key) else value for key, value in extra.items()}


def ws(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """One WebSocket text frame (``{"type", "data"}``)."""
    return {"type": kind, "data": data}


def execution_error(job: SimJob, exception_type: str, message: str) -> dict[str, Any]:
    """An ``ExecutionError`` for the job's first node (the shape shared by job detail and WS)."""
    node_id = job.node_ids()[0]
    return {
        "node_id": node_id,
        "node_type": job.class_type(node_id),
        "exception_message": message,
        "exception_type": exception_type,
        "traceback": [],
        "current_inputs": {},
        "current_outputs": {},
    }


def _preview_output(job: SimJob) -> dict[str, Any] | None:
    for node_id, node_out in job.outputs.items():
        images = node_out.get("images") if isinstance(node_out, dict) else None
        if images:
            return {**images[0], "nodeId": node_id, "mediaType": "images"}
    return None


def _outputs_count(job: SimJob) -> int:
    return sum(
        len(items)
        for node_out in job.outputs.values()
        for kind, items in node_out.items()
        if kind == "images" and isinstance(items, list)
    )


def job_entry(job: SimJob) -> dict[str, Any]:
    """A ``JobEntry`` of ``GET /api/jobs``: grouped status, ms times, outputs only when terminal."""
    entry: dict[str, Any] = {
        "id": job.id,
        "status": job.group,
        "create_time": job.create_ms,
        "workflow_id": job.workflow_id,
    }
    if job.terminal:
        count = _outputs_count(job)
        entry["outputs_count"] = count
        preview = _preview_output(job)
        if preview is not None:
            entry["preview_output"] = preview
        if job.start_ms is not None:
            entry["execution_start_time"] = job.start_ms
        if job.end_ms is not None:
            entry["execution_end_time"] = job.end_ms
    if job.error is not None:
        entry["execution_error"] = job.error
    return entry


def job_detail(job: SimJob, *, user_id: str, workspace_id: str) -> dict[str, Any]:
    """A ``JobDetailResponse`` of ``GET /api/jobs/{id}``."""
    detail = job_entry(job)
    detail.update(
        {
            "update_time": job.update_ms,
            "user_id": user_id,
            "workspace_id": workspace_id,
            "workflow": {"prompt": job.prompt, "extra_data": redact_extra_data(job.extra_data)},
        }
    )
    if job.terminal:
        detail["outputs"] = job.outputs
        detail["previewable_outputs_count"] = detail.get("outputs_count", 0)
        detail["execution_status"] = {
            "status_str": "success" if job.state == "success" else "error",
            "completed": job.state == "success",
            "messages": job.messages,
        }
        detail["execution_meta"] = {}
    return detail


def job_status(job: SimJob) -> dict[str, Any]:
    """``GET /api/job/{id}/status``: the *raw* state (``success``, not the spec's ``completed``) with ISO times."""
    return {
        "id": job.id,
        "status": job.state,
        "created_at": iso(job.create_ms),
        "updated_at": iso(job.update_ms),
        "last_state_update": iso(job.state_ms or job.create_ms),
        "assigned_inference": f"sim-inference-{job.number % 4}" if job.slot_ms is not None else None,
        "error_message": job.error_message,
    }


def queue_item(job: SimJob, position: int) -> list[Any]:
    """One ``/api/queue`` 5-tuple: ``[position, id, workflow, output_node_ids, {"create_time": ms}]``."""
    return [position, job.id, job.prompt, list(job.output_nodes), {"create_time": job.create_ms}]


def _history_status(job: SimJob) -> dict[str, Any]:
    return {
        "status_str": "success" if job.state == "success" else "error",
        "completed": job.state == "success",
        "messages": job.messages,
    }


def history_detail(job: SimJob) -> dict[str, Any]:
    """``GET /api/history_v2/{id}`` for a finished job (``{id: HistoryDetailEntry}``)."""
    return {
        job.id: {
            "prompt": {
                "priority": job.number,
                "prompt_id": job.id,
                "prompt": job.prompt,
                "extra_data": redact_extra_data(job.extra_data),
                "outputs_to_execute": list(job.output_nodes),
            },
            "outputs": job.outputs,
            "status": _history_status(job),
            "meta": {},
        }
    }


def history_entry(job: SimJob) -> dict[str, Any]:
    """One ``HistoryEntry`` of ``GET /api/history_v2``."""
    return {
        "prompt_id": job.id,
        "create_time": job.create_ms,
        "workflow_id": job.workflow_id,
        "prompt": {
            "priority": job.number,
            "prompt_id": job.id,
            "extra_data": redact_extra_data(job.extra_data),
        },
        "outputs": job.outputs,
        "status": _history_status(job),
        "meta": {},
    }


def system_stats() -> dict[str, Any]:
    """``GET /api/system_stats``: public, and on Cloud it describes the ingest service, not a GPU."""
    return {
        "system": {
            "os": "linux",
            "python_version": "3.12.11 (main, Jun  4 2025, 00:00:00) [GCC 12.2.0]",
            "embedded_python": False,
            "comfyui_version": "0.3.64",
            "comfyui_frontend_version": "1.28.7",
            "workflow_templates_version": "0.1.94",
            "cloud_version": "sim0000",
            "deploy_environment": "cloud",
            "pytorch_version": "2.8.0+cu128",
            "argv": [],
            "ram_total": 0,
            "ram_free": 0,
        },
        "devices": [{"name": "cloud", "type": "cuda", "vram_total": 0, "vram_free": 0}],
    }
