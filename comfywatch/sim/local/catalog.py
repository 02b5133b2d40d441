"""The node classes a simulated ComfyUI knows: ``object_info`` and what validation and execution read of it."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["Catalog", "NodeSpec", "default_catalog"]

#: Options of one input, by class and input name: what a deploy may change.
InputOptions = Mapping[str, Mapping[str, list[Any]]]


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

    def deployed(self, remove: Iterable[str] = (), options: InputOptions | None = None) -> Catalog:
        """This catalogue after a deploy: the classes in *remove* gone, the listed inputs' options (a COMBO's
        list) replaced. Unknown classes or inputs are ignored, as a server simply would not have them."""
        object_info = {name: info for name, info in self.object_info.items() if name not in set(remove)}
        for name, inputs in (options or {}).items():
            if name not in object_info:
                continue
            info = copy.deepcopy(object_info[name])
            for section in info["input"].values():
                for input_name, choices in inputs.items():
                    if input_name in section and isinstance(section[input_name], list):
                        section[input_name] = [list(choices), *section[input_name][1:]]
            object_info[name] = info
        return Catalog(object_info)


@cache
def default_catalog() -> Catalog:
    """The packaged catalogue (``data/object_info.json``, loaded once)."""
    text = resources.files("comfywatch.sim").joinpath("data/object_info.json").read_text("utf-8")
    return Catalog(json.loads(text))
