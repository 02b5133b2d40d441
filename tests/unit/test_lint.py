"""Workflow linter: predicts every recorded ComfyUI 0.3.64 rejection and follows its validation rules."""

from __future__ import annotations

import copy
import difflib
import json
import os
import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from comfywatch.checks.catalog import lint_verdicts
from comfywatch.errors import ParseError
from comfywatch.parse.catalog import MAX_CLASSES, catalog_from
from comfywatch.parse.nodeerrors import summarise_prompt_error
from comfywatch.workflows import load_workflow
from comfywatch.workflows.lint import (
    _FUZZY_CANDIDATES,
    _FUZZY_PAIRS,
    LintCode,
    LintProblem,
    NodeSpec,
    WorkflowFormat,
    detect_format,
    lint_workflow,
    parse_object_info,
    required_classes,
)
from tests.fixtures import FIXTURES, load_json

OBJECT_INFO: dict[str, Any] = load_json("object_info.json")
CATALOGUE = parse_object_info(OBJECT_INFO)
MANIFEST: list[dict[str, Any]] = load_json("manifest.json")

# The server answers a body without a workflow ("{}" or "[1, 2]") with no_prompt; the linter is given the
# body as the workflow itself and calls it an empty workflow or not a workflow at all.
EQUIVALENT_CODES: dict[str, set[str]] = {"no_prompt": {"prompt_no_outputs", "invalid_prompt"}}


def _recorded_rejections() -> list[tuple[str, Any, Any]]:
    cases = []
    for entry in MANIFEST:
        name = entry.get("file") or ""
        if not (name.startswith("prompt_error_") or name.startswith("prompt_ok_partial")):
            continue
        try:
            answer = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
        except ValueError:
            continue  # 500/413 plain-text answers carry no validation result
        cases.append((name, entry["request_body"], answer))
    return cases


REJECTIONS = _recorded_rejections()


def _server_findings(answer: object) -> set[tuple[str | None, str]]:
    rejection = summarise_prompt_error(answer)
    if rejection.nodes:
        return {(node.node_id, error.type) for node in rejection.nodes for error in node.errors}
    assert rejection.error_type is not None
    return {(rejection.node_id, rejection.error_type)}


def _lint_findings(problems: list[LintProblem]) -> set[tuple[str | None, str]]:
    return {(p.node_id, str(p.code)) for p in problems}


def _codes(problems: list[LintProblem]) -> list[tuple[str | None, str]]:
    return [(p.node_id, str(p.code)) for p in problems]


def _workflow(name: str) -> dict[str, Any]:
    body: dict[str, Any] = load_json(f"workflows/{name}")
    return body


def _preview(source: list[Any]) -> dict[str, Any]:
    return {"class_type": "PreviewAny", "inputs": {"source": source}}


def test_every_recorded_rejection_is_a_case() -> None:
    """All 13 JSON rejections and the 200 partial answer in the manifest are exercised below."""
    names = {name for name, _, _ in REJECTIONS}
    assert len(names) >= 15
    assert "prompt_error_link_to_missing_node.json" in names
    assert "prompt_ok_partial_with_node_errors.json" in names


@pytest.mark.parametrize(("name", "request_body", "answer"), REJECTIONS, ids=[c[0] for c in REJECTIONS])
def test_lint_predicts_recorded_rejection(name: str, request_body: Any, answer: Any) -> None:
    """The linter reports exactly the (node id, error type) pairs the real server reported."""
    server = _server_findings(answer)
    problems = lint_workflow(request_body, OBJECT_INFO)
    linted = _lint_findings(problems)
    for node_id, code in server:
        allowed = EQUIVALENT_CODES.get(code, {code})
        assert any(n == node_id and c in allowed for n, c in linted), (name, server, linted)
    assert len(linted) == len(server), (name, server, linted)
    assert all(p.fix for p in problems)


def test_missing_checkpoint_fix_names_models_folder() -> None:
    """A checkpoint the server does not list is value_not_in_list with a fix naming models/checkpoints/."""
    problems = lint_workflow(_workflow("txt2img_missing_checkpoint.json"), CATALOGUE)
    assert _codes(problems) == [("4", "value_not_in_list")]
    assert problems[0].class_type == "CheckpointLoaderSimple"
    assert "does_not_exist.safetensors" in problems[0].message
    assert "models/checkpoints/" in problems[0].fix


def test_installed_checkpoint_lints_clean() -> None:
    """With the checkpoint in the server's list (models_checkpoints.json plus one), txt2img is clean."""
    info = copy.deepcopy(OBJECT_INFO)
    installed = [*load_json("models_checkpoints.json"), "does_not_exist.safetensors"]
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = installed
    assert lint_workflow(_workflow("txt2img_missing_checkpoint.json"), info) == []


@pytest.mark.parametrize(
    "name",
    [
        "canary_preview_image.json",
        "canary_save_image_output.json",
        "canary_save_image_websocket.json",
        "canary_text_preview_any.json",
        "runtime_error_regex.json",
        "slow_cpu_6s.json",
    ],
)
def test_recorded_accepted_workflows_lint_clean(name: str) -> None:
    """Every workflow the real server accepted lints clean (the regex one only fails at run time)."""
    assert lint_workflow(_workflow(name), CATALOGUE) == []


def test_raw_and_parsed_object_info_agree() -> None:
    """lint_workflow gives the same answer for the raw /object_info body and the parsed catalogue."""
    workflow = _workflow("txt2img_missing_checkpoint.json")
    assert lint_workflow(workflow, OBJECT_INFO) == lint_workflow(workflow, CATALOGUE)


def test_lint_is_deterministic_and_ordered_by_numeric_node_id() -> None:
    """Problems come out by node id, "2" before "10", workflow-wide problems first, same on every run."""
    workflow = {
        "10": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": _preview(["10", 0]),
        "4": _preview(["2", 0]),
        "x": {"class_type": "NoSuchNode", "inputs": {}},
    }
    first = lint_workflow(workflow, CATALOGUE)
    assert _codes(first) == [
        ("2", "required_input_missing"),
        ("10", "value_smaller_than_min"),
        ("x", "invalid_prompt"),
    ]
    assert lint_workflow(dict(reversed(workflow.items())), CATALOGUE) == first


def test_nodes_no_output_depends_on_are_not_checked() -> None:
    """Like ComfyUI, a node no output node depends on is never validated, so its bad value is ignored."""
    workflow = _workflow("canary_preview_image.json")
    workflow["9"] = {"class_type": "EmptyImage", "inputs": {"width": -5}}
    assert lint_workflow(workflow, CATALOGUE) == []


def test_value_bigger_than_max() -> None:
    """An INT above the declared max is value_bigger_than_max with the limit in the fix."""
    workflow = _workflow("canary_preview_image.json")
    workflow["1"]["inputs"]["width"] = 20000
    problems = lint_workflow(workflow, CATALOGUE)
    assert _codes(problems) == [("1", "value_bigger_than_max")]
    assert "16384" in problems[0].fix


def test_int_conversion_follows_python_int() -> None:
    """ComfyUI converts with int(): 64.7 and "64" pass, "6.4e1" and null are invalid_input_type."""
    workflow = _workflow("canary_preview_image.json")
    workflow["1"]["inputs"].update(width=64.7, height="64")
    assert lint_workflow(workflow, CATALOGUE) == []
    workflow["1"]["inputs"].update(width="6.4e1", height=None)
    assert _codes(lint_workflow(workflow, CATALOGUE)) == [
        ("1", "invalid_input_type"),
        ("1", "invalid_input_type"),
    ]


def test_optional_inputs_are_not_required_but_are_checked() -> None:
    """An absent optional input is fine; a present one must still respect its min."""
    workflow = _workflow("runtime_error_regex.json")
    assert lint_workflow(workflow, CATALOGUE) == []
    workflow["2"]["inputs"]["count"] = -1
    assert _codes(lint_workflow(workflow, CATALOGUE)) == [("2", "value_smaller_than_min")]


def test_hidden_and_unknown_inputs_are_ignored() -> None:
    """Values for hidden inputs (prompt, extra_pnginfo) or undeclared names do not matter to validation."""
    workflow = _workflow("canary_preview_image.json")
    workflow["2"]["inputs"].update(prompt="anything", extra_pnginfo=[1, 2, 3], not_an_input=["77", 0])
    assert lint_workflow(workflow, CATALOGUE) == []


def test_any_type_accepts_every_link() -> None:
    """PreviewAny's "*" input takes an IMAGE; PreviewImage's IMAGE input does not take a STRING."""
    workflow = {"1": _workflow("canary_preview_image.json")["1"], "2": _preview(["1", 0])}
    assert lint_workflow(workflow, CATALOGUE) == []
    text = _workflow("canary_text_preview_any.json")
    text["2"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    problems = lint_workflow(text, CATALOGUE)
    assert _codes(problems) == [("2", "return_type_mismatch")]
    assert "STRING" in problems[0].message and "IMAGE" in problems[0].message


def _synthetic_info() -> dict[str, Any]:
    def node(inputs: dict[str, Any], output: list[Any], output_node: bool = False) -> dict[str, Any]:
        return {"input": {"required": inputs}, "output": output, "output_node": output_node}

    return {
        "Src": node({}, ["RIG_TASK_ID", "OTHER"]),
        "Sink": node({"task": ["MODEL_TASK_ID,RIG_TASK_ID"]}, [], output_node=True),
        "Mid": node({"task": ["RIG_TASK_ID"]}, ["RIG_TASK_ID"]),
    }


def test_comma_union_types_match_any_member() -> None:
    """An input typed "A,B" accepts an output of type B and rejects an unrelated type."""
    info = _synthetic_info()
    ok: dict[str, Any] = {
        "1": {"class_type": "Src", "inputs": {}},
        "2": {"class_type": "Sink", "inputs": {"task": ["1", 0]}},
    }
    assert lint_workflow(ok, info) == []
    ok["2"]["inputs"]["task"] = ["1", 1]
    assert _codes(lint_workflow(ok, info)) == [("2", "return_type_mismatch")]


def test_bad_output_index_is_an_exception_like_the_server() -> None:
    """An output index past the end raises in ComfyUI: top-level for an output node, inner otherwise."""
    info = _synthetic_info()
    workflow = {
        "1": {"class_type": "Src", "inputs": {}},
        "2": {"class_type": "Mid", "inputs": {"task": ["1", 5]}},
        "3": {"class_type": "Sink", "inputs": {"task": ["1", 2]}},
        "4": {"class_type": "Sink", "inputs": {"task": ["2", 0]}},
    }
    problems = lint_workflow(workflow, info)
    assert _codes(problems) == [
        ("2", "exception_during_inner_validation"),
        ("3", "exception_during_validation"),
    ]
    assert "2 output(s)" in problems[1].message
    assert "0 to 1" in problems[1].fix


def test_negative_output_index_counts_from_the_end_like_python() -> None:
    """ComfyUI indexes RETURN_TYPES with the raw value, so -2 is the first of two outputs."""
    info = _synthetic_info()
    workflow = {
        "1": {"class_type": "Src", "inputs": {}},
        "2": {"class_type": "Sink", "inputs": {"task": ["1", -2]}},
    }
    assert lint_workflow(workflow, info) == []


def test_numeric_link_id_is_explained() -> None:
    """A link written [1, 0] names no node (ids are strings); the fix shows the quoted form."""
    workflow = _workflow("canary_preview_image.json")
    workflow["2"]["inputs"]["images"] = [1, 0]
    problems = lint_workflow(workflow, CATALOGUE)
    assert _codes(problems) == [("2", "exception_during_validation")]
    assert '["1", 0]' in problems[0].fix


@pytest.mark.parametrize("link", [["1"], ["1", 0, 0], []])
def test_links_that_are_not_pairs_are_bad_linked_input(link: list[Any]) -> None:
    """Any list value that is not a [node_id, index] pair is bad_linked_input."""
    workflow = _workflow("canary_preview_image.json")
    workflow["2"]["inputs"]["images"] = link
    assert _codes(lint_workflow(workflow, CATALOGUE)) == [("2", "bad_linked_input")]


def test_wrapped_widget_value_is_unwrapped() -> None:
    """{"__value__": v} is read as the widget value v, as ComfyUI does."""
    workflow = _workflow("canary_preview_image.json")
    workflow["1"]["inputs"]["width"] = {"__value__": 64}
    assert lint_workflow(workflow, CATALOGUE) == []
    workflow["1"]["inputs"]["width"] = {"__value__": 0}
    assert _codes(lint_workflow(workflow, CATALOGUE)) == [("1", "value_smaller_than_min")]


def test_v3_combo_options_are_checked() -> None:
    """A V3 "COMBO" input is checked against its "options" list."""
    workflow = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {
            "class_type": "LatentBatchSeedBehavior",
            "inputs": {"samples": ["1", 0], "seed_behavior": "fixed"},
        },
        "3": _preview(["2", 0]),
    }
    assert lint_workflow(workflow, CATALOGUE) == []
    workflow["2"]["inputs"]["seed_behavior"] = "sometimes"
    problems = lint_workflow(workflow, CATALOGUE)
    assert _codes(problems) == [("2", "value_not_in_list")]
    assert "'random', 'fixed'" in problems[0].message


def test_load_image_missing_file_is_custom_validation() -> None:
    """Load Image's own check reports a missing input file; an "[output]" annotated name is left to it."""
    workflow: dict[str, Any] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    problems = lint_workflow(workflow, CATALOGUE)
    assert _codes(problems) == [("1", "custom_validation_failed")]
    assert "upload" in problems[0].fix.lower()
    workflow["1"]["inputs"]["image"] = "ComfyUI_00001_.png [output]"
    assert lint_workflow(workflow, CATALOGUE) == []
    workflow["1"]["inputs"]["image"] = "example.png"
    assert lint_workflow(workflow, CATALOGUE) == []


def test_long_choice_lists_are_bounded() -> None:
    """A bad sampler name lists a few of the server's choices, not all of them."""
    workflow = _workflow("txt2img_missing_checkpoint.json")
    workflow["3"]["inputs"]["sampler_name"] = "no_such_sampler"
    problems = [p for p in lint_workflow(workflow, CATALOGUE) if p.node_id == "3"]
    assert [p.code for p in problems] == ["value_not_in_list"]
    assert "more)" in problems[0].message
    assert len(problems[0].message) < 400


def test_dependency_cycle_is_reported_once() -> None:
    """Two nodes feeding each other are one dependency_cycle problem, on the lower node id."""
    info = _synthetic_info()
    workflow = {
        "1": {"class_type": "Mid", "inputs": {"task": ["2", 0]}},
        "2": {"class_type": "Mid", "inputs": {"task": ["1", 0]}},
        "3": {"class_type": "Sink", "inputs": {"task": ["2", 0]}},
    }
    problems = lint_workflow(workflow, info)
    assert _codes(problems) == [("1", "dependency_cycle")]
    assert "1 → 2" in problems[0].message


def test_unknown_class_suggests_the_right_spelling() -> None:
    """A class name differing only in case gets a "did you mean" fix."""
    workflow = _workflow("canary_preview_image.json")
    workflow["2"]["class_type"] = "previewimage"
    problems = lint_workflow(workflow, CATALOGUE)
    assert _codes(problems) == [("2", "invalid_prompt")]
    assert "'PreviewImage'" in problems[0].fix


def test_unknown_class_still_checks_what_it_depends_on() -> None:
    """An unknown-class node may be an output, so its upstream nodes are checked (no prompt_no_outputs)."""
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SomeCustomSaver", "inputs": {"images": ["1", 0]}},
    }
    assert _codes(lint_workflow(workflow, CATALOGUE)) == [
        ("1", "value_smaller_than_min"),
        ("2", "invalid_prompt"),
    ]


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"class_type": "PreviewImage"}, "exception_during_validation"),
        ({"class_type": "PreviewImage", "inputs": [1]}, "exception_during_validation"),
        ({"class_type": 5, "inputs": {}}, "invalid_prompt"),
        ("just a string", "invalid_prompt"),
    ],
)
def test_malformed_nodes(node: object, expected: str) -> None:
    """Nodes without an inputs object or a string class_type are reported on that node."""
    assert _codes(lint_workflow({"7": node}, CATALOGUE)) == [("7", expected)]


def test_ui_format_is_detected_and_explained() -> None:
    """The editor's saved file is UI format; lint says to export it with Save (API Format)."""
    ui = {
        "last_node_id": 2,
        "last_link_id": 1,
        "nodes": [
            {"id": 1, "type": "EmptyImage", "widgets_values": [64, 64, 1, 0], "outputs": [{"links": [1]}]},
            {"id": 2, "type": "PreviewImage", "inputs": [{"name": "images", "link": 1}]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }
    assert detect_format(ui) is WorkflowFormat.UI
    problems = lint_workflow(ui, CATALOGUE)
    assert _codes(problems) == [(None, "ui_format")]
    assert "Save (API Format)" in problems[0].fix
    assert required_classes(ui) == set()


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"1": {"class_type": "EmptyImage", "inputs": {}}}, WorkflowFormat.API),
        ({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}, "client_id": "x"}, WorkflowFormat.API),
        ({"prompt": {"class_type": "PreviewAny", "inputs": {}}}, WorkflowFormat.API),
        ({}, WorkflowFormat.API),
        ([1, 2], WorkflowFormat.UNKNOWN),
        ("text", WorkflowFormat.UNKNOWN),
        ({"foo": 1}, WorkflowFormat.UNKNOWN),
        ({"prompt": "abc"}, WorkflowFormat.UNKNOWN),
    ],
)
def test_detect_format(obj: object, expected: WorkflowFormat) -> None:
    """API node maps (bare or in a POST body) are API; other shapes are UNKNOWN."""
    assert detect_format(obj) is expected


def test_request_body_wrapper_is_linted_like_the_bare_workflow() -> None:
    """{"prompt": workflow, "client_id": ...} gives the same problems as the workflow alone."""
    workflow = _workflow("txt2img_missing_checkpoint.json")
    body = {"prompt": workflow, "client_id": "abc", "extra_data": {"k": "v"}}
    assert lint_workflow(body, CATALOGUE) == lint_workflow(workflow, CATALOGUE)


def test_required_classes() -> None:
    """required_classes lists the class_type of every node, for bare and wrapped workflows."""
    workflow = _workflow("canary_save_image_output.json")
    assert required_classes(workflow) == {"EmptyImage", "ImageScale", "SaveImage"}
    assert required_classes({"prompt": workflow}) == {"EmptyImage", "ImageScale", "SaveImage"}
    assert required_classes([1]) == set()
    assert required_classes({"1": {"inputs": {}}, "2": {"class_type": 3}}) == set()


def test_problem_line_format() -> None:
    """LintProblem.line reads like the server summaries: node id, class, code, message."""
    problem = lint_workflow(_workflow("txt2img_missing_checkpoint.json"), CATALOGUE)[0]
    assert problem.line.startswith("node 4 (CheckpointLoaderSimple): value_not_in_list: ckpt_name ")
    assert LintProblem(None, None, LintCode.PROMPT_NO_OUTPUTS, "m", "f").line == "prompt_no_outputs: m"


@pytest.mark.parametrize(
    "name",
    [
        "object_info_EmptyImage.json",
        "object_info_CheckpointLoaderSimple.json",
        "object_info_PreviewAny.json",
        "object_info_SaveImage.json",
        "object_info_ImageScale.json",
        "object_info_RegexReplace.json",
    ],
)
def test_single_class_answers_parse_like_the_full_one(name: str) -> None:
    """GET /object_info/{class} parses to the same spec as that class in GET /object_info."""
    single = parse_object_info(load_json(name))
    assert len(single) == 1
    ((class_name, spec),) = single.items()
    assert spec == CATALOGUE[class_name]


def test_parse_object_info_shapes() -> None:
    """The full answer parses to 478 classes, in input_order; output nodes are flagged."""
    assert len(CATALOGUE) == 478
    assert list(CATALOGUE["EmptyImage"].inputs) == ["width", "height", "batch_size", "color"]
    assert CATALOGUE["PreviewImage"].output_node and not CATALOGUE["EmptyImage"].output_node
    assert CATALOGUE["ImageScale"].inputs["crop"].choices == ("disabled", "center")
    assert CATALOGUE["RegexReplace"].inputs["count"].required is False
    assert parse_object_info(load_json("object_info_unknown_class.json")) == {}


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"X": []},
        {"X": {"input": []}},
        {"X": {"input": {"required": {"a": []}}}},
        {"X": {"input": {"required": {"a": [5]}}}},
        {"X": {"input": {"required": {"a": ["INT", 5]}}}},
        {"X": {"input": {}, "output": "IMAGE"}},
        {"X": {"input": {}, "output": [], "output_node": "yes"}},
    ],
)
def test_parse_object_info_rejects_wrong_shapes(body: object) -> None:
    """Strict parsing raises ParseError naming the path; values never appear in the message."""
    with pytest.raises(ParseError):
        parse_object_info(body)


def test_lenient_parse_keeps_malformed_classes_unchecked() -> None:
    """A malformed custom class is known but unchecked: no invalid_prompt, no input checks."""
    info: dict[str, Any] = dict(OBJECT_INFO)
    info["OddSaver"] = {"input": {"required": {"images": "IMAGE"}}, "output": [], "output_node": True}
    specs = parse_object_info(info, strict=False)
    assert specs["OddSaver"] == NodeSpec("OddSaver", {}, None, True, complete=False)
    workflow = {"1": {"class_type": "OddSaver", "inputs": {"images": 42}}}
    assert lint_workflow(workflow, info) == []
    assert lint_workflow(workflow, specs) == []


def test_non_mapping_object_info_means_no_known_classes() -> None:
    """Garbage object_info does not raise: every class is reported unknown."""
    problems = lint_workflow(_workflow("canary_preview_image.json"), [])  # type: ignore[arg-type]
    assert {p.code for p in problems} == {"invalid_prompt"}


def test_pre_parsed_specs_are_used_as_given() -> None:
    """A catalogue of NodeSpec is used as is: a tightened min in the spec changes the verdict."""
    empty_image = CATALOGUE["EmptyImage"]
    width = replace(empty_image.inputs["width"], options={"min": 100})
    tightened = replace(empty_image, inputs={**empty_image.inputs, "width": width})
    catalogue: Mapping[str, NodeSpec] = {**CATALOGUE, "EmptyImage": tightened}
    problems = lint_workflow(_workflow("canary_preview_image.json"), catalogue)
    assert _codes(problems) == [("1", "value_smaller_than_min")]


def test_partial_execution_targets_limit_the_outputs_checked() -> None:
    """As on the server, only the outputs named in partial_execution_targets (and their inputs) count."""
    workflow = _recorded_partial_request()
    assert _codes(lint_workflow(workflow, CATALOGUE)) == [("3", "value_smaller_than_min")]
    assert lint_workflow({**workflow, "partial_execution_targets": ["2"]}, CATALOGUE) == []
    assert _codes(lint_workflow({**workflow, "partial_execution_targets": []}, CATALOGUE)) == [
        (None, "prompt_no_outputs")
    ]


def _recorded_partial_request() -> dict[str, Any]:
    for entry in MANIFEST:
        if entry.get("file") == "prompt_ok_partial_with_node_errors.json":
            body: dict[str, Any] = entry["request_body"]
            return body
    raise AssertionError("partial request not recorded")


class _CountingMatcher(difflib.SequenceMatcher):  # type: ignore[type-arg]
    """difflib's matcher, counting the names compared and the character pairs aligned."""

    compared = 0
    aligned = 0

    def set_seq1(self, a: Any) -> None:
        _CountingMatcher.compared += 1
        super().set_seq1(a)

    def ratio(self) -> float:
        _CountingMatcher.aligned += len(self.a) * len(self.b)
        return super().ratio()


def _near_anagrams(words: tuple[str, ...], count: int) -> list[str]:
    """*count* distinct names, each one of *words* shuffled with one letter added: they pass difflib's quick
    filters (same length, same letters), so only its full alignment can tell them apart."""
    rng = random.Random(7)
    names: dict[str, None] = {}
    while len(names) < count:
        letters = list(words[len(names) % len(words)])
        rng.shuffle(letters)
        letters.insert(rng.randrange(len(letters) + 1), rng.choice("abcdefxyz"))
        names["".join(letters)] = None
    return list(names)


def test_a_hostile_catalogue_costs_a_bounded_number_of_comparisons(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in canary against 60,000 near-anagrams of its two class names: both nodes are unknown, and
    the "Did you mean" searches compare at most _FUZZY_CANDIDATES names and align at most _FUZZY_PAIRS
    character pairs, however many classes the server sends (it took 49 s for 1.86 million)."""
    monkeypatch.setattr(difflib, "SequenceMatcher", _CountingMatcher)
    monkeypatch.setattr(_CountingMatcher, "compared", 0)
    monkeypatch.setattr(_CountingMatcher, "aligned", 0)
    workflow = load_workflow("builtin:preview-image", "canary").template
    body = {name: {} for name in _near_anagrams(("EmptyImage", "PreviewImage"), 3 * MAX_CLASSES)}
    problems = lint_workflow(workflow, parse_object_info(body, strict=False))
    assert _codes(problems) == [("1", "invalid_prompt"), ("2", "invalid_prompt")]
    assert 0 < _CountingMatcher.compared <= _FUZZY_CANDIDATES
    assert 0 < _CountingMatcher.aligned <= _FUZZY_PAIRS


def test_the_linter_knows_the_classes_the_catalogue_keeps() -> None:
    """A catalogue beyond MAX_CLASSES: the parsed specs hold exactly the classes catalog_from keeps, and a
    class past the cap is unknown to the lint, whether it is given the body or the parsed specs."""
    body: dict[str, Any] = {f"Filler{n}": {} for n in range(MAX_CLASSES)}
    body["PreviewAny"] = OBJECT_INFO["PreviewAny"]
    assert set(parse_object_info(body, strict=False)) == set(catalog_from(body, {}, None).classes)
    workflow = {"1": {"class_type": "PreviewAny", "inputs": {"source": "x"}}}
    assert _codes(lint_workflow(workflow, body)) == [("1", "invalid_prompt")]
    assert _codes(lint_workflow(workflow, parse_object_info(body, strict=False))) == [("1", "invalid_prompt")]
    specs: dict[str, NodeSpec] = {**{name: CATALOGUE["EmptyImage"] for name in list(body)[:-1]},
                                  "PreviewAny": CATALOGUE["PreviewAny"]}
    assert _codes(lint_workflow(workflow, specs)) == [("1", "invalid_prompt")]


def _typo(names: list[str], rng: random.Random) -> str:
    """One of *names* with a letter changed or dropped, that is not one of *names*."""
    while True:
        letters = list(rng.choice(names))
        at = rng.randrange(len(letters))
        if rng.random() < 0.5:
            letters[at] = rng.choice("aeiouxXZ_")
        else:
            del letters[at]
        typo = "".join(letters)
        if typo not in names:
            return typo


def _expected_fix(class_type: str, names: list[str]) -> str:
    # What the linter answered before its searches were bounded: a case-insensitive match, else difflib's.
    lowered = {name.lower(): name for name in names}
    close = lowered.get(class_type.lower())
    if close is None:
        matches = difflib.get_close_matches(class_type, names, n=1, cutoff=0.85)
        close = matches[0] if matches else None
    return f"Did you mean {close!r}?" if close is not None and close != class_type else "Install"


def test_suggestions_on_a_real_sized_catalogue_are_difflibs() -> None:
    """A catalogue of the recorded 478 classes and 4,780 custom-node-style variants of them (a server with
    many node packs), a workflow of 20 misspelt classes: each node's fix suggests what difflib does."""
    suffixes = ("Advanced", "V2", " (rgthree)", "|pysssss", "_Efficient", "SDXL", "Plus", "Batch", "Mask", "+")
    info: dict[str, Any] = dict(OBJECT_INFO)
    info.update({name + suffix: OBJECT_INFO[name] for name in OBJECT_INFO for suffix in suffixes})
    names = list(info)
    rng = random.Random(3)
    workflow = {str(n): {"class_type": _typo(names, rng), "inputs": {}} for n in range(20)}
    problems = lint_workflow(workflow, parse_object_info(info, strict=False))
    assert len(problems) == 20
    suggested = 0
    for problem in problems:
        assert problem.class_type is not None
        expected = _expected_fix(problem.class_type, names)
        assert problem.fix.startswith(expected)
        suggested += expected != "Install"
    assert suggested >= 10  # the check is about suggestions: most typos must have one


def test_a_watched_fifo_is_unreadable_without_waiting(tmp_path: Path) -> None:
    """A FIFO among the watched workflows (reading it would wait for a writer, in the lint's thread) is reported
    unreadable at once; the other files are linted."""
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    verdicts = lint_verdicts([tmp_path], load_json("object_info.json"))
    assert [(verdict.name, verdict.problems) for verdict in verdicts] == [
        ("broken", (("invalid_json", 1),)), ("fifo", (("unreadable", 1),))]
