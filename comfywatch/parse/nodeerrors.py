"""Summaries of ComfyUI's prompt-validation answers (``POST /prompt`` 400, or 200 with ``node_errors``).

Pure logic. The server's answer carries whole option lists (``input_config``), Python tracebacks and the
received values; logs, doctor output and canary failures need one bounded line per node instead:
``node 4 (CheckpointLoaderSimple): value_not_in_list: ckpt_name: 'x.safetensors' not in []``.
Anything that does not have the server's shape raises :class:`ParseError` and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from comfywatch.errors import ParseError
from comfywatch.parse.text import sanitize

__all__ = ["NodeError", "NodeRejection", "PromptRejection", "node_sort_key", "summarise_prompt_error"]


def node_sort_key(node_id: object) -> tuple[int, int, str]:
    """Order node ids as people number them: "2" before "10", numeric ids before named ones."""
    text = str(node_id)
    # isascii: str.isdigit() also accepts characters such as "²" that int() rejects.
    if text.isascii() and text.isdigit() and len(text) <= 30:
        return (0, int(text), text)
    return (1, 0, text)

MAX_TEXT: Final = 160
MAX_LINE: Final = 400
MAX_NODES: Final = 50
_NODE_ID_IN_DETAILS: Final = re.compile(r"Node ID '#(.{1,64})'$")


@dataclass(frozen=True)
class NodeError:
    """One entry of ``node_errors[id].errors``: the type, the input it concerns, and a bounded text."""

    type: str
    input_name: str | None
    text: str


@dataclass(frozen=True)
class NodeRejection:
    """Everything the server said about one node, with the one-line summary."""

    node_id: str
    class_type: str | None
    errors: tuple[NodeError, ...]
    dependent_outputs: tuple[str, ...]
    line: str


@dataclass(frozen=True)
class PromptRejection:
    """A summarised validation answer.

    ``error_type`` is the top-level ``error.type`` (``prompt_outputs_failed_validation``, ``invalid_prompt``,
    ``prompt_no_outputs``, ``no_prompt`` …), or None for a 200 answer that queued the prompt but dropped
    outputs (``accepted`` is then True and ``prompt_id`` is set). ``node_id`` is the node an
    ``invalid_prompt`` names in its details. At most ``MAX_NODES`` nodes are kept; ``omitted_nodes`` counts
    the rest.
    """

    error_type: str | None
    message: str
    details: str
    node_id: str | None
    nodes: tuple[NodeRejection, ...]
    omitted_nodes: int
    accepted: bool
    prompt_id: str | None

    @property
    def lines(self) -> tuple[str, ...]:
        """One line per rejected node, ordered by node id."""
        more = (f"… and {self.omitted_nodes} more node(s)",) if self.omitted_nodes else ()
        return tuple(n.line for n in self.nodes) + more

    @property
    def summary(self) -> str:
        """The headline: ``error_type: message`` (or the dropped-output count for an accepted prompt)."""
        if self.accepted:
            if not self.nodes:
                return "prompt queued"
            count = len(self.nodes) + self.omitted_nodes
            return f"prompt queued, but {count} node(s) failed validation and their outputs were dropped"
        head = f"{self.error_type}: {self.message}" if self.message else str(self.error_type)
        if self.node_id is not None and not self.nodes:
            head += f" (node {self.node_id})"
        return _clip(head, MAX_LINE)


def _clip(text: str, limit: int) -> str:
    """One line, control characters and runs of whitespace collapsed, at most ``limit`` characters."""
    flat = " ".join(sanitize(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _text(value: object, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParseError(f"{path}: expected string")
    return value


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ParseError(f"{path}: expected object")
    return value


def _error_text(kind: str, message: str, details: str, extra: Mapping[str, Any]) -> str:
    """The most useful bounded sentence for one error; never the traceback or the option list."""
    if kind in ("value_smaller_than_min", "value_bigger_than_max") and details:
        return f"{details}: {message}"
    if kind in ("exception_during_validation", "exception_during_inner_validation"):
        exc = extra.get("exception_type")
        name = exc if isinstance(exc, str) else "exception"
        text = f"{name}: {details}" if details else name
        if name == "KeyError":
            text += " (a link points to a node id that is not in the workflow)"
        return text
    return details or message


def _parse_error_entry(raw: object, path: str) -> NodeError:
    entry = _mapping(raw, path)
    kind = entry.get("type")
    if not isinstance(kind, str):
        raise ParseError(f"{path}.type: expected string")
    message = _text(entry.get("message"), f"{path}.message")
    details = _text(entry.get("details"), f"{path}.details")
    extra = entry.get("extra_info")
    extra_map = {} if extra is None else _mapping(extra, f"{path}.extra_info")
    input_name = extra_map.get("input_name")
    text = _clip(f"{_clip(kind, 64)}: {_error_text(kind, message, details, extra_map)}", MAX_TEXT)
    return NodeError(
        type=_clip(kind, 64),
        input_name=_clip(input_name, 64) if isinstance(input_name, str) else None,
        text=text,
    )


def _parse_node(node_id: str, raw: object, path: str) -> NodeRejection:
    entry = _mapping(raw, path)
    errors_raw = entry.get("errors", [])
    if not isinstance(errors_raw, list):
        raise ParseError(f"{path}.errors: expected array")
    errors = tuple(_parse_error_entry(e, f"{path}.errors[{i}]") for i, e in enumerate(errors_raw))
    class_type = entry.get("class_type")
    if class_type is not None and not isinstance(class_type, str):
        raise ParseError(f"{path}.class_type: expected string")
    dependents = entry.get("dependent_outputs", [])
    if not isinstance(dependents, list):
        raise ParseError(f"{path}.dependent_outputs: expected array")
    shown_id = _clip(node_id, 64)
    shown_class = _clip(class_type, 64) if class_type else None
    where = f"node {shown_id}" + (f" ({shown_class})" if shown_class else "")
    body = "; ".join(e.text for e in errors) or "failed validation"
    return NodeRejection(
        node_id=node_id,
        class_type=class_type,
        errors=errors,
        dependent_outputs=tuple(str(d) for d in dependents if isinstance(d, str | int)),
        line=_clip(f"{where}: {body}", MAX_LINE),
    )


def summarise_prompt_error(body: object) -> PromptRejection:
    """Summarise a decoded ``POST /prompt`` answer that reports validation problems.

    Takes the 400 body ``{"error": {type, message, details, extra_info}, "node_errors": {...}}`` or a 200
    body ``{"prompt_id", "number", "node_errors": {...}}``. Raises :class:`ParseError` for any other shape.
    """
    root = _mapping(body, "$")
    if "error" not in root and "node_errors" not in root:
        raise ParseError("$: expected 'error' or 'node_errors'")
    error_type: str | None = None
    message = details = ""
    node_id: str | None = None
    accepted = "error" not in root
    if not accepted:
        error = root["error"]
        if isinstance(error, str):  # servers before the typed errors answered {"error": "<text>"}
            message = error
        else:
            error_map = _mapping(error, "error")
            kind = error_map.get("type")
            if not isinstance(kind, str):
                raise ParseError("error.type: expected string")
            error_type = _clip(kind, 64)
            message = _text(error_map.get("message"), "error.message")
            details = _text(error_map.get("details"), "error.details")
            found = _NODE_ID_IN_DETAILS.search(details)
            node_id = found.group(1) if found else None
    node_errors = root.get("node_errors", {})
    if node_errors == []:  # older servers sent an empty list for "none"
        node_errors = {}
    node_map = _mapping(node_errors, "node_errors")
    ids = sorted(node_map, key=node_sort_key)
    # Every entry is shape-checked; only the first MAX_NODES are kept for display.
    parsed = [_parse_node(str(nid), node_map[nid], f"node_errors[{i}]") for i, nid in enumerate(ids)]
    nodes = tuple(parsed[:MAX_NODES])
    prompt_id = root.get("prompt_id")
    return PromptRejection(
        error_type=error_type,
        message=_clip(message, MAX_TEXT),
        details=_clip(details, MAX_TEXT),
        node_id=node_id,
        nodes=nodes,
        omitted_nodes=max(0, len(ids) - MAX_NODES),
        accepted=accepted,
        prompt_id=prompt_id if accepted and isinstance(prompt_id, str) else None,
    )
