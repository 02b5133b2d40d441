"""Canary workflows: the built-ins shipped here and users' API-format files, with ``{{placeholders}}``.

Placeholders vary an input every run so ComfyUI's cache cannot answer instead of executing:
``{{uuid}}`` (random hex), ``{{seed}}`` (random 0..2^32-1), ``{{timestamp}}`` (Unix ms), ``{{color}}``
(random 24-bit colour). A string that is exactly one numeric placeholder becomes a number.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from comfywatch.config import VerifyConfig, read_bounded_bytes

__all__ = ["BUILTINS", "MAX_WORKFLOW_BYTES", "MAX_WORKFLOW_FILES", "CanaryWorkflow", "WorkflowError",
           "WorkflowFileUnreadable", "load_workflow", "read_workflow_file", "render_workflow", "workflow_files"]

#: Largest workflow file read: API-format workflows are kilobytes.
MAX_WORKFLOW_BYTES = 4 * 2**20


class WorkflowError(ValueError):
    """The canary workflow file cannot be used (unreadable, not JSON, not API format)."""


class WorkflowFileUnreadable(Exception):
    """A workflow file cannot be read (missing, unreadable, no regular file, too large); one line, no content."""


def read_workflow_file(path: Path) -> Any:
    """The decoded JSON of the workflow file *path*: :class:`WorkflowFileUnreadable` when it cannot be read (a FIFO
    is not waited for, at most :data:`MAX_WORKFLOW_BYTES` are read), ValueError or RecursionError when it is
    no JSON (in UTF-8, with or without a byte-order mark, or UTF-16 or 32, as json reads bytes). Blocking."""
    try:
        data = read_bounded_bytes(path, MAX_WORKFLOW_BYTES)
    except ValueError as exc:
        raise WorkflowFileUnreadable(str(exc)) from None
    return json.loads(data)


@dataclass(frozen=True)
class Expectation:
    """What the output must be: ``images`` of ``image_size`` and/or text equal to / matching something."""

    images: int | None = None
    image_size: tuple[int, int] | None = None
    text_equals_placeholder: str | None = None
    text_matches: str | None = None
    any_output: bool = True


@dataclass(frozen=True)
class CanaryWorkflow:
    name: str
    template: dict[str, Any] = field(repr=False)
    expect: Expectation


BUILTINS: dict[str, Expectation] = {
    "preview-image": Expectation(images=1, image_size=(64, 64)),
    "echo-text": Expectation(text_equals_placeholder="comfywatch canary {{uuid}}"),
}


def _api_format(body: Any) -> dict[str, Any]:
    if isinstance(body, dict) and isinstance(body.get("prompt"), dict):
        body = body["prompt"]
    if isinstance(body, dict) and ("nodes" in body and "links" in body):
        raise WorkflowError('this is a UI-format workflow: export it with "Save (API Format)"')
    if not isinstance(body, dict) or not body or not all(
        isinstance(node, dict) and isinstance(node.get("class_type"), str) for node in body.values()
    ):
        raise WorkflowError('not an API-format workflow ({"<id>": {"class_type", "inputs"}})')
    return body


def load_workflow(spec: str, name: str, verify: VerifyConfig | None = None) -> CanaryWorkflow:
    """Load ``builtin:NAME`` or a file path."""
    if spec.startswith("builtin:"):
        builtin = spec.removeprefix("builtin:")
        if builtin not in BUILTINS:
            raise WorkflowError(f"unknown built-in canary {builtin!r} (have: {', '.join(sorted(BUILTINS))})")
        text = resources.files(__package__).joinpath(f"{builtin}.json").read_text(encoding="utf-8")
        return CanaryWorkflow(name, _api_format(json.loads(text)), BUILTINS[builtin])
    try:
        body = read_workflow_file(Path(spec))
    except WorkflowFileUnreadable as exc:
        raise WorkflowError(f"cannot read {spec}: {exc}") from None
    except (ValueError, RecursionError):
        raise WorkflowError(f"{spec} is not valid JSON") from None
    verify = verify or VerifyConfig()
    expect = Expectation(images=verify.images, text_matches=verify.text_matches, any_output=verify.any_output)
    return CanaryWorkflow(name, _api_format(body), expect)


def render_workflow(
    template: dict[str, Any], rng: random.Random | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Fill placeholders; returns the prompt and the values used (to verify echoes)."""
    rng = rng or random.Random()
    values: dict[str, Any] = {
        "uuid": uuid.uuid4().hex,
        "seed": rng.randrange(0, 2**32),
        "timestamp": int(time.time() * 1000),
        "color": rng.randrange(0, 2**24),
    }

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            for key, replacement in values.items():
                token = "{{" + key + "}}"
                if value == token and isinstance(replacement, int):
                    return replacement
                value = value.replace(token, str(replacement))
            return value
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return fill(template), {k: str(v) for k, v in values.items()}


def fill_text(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


#: Workflows read from one directory: a team's production set is tens; beyond this the directory is a mistake.
MAX_WORKFLOW_FILES = 200


def workflow_files(path: Path) -> list[Path]:
    """The workflows *path* names: the file itself, or a directory's ``*.json`` files (not its subdirectories),
    sorted by name, at most :data:`MAX_WORKFLOW_FILES`.

    Raises:
        WorkflowError: *path* cannot be read, or is a directory without a ``.json`` file.
    """
    try:
        if not path.is_dir():
            path.stat()
            return [path]
        files = sorted(f for f in path.iterdir() if f.suffix == ".json" and not f.is_dir())
    except OSError as exc:
        raise WorkflowError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not files:
        raise WorkflowError(f"{path} holds no .json workflow")
    return files[:MAX_WORKFLOW_FILES]
