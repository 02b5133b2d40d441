"""``POST /prompt`` validation exactly as ComfyUI 0.3.64's ``execution.validate_prompt`` answers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comfywatch.sim.local.catalog import Catalog
from comfywatch.sim.local.failures import VALIDATION_TRACEBACK, full_type_name

__all__ = ["MalformedRequestError", "ValidationResult", "is_link", "validate_node_input", "validate_prompt"]


class MalformedRequestError(Exception):
    """The request body made ComfyUI's handler raise: the real server answers 500 text/plain."""


def is_link(value: Any) -> bool:
    """Whether a prompt input is a link ``[node_id, slot]`` rather than a literal value."""
    return isinstance(value, list)


def validate_node_input(received_type: Any, input_type: Any) -> bool:
    """ComfyUI's non-strict type compatibility: equal, ``*`` on either side, or overlapping unions."""
    if received_type == input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    accepted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in accepted:
        return True
    return bool(received & accepted)


# ComfyUI's validation is written twice on purpose: here as the server answers it (one error per input,
# values coerced in place, exceptions for malformed graphs), and in comfywatch.workflows.lint as a client-side
# check that lists every problem with its fix. This simulator is the independent server the linter and the
# doctor are tested against, so it must not share the linter's reading of execution.py: a misreading shared by
# both would pass every test. Each is checked on its own against the rejections recorded from a real 0.3.64.
class _Validator:
    """``validate_inputs`` of one prompt, memoised per node like the real ``validated`` dict."""

    def __init__(self, catalog: Catalog, prompt: dict[str, Any]) -> None:
        self.catalog = catalog
        self.prompt = prompt
        self.validated: dict[Any, tuple[bool, list[dict[str, Any]], Any]] = {}
        self._visiting: set[Any] = set()

    def validate(self, unique_id: Any) -> tuple[bool, list[dict[str, Any]], Any]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        if unique_id in self._visiting:
            # The real recursion never terminates on a cycle and dies with RecursionError.
            raise RecursionError("maximum recursion depth exceeded")
        self._visiting.add(unique_id)
        try:
            return self._validate(unique_id)
        finally:
            self._visiting.discard(unique_id)

    def _validate(self, unique_id: Any) -> tuple[bool, list[dict[str, Any]], Any]:
        node = self.prompt[unique_id]
        inputs = node["inputs"]
        spec = self.catalog.specs[node["class_type"]]
        errors: list[dict[str, Any]] = []
        valid = True
        for name in [*spec.required, *spec.optional]:
            input_type, category, extra_info = spec.input_info(name)
            if name not in inputs:
                if category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": f"{name}",
                            "extra_info": {"input_name": name},
                        }
                    )
                continue
            val = inputs[name]
            info = [input_type, extra_info]
            if is_link(val):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": f"{name}",
                            "extra_info": {"input_name": name, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                o_id = val[0]
                o_class_type = self.prompt[o_id]["class_type"]
                received_type = self.catalog.specs[o_class_type].output[val[1]]
                if not validate_node_input(received_type, input_type):
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": (f"{name}, received_type({received_type}) mismatch input_type({input_type})"),
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    if self.validate(o_id)[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    valid = False
                    self.validated[o_id] = (
                        False,
                        [
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": str(ex),
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": info,
                                    "exception_message": str(ex),
                                    "exception_type": full_type_name(type(ex)),
                                    "traceback": list(VALIDATION_TRACEBACK),
                                    "linked_node": val,
                                },
                            }
                        ],
                        o_id,
                    )
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[name] = val
                    # The same coercions as ComfyUI, applied to the posted prompt in place (so the queued
                    # and historic copies show the converted values, as on the real server).
                    if input_type == "INT":
                        val = int(val)
                        inputs[name] = val
                    if input_type == "FLOAT":
                        val = float(val)
                        inputs[name] = val
                    if input_type == "STRING":
                        val = str(val)
                        inputs[name] = val
                    if input_type == "BOOLEAN":
                        val = bool(val)
                        inputs[name] = val
                except Exception as ex:
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": f"Failed to convert an input value to a {input_type} value",
                            "details": f"{name}, {val}, {ex}",
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_value": val,
                                "exception_message": str(ex),
                            },
                        }
                    )
                    continue
                if "min" in extra_info and val < extra_info["min"]:
                    errors.append(
                        {
                            "type": "value_smaller_than_min",
                            "message": f"Value {val} smaller than min of {extra_info['min']}",
                            "details": f"{name}",
                            "extra_info": {"input_name": name, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                if "max" in extra_info and val > extra_info["max"]:
                    errors.append(
                        {
                            "type": "value_bigger_than_max",
                            "message": f"Value {val} bigger than max of {extra_info['max']}",
                            "details": f"{name}",
                            "extra_info": {"input_name": name, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                if isinstance(input_type, list) or input_type == "COMBO":
                    options = extra_info.get("options", []) if input_type == "COMBO" else input_type
                    if val not in options:
                        input_config: Any = info
                        # Long lists (scanned model files) are summarised, as the real server does.
                        if len(options) > 20:
                            list_info = f"(list of length {len(options)})"
                            input_config = None
                        else:
                            list_info = str(options)
                        errors.append(
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": f"{name}: '{val}' not in {list_info}",
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": input_config,
                                    "received_value": val,
                                },
                            }
                        )
                        continue
        result = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        self.validated[unique_id] = result
        return result


@dataclass
class ValidationResult:
    """What ``validate_prompt`` returns: ``(ok, error, good_outputs, node_errors)``."""

    ok: bool
    error: dict[str, Any] | None
    good_outputs: list[str]
    node_errors: dict[str, Any]


def _invalid_prompt(message: str, node_id: Any) -> ValidationResult:
    error = {
        "type": "invalid_prompt",
        "message": message,
        "details": f"Node ID '#{node_id}'",
        "extra_info": {},
    }
    return ValidationResult(False, error, [], {})


def validate_prompt(catalog: Catalog, prompt: Any, partial_targets: Any = None) -> ValidationResult:
    """Validate an API-format prompt exactly like ComfyUI 0.3.64's ``execution.validate_prompt``.

    Raises ``MalformedRequestError`` where the real code raises (a ``prompt`` that is a non-empty string
    or list, a node that is not an object...), which the server answers with a 500.
    """
    try:
        return _validate_prompt(catalog, prompt, partial_targets)
    except MalformedRequestError:
        raise
    except Exception as ex:
        raise MalformedRequestError(f"{type(ex).__name__}: {ex}") from ex


def _validate_prompt(catalog: Catalog, prompt: Any, partial_targets: Any) -> ValidationResult:
    no_outputs = {
        "type": "prompt_no_outputs",
        "message": "Prompt has no outputs",
        "details": "",
        "extra_info": {},
    }
    if isinstance(prompt, (str, list)) and len(prompt) == 0:
        # The real loop `for x in prompt` simply finds nothing in an empty string or list.
        return ValidationResult(False, no_outputs, [], {})
    if not isinstance(prompt, dict):
        # `prompt[x]` raises TypeError for a string, list or number in the real code.
        raise MalformedRequestError("prompt must be an object")
    outputs: list[str] = []
    for node_id in prompt:
        node = prompt[node_id]
        if not isinstance(node, (dict, str, list)):
            raise MalformedRequestError("node must be an object")
        if "class_type" not in node:
            return _invalid_prompt("Cannot execute because a node is missing the class_type property.", node_id)
        if not isinstance(node, dict):
            raise MalformedRequestError("node must be an object")
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in catalog.specs:
            return _invalid_prompt(f"Cannot execute because node {class_type} does not exist.", node_id)
        if catalog.specs[class_type].output_node and (partial_targets is None or node_id in partial_targets):
            outputs.append(node_id)
    if not outputs:
        return ValidationResult(False, no_outputs, [], {})

    validator = _Validator(catalog, prompt)
    good_outputs: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            valid, reasons, _ = validator.validate(output)
        except Exception as ex:
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": full_type_name(type(ex)),
                        "traceback": list(VALIDATION_TRACEBACK),
                    },
                }
            ]
            validator.validated[output] = (False, reasons, output)
        if valid is True:
            good_outputs.append(output)
            continue
        failed.append((output, reasons))
        for node_id, (node_valid, node_reasons, _) in validator.validated.items():
            # Nodes downstream of a broken one are invalid without reasons of their own; only nodes
            # with reasons are reported.
            if node_valid is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(output)
    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons)
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        }
        return ValidationResult(False, error, [], node_errors)
    return ValidationResult(True, None, good_outputs, node_errors)
