"""Tests for comfywatch.workflows: built-in canaries, users' API-format files and ``{{placeholders}}``."""

from __future__ import annotations

import copy
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest

from comfywatch.config import VerifyConfig
from comfywatch.workflows import (
    BUILTINS,
    MAX_WORKFLOW_BYTES,
    MAX_WORKFLOW_FILES,
    CanaryWorkflow,
    WorkflowError,
    WorkflowFileUnreadable,
    fill_text,
    load_workflow,
    read_workflow_file,
    render_workflow,
    workflow_files,
)
from comfywatch.workflows.lint import lint_workflow
from tests.fixtures import FIXTURES, load_json

RECORDED_WORKFLOWS = sorted(p.name for p in (FIXTURES / "workflows").glob("*.json"))


def write_json(tmp_path: Path, body: Any, name: str = "flow.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body), encoding="utf-8")
    return str(path)


class TestBuiltins:
    def test_names(self) -> None:
        """Two built-ins ship: the image canary (the default) and the text-echo canary."""
        assert set(BUILTINS) == {"preview-image", "echo-text"}

    def test_preview_image(self) -> None:
        """builtin:preview-image is EmptyImage 64x64 -> PreviewImage, expecting one 64x64 image."""
        workflow = load_workflow("builtin:preview-image", "preview-image")
        assert workflow.name == "preview-image"
        assert {node["class_type"] for node in workflow.template.values()} == {"EmptyImage", "PreviewImage"}
        assert (workflow.expect.images, workflow.expect.image_size) == (1, (64, 64))
        assert workflow.template["1"]["inputs"]["color"] == "{{color}}"

    def test_echo_text(self) -> None:
        """builtin:echo-text echoes a uuid through PreviewAny; the expected text is the same template."""
        workflow = load_workflow("builtin:echo-text", "echo")
        assert {node["class_type"] for node in workflow.template.values()} == {"PrimitiveString", "PreviewAny"}
        expected = workflow.expect.text_equals_placeholder
        assert expected is not None and expected == workflow.template["1"]["inputs"]["value"]
        assert "{{uuid}}" in expected

    @pytest.mark.parametrize("name", sorted(BUILTINS))
    def test_builtins_pass_comfyui_validation(self, name: str) -> None:
        """Rendered built-ins pass the linter against the recorded 0.3.64 object_info (the server would accept them)."""
        prompt, _ = render_workflow(load_workflow(f"builtin:{name}", name).template, random.Random(1))
        assert lint_workflow(prompt, load_json("object_info.json")) == []

    @pytest.mark.parametrize("name", sorted(BUILTINS))
    def test_builtins_vary_every_run(self, name: str) -> None:
        """Each built-in varies an input per run, so ComfyUI's cache cannot answer for it."""
        template = load_workflow(f"builtin:{name}", name).template
        first, _ = render_workflow(template, random.Random(1))
        second, _ = render_workflow(template, random.Random(2))
        assert first != second

    def test_unknown_builtin(self) -> None:
        """An unknown built-in names the ones that exist."""
        with pytest.raises(WorkflowError, match=r"unknown built-in canary 'nope' \(have: echo-text, preview-image\)"):
            load_workflow("builtin:nope", "x")


class TestUserFiles:
    @pytest.mark.parametrize("name", RECORDED_WORKFLOWS)
    def test_recorded_workflows_load(self, name: str) -> None:
        """Every API-format workflow POSTed to the real server loads unchanged."""
        workflow = load_workflow(str(FIXTURES / "workflows" / name), "user")
        assert workflow.template == load_json(f"workflows/{name}")
        assert workflow.expect.any_output is True

    def test_verify_becomes_expectation(self, tmp_path: Path) -> None:
        """The target's [canary.verify] settings become the expectation of a user workflow."""
        spec = str(FIXTURES / "workflows" / "canary_text_preview_any.json")
        workflow = load_workflow(spec, "t", VerifyConfig(images=0, text_matches="^comfywatch", any_output=False))
        assert (workflow.expect.images, workflow.expect.text_matches, workflow.expect.any_output) == (
            0,
            "^comfywatch",
            False,
        )
        assert workflow.expect.image_size is None

    def test_prompt_wrapper_accepted(self, tmp_path: Path) -> None:
        """A saved POST body ({"prompt": {...}}) is unwrapped."""
        graph = load_json("workflows/canary_preview_image.json")
        workflow = load_workflow(write_json(tmp_path, {"prompt": graph, "client_id": "x"}), "w")
        assert workflow.template == graph

    @pytest.mark.parametrize(
        "body",
        [
            {"nodes": [], "links": [], "version": 0.4},
            {"prompt": {"nodes": [{"id": 1, "type": "EmptyImage"}], "links": [[1, 1, 0, 2, 0, "IMAGE"]]}},
        ],
    )
    def test_ui_format_rejected(self, tmp_path: Path, body: Any) -> None:
        """A UI-format export is refused with the fix: "Save (API Format)"."""
        with pytest.raises(WorkflowError, match=r'UI-format workflow: export it with "Save \(API Format\)"'):
            load_workflow(write_json(tmp_path, body), "w")

    @pytest.mark.parametrize(
        "body",
        [{}, [], "text", 3, {"1": {"inputs": {}}}, {"1": {"class_type": 5}}, {"1": "EmptyImage"}, {"prompt": "x"}],
    )
    def test_not_api_format(self, tmp_path: Path, body: Any) -> None:
        """Anything that is not {id: {"class_type", ...}} is refused with the expected shape."""
        with pytest.raises(WorkflowError, match="not an API-format workflow"):
            load_workflow(write_json(tmp_path, body), "w")

    def test_not_json(self, tmp_path: Path) -> None:
        """A file that is not JSON (nor UTF-16 or 32, which json reads from bytes) is reported as such."""
        path = tmp_path / "w.json"
        path.write_text("{not json", encoding="utf-8")
        with pytest.raises(WorkflowError, match="is not valid JSON"):
            load_workflow(str(path), "w")
        path.write_bytes(b"\xff\xff{}")
        with pytest.raises(WorkflowError, match="is not valid JSON"):
            load_workflow(str(path), "w")

    def test_a_byte_order_mark_is_read_past(self, tmp_path: Path) -> None:
        """A workflow saved with a UTF-8 byte-order mark (as some Windows editors save) loads."""
        path = tmp_path / "w.json"
        path.write_bytes(b"\xef\xbb\xbf" + (FIXTURES / "workflows" / "canary_text_preview_any.json").read_bytes())
        assert load_workflow(str(path), "w").template == load_json("workflows/canary_text_preview_any.json")

    def test_no_regular_file_is_read(self, tmp_path: Path) -> None:
        """A FIFO (which would wait for a writer), a device or a file over MAX_WORKFLOW_BYTES is reported as
        unreadable at once, never read."""
        fifo = tmp_path / "fifo.json"
        os.mkfifo(fifo)
        huge = tmp_path / "huge.json"
        with huge.open("wb") as file:
            file.truncate(MAX_WORKFLOW_BYTES + 1)
        for path, reason in ((fifo, "not a regular file"), (Path("/dev/zero"), "not a regular file"),
                             (huge, "larger than 4MiB")):
            with pytest.raises(WorkflowError, match=f"cannot read .*: {reason}$"):
                load_workflow(str(path), "w")
            with pytest.raises(WorkflowFileUnreadable, match=f"^{reason}$"):
                read_workflow_file(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is reported with the OS reason."""
        with pytest.raises(WorkflowError, match=r"cannot read .*No such file or directory"):
            load_workflow(str(tmp_path / "nope.json"), "w")

    def test_workflow_error_is_value_error(self) -> None:
        """WorkflowError is a ValueError (config validation can treat it like one)."""
        assert issubclass(WorkflowError, ValueError)

    def test_template_hidden_from_repr(self) -> None:
        """The template (user content) is left out of the repr."""
        workflow = CanaryWorkflow(
            "n", {"1": {"class_type": "X", "inputs": {"secret": "hunter2"}}}, BUILTINS["echo-text"]
        )
        assert "hunter2" not in repr(workflow)


class TestRenderWorkflow:
    def test_numeric_placeholders_become_numbers(self) -> None:
        """A string that is exactly {{seed}}, {{color}} or {{timestamp}} becomes an int in range."""
        before = int(time.time() * 1000)
        prompt, values = render_workflow(
            {"1": {"class_type": "X", "inputs": {"seed": "{{seed}}", "color": "{{color}}", "ts": "{{timestamp}}"}}}
        )
        inputs = prompt["1"]["inputs"]
        assert 0 <= inputs["seed"] < 2**32 and isinstance(inputs["seed"], int)
        assert 0 <= inputs["color"] < 2**24 and isinstance(inputs["color"], int)
        assert before <= inputs["ts"] <= int(time.time() * 1000)
        assert values["seed"] == str(inputs["seed"]) and values["color"] == str(inputs["color"])

    def test_placeholders_inside_text(self) -> None:
        """Placeholders inside longer strings are replaced by their text."""
        prompt, values = render_workflow(
            {"1": {"class_type": "X", "inputs": {"value": "canary {{uuid}} seed={{seed}} {{uuid}}"}}}
        )
        text = prompt["1"]["inputs"]["value"]
        assert re.fullmatch(r"canary [0-9a-f]{32} seed=\d+ [0-9a-f]{32}", text)
        assert text == f"canary {values['uuid']} seed={values['seed']} {values['uuid']}"

    def test_exact_uuid_stays_text(self) -> None:
        """{{uuid}} alone stays a string (it is not a number)."""
        prompt, values = render_workflow({"1": {"class_type": "X", "inputs": {"value": "{{uuid}}"}}})
        assert prompt["1"]["inputs"]["value"] == values["uuid"]

    def test_nested_lists_and_untouched_values(self) -> None:
        """Placeholders in lists and nested objects are filled; numbers, links and unknown tokens are kept."""
        template = {
            "1": {
                "class_type": "X",
                "inputs": {
                    "list": ["{{seed}}", {"deep": "{{color}}"}],
                    "link": ["2", 0],
                    "n": 7,
                    "b": True,
                    "other": "{{nope}}",
                },
            }
        }
        prompt, _ = render_workflow(template)
        inputs = prompt["1"]["inputs"]
        assert isinstance(inputs["list"][0], int) and isinstance(inputs["list"][1]["deep"], int)
        assert (inputs["link"], inputs["n"], inputs["b"], inputs["other"]) == (["2", 0], 7, True, "{{nope}}")

    def test_template_not_mutated(self) -> None:
        """Rendering leaves the template as it was (it is reused every run)."""
        template = load_workflow("builtin:preview-image", "p").template
        pristine = copy.deepcopy(template)
        render_workflow(template)
        assert template == pristine

    def test_seeded_rng_is_deterministic(self) -> None:
        """With a seeded Random, seed and colour are reproducible (uuid and time are not)."""
        template = {"1": {"class_type": "X", "inputs": {"seed": "{{seed}}", "color": "{{color}}"}}}
        assert render_workflow(template, random.Random(7))[0] == render_workflow(template, random.Random(7))[0]

    def test_uuid_differs_per_run(self) -> None:
        """Two runs get different uuids, so an echo cannot come from cache."""
        assert render_workflow({})[1]["uuid"] != render_workflow({})[1]["uuid"]


class TestFillText:
    def test_expected_echo(self) -> None:
        """fill_text turns the expectation template into the exact text the canary must echo."""
        workflow = load_workflow("builtin:echo-text", "echo")
        prompt, values = render_workflow(workflow.template)
        assert workflow.expect.text_equals_placeholder is not None
        assert fill_text(workflow.expect.text_equals_placeholder, values) == prompt["1"]["inputs"]["value"]

    def test_unknown_placeholders_kept(self) -> None:
        """Tokens without a value are left alone."""
        assert fill_text("{{a}} {{b}}", {"a": "1"}) == "1 {{b}}"


def test_workflow_files_of_a_directory_are_its_json_files_in_name_order_bounded(tmp_path: Path) -> None:
    for index in range(MAX_WORKFLOW_FILES + 50):
        (tmp_path / f"w{index:04d}.json").write_text("{}", encoding="utf-8")
    (tmp_path / "a_folder.json").mkdir()
    (tmp_path / "notes.txt").write_text("", encoding="utf-8")
    files = workflow_files(tmp_path)
    assert [f.name for f in files] == [f"w{index:04d}.json" for index in range(MAX_WORKFLOW_FILES)]


def test_workflow_files_of_a_file_missing_path_or_empty_directory(tmp_path: Path) -> None:
    single = tmp_path / "one.json"
    single.write_text("{}", encoding="utf-8")
    assert workflow_files(single) == [single]
    with pytest.raises(WorkflowError, match=r"cannot read .*missing: No such file or directory"):
        workflow_files(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WorkflowError, match=r"holds no \.json workflow"):
        workflow_files(empty)
