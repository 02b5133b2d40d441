"""The node classes a simulated ComfyUI knows: ``object_info`` and what validation and execution read of it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["Catalog", "NodeSpec", "default_catalog"]


@dataclass(frozen=True)
class NodeSpec:
    """The parts of one ``object_info`` entry that validation and execution need."""

    name: str
    required: Mapping[str, list[Any]]
    optional: Mapping[str, list[Any]]
    output: tuple[str, ...]
    output_node: bool

    def input_info(self, name: str) -> tuple[Any, str, dict[str, Any]]:
        """``(type, category, extra_info)`` like ComfyUI's ``get_input_info``."""
        if name in self.required:
            spec, category = self.required[name], "required"
        else:
            spec, category = self.optional[name], "optional"
        extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return spec[0], category, extra

    def default(self, name: str) -> Any:
        """The declared default of an input, or ``None``."""
        return self.input_info(name)[2].get("default")


class Catalog:
    """The node classes the sim supports, from the trimmed ``object_info`` shipped in ``data/``."""

    def __init__(self, object_info: Mapping[str, Any]) -> None:
        self.object_info: dict[str, Any] = dict(object_info)
        self.specs: dict[str, NodeSpec] = {}
        for name, info in self.object_info.items():
            inputs = info["input"]
            self.specs[name] = NodeSpec(
                name=name,
                required=inputs.get("required", {}),
                optional=inputs.get("optional", {}),
                output=tuple(info["output"]),
                output_node=bool(info["output_node"]),
            )


@cache
def default_catalog() -> Catalog:
    """The packaged catalogue (``data/object_info.json``, loaded once)."""
    text = resources.files("comfywatch.sim").joinpath("data/object_info.json").read_text("utf-8")
    return Catalog(json.loads(text))
