"""A ComfyUI server's catalogue: what it offers (node classes, their packs and inputs, models, versions), a short
fingerprint of it, and the difference between two servers, to notice that servers meant to be identical are not.

What is compared: node classes and the pack each comes from (``core`` for ComfyUI's own modules, else the
custom-node pack), each class's input names, the options of combo inputs *minus any served model file* (model
files are compared once, through the models lists, rather than again in every loader's combo), the files of each
models folder, and the ComfyUI, Python and PyTorch versions. Types, defaults, tooltips and outputs are not.

Everything here is pure and bounded: a server chooses how much it sends, so classes, inputs, options and models
are capped and every kept string is cleaned (:func:`comfywatch.parse.text.bounded`); a malformed entry is skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final

from comfywatch.parse.shape import as_map
from comfywatch.parse.system import SystemStats
from comfywatch.parse.text import bounded

__all__ = [
    "CORE_PACK", "HASH_CHARS", "MAX_CLASSES", "MAX_FOLDERS", "MAX_INPUTS", "MAX_MODELS", "MAX_MODELS_TOTAL",
    "MAX_OPTIONS", "RENDER_LINES", "Catalog", "CatalogDiff", "NodeClass", "OptionDrift", "catalog_from",
    "combo_choices", "diff", "kept_classes", "render_diff",
]

#: The pack of ComfyUI's own node classes (``nodes``, ``comfy_extras.*``, ``comfy_api_nodes.*``).
CORE_PACK: Final = "core"
#: Node classes kept: a real server with many packs has a few thousand.
MAX_CLASSES: Final = 20_000
#: Inputs kept per class and options kept per combo input.
MAX_INPUTS: Final = 200
MAX_OPTIONS: Final = 2_000
#: Model files kept per folder, and folders kept (ComfyUI has two dozen).
MAX_MODELS: Final = 10_000
MAX_FOLDERS: Final = 64
#: Model files kept across all folders of one catalogue: a large library has thousands, while the two bounds above
#: would let a server have 640,000 names of 256 characters (some 200 MB) held per read. Folders after the one that
#: reaches it are left out (and not requested: :mod:`comfywatch.checks.catalog`).
MAX_MODELS_TOTAL: Final = 100_000
#: Lines of one section of :func:`render_diff` before "... and N more".
RENDER_LINES: Final = 20
#: Options named per side of one differing combo input in :func:`render_diff`.
RENDER_OPTIONS: Final = 10
#: Length of a fingerprint in hex characters.
HASH_CHARS: Final = 12

_SECTIONS: Final = ("required", "optional")


def kept_classes(object_info: Mapping[Any, Any]) -> Iterator[tuple[Any, Any]]:
    """The classes of an ``/object_info`` that are read: the first :data:`MAX_CLASSES`, in the server's order.
    The same ones are counted, fingerprinted and linted against."""
    return islice(object_info.items(), MAX_CLASSES)


def combo_choices(kind: object, options: Mapping[str, Any], limit: int | None = None) -> tuple[Any, ...] | None:
    """The allowed values of an ``object_info`` input declared as ``[kind, options]`` (the first *limit* of them,
    if given), or None when it is not a combo or its list is not served: older servers give the list as *kind*;
    newer ones give ``"COMBO"`` with the list under ``options["options"]`` (a ``remote`` combo is fetched by the
    browser, so its list is not here)."""
    if isinstance(kind, list | tuple):
        listed = kind
    elif kind == "COMBO" and not options.get("remote") and isinstance(options.get("options"), list):
        listed = options["options"]
    else:
        return None
    # Sliced before it is copied: the server chooses the list's length.
    return tuple(listed if limit is None else listed[:limit])


def _pack(module: object) -> str:
    if isinstance(module, str):
        parts = module.split(".")
        if len(parts) > 1 and parts[0] == "custom_nodes" and parts[1]:
            return bounded(parts[1])
    return CORE_PACK


@dataclass(frozen=True, slots=True)
class NodeClass:
    """One node class as compared: its pack, input names and the non-model options of its combo inputs."""

    pack: str
    inputs: tuple[str, ...]
    options: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Catalog:
    """What one server offers (see the module docstring for what is compared)."""

    classes: Mapping[str, NodeClass]
    models: Mapping[str, tuple[str, ...]]
    versions: Mapping[str, str]

    @property
    def node_classes(self) -> int:
        return len(self.classes)

    @property
    def packs(self) -> frozenset[str]:
        """Custom-node packs (``core`` excluded)."""
        return frozenset(node.pack for node in self.classes.values()) - {CORE_PACK}

    @property
    def model_counts(self) -> dict[str, int]:
        return {folder: len(files) for folder, files in self.models.items()}

    @property
    def nodes_hash(self) -> str:
        """Fingerprint of classes, packs, inputs and options: equal catalogues, equal hashes, whatever the order."""
        return _fingerprint({
            name: [node.pack, sorted(node.inputs), {key: sorted(values) for key, values in node.options.items()}]
            for name, node in self.classes.items()
        })

    @property
    def models_hash(self) -> str:
        """Fingerprint of the models lists."""
        return _fingerprint({folder: list(files) for folder, files in self.models.items()})


def _fingerprint(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]


def _strings(values: Sequence[Any], limit: int) -> list[str]:
    return [bounded(value) for value in values[:limit] if isinstance(value, str)]


def _node_class(entry: object, model_files: frozenset[str]) -> NodeClass | None:
    if not isinstance(entry, Mapping):
        return None
    declared = entry.get("input")
    inputs: list[str] = []
    options: dict[str, frozenset[str]] = {}
    for section_name in _SECTIONS:
        section = declared.get(section_name) if isinstance(declared, Mapping) else None
        if not isinstance(section, Mapping):
            continue
        for raw_name, info in islice(section.items(), MAX_INPUTS):
            if not isinstance(raw_name, str):
                continue
            name = bounded(raw_name)
            inputs.append(name)
            if not isinstance(info, list) or not info:
                continue
            extra = info[1] if len(info) > 1 and isinstance(info[1], Mapping) else {}
            choices = combo_choices(info[0], extra, MAX_OPTIONS)
            if choices is not None:
                options[name] = frozenset(_strings(choices, MAX_OPTIONS)) - model_files
    return NodeClass(pack=_pack(entry.get("python_module")), inputs=tuple(sorted(set(inputs))), options=options)


def catalog_from(object_info: object, models: Mapping[str, Sequence[str]], stats: SystemStats | None) -> Catalog:
    """The catalogue of a server from its parsed ``/object_info``, ``/models/{folder}`` lists and system stats.

    Raises ParseError only when *object_info* is not an object; malformed entries are skipped."""
    body = as_map(object_info, "object_info")
    kept_models: dict[str, tuple[str, ...]] = {}
    room = MAX_MODELS_TOTAL
    for folder, files in islice(models.items(), MAX_FOLDERS):
        if room == 0:
            break
        if isinstance(folder, str) and isinstance(files, list | tuple):
            kept = tuple(sorted(set(_strings(files, min(MAX_MODELS, room)))))
            kept_models[bounded(folder)] = kept
            room -= len(kept)
    model_files = frozenset(file for files in kept_models.values() for file in files)
    classes: dict[str, NodeClass] = {}
    for raw_name, entry in kept_classes(body):
        node = _node_class(entry, model_files) if isinstance(raw_name, str) else None
        if node is not None:
            classes[bounded(raw_name)] = node
    versions = {} if stats is None else {
        "comfyui": stats.comfyui_version, "python": stats.python_version, "torch": stats.pytorch_version,
    }
    return Catalog(classes=classes, models=kept_models, versions=versions)


@dataclass(frozen=True, slots=True)
class OptionDrift:
    """A combo input offered by both servers with different options."""

    node_class: str
    input: str
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CatalogDiff:
    """How server B differs from server A; every collection is sorted."""

    packs_only_a: tuple[str, ...]
    packs_only_b: tuple[str, ...]
    #: (class, pack) pairs, so a renderer can tell classes explained by a missing pack from the rest.
    classes_only_a: tuple[tuple[str, str], ...]
    classes_only_b: tuple[tuple[str, str], ...]
    options: tuple[OptionDrift, ...]
    #: (folder, file) pairs.
    models_only_a: tuple[tuple[str, str], ...]
    models_only_b: tuple[tuple[str, str], ...]
    #: (component, version in A, version in B); a version one side does not report is "".
    versions: tuple[tuple[str, str, str], ...]

    @property
    def empty(self) -> bool:
        return not any((
            self.packs_only_a, self.packs_only_b, self.classes_only_a, self.classes_only_b, self.options,
            self.models_only_a, self.models_only_b, self.versions,
        ))


def _models(catalog: Catalog) -> set[tuple[str, str]]:
    return {(folder, file) for folder, files in catalog.models.items() for file in files}


def diff(a: Catalog, b: Catalog) -> CatalogDiff:
    """What differs between *a* and *b* (see the module docstring for what is compared)."""
    drifts = []
    for name in sorted(a.classes.keys() & b.classes.keys()):
        options_a, options_b = a.classes[name].options, b.classes[name].options
        for input_name in sorted(options_a.keys() & options_b.keys()):
            if options_a[input_name] != options_b[input_name]:
                drifts.append(OptionDrift(
                    node_class=name, input=input_name,
                    only_a=tuple(sorted(options_a[input_name] - options_b[input_name])),
                    only_b=tuple(sorted(options_b[input_name] - options_a[input_name])),
                ))
    components = sorted(a.versions.keys() | b.versions.keys())
    return CatalogDiff(
        packs_only_a=tuple(sorted(a.packs - b.packs)),
        packs_only_b=tuple(sorted(b.packs - a.packs)),
        classes_only_a=tuple(sorted((name, a.classes[name].pack) for name in a.classes.keys() - b.classes.keys())),
        classes_only_b=tuple(sorted((name, b.classes[name].pack) for name in b.classes.keys() - a.classes.keys())),
        options=tuple(drifts),
        models_only_a=tuple(sorted(_models(a) - _models(b))),
        models_only_b=tuple(sorted(_models(b) - _models(a))),
        versions=tuple(
            (part, a.versions.get(part, ""), b.versions.get(part, "")) for part in components
            if a.versions.get(part, "") != b.versions.get(part, "")
        ),
    )


def _section(title: str, items: Sequence[str]) -> list[str]:
    if not items:
        return []
    shown = [f"  {item}" for item in items[:RENDER_LINES]]
    if len(items) > RENDER_LINES:
        shown.append(f"  ... and {len(items) - RENDER_LINES} more")
    return [title, *shown]


def _classes(classes: Sequence[tuple[str, str]], missing_packs: frozenset[str]) -> list[str]:
    # A class whose whole pack is missing is said once, through its pack.
    return [name if pack == CORE_PACK else f"{name} ({pack})" for name, pack in classes if pack not in missing_packs]


def _listed(options: Sequence[str]) -> str:
    if not options:
        return "-"
    more = f" and {len(options) - RENDER_OPTIONS} more" if len(options) > RENDER_OPTIONS else ""
    return ", ".join(options[:RENDER_OPTIONS]) + more


def render_diff(catalog_diff: CatalogDiff, name_a: str, name_b: str) -> list[str]:
    """Plain-text lines for a person; classes of a pack only one side has are counted under that pack."""
    if catalog_diff.empty:
        return [f"{name_a} and {name_b} offer the same catalogue"]
    d = catalog_diff
    lines: list[str] = []
    for packs, classes, side, other in (
        (d.packs_only_a, d.classes_only_a, name_a, name_b), (d.packs_only_b, d.classes_only_b, name_b, name_a),
    ):
        counts = Counter(owner for _, owner in classes)
        lines += _section(f"custom node packs only on {side}:", [f"{p} ({counts[p]} classes)" for p in packs])
        lines += _section(f"node classes only on {side} (not on {other}):", _classes(classes, frozenset(packs)))
    lines += _section(f"combo options that differ ({name_a} vs {name_b}):", [
        f"{drift.node_class}.{drift.input}: only on {name_a}: {_listed(drift.only_a)};"
        f" only on {name_b}: {_listed(drift.only_b)}"
        for drift in d.options
    ])
    lines += _section(f"models only on {name_a}:", [f"{folder}/{file}" for folder, file in d.models_only_a])
    lines += _section(f"models only on {name_b}:", [f"{folder}/{file}" for folder, file in d.models_only_b])
    lines += _section("versions that differ:", [
        f"{part}: {va or '?'} on {name_a}, {vb or '?'} on {name_b}" for part, va, vb in d.versions
    ])
    return lines
