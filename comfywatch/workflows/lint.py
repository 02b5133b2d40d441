"""Workflow linter: ComfyUI's own ``POST /prompt`` validation, run before the workflow is submitted.

Pure logic. It takes an API-format workflow and the server's ``GET /object_info`` answer and reports the
problems that ComfyUI 0.3.64 would reject the prompt for (``execution.py`` ``validate_prompt`` /
``validate_inputs``), each with ComfyUI's own error type as its ``code`` and one actionable fix.

Where this deliberately differs from the server (documented so nobody "fixes" it back):

* ComfyUI stops at the first unknown or missing ``class_type`` and, per node, at the first exception; the
  linter reports every problem it can find, so one run lists everything to fix.
* Like ComfyUI, only nodes that an output node depends on are checked: ComfyUI never validates (or runs) the
  rest. Nodes of an unknown class might be output nodes, so their upstream nodes are checked too.
* A link to a node id that is not in the workflow, or to an output index the node does not have, raises
  inside ComfyUI (``KeyError`` / ``IndexError``); it answers ``exception_during_validation`` when the broken
  node is an output node and ``exception_during_inner_validation`` otherwise. The linter uses the same two
  codes and says what actually went wrong.
* A dependency cycle makes 0.3.64 recurse until ``RecursionError``; the linter reports it as
  ``dependency_cycle``, the type newer ComfyUI versions use.
* ``object_info`` does not say which nodes have a ``VALIDATE_INPUTS`` hook (which replaces ComfyUI's range
  and list checks for the inputs it takes). The core file pickers (``image_upload`` / ``video_upload``
  combos: Load Image, Load Video) have one that answers ``custom_validation_failed`` for a missing file, and
  the linter does the same; a custom node's hook may accept values the linter flags. Combos whose options
  the server does not list (``remote`` combos) are not checked.
* A server chooses how big its catalogue is. The linter knows the first
  :data:`~comfywatch.parse.catalog.MAX_CLASSES` classes of it, the ones the catalogue check keeps
  (:func:`~comfywatch.parse.catalog.catalog_from`); a real server has a few thousand. The "Did you mean"
  suggestion for an unknown class (difflib) is looked for within a fixed amount of work per run, so a lint
  takes less than a second whatever the server sends: a real catalogue never runs out of it, a hostile one
  loses only the suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from comfywatch.errors import ParseError
from comfywatch.parse.catalog import MAX_CLASSES, combo_choices, kept_classes
from comfywatch.parse.nodeerrors import node_sort_key

__all__ = [
    "InputSpec",
    "LintCode",
    "LintProblem",
    "NodeSpec",
    "WorkflowFormat",
    "detect_format",
    "lint_workflow",
    "parse_object_info",
    "required_classes",
    "unwrap_workflow",
]


class WorkflowFormat(StrEnum):
    """What kind of workflow file a JSON document is."""

    API = "api"
    UI = "ui"
    UNKNOWN = "unknown"


class LintCode(StrEnum):
    """Problem codes: ComfyUI's own error ``type`` names, plus ``ui_format`` for the editor's file format."""

    INVALID_PROMPT = "invalid_prompt"
    PROMPT_NO_OUTPUTS = "prompt_no_outputs"
    REQUIRED_INPUT_MISSING = "required_input_missing"
    BAD_LINKED_INPUT = "bad_linked_input"
    EXCEPTION_DURING_VALIDATION = "exception_during_validation"
    EXCEPTION_DURING_INNER_VALIDATION = "exception_during_inner_validation"
    RETURN_TYPE_MISMATCH = "return_type_mismatch"
    VALUE_NOT_IN_LIST = "value_not_in_list"
    VALUE_SMALLER_THAN_MIN = "value_smaller_than_min"
    VALUE_BIGGER_THAN_MAX = "value_bigger_than_max"
    INVALID_INPUT_TYPE = "invalid_input_type"
    CUSTOM_VALIDATION_FAILED = "custom_validation_failed"
    DEPENDENCY_CYCLE = "dependency_cycle"
    UI_FORMAT = "ui_format"


@dataclass(frozen=True)
class LintProblem:
    """One reason the server would reject the workflow; ``node_id`` is None for workflow-wide problems."""

    node_id: str | None
    class_type: str | None
    code: str
    message: str
    fix: str

    @property
    def line(self) -> str:
        """One line in the same shape as the server-side summaries: ``node 4 (Class): code: message``."""
        if self.node_id is None:
            return f"{self.code}: {self.message}"
        where = f"node {self.node_id}" + (f" ({self.class_type})" if self.class_type else "")
        return f"{where}: {self.code}: {self.message}"


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a node class, as ``object_info`` lists it."""

    name: str
    required: bool
    # A type name ("INT", "IMAGE", "COMBO", "A,B", "*"), a tuple of combo choices, or None when the server's
    # description of the input was malformed and it cannot be checked.
    type: str | tuple[Any, ...] | None
    options: Mapping[str, Any]

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The allowed values of a combo input, or None when it is not a combo or its list is not served."""
        return combo_choices(self.type, self.options)

    @property
    def type_name(self) -> str:
        """The type as a person reads it: combo inputs are ``COMBO``."""
        if isinstance(self.type, str):
            return self.type
        return "COMBO" if isinstance(self.type, tuple) else "?"


@dataclass(frozen=True)
class NodeSpec:
    """What the server says about one node class. ``complete`` is False for a malformed entry."""

    name: str
    inputs: Mapping[str, InputSpec]
    outputs: tuple[Any, ...] | None
    output_node: bool
    complete: bool = True


_WIDGET_TYPES: Final = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
_MAX_VALUE_CHARS: Final = 60
_MAX_CHOICES_SHOWN: Final = 6
_MAX_CYCLE_SHOWN: Final = 8

# "Did you mean" searches (see _ClassIndex.close_match). difflib compares a name with every candidate in
# two steps: a quick filter (lengths, then letter counts: linear in the candidate) and, for the candidates
# that pass it, an alignment (ratio: about the product of the two lengths, more for repetitive names).
#: How close a class name must be to be suggested (difflib's ratio).
_FUZZY_CUTOFF: Final = 0.85
#: Longest unknown class name that is searched for.
_FUZZY_MAX_CHARS: Final = 100
#: Unknown classes per lint run that are searched for; the rest get the install fix.
_FUZZY_NAMES: Final = 20
#: Catalogue names that go through difflib's quick filter per lint run: every search of a catalogue of 5,000
#: classes. A search that would need more is not started.
_FUZZY_CANDIDATES: Final = 100_000
#: Characters of an unknown name times those of a candidate that difflib may align per lint run (real names
#: pass the quick filter a few at a time: some 2,500 alignments of 20-character names). A search that runs
#: out gives no suggestion.
_FUZZY_PAIRS: Final = 1_000_000

# Which models/ sub-folder a loader's file list comes from (folder_paths names in ComfyUI 0.3.64).
_MODEL_FOLDER_BY_CLASS_INPUT: Final[Mapping[tuple[str, str], str]] = {
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("DiffusersLoader", "model_path"): "diffusers",
    ("ModelPatchLoader", "name"): "model_patches",
}
_MODEL_FOLDER_BY_INPUT: Final[Mapping[str, str]] = {
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
    "unet_name": "diffusion_models",
    "photomaker_model_name": "photomaker",
    "config_name": "configs",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "audio_encoder_name": "audio_encoders",
}
# Combos whose choices are the files in the server's input/ folder.
_INPUT_FOLDER_CLASS_INPUTS: Final = frozenset({("LoadLatent", "latent")})
_UPLOAD_FLAGS: Final = ("image_upload", "video_upload", "file_upload")
# Upload pickers that ComfyUI checks with a VALIDATE_INPUTS hook (custom_validation_failed), not the list.
_HOOKED_UPLOAD_FLAGS: Final = ("image_upload", "video_upload")
_ANNOTATIONS: Final = (" [input]", " [output]", " [temp]")


# --------------------------------------------------------------------------------------------- formats


def _looks_like_node(value: object) -> bool:
    return isinstance(value, Mapping) and ("class_type" in value or "inputs" in value)


def _is_ui(obj: Mapping[Any, Any]) -> bool:
    # The editor's file always has a "nodes" array; an API workflow's values are node objects, never arrays.
    return isinstance(obj.get("nodes"), list)


def unwrap_workflow(obj: object) -> object:
    """The node map of a workflow, taking ``{"prompt": {...}}`` (a POST /prompt body) apart when given one.

    It is a request body, not a workflow with a node called "prompt", when no value in it is a node.
    """
    if isinstance(obj, Mapping) and "prompt" in obj and not any(_looks_like_node(v) for v in obj.values()):
        return obj["prompt"]
    return obj


def detect_format(obj: object) -> WorkflowFormat:
    """Say whether ``obj`` is an API-format workflow, the editor's UI-format file, or neither."""
    if not isinstance(obj, Mapping):
        return WorkflowFormat.UNKNOWN
    if _is_ui(obj):
        return WorkflowFormat.UI
    inner = unwrap_workflow(obj)
    if not isinstance(inner, Mapping):
        return WorkflowFormat.UNKNOWN
    if inner is not obj and _is_ui(inner):
        return WorkflowFormat.UI
    if not inner or any(_looks_like_node(node) for node in inner.values()):
        return WorkflowFormat.API
    return WorkflowFormat.UNKNOWN


def required_classes(workflow: object) -> set[str]:
    """The node classes an API-format workflow uses (empty for anything else); never raises."""
    prompt = unwrap_workflow(workflow)
    if detect_format(workflow) is not WorkflowFormat.API or not isinstance(prompt, Mapping):
        return set()
    return {
        node["class_type"]
        for node in prompt.values()
        if isinstance(node, Mapping) and isinstance(node.get("class_type"), str)
    }


# ----------------------------------------------------------------------------------------- object_info


def _fail(path: str, expected: str) -> ParseError:
    return ParseError(f"{path}: expected {expected}")


def _freeze(value: object) -> object:
    # Combo lists become tuples so specs compare like ComfyUI's lists and can be stored in frozen objects.
    return tuple(value) if isinstance(value, list) else value


def _parse_input(name: str, info: object, required: bool, path: str) -> InputSpec:
    if not isinstance(info, list | tuple) or not info:
        raise _fail(path, "non-empty array")
    kind = info[0]
    if not isinstance(kind, str | list):
        raise _fail(f"{path}[0]", "type name or list of choices")
    options = info[1] if len(info) > 1 else {}
    if not isinstance(options, Mapping):
        raise _fail(f"{path}[1]", "object")
    frozen = tuple(kind) if isinstance(kind, list) else kind
    return InputSpec(name=name, required=required, type=frozen, options=options)


def _ordered_names(section: Mapping[str, Any], order: object) -> list[str]:
    names = [n for n in order if isinstance(n, str) and n in section] if isinstance(order, list) else []
    seen = set(names)
    return names + [n for n in section if n not in seen]


def _parse_node_spec(name: str, entry: object) -> NodeSpec:
    if not isinstance(entry, Mapping):
        raise _fail(name, "object")
    declared = entry.get("input", {})
    if not isinstance(declared, Mapping):
        raise _fail(f"{name}.input", "object")
    order = entry.get("input_order", {})
    if not isinstance(order, Mapping):
        order = {}
    inputs: dict[str, InputSpec] = {}
    for category in ("required", "optional"):
        section = declared.get(category, {})
        if not isinstance(section, Mapping):
            raise _fail(f"{name}.input.{category}", "object")
        for input_name in _ordered_names(section, order.get(category)):
            if not isinstance(input_name, str):
                raise _fail(f"{name}.input.{category}", "string keys")
            path = f"{name}.input.{category}.{input_name}"
            inputs.setdefault(
                input_name, _parse_input(input_name, section[input_name], category == "required", path)
            )
    outputs = entry.get("output", [])
    if not isinstance(outputs, list) or not all(isinstance(o, str | list) for o in outputs):
        raise _fail(f"{name}.output", "array of type names")
    output_node = entry.get("output_node", False)
    if not isinstance(output_node, bool):
        raise _fail(f"{name}.output_node", "boolean")
    return NodeSpec(name, inputs, tuple(_freeze(o) for o in outputs), output_node)


def _lenient_spec(name: str, entry: object) -> NodeSpec:
    try:
        return _parse_node_spec(name, entry)
    except ParseError:
        # A custom node with an odd description still exists on the server; it just cannot be checked.
        output_node = isinstance(entry, Mapping) and entry.get("output_node") is True
        return NodeSpec(name, {}, None, output_node, complete=False)


def parse_object_info(body: object, *, strict: bool = True) -> dict[str, NodeSpec]:
    """Parse a ``GET /object_info`` (or ``/object_info/{class}``) answer into node specs.

    Strict (the default) raises :class:`ParseError` naming the first malformed entry. With ``strict=False``
    a malformed class is kept as an unchecked ``NodeSpec`` (``complete=False``), because one badly written
    custom node must not stop a workflow that does not use it from being linted. The top level must always
    be an object. Only its first :data:`~comfywatch.parse.catalog.MAX_CLASSES` classes are read.
    """
    if not isinstance(body, Mapping):
        raise _fail("$", "object")
    specs: dict[str, NodeSpec] = {}
    for name, entry in kept_classes(body):
        if not isinstance(name, str):
            raise _fail("$", "string keys")
        specs[name] = _parse_node_spec(name, entry) if strict else _lenient_spec(name, entry)
    return specs


def _catalogue(object_info: object) -> Mapping[str, NodeSpec]:
    if not isinstance(object_info, Mapping):
        return {}
    if len(object_info) <= MAX_CLASSES and all(isinstance(v, NodeSpec) for v in object_info.values()):
        return object_info
    return {
        str(name): entry if isinstance(entry, NodeSpec) else _lenient_spec(str(name), entry)
        for name, entry in kept_classes(object_info)
    }


class _ClassIndex:
    """The catalogue's class names by lowercase name and by length, built once per lint run (and only when
    a class is unknown), with the fuzzy-search budgets of that run."""

    def __init__(self, names: Iterable[str]) -> None:
        self.lowered: dict[str, str] = {}
        self.by_length: dict[int, list[str]] = {}
        for name in names:
            self.lowered[name.lower()] = name
            self.by_length.setdefault(len(name), []).append(name)
        self.candidates = _FUZZY_CANDIDATES
        self.pairs = _FUZZY_PAIRS

    def close_match(self, word: str) -> str | None:
        """``difflib.get_close_matches(word, names, n=1, cutoff=_FUZZY_CUTOFF)``, the same answer, or None
        when the run's budget does not cover the search.

        The names whose length alone rules them out (difflib's ``real_quick_ratio``) are never looked at.
        """
        # The same float expression as difflib's real_quick_ratio, so exactly the lengths it lets through.
        lengths = [
            n
            for n in self.by_length
            if (2.0 * min(n, len(word)) / (n + len(word)) if n + len(word) else 1.0) >= _FUZZY_CUTOFF
        ]
        count = sum(len(self.by_length[n]) for n in lengths)
        if count > self.candidates:
            return None
        self.candidates -= count
        matcher = difflib.SequenceMatcher()
        matcher.set_seq2(word)  # word as seq2 and candidates as seq1, as get_close_matches: ratio is asymmetric
        best: tuple[float, str] | None = None
        for n in lengths:
            for name in self.by_length[n]:
                matcher.set_seq1(name)
                if matcher.real_quick_ratio() < _FUZZY_CUTOFF or matcher.quick_ratio() < _FUZZY_CUTOFF:
                    continue
                self.pairs -= max(1, n * len(word))
                if self.pairs < 0:
                    self.pairs = 0
                    return None
                score = matcher.ratio()
                # get_close_matches keeps the largest (score, name): ties go to the later name in sort order.
                if score >= _FUZZY_CUTOFF and (best is None or (score, name) > best):
                    best = (score, name)
        return None if best is None else best[1]


# --------------------------------------------------------------------------------------------- helpers


def _show(value: object) -> str:
    """A bounded, single-line rendering of a workflow value (they can hold long prompt text)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 1] + "…"
    return text


def _choices_text(choices: tuple[Any, ...]) -> str:
    if not choices:
        return "none (the list is empty)"
    shown = ", ".join(_show(c) for c in choices[:_MAX_CHOICES_SHOWN])
    more = len(choices) - _MAX_CHOICES_SHOWN
    return shown + (f" … ({more} more)" if more > 0 else "")


def _types_compatible(received: object, expected: object) -> bool:
    """``comfy_execution/validation.py`` ``validate_node_input``, non-strict, on object_info values."""
    if received == expected:
        return True
    if received == "*" or expected == "*":
        return True
    # Custom nodes that output a list of options may feed a COMBO input.
    if isinstance(received, tuple) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, eq=False)
class _Node:
    key: Any
    node_id: str
    class_type: str | None
    spec: NodeSpec | None
    inputs: Mapping[str, Any] | None


# ------------------------------------------------------------------------------------------------ lint


# ComfyUI's validation is written twice on purpose: here as a client-side check that lists every problem with
# its fix, and in comfywatch.sim.local.validation as the simulated server answers it. The simulator is the
# independent server this linter is tested against, so the two must not share code: a misreading of
# execution.py shared by both would pass every test.
class _Linter:
    """One lint run over one workflow: collects problems, then orders them."""

    def __init__(
        self, prompt: Mapping[Any, Any], catalogue: Mapping[str, NodeSpec], targets: list[Any] | None
    ) -> None:
        self.prompt = prompt
        self.catalogue = catalogue
        self.targets = targets
        self.nodes: dict[Any, _Node] = {}
        self.problems: list[LintProblem] = []
        self.class_problems = False
        self.fuzzy_names = _FUZZY_NAMES
        self._index: _ClassIndex | None = None

    def add(self, node: _Node | None, code: LintCode, message: str, fix: str) -> None:
        self.problems.append(
            LintProblem(
                node_id=None if node is None else node.node_id,
                class_type=None if node is None else node.class_type,
                code=code,
                message=message,
                fix=fix,
            )
        )

    def run(self) -> list[LintProblem]:
        for key, raw in self.prompt.items():
            self.nodes[key] = self._classify(key, raw)
        outputs = [
            n
            for n in self.nodes.values()
            if n.spec is not None and n.spec.output_node and (self.targets is None or n.key in self.targets)
        ]
        if not outputs and not self.class_problems:
            self._no_outputs()
        # Nodes of an unknown class may be output nodes: check what they depend on as well.
        roots = outputs + [n for n in self.nodes.values() if n.spec is None and n.inputs is not None]
        reachable = self._upstream(roots)
        for node in sorted(reachable, key=lambda n: node_sort_key(n.node_id)):
            if node.spec is not None and node.spec.complete:
                self._check_node(node, node.spec)
        self._check_cycles(reachable)
        # sorted() is stable: within a node, problems keep the input order they were found in.
        return sorted(
            self.problems, key=lambda p: (-1, 0, "") if p.node_id is None else node_sort_key(p.node_id)
        )

    # -- nodes and classes (validate_prompt's first loop)

    def _classify(self, key: Any, raw: object) -> _Node:
        node_id = str(key)
        if not isinstance(raw, Mapping):
            self.class_problems = True
            node = _Node(key, node_id, None, None, None)
            self.add(
                node,
                LintCode.INVALID_PROMPT,
                f"entry {_show(node_id)} is {_show(raw)}, not a node object",
                'Make every entry {"class_type": ..., "inputs": {...}}, or remove it '
                '(JSON has no comments: a "_comment" key counts as a node).',
            )
            return node
        inputs = raw.get("inputs")
        inputs_map = inputs if isinstance(inputs, Mapping) else None
        class_type = raw.get("class_type")
        if "class_type" not in raw:
            self.class_problems = True
            node = _Node(key, node_id, None, None, inputs_map)
            self.add(
                node,
                LintCode.INVALID_PROMPT,
                "the node has no class_type",
                'Give every node a "class_type"; a file saved from the editor must be exported with '
                '"Save (API Format)".',
            )
            return node
        if not isinstance(class_type, str):
            self.class_problems = True
            node = _Node(key, node_id, None, None, inputs_map)
            self.add(
                node,
                LintCode.INVALID_PROMPT,
                f"class_type is {_show(class_type)}, not a node class name",
                'Set "class_type" to the name of a node class, such as "PreviewImage".',
            )
            return node
        spec = self.catalogue.get(class_type)
        node = _Node(key, node_id, class_type, spec, inputs_map)
        if spec is None:
            self.class_problems = True
            self.add(
                node,
                LintCode.INVALID_PROMPT,
                f"node class {_show(class_type)} does not exist on this server (custom node not installed?)",
                self._unknown_class_fix(class_type),
            )
        return node

    def _unknown_class_fix(self, class_type: str) -> str:
        if self._index is None:
            self._index = _ClassIndex(self.catalogue)
        close = self._index.lowered.get(class_type.lower())
        # Fuzzy matching costs a pass over the catalogue: only for a few plausible names per run.
        self.fuzzy_names -= 1
        if close is None and len(class_type) <= _FUZZY_MAX_CHARS and self.fuzzy_names >= 0:
            close = self._index.close_match(class_type)
        if close is not None and close != class_type:
            return f"Did you mean {close!r}? Class names are case-sensitive; otherwise install its node pack."
        return (
            f"Install the custom node pack that provides {_show(class_type)} "
            "(e.g. with ComfyUI-Manager) and restart ComfyUI."
        )

    def _no_outputs(self) -> None:
        if not self.nodes:
            message = "the workflow has no nodes"
        else:
            message = "no output node: nothing in the workflow saves or previews a result, so nothing runs"
        self.add(
            None,
            LintCode.PROMPT_NO_OUTPUTS,
            message,
            "Add an output node such as PreviewImage, SaveImage or PreviewAny and connect it.",
        )

    # -- reachability and cycles

    def _link_target(self, value: object) -> _Node | None:
        if not isinstance(value, list) or len(value) != 2:
            return None
        try:
            return self.nodes.get(value[0])
        except TypeError:  # an unhashable id (a list or object) can name no node
            return None

    def _upstream_of(self, node: _Node) -> list[_Node]:
        if node.inputs is None:
            return []
        found = (self._link_target(v) for v in node.inputs.values())
        return [n for n in found if n is not None]

    def _upstream(self, roots: Iterable[_Node]) -> list[_Node]:
        seen: dict[Any, _Node] = {}
        stack = list(roots)
        while stack:
            node = stack.pop()
            if node.key in seen:
                continue
            seen[node.key] = node
            stack.extend(self._upstream_of(node))
        return list(seen.values())

    def _check_cycles(self, reachable: list[_Node]) -> None:
        for component in _strongly_connected(reachable, self._upstream_of):
            ordered = sorted(component, key=lambda n: node_sort_key(n.node_id))
            head = ordered[0]
            loops_on_itself = any(n is head for n in self._upstream_of(head))
            if len(ordered) == 1 and not loops_on_itself:
                continue
            members = " → ".join(n.node_id for n in ordered[:_MAX_CYCLE_SHOWN])
            if len(ordered) > _MAX_CYCLE_SHOWN:
                members += f" … ({len(ordered)} nodes)"
            self.add(
                head,
                LintCode.DEPENDENCY_CYCLE,
                f"nodes {members} depend on each other in a loop (ComfyUI 0.3.64 fails with RecursionError)",
                "Remove one of the links that closes the loop.",
            )

    # -- per-node inputs (validate_inputs)

    def _exception_code(self, spec: NodeSpec) -> LintCode:
        # ComfyUI catches an error raised while checking an output node at the top (…_during_validation)
        # and one raised in a node it reached through a link one level up (…_during_inner_validation).
        if spec.output_node:
            return LintCode.EXCEPTION_DURING_VALIDATION
        return LintCode.EXCEPTION_DURING_INNER_VALIDATION

    def _check_node(self, node: _Node, spec: NodeSpec) -> None:
        raw = self.prompt[node.key]
        if node.inputs is None:
            missing = "inputs" not in raw
            self.add(
                node,
                self._exception_code(spec),
                "the node has no inputs object" if missing else "the node's inputs are not an object",
                'Give the node an "inputs" object, e.g. "inputs": {}.',
            )
            return
        for ispec in spec.inputs.values():
            if ispec.name not in node.inputs:
                if ispec.required:
                    self._missing(node, ispec)
                continue
            value = node.inputs[ispec.name]
            if isinstance(value, list):
                self._check_link(node, spec, ispec, value)
            else:
                self._check_value(node, spec, ispec, value)

    def _missing(self, node: _Node, ispec: InputSpec) -> None:
        if ispec.type_name in _WIDGET_TYPES:
            default = ispec.options.get("default")
            hint = f", default {_show(default)}" if "default" in ispec.options else ""
            fix = f"Set {ispec.name!r} ({ispec.type_name}{hint}) or connect it to a node output."
        else:
            fix = f"Connect {ispec.name!r} to a node output of type {ispec.type_name}."
        self.add(node, LintCode.REQUIRED_INPUT_MISSING, f"required input {ispec.name!r} is missing", fix)

    def _check_link(self, node: _Node, spec: NodeSpec, ispec: InputSpec, link: list[Any]) -> None:
        name = ispec.name
        if len(link) != 2:
            self.add(
                node,
                LintCode.BAD_LINKED_INPUT,
                f"input {name!r} is {_show(link)}, not a [node_id, output_index] link",
                f'Write the link as ["<node id>", <output index>], e.g. {name!r}: ["1", 0].',
            )
            return
        source_key, index = link
        source = self._link_target(link)
        if source is None:
            self._dangling_link(node, spec, name, source_key, index)
            return
        if source.spec is None or source.spec.outputs is None:
            return  # its class is unknown or undescribed: already reported, nothing to compare with
        outputs = source.spec.outputs
        try:
            received = outputs[index]
        except (IndexError, TypeError):
            types = ", ".join(str(o) if isinstance(o, str) else "COMBO" for o in outputs) or "none"
            fix = (
                f"Use an output index from 0 to {len(outputs) - 1}."
                if outputs
                else f"Node {source.node_id} has no outputs: connect {name!r} to another node."
            )
            self.add(
                node,
                self._exception_code(spec),
                f"input {name!r} uses output {_show(index)} of node {source.node_id} ({source.class_type}), "
                f"which has {len(outputs)} output(s): {types}",
                fix,
            )
            return
        if ispec.type is not None and not _types_compatible(received, ispec.type):
            got = received if isinstance(received, str) else "COMBO"
            self.add(
                node,
                LintCode.RETURN_TYPE_MISMATCH,
                f"input {name!r} expects {ispec.type_name} but output {_show(index)} "
                f"of node {source.node_id} ({source.class_type}) is {got}",
                f"Connect {name!r} to an output of type {ispec.type_name}, or convert the {got} first.",
            )

    def _dangling_link(
        self, node: _Node, spec: NodeSpec, name: str, source_key: object, index: object
    ) -> None:
        as_text = str(source_key)
        if (_is_int(source_key) or isinstance(source_key, float)) and as_text in self.prompt:
            message = f"input {name!r} links to node {as_text} written as a number; node ids are strings"
            fix = f'Write the link as ["{as_text}", {_show(index)}].'
        else:
            message = (
                f"input {name!r} links to node {_show(source_key)}, which is not in the workflow "
                "(ComfyUI answers with a KeyError)"
            )
            fix = f"Connect {name!r} to the output of a node that exists, or add the missing node back."
        self.add(node, self._exception_code(spec), message, fix)

    def _check_value(self, node: _Node, spec: NodeSpec, ispec: InputSpec, value: object) -> None:
        if ispec.type is None:
            return
        name = ispec.name
        # The editor wraps list-valued widgets as {"__value__": [...]} so they are not read as links.
        if isinstance(value, Mapping) and "__value__" in value:
            value = value["__value__"]
        try:
            if ispec.type == "INT":
                value = int(value)  # type: ignore[call-overload]
            elif ispec.type == "FLOAT":
                value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError) as exc:
            example = ispec.options.get("default", 0 if ispec.type == "INT" else 1.0)
            self.add(
                node,
                LintCode.INVALID_INPUT_TYPE,
                f"input {name!r} is {_show(value)}, not a valid {ispec.type} ({type(exc).__name__})",
                f"Give {name!r} a number, e.g. {_show(example)}.",
            )
            return
        if self._check_range(node, spec, ispec, value):
            return
        choices = ispec.choices
        if choices is not None:
            self._check_choice(node, ispec, value, choices)

    def _check_range(self, node: _Node, spec: NodeSpec, ispec: InputSpec, value: Any) -> bool:
        name = ispec.name
        for bound, code, word in (
            ("min", LintCode.VALUE_SMALLER_THAN_MIN, "at least"),
            ("max", LintCode.VALUE_BIGGER_THAN_MAX, "at most"),
        ):
            if bound not in ispec.options:
                continue
            limit = ispec.options[bound]
            try:
                outside = value < limit if bound == "min" else value > limit
            except TypeError:
                self.add(
                    node,
                    self._exception_code(spec),
                    f"input {name!r} is {_show(value)}, which cannot be compared "
                    f"with its {bound} {_show(limit)}",
                    f"Give {name!r} a number.",
                )
                return True
            if outside:
                relation = "smaller than the minimum" if bound == "min" else "bigger than the maximum"
                self.add(
                    node,
                    code,
                    f"input {name!r} is {_show(value)}, {relation} {_show(limit)}",
                    f"Set {name!r} to {word} {_show(limit)}.",
                )
                return True
        return False

    def _check_choice(self, node: _Node, ispec: InputSpec, value: object, choices: tuple[Any, ...]) -> None:
        if value in choices:
            return
        name = ispec.name
        class_type = node.class_type or ""
        upload = any(ispec.options.get(flag) for flag in _UPLOAD_FLAGS)
        if upload and isinstance(value, str) and value.endswith(_ANNOTATIONS):
            return  # "name.png [output]" points at another folder; only the server can check it
        if any(ispec.options.get(flag) for flag in _HOOKED_UPLOAD_FLAGS):
            self.add(
                node,
                LintCode.CUSTOM_VALIDATION_FAILED,
                f"{name} {_show(value)} is not a file in the server's input/ folder",
                f"Upload {_show(value)} to the server (the node's upload button or POST /upload/image), "
                "or pick a file that is there.",
            )
            return
        folder = _MODEL_FOLDER_BY_CLASS_INPUT.get((class_type, name)) or _MODEL_FOLDER_BY_INPUT.get(name)
        if folder is not None:
            message = (
                f"{name} {_show(value)} is not installed on this server "
                f"({len(choices)} file(s) in models/{folder}/)"
            )
            fix = f"Put {_show(value)} in ComfyUI's models/{folder}/ folder, or choose an installed file."
        elif upload or (class_type, name) in _INPUT_FOLDER_CLASS_INPUTS:
            message = f"{name} {_show(value)} is not a file in the server's input/ folder"
            fix = f"Copy {_show(value)} into ComfyUI's input/ folder, or choose a file that is there."
        else:
            message = f"input {name!r} is {_show(value)}, not one of: {_choices_text(choices)}"
            fix = f"Set {name!r} to one of the listed values (names are case-sensitive)."
        self.add(node, LintCode.VALUE_NOT_IN_LIST, message, fix)


def _strongly_connected(nodes: list[_Node], edges: Any) -> list[list[_Node]]:
    """Tarjan's algorithm, iterative (a long chain of nodes must not hit Python's recursion limit)."""
    index: dict[Any, int] = {}
    low: dict[Any, int] = {}
    on_stack: set[Any] = set()
    stack: list[_Node] = []
    result: list[list[_Node]] = []
    counter = 0
    for start in sorted(nodes, key=lambda n: node_sort_key(n.node_id)):
        if start.key in index:
            continue
        work: list[tuple[_Node, Iterable[_Node]]] = [(start, iter(edges(start)))]
        index[start.key] = low[start.key] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start.key)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child.key not in index:
                    index[child.key] = low[child.key] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child.key)
                    work.append((child, iter(edges(child))))
                    advanced = True
                    break
                if child.key in on_stack:
                    low[node.key] = min(low[node.key], index[child.key])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent.key] = min(low[parent.key], low[node.key])
            if low[node.key] == index[node.key]:
                component: list[_Node] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member.key)
                    component.append(member)
                    if member.key == node.key:
                        break
                result.append(component)
    return result


def _ui_problem() -> LintProblem:
    return LintProblem(
        node_id=None,
        class_type=None,
        code=LintCode.UI_FORMAT,
        message="this is the editor's UI-format workflow file, not the API format that POST /prompt takes",
        fix='Open it in ComfyUI and export it with "Save (API Format)" (Workflow → Export (API)).',
    )


def lint_workflow(workflow: object, object_info: Mapping[str, Any]) -> list[LintProblem]:
    """Check a workflow against the server's ``/object_info`` as ComfyUI's ``POST /prompt`` would.

    ``workflow`` is an API-format node map or a ``{"prompt": {...}}`` request body, whose
    ``partial_execution_targets`` (when given) limit the outputs checked, as on the server. ``object_info``
    is the decoded ``GET /object_info`` answer or the result of :func:`parse_object_info` (parse once, lint
    many).
    Returns the problems ordered by node id (workflow-wide ones first); an empty list means the server would
    accept it. Never raises: anything that is not a workflow comes back as a problem.
    """
    if detect_format(workflow) is WorkflowFormat.UI:
        return [_ui_problem()]
    prompt = unwrap_workflow(workflow)
    if not isinstance(prompt, Mapping):
        return [
            LintProblem(
                node_id=None,
                class_type=None,
                code=LintCode.INVALID_PROMPT,
                message=f"the workflow is {type(prompt).__name__}, not a JSON object of nodes",
                fix='Use an API-format workflow: {"1": {"class_type": ..., "inputs": {...}}, ...}.',
            )
        ]
    targets = workflow.get("partial_execution_targets") if isinstance(workflow, Mapping) else None
    if prompt is workflow or not isinstance(targets, list):
        targets = None
    return _Linter(prompt, _catalogue(object_info), targets).run()
