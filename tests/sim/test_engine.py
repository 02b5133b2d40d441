"""Pure parts of the simulator: prompt validation, the PNG encoder, the Origin rule and fault names."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest

from comfywatch.sim.faults import Fault, parse_faults
from comfywatch.sim.local.app import origin_forbidden
from comfywatch.sim.local.catalog import default_catalog
from comfywatch.sim.local.validation import MalformedRequestError, validate_prompt
from comfywatch.sim.png import encode_solid_png


def _empty_image(**inputs: Any) -> dict[str, Any]:
    values = {"width": 64, "height": 64, "batch_size": 1, "color": 0, **inputs}
    return {"class_type": "EmptyImage", "inputs": values}


def test_value_bigger_than_max() -> None:
    """A value above the declared max is value_bigger_than_max with ComfyUI's message."""
    prompt = {
        "1": _empty_image(width=20000),
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    result = validate_prompt(default_catalog(), prompt)
    assert not result.ok and result.error is not None
    assert result.error["type"] == "prompt_outputs_failed_validation"
    error = result.node_errors["1"]["errors"][0]
    assert error["type"] == "value_bigger_than_max"
    assert error["message"] == "Value 20000 bigger than max of 16384"
    assert result.node_errors["1"]["dependent_outputs"] == ["2"]


def test_inner_link_to_missing_node() -> None:
    """A broken link further upstream is exception_during_inner_validation on the linked node."""
    prompt = {
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["99", 0],
                "upscale_method": "area",
                "width": 8,
                "height": 8,
                "crop": "disabled",
            },
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    result = validate_prompt(default_catalog(), prompt)
    assert not result.ok
    assert "3" not in result.node_errors  # downstream of the broken node: invalid without reasons
    assert result.node_errors["2"]["dependent_outputs"] == ["3"]
    inner = result.node_errors["2"]["errors"][0]
    assert inner["type"] == "exception_during_inner_validation"
    assert inner["extra_info"]["exception_type"] == "KeyError" and inner["details"] == "'99'"


def test_validation_coerces_inputs_in_place() -> None:
    """String numbers are converted in the posted prompt itself, as the real server does."""
    prompt = {
        "1": _empty_image(width="32"),
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    assert validate_prompt(default_catalog(), prompt).ok
    assert prompt["1"]["inputs"]["width"] == 32


def test_partial_execution_targets() -> None:
    """partial_execution_targets limits the outputs that are validated and run."""
    prompt = {
        "1": _empty_image(),
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    assert validate_prompt(default_catalog(), prompt, ["3"]).good_outputs == ["3"]


@pytest.mark.parametrize("prompt", ["abc", [1, 2], 5, None, {"1": 7}])
def test_malformed_prompts_raise(prompt: Any) -> None:
    """Prompts that make the real code raise are reported as malformed (the server answers 500)."""
    with pytest.raises(MalformedRequestError):
        validate_prompt(default_catalog(), prompt)


@pytest.mark.parametrize("prompt", ["", []])
def test_empty_string_or_list_prompt_has_no_outputs(prompt: Any) -> None:
    """An empty string or list iterates to nothing: prompt_no_outputs, like an empty object."""
    result = validate_prompt(default_catalog(), prompt)
    assert result.error is not None and result.error["type"] == "prompt_no_outputs"


def test_png_encoder_roundtrip() -> None:
    """The encoder writes a valid RGB PNG with the colour in every pixel and the text chunk."""
    png = encode_solid_png(5, 3, 0x102030, text={"prompt": "{}"})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">IIBBBBB", png[16:29]) == (5, 3, 8, 2, 0, 0, 0)
    start = png.index(b"IDAT") + 4
    (length,) = struct.unpack(">I", png[start - 8 : start - 4])
    raw = zlib.decompress(png[start : start + length])
    assert raw == (b"\x00" + b"\x10\x20\x30" * 5) * 3
    assert b"tEXtprompt\x00{}" in png
    with pytest.raises(ValueError):
        encode_solid_png(0, 1, 0)


@pytest.mark.parametrize(
    ("host", "origin", "forbidden"),
    [
        ("127.0.0.1:8188", "http://evil.example.com", True),
        ("127.0.0.1:8188", "http://127.0.0.1:8188", False),
        ("127.0.0.1:8188", "http://127.0.0.1:9999", True),
        ("127.0.0.1:8188", "http://127.0.0.1", False),
        ("localhost:8188", "http://evil.example.com:8188", True),
        ("[::1]:8188", "http://[::1]:8188", False),
        ("comfy.lan:8188", "http://evil.example.com", False),
        ("127.0.0.1:8188", None, False),
    ],
)
def test_origin_rule(host: str, origin: str | None, forbidden: bool) -> None:
    """Only a loopback Host with a different Origin host (ports compared when both have one) is refused."""
    assert origin_forbidden(host, origin) is forbidden


def test_fault_names() -> None:
    """Fault names parse to the enum; unknown ones are listed in the error."""
    assert parse_faults(["down", "oom"]) == {Fault.DOWN, Fault.OOM}
    with pytest.raises(ValueError, match="nope"):
        parse_faults(["nope", "down"])
