"""Fuzzing: arbitrary JSON into the linter and the rejection summariser gives only documented results."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfywatch.errors import ParseError
from comfywatch.parse.nodeerrors import MAX_LINE, PromptRejection, node_sort_key, summarise_prompt_error
from comfywatch.workflows.lint import (
    LintProblem,
    WorkflowFormat,
    detect_format,
    lint_workflow,
    parse_object_info,
    required_classes,
)
from tests.fixtures import load_json

OBJECT_INFO: dict[str, Any] = load_json("object_info.json")
CATALOGUE = parse_object_info(OBJECT_INFO)
CANARY: dict[str, Any] = load_json("workflows/txt2img_missing_checkpoint.json")

FUZZ = settings(
    deadline=None,
    # Raise locally for a deeper hunt: COMFYWATCH_FUZZ_EXAMPLES=5000.
    max_examples=int(os.environ.get("COMFYWATCH_FUZZ_EXAMPLES", "150")),
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

# Graph-shaped junk: mostly real classes and input names with plausible values, some junk, links to
# existing and missing ids, so the deep checks (types, ranges, combos, cycles) are reached, not just the
# class checks.
NODE_IDS = ["1", "2", "3", "10", "99"]
REAL_CLASSES = [
    "EmptyImage",
    "PreviewImage",
    "ImageScale",
    "KSampler",
    "PreviewAny",
    "LoadImage",
    "VAEDecode",
]
INPUT_NAMES = ["width", "height", "color", "images", "image", "source", "upscale_method", "seed", "__value__"]
good_links = st.tuples(st.sampled_from(NODE_IDS), st.integers(min_value=-3, max_value=3)).map(list)
odd_links = st.lists(st.sampled_from(NODE_IDS) | json_values, max_size=3)
plausible = (
    st.integers(min_value=-5, max_value=20_000)
    | st.sampled_from(["nearest-exact", "magic", "euler", "example.png", "x [output]", "64"])
    | st.fixed_dictionaries({"__value__": json_values})
)
inputs = st.dictionaries(
    st.sampled_from(INPUT_NAMES), good_links | plausible | odd_links | json_values, max_size=5
)
good_nodes = st.fixed_dictionaries({"class_type": st.sampled_from(REAL_CLASSES), "inputs": inputs})
junk_nodes = st.fixed_dictionaries(
    {},
    optional={
        "class_type": st.sampled_from([*REAL_CLASSES, "NoSuch"]) | json_values,
        "inputs": inputs | json_values,
    },
)
nodes = st.one_of(good_nodes, good_nodes, good_nodes, good_nodes, junk_nodes, json_values)
workflows = st.dictionaries(st.sampled_from(NODE_IDS), nodes | json_values, max_size=6)


def _assert_problems(problems: object) -> None:
    assert isinstance(problems, list)
    for problem in problems:
        assert isinstance(problem, LintProblem)
        assert problem.node_id is None or isinstance(problem.node_id, str)
        assert isinstance(problem.code, str) and problem.code
        assert problem.message and problem.fix
        assert len(problem.message) < 600 and len(problem.fix) < 600
    keys = [(-1, 0, "") if p.node_id is None else node_sort_key(p.node_id) for p in problems]
    assert keys == sorted(keys)


@FUZZ
@given(json_values)
def test_lint_arbitrary_json(workflow: Any) -> None:
    """Any JSON value lints to an ordered list of LintProblem; nothing raises; results are repeatable."""
    problems = lint_workflow(workflow, CATALOGUE)
    _assert_problems(problems)
    assert lint_workflow(workflow, CATALOGUE) == problems
    assert isinstance(detect_format(workflow), WorkflowFormat)
    assert isinstance(required_classes(workflow), set)


@FUZZ
@given(workflows)
def test_lint_graph_shaped_junk(workflow: dict[str, Any]) -> None:
    """Workflows built from real classes, real input names and broken links never make the linter raise."""
    problems = lint_workflow(workflow, CATALOGUE)
    _assert_problems(problems)
    assert lint_workflow({"prompt": workflow, "client_id": "c"}, CATALOGUE) == problems


@FUZZ
@given(
    st.sampled_from(sorted(CANARY)), st.sampled_from([*INPUT_NAMES, "ckpt_name", "cfg", "clip"]), json_values
)
def test_lint_mutated_recorded_workflow(node_id: str, name: str, value: Any) -> None:
    """Replacing any input of the recorded txt2img workflow with any JSON value yields only problems."""
    workflow = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in CANARY.items()}
    workflow[node_id]["inputs"][name] = value
    _assert_problems(lint_workflow(workflow, CATALOGUE))


@FUZZ
@given(st.dictionaries(st.sampled_from(["EmptyImage", "PreviewImage", "Other"]), json_values, max_size=3))
def test_lint_with_junk_object_info(object_info: dict[str, Any]) -> None:
    """Malformed /object_info entries never make lint raise; strict parsing only raises ParseError."""
    _assert_problems(lint_workflow(load_json("workflows/canary_preview_image.json"), object_info))
    with contextlib.suppress(ParseError):
        parse_object_info(object_info)


@FUZZ
@given(json_values)
def test_summarise_arbitrary_json(body: Any) -> None:
    """Any JSON value gives a PromptRejection or ParseError, nothing else."""
    try:
        rejection = summarise_prompt_error(body)
    except ParseError:
        return
    assert isinstance(rejection, PromptRejection)
    assert all(len(line) <= MAX_LINE for line in rejection.lines)


error_entries = st.fixed_dictionaries(
    {"type": st.text(max_size=30) | json_values},
    optional={
        "message": st.text() | json_values,
        "details": st.text() | json_values,
        "extra_info": st.dictionaries(
            st.sampled_from(["input_name", "exception_type", "traceback"]), json_values
        )
        | json_values,
    },
)
answers = st.fixed_dictionaries(
    {},
    optional={
        "error": error_entries | json_values,
        "node_errors": st.dictionaries(
            st.text(max_size=10),
            st.fixed_dictionaries(
                {},
                optional={
                    "errors": st.lists(error_entries, max_size=3) | json_values,
                    "class_type": st.text(max_size=30) | json_values,
                    "dependent_outputs": st.lists(st.text(max_size=5), max_size=3) | json_values,
                },
            )
            | json_values,
            max_size=4,
        )
        | json_values,
        "prompt_id": json_values,
    },
)


@FUZZ
@given(answers)
def test_summarise_answer_shaped_junk(body: dict[str, Any]) -> None:
    """Answer-shaped bodies with junk anywhere give a bounded PromptRejection or ParseError."""
    try:
        rejection = summarise_prompt_error(body)
    except ParseError:
        return
    assert all(len(line) <= MAX_LINE and "\n" not in line for line in rejection.lines)
    assert len(rejection.summary) <= MAX_LINE
