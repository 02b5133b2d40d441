"""A queued prompt, and the ``/api/jobs`` records of queued and finished prompts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["JOB_STATUSES", "QueueItem", "history_job", "queue_job"]


@dataclass
class QueueItem:
    """One queued prompt: the 5-array ComfyUI shows, plus what the sim needs to run it."""

    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    exec_ms: float
    create_ms: int

    def as_list(self) -> list[Any]:
        """``[number, prompt_id, prompt, extra_data, outputs_to_execute]`` as served by ``/queue``."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


# Job states of the original /api/jobs (Comfy-Org/ComfyUI#11054). Later versions added "cancelled" for
# interrupted prompts; here an interrupted prompt is "failed", as it was then.
JOB_STATUSES = ("pending", "in_progress", "completed", "failed")


def _prune(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def queue_job(item: QueueItem, status: str, include_workflow: bool = False) -> dict[str, Any]:
    """The job record of a pending or running prompt (with ``workflow`` for a single-job answer)."""
    extra = item.extra_data
    pnginfo = extra.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    job = _prune(
        {
            "id": item.prompt_id,
            "status": status,
            "priority": item.number,
            "create_time": extra.get("create_time"),
            "outputs_count": 0,
            "workflow_id": workflow.get("id") if isinstance(workflow, dict) else None,
        }
    )
    if include_workflow:
        job["workflow"] = {"prompt": item.prompt, "extra_data": extra}
    return job


def _outputs_summary(outputs: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None]:
    count = 0
    preview: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if media_type == "animated" or not isinstance(items, list):
                continue
            for entry in items:
                if not isinstance(entry, dict):
                    continue
                count += 1
                if media_type in ("images", "video", "audio"):
                    enriched = {**entry, "nodeId": node_id, "mediaType": media_type}
                    if entry.get("type") == "output" and preview is None:
                        preview = enriched
                    elif fallback is None:
                        fallback = enriched
    return count, preview or fallback


def history_job(prompt_id: str, entry: Mapping[str, Any], include_outputs: bool = False) -> dict[str, Any]:
    """The job record of a finished prompt from its history entry (with outputs for a single-job answer)."""
    number, _, prompt, extra, _ = entry["prompt"]
    status_info = entry.get("status") or {}
    start = end = None
    error = None
    for event, data in status_info.get("messages", []):
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp")
            if event == "execution_error":
                error = data
    outputs = entry.get("outputs", {})
    count, preview = _outputs_summary(outputs)
    pnginfo = extra.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    job = _prune(
        {
            "id": prompt_id,
            "status": "completed" if status_info.get("status_str") != "error" else "failed",
            "priority": number,
            "create_time": extra.get("create_time"),
            "execution_start_time": start,
            "execution_end_time": end,
            "execution_error": error,
            "outputs_count": count,
            "preview_output": preview,
            "workflow_id": workflow.get("id") if isinstance(workflow, dict) else None,
        }
    )
    if include_outputs:
        job["outputs"] = outputs
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra}
    return job
