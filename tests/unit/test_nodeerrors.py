"""Summaries of ComfyUI's prompt-validation answers: bounded, one line per node, ParseError for junk."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfywatch.errors import ParseError
from comfywatch.parse.nodeerrors import MAX_LINE, MAX_NODES, PromptRejection, summarise_prompt_error
from tests.fixtures import FIXTURES, load_json

JSON_ANSWERS = [
    *sorted(p.name for p in FIXTURES.glob("prompt_error_*.json")),
    "prompt_error_body_is_list.txt",
    "prompt_ok_partial_with_node_errors.json",
]
MISSING_MODEL_LINE = (
    "node 4 (CheckpointLoaderSimple): value_not_in_list: ckpt_name: 'does_not_exist.safetensors' not in []"
)


def _answer(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", JSON_ANSWERS)
def test_every_recorded_answer_summarises(name: str) -> None:
    """Each recorded validation answer gives its error type and one bounded line per node_errors entry."""
    body = _answer(name)
    rejection = summarise_prompt_error(body)
    error = body.get("error")
    assert rejection.error_type == (error["type"] if error else None)
    assert [n.node_id for n in rejection.nodes] == sorted(body["node_errors"], key=int)
    assert all(len(line) <= MAX_LINE and "\n" not in line for line in rejection.lines)
    assert "Traceback" not in repr(rejection) and "execution.py" not in repr(rejection)


def test_missing_model_line_matches_the_documented_form() -> None:
    """The missing checkpoint answer becomes exactly the documented one-liner."""
    rejection = summarise_prompt_error(load_json("prompt_error_missing_model.json"))
    assert rejection.lines == (MISSING_MODEL_LINE,)
    assert rejection.summary == "prompt_outputs_failed_validation: Prompt outputs failed validation"
    (node,) = rejection.nodes
    assert node.class_type == "CheckpointLoaderSimple"
    assert node.dependent_outputs == ("9",)
    assert node.errors[0].input_name == "ckpt_name"


def test_link_to_missing_node_explains_keyerror_without_traceback() -> None:
    """exception_during_validation shows the exception type and what a KeyError means, not the traceback."""
    rejection = summarise_prompt_error(load_json("prompt_error_link_to_missing_node.json"))
    (line,) = rejection.lines
    assert line.startswith("node 2 (PreviewImage): exception_during_validation: KeyError: '99'")
    assert "not in the workflow" in line
    assert "File" not in line


def test_min_violation_includes_the_limit() -> None:
    """value_smaller_than_min names the input and quotes the server's "Value 0 smaller than min of 1"."""
    rejection = summarise_prompt_error(load_json("prompt_error_value_below_min.json"))
    assert rejection.lines == (
        "node 1 (EmptyImage): value_smaller_than_min: width: Value 0 smaller than min of 1",
    )


@pytest.mark.parametrize(
    ("name", "node_id"),
    [("prompt_error_unknown_node.json", "1"), ("prompt_error_missing_class_type.json", "1")],
)
def test_invalid_prompt_names_its_node(name: str, node_id: str) -> None:
    """invalid_prompt has no node_errors; the node id comes from "Node ID '#1'" in its details."""
    rejection = summarise_prompt_error(load_json(name))
    assert rejection.error_type == "invalid_prompt"
    assert rejection.node_id == node_id
    assert rejection.nodes == ()
    assert rejection.summary.endswith(f"(node {node_id})")


def test_partial_acceptance_is_flagged_with_prompt_id() -> None:
    """A 200 answer with node_errors is accepted=True, carries the prompt id and the dropped node."""
    rejection = summarise_prompt_error(load_json("prompt_ok_partial_with_node_errors.json"))
    assert rejection.accepted and rejection.error_type is None
    assert rejection.prompt_id == "2a14a8df-e444-4153-af2e-741f152077b9"
    assert rejection.lines == (
        "node 3 (EmptyImage): value_smaller_than_min: width: Value 0 smaller than min of 1",
    )
    assert "1 node(s)" in rejection.summary


def test_plain_acceptance_summarises_as_queued() -> None:
    """A 200 answer without node errors is an accepted rejection with nothing in it."""
    rejection = summarise_prompt_error(load_json("prompt_ok_canary_preview.json"))
    assert rejection.accepted and rejection.nodes == () and rejection.summary == "prompt queued"


def _error(kind: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": "Value not in list", "details": details, "extra_info": extra}


def test_huge_lists_and_long_text_are_bounded() -> None:
    """A 20-name list and multi-line details are cut to one bounded line; input_config never shows."""
    names = [f"some/very/long/folder/checkpoint_{i:03d}_" + "x" * 40 + ".safetensors" for i in range(20)]
    body = {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "m\n" * 500,
            "details": "d" * 10_000,
        },
        "node_errors": {
            "4": {
                "errors": [
                    _error("value_not_in_list", f"ckpt_name: 'x' not in {names}", input_config=[names, {}]),
                    _error("custom_validation_failed", "line one\nline two\r\n\tline three"),
                ],
                "dependent_outputs": ["9"],
                "class_type": "CheckpointLoaderSimple",
            }
        },
    }
    rejection = summarise_prompt_error(body)
    (line,) = rejection.lines
    assert len(line) <= MAX_LINE and "\n" not in line and "\t" not in line
    assert "checkpoint_019" not in line
    assert "custom_validation_failed: line one line two line three" in line
    assert len(rejection.message) <= 160 and len(rejection.details) <= 160


def test_many_nodes_are_capped() -> None:
    """More than MAX_NODES failing nodes keep the first ones by id and count the rest."""
    entry = {"errors": [_error("required_input_missing", "color")], "class_type": "EmptyImage"}
    body = {
        "error": {"type": "prompt_outputs_failed_validation"},
        "node_errors": {str(i): entry for i in range(80)},
    }
    rejection = summarise_prompt_error(body)
    assert len(rejection.nodes) == MAX_NODES
    assert rejection.nodes[0].node_id == "0" and rejection.nodes[-1].node_id == str(MAX_NODES - 1)
    assert rejection.omitted_nodes == 80 - MAX_NODES
    assert rejection.lines[-1] == f"… and {80 - MAX_NODES} more node(s)"


def test_old_string_error_form_is_understood() -> None:
    """Servers before typed errors answered {"error": "<text>", "node_errors": []}."""
    rejection = summarise_prompt_error({"error": "no prompt", "node_errors": []})
    assert isinstance(rejection, PromptRejection)
    assert rejection.error_type is None and rejection.message == "no prompt" and not rejection.accepted


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        "500 Internal Server Error",
        None,
        {},
        {"foo": 1},
        {"error": 5},
        {"error": {"message": "no type"}},
        {"error": {"type": 3}},
        {"error": {"type": "x", "details": ["not", "text"]}},
        {"error": {"type": "x"}, "node_errors": [1]},
        {"error": {"type": "x"}, "node_errors": {"1": "bad"}},
        {"error": {"type": "x"}, "node_errors": {"1": {"errors": {}}}},
        {"error": {"type": "x"}, "node_errors": {"1": {"errors": [{"details": "no type"}]}}},
        {"error": {"type": "x"}, "node_errors": {"1": {"errors": [], "class_type": 7}}},
        {"error": {"type": "x"}, "node_errors": {"1": {"errors": [{"type": "t", "extra_info": []}]}}},
    ],
)
def test_wrong_shapes_raise_parse_error(body: object) -> None:
    """Anything that is not a validation answer raises ParseError, never another exception."""
    with pytest.raises(ParseError):
        summarise_prompt_error(body)


@pytest.mark.parametrize(
    "name",
    ["prompt_error_not_json.txt", "prompt_error_prompt_is_list.txt", "prompt_error_body_too_large_413.txt"],
)
def test_plain_text_answers_are_parse_errors(name: str) -> None:
    """The 500/413 plain-text answers, passed as text, are not validation answers."""
    with pytest.raises(ParseError):
        summarise_prompt_error((FIXTURES / name).read_text(encoding="utf-8"))


def test_server_text_in_a_rejection_is_printable() -> None:
    """A /prompt 400 whose messages carry terminal escapes and a lone surrogate yields encodable, escape-free text."""
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "bad\x1b[2J", "details": "", "extra_info": {}},
        "node_errors": {
            "1": {
                "class_type": "EmptyImage\x1b]0;x\x07",
                "dependent_outputs": [],
                "errors": [{"type": "value_not_in_list\ud800", "message": "m\x1b[31m", "details": "d\x9b",
                            "extra_info": {"input_name": "width\x1b"}}],
            }
        },
    }
    rejection = summarise_prompt_error(body)
    texts = [node.line for node in rejection.nodes]
    texts += [f"{error.type} {error.input_name} {error.text}" for node in rejection.nodes for error in node.errors]
    assert texts
    for text in texts:
        assert not any(ch in text for ch in "\x1b\x07\x9b"), text
        text.encode("utf-8")
