"""Per-node progress of the running prompt, as ComfyUI's ``comfy_execution/progress.py`` reports it."""

from __future__ import annotations

from typing import Any

__all__ = ["Progress"]


class Progress:
    """``comfy_execution.progress`` registry: per-node states, sent whole on every change."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}

    def _entry(self, node_id: str) -> dict[str, Any]:
        if node_id not in self.nodes:
            self.nodes[node_id] = {"value": 0, "max": 1, "state": "pending"}
        return self.nodes[node_id]

    def start(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="running", value=0.0, max=1.0)

    def update(self, node_id: str, value: Any, maximum: Any) -> None:
        entry = self._entry(node_id)
        entry.update(state="running", value=value, max=maximum)

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])

    def payload(self) -> dict[str, Any]:
        nodes = {
            node_id: {
                "value": state["value"],
                "max": state["max"],
                "state": state["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, state in self.nodes.items()
            if state["state"] != "pending"
        }
        return {"prompt_id": self.prompt_id, "nodes": nodes}
