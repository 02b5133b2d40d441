"""How a prompt's nodes are ordered and cached for execution, and how a failed node's inputs are reported."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from comfywatch.sim.local.catalog import Catalog
from comfywatch.sim.local.validation import is_link

__all__ = ["ExecutionList", "cache_signatures", "format_inputs", "ordered_outputs"]

_ALWAYS_CHANGED = frozenset({"SaveImageWebsocket"})  # IS_CHANGED returns time.time()


def ordered_outputs(prompt: dict[str, Any], good: list[str]) -> list[str]:
    """The validated output nodes in the prompt's order (``outputs_to_execute`` of the queue item)."""
    wanted = set(good)
    return [nid for nid in prompt if nid in wanted]


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


def format_inputs(node: dict[str, Any], inputs: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``current_inputs`` of an ``execution_error``: only inputs present in the prompt, in its order
    (``execution.get_input_data``)."""
    return {name: [_format_value(inputs[name])] for name in node["inputs"] if name in inputs}


def _link_source(value: Any, prompt: Mapping[str, Any]) -> str | None:
    if is_link(value) and len(value) == 2 and isinstance(value[0], str) and value[0] in prompt:
        return value[0]
    return None


def cache_signatures(catalog: Catalog, prompt: dict[str, Any]) -> dict[str, str]:
    """Cache keys: class, literal inputs and upstream signatures (``IS_CHANGED`` nodes never match).

    Nodes outside the validated outputs may still be malformed, so nothing here may raise.
    """
    memo: dict[str, str] = {}

    def sig(node_id: str, depth: int = 0) -> str:
        if node_id in memo:
            return memo[node_id]
        node = prompt[node_id]
        if depth > 200:
            return uuid.uuid4().hex
        inputs = node.get("inputs")
        parts: dict[str, Any] = {}
        for name, value in inputs.items() if isinstance(inputs, dict) else ():
            source = _link_source(value, prompt)
            parts[name] = ["link", sig(source, depth + 1), value[1]] if source is not None else value
        key = json.dumps([node["class_type"], parts], sort_keys=True, default=str)
        if node["class_type"] in _ALWAYS_CHANGED:
            key += uuid.uuid4().hex
        memo[node_id] = key
        return key

    return {nid: sig(nid) for nid in prompt}


class ExecutionList:
    """``comfy_execution.graph.ExecutionList`` reduced to what the sim needs: dependency order and the
    "UX friendly" pick that runs output nodes (and what feeds them) as early as possible."""

    def __init__(self, catalog: Catalog, prompt: dict[str, Any], outputs: list[str], cached: set[str]) -> None:
        self.catalog = catalog
        self.prompt = prompt
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, set[str]] = {}
        self.error: str | None = None
        self._error_node: str | None = None
        for output in outputs:
            self._add(output, cached)

    def _add(self, root: str, cached: set[str]) -> None:
        stack = [root]
        links: list[tuple[str, str]] = []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = None
            self.block_count.setdefault(node_id, 0)
            self.blocking.setdefault(node_id, set())
            for value in self.prompt[node_id]["inputs"].values():
                if is_link(value) and value[0] not in cached:
                    stack.append(value[0])
                    links.append((value[0], node_id))
        for upstream, downstream in links:
            if downstream not in self.blocking[upstream]:
                self.blocking[upstream].add(downstream)
                self.block_count[downstream] += 1

    def _is_output(self, node_id: str) -> bool:
        return self.catalog.specs[self.prompt[node_id]["class_type"]].output_node

    def next_node(self) -> str | None:
        """The next node to run, ``None`` when done (or stuck on a cycle, which sets ``error``)."""
        if not self.pending:
            return None
        available = [n for n in self.pending if self.block_count[n] == 0]
        if not available:
            self.error = "Dependency cycle detected"
            self._error_node = next(iter(self.pending))
            return None
        for node_id in available:
            if self._is_output(node_id):
                return node_id
        for node_id in available:
            if any(self._is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in available:
            if any(self._is_output(b2) for b in self.blocking[node_id] for b2 in self.blocking[b]):
                return node_id
        return available[0]

    def busy_node(self) -> str | None:
        """Where a prompt's simulated run time goes: the last non-output node before the first output
        node (the ImageScale or sampler feeding the preview), else the first node. Consumes the list."""
        order: list[str] = []
        while (node_id := self.next_node()) is not None:
            order.append(node_id)
            self.complete(node_id)
        if not order:
            return None
        first_output = next((i for i, n in enumerate(order) if self._is_output(n)), len(order))
        before = [n for n in order[:first_output] if not self._is_output(n)]
        return before[-1] if before else order[0]

    def complete(self, node_id: str) -> None:
        """Mark a node done and release what it blocked."""
        self.pending.pop(node_id, None)
        for downstream in self.blocking.get(node_id, ()):
            self.block_count[downstream] -= 1

    def error_message(self, prompt_id: str, executed: list[str]) -> dict[str, Any]:
        """The ``execution_error`` body for a graph that cannot be ordered."""
        node_id = self._error_node or ""
        return {
            "prompt_id": prompt_id,
            "node_id": node_id,
            "node_type": self.prompt[node_id]["class_type"] if node_id in self.prompt else "",
            "executed": executed[::-1],
            "exception_message": f"{self.error}\n",
            "exception_type": "comfy_execution.graph.DependencyCycleError",
            "traceback": [],
            "current_inputs": [],
            "current_outputs": list(self.prompt),
        }
