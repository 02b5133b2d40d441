"""The catalogue of a server: built from the recorded /object_info, /models and /system_stats, fingerprinted
stably, diffed both ways, bounded against hostile input."""

from __future__ import annotations

import copy
import tracemalloc
from typing import Any

import pytest

from comfywatch.errors import ParseError
from comfywatch.parse.catalog import (
    CORE_PACK,
    MAX_CLASSES,
    MAX_INPUTS,
    MAX_MODELS,
    MAX_MODELS_TOTAL,
    MAX_OPTIONS,
    RENDER_LINES,
    Catalog,
    CatalogDiff,
    OptionDrift,
    catalog_from,
    diff,
    render_diff,
)
from comfywatch.parse.system import parse_system_stats
from tests.fixtures import load_json

MODELS = {"checkpoints": ["sd15.safetensors", "sdxl.safetensors"], "loras": ["detail.safetensors"]}


def _object_info() -> dict[str, Any]:
    info: dict[str, Any] = load_json("object_info.json")
    info.update(load_json("object_info_custom_node.json"))
    return info


def _catalog(info: dict[str, Any] | None = None, models: dict[str, list[str]] | None = None) -> Catalog:
    stats = parse_system_stats(load_json("system_stats.json"))
    return catalog_from(_object_info() if info is None else info, MODELS if models is None else models, stats)


def test_packs_from_recordings() -> None:
    catalog = _catalog()
    assert catalog.classes["CWSleep"].pack == "cw_test_nodes"
    assert catalog.classes["PreviewAny"].pack == CORE_PACK
    assert catalog.classes["KSampler"].pack == CORE_PACK
    assert catalog.classes["SaveImageWebsocket"].pack == "websocket_image_save"
    assert catalog.packs == {"cw_test_nodes", "websocket_image_save"}
    assert catalog.node_classes == len(_object_info())
    assert catalog.model_counts == {"checkpoints": 2, "loras": 1}


def test_inputs_options_and_versions() -> None:
    catalog = _catalog()
    sampler = catalog.classes["KSampler"]
    assert {"seed", "sampler_name", "scheduler", "model"} <= set(sampler.inputs)
    assert "euler" in sampler.options["sampler_name"]
    # The newer "COMBO" + {"options": [...]} form is read too.
    assert "LatentBatchSeedBehavior" in catalog.classes
    assert catalog.classes["LatentBatchSeedBehavior"].options["seed_behavior"]
    stats = parse_system_stats(load_json("system_stats.json"))
    assert catalog.versions == {
        "comfyui": stats.comfyui_version, "python": stats.python_version, "torch": stats.pytorch_version,
    }


def test_model_files_compared_through_models_lists_only() -> None:
    info = _object_info()
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = ["sd15.safetensors", "sdxl.safetensors"]
    catalog = _catalog(info)
    assert catalog.classes["CheckpointLoaderSimple"].options["ckpt_name"] == frozenset()
    assert catalog.nodes_hash == _catalog().nodes_hash


def test_fingerprints_stable_under_reordering() -> None:
    info = _object_info()
    reordered = {name: info[name] for name in reversed(list(info))}
    sampler = reordered["KSampler"]["input"]["required"]
    sampler["sampler_name"][0] = list(reversed(sampler["sampler_name"][0]))
    reordered["KSampler"]["input"]["required"] = dict(reversed(list(sampler.items())))
    models = {folder: list(reversed(files)) for folder, files in reversed(list(MODELS.items()))}
    a, b = _catalog(), _catalog(reordered, models)
    assert a.nodes_hash == b.nodes_hash
    assert a.models_hash == b.models_hash
    assert len(a.nodes_hash) == 12 and int(a.nodes_hash, 16) >= 0
    assert diff(a, b).empty


def test_removed_model_changes_models_hash_only() -> None:
    a = _catalog()
    b = _catalog(models={"checkpoints": ["sd15.safetensors"], "loras": ["detail.safetensors"]})
    assert a.models_hash != b.models_hash
    assert a.nodes_hash == b.nodes_hash
    result = diff(a, b)
    assert result.models_only_a == (("checkpoints", "sdxl.safetensors"),)
    assert not result.models_only_b and not result.options and not result.classes_only_a


def test_renamed_option_changes_nodes_hash_and_diffs_both_ways() -> None:
    info = copy.deepcopy(_object_info())
    choices = info["KSampler"]["input"]["required"]["sampler_name"][0]
    choices[choices.index("euler")] = "euler_renamed"
    a, b = _catalog(), _catalog(info)
    assert a.nodes_hash != b.nodes_hash
    assert a.models_hash == b.models_hash
    assert diff(a, b).options == (OptionDrift("KSampler", "sampler_name", ("euler",), ("euler_renamed",)),)
    assert diff(b, a).options == (OptionDrift("KSampler", "sampler_name", ("euler_renamed",), ("euler",)),)


def test_missing_pack_diff_and_render() -> None:
    full = _catalog()
    info = _object_info()
    del info["CWSleep"], info["PreviewAny"]
    stripped = _catalog(info)
    result = diff(full, stripped)
    assert result.packs_only_a == ("cw_test_nodes",)
    assert result.classes_only_a == (("CWSleep", "cw_test_nodes"), ("PreviewAny", CORE_PACK))
    assert not result.packs_only_b and not result.classes_only_b
    assert render_diff(result, "gpu-1", "gpu-2") == [
        "custom node packs only on gpu-1:",
        "  cw_test_nodes (1 classes)",
        "node classes only on gpu-1 (not on gpu-2):",
        "  PreviewAny",
    ]
    assert diff(stripped, full).packs_only_b == ("cw_test_nodes",)
    assert render_diff(diff(full, full), "gpu-1", "gpu-2") == ["gpu-1 and gpu-2 offer the same catalogue"]


def _node(module: str) -> dict[str, Any]:
    return {"python_module": module, "input": {"required": {}}}


def test_render_counts_the_classes_of_each_missing_pack_and_names_the_others() -> None:
    """Packs one side lacks, with how many classes each, on both sides; the classes of those packs are said only
    through them, the other classes (core ones, and new ones of a pack both sides have) by name."""
    a = catalog_from({
        "AlphaOne": _node("custom_nodes.alpha"), "AlphaTwo": _node("custom_nodes.alpha.sub"),
        "AlphaThree": _node("custom_nodes.alpha"), "BetaOnly": _node("custom_nodes.beta"), "CoreOnA": _node("nodes"),
        "GammaShared": _node("custom_nodes.gamma"), "GammaExtra": _node("custom_nodes.gamma"),
    }, {}, None)
    b = catalog_from({
        "DeltaOne": _node("custom_nodes.delta"), "DeltaTwo": _node("custom_nodes.delta"),
        "CoreOnB": _node("comfy_extras.x"), "GammaShared": _node("custom_nodes.gamma"),
        "GammaNew": _node("custom_nodes.gamma"),
    }, {}, None)
    assert render_diff(diff(a, b), "gpu-1", "gpu-2") == [
        "custom node packs only on gpu-1:",
        "  alpha (3 classes)",
        "  beta (1 classes)",
        "node classes only on gpu-1 (not on gpu-2):",
        "  CoreOnA",
        "  GammaExtra (gamma)",
        "custom node packs only on gpu-2:",
        "  delta (2 classes)",
        "node classes only on gpu-2 (not on gpu-1):",
        "  CoreOnB",
        "  GammaNew (gamma)",
    ]


class _CountedName(str):
    """A pack name that counts how often it is compared for equality."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _CountedName.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_render_compares_pack_names_a_few_times_per_class_however_many_packs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2,000 classes in as many packs only A has (a server may send 20,000), and a few core classes: the packs
    section lists the first packs and counts the rest, no pack's class is listed, and render_diff compares
    pack names a few times per class, not once per pack and class (20,000 of each took 16 s)."""
    count = 2_000
    # Equal but not identical names, as a catalogue read from JSON has: no comparison is skipped by identity.
    packs = tuple(_CountedName(f"pack{i:05}") for i in range(count))
    classes = tuple((f"Class{i:05}", _CountedName(f"pack{i:05}")) for i in range(count))
    core = tuple((f"Core{i}", CORE_PACK) for i in range(3))
    found = CatalogDiff(packs_only_a=packs, packs_only_b=(), classes_only_a=core + classes, classes_only_b=(),
                        options=(), models_only_a=(), models_only_b=(), versions=())
    monkeypatch.setattr(_CountedName, "compared", 0)
    lines = render_diff(found, "a", "b")
    assert lines == [
        "custom node packs only on a:",
        *(f"  pack{i:05} (1 classes)" for i in range(RENDER_LINES)),
        f"  ... and {count - RENDER_LINES} more",
        "node classes only on a (not on b):",
        "  Core0", "  Core1", "  Core2",
    ]
    assert _CountedName.compared <= 3 * (count + len(core))


def test_render_caps_sections_and_versions() -> None:
    a = _catalog(models={"loras": [f"l{i:03}.safetensors" for i in range(RENDER_LINES + 5)]})
    b = catalog_from(_object_info(), {}, None)
    lines = render_diff(diff(a, b), "a", "b")
    start = lines.index("models only on a:")
    assert lines[start + RENDER_LINES + 1] == "  ... and 5 more"
    assert "versions that differ:" in lines
    assert any(line.startswith("  comfyui: ") and line.endswith(", ? on b") for line in lines)


def test_hostile_input_is_bounded_and_cleaned() -> None:
    info: dict[str, Any] = {f"C{i}": {"input": {"required": {}}} for i in range(MAX_CLASSES + 50)}
    info["C0"] = {
        "input": {"required": {"pick": [[f"o{i}" for i in range(MAX_OPTIONS + 10)], {}], "bad": 7, "x\x1b[2J": []}},
        "python_module": "custom_nodes.evil\ud800pack.sub",
    }
    info["C1"] = "not a node"
    info["C2"] = {"input": ["wrong"], "python_module": 5}
    info["C3"] = {"input": {"required": {"c": ["COMBO", {"options": "nope"}]}, "optional": None}}
    models: dict[str, Any] = {"checkpoints": ["m"] * 3 + [f"m{i}" for i in range(MAX_MODELS + 10)] + [None, 3]}
    models["junk"] = "not a list"
    catalog = catalog_from(info, models, None)
    assert catalog.node_classes == MAX_CLASSES - 1  # C1 skipped
    assert "C1" not in catalog.classes
    evil = catalog.classes["C0"]
    assert evil.pack == "evil\ufffdpack"
    assert len(evil.options["pick"]) == MAX_OPTIONS
    assert set(evil.inputs) == {"pick", "bad", "x [2J"}
    assert catalog.classes["C2"].pack == CORE_PACK and catalog.classes["C2"].inputs == ()
    assert "c" not in catalog.classes["C3"].options
    assert len(catalog.models["checkpoints"]) == MAX_MODELS - 2  # three "m" kept once
    assert "junk" not in catalog.models
    assert len(catalog.nodes_hash) == 12 and catalog.versions == {}


def test_model_files_beyond_the_catalogue_total_are_left_out() -> None:
    """Full folders, the first of five files: the folder that reaches MAX_MODELS_TOTAL is cut to it, and the
    folders after it are left out, however many the per-folder bounds allow."""
    full = MAX_MODELS_TOTAL // MAX_MODELS
    models: dict[str, Any] = {"a-first": [f"x{i}" for i in range(5)]}
    models.update({f"f{n:02}": [f"f{n:02}-{i:05}" for i in range(MAX_MODELS)] for n in range(full + 2)})
    catalog = catalog_from({}, models, None)
    assert sum(catalog.model_counts.values()) == MAX_MODELS_TOTAL
    assert catalog.model_counts[f"f{full - 1:02}"] == MAX_MODELS - 5
    assert list(catalog.models) == list(models)[:full + 1]


def test_a_huge_combo_or_input_list_is_not_copied_whole() -> None:
    """A class with 200,000 inputs, the first a combo of a million options: only what is kept is copied (a copy
    of either list is megabytes)."""
    inputs: dict[str, Any] = {"pick": [["same"] * 1_000_000]}
    inputs.update({f"i{n}": ["INT"] for n in range(200_000)})
    info = {"Huge": {"input": {"required": inputs}}}
    tracemalloc.start()
    try:
        catalog = catalog_from(info, {}, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert catalog.classes["Huge"].options["pick"] == {"same"}
    assert len(catalog.classes["Huge"].inputs) == MAX_INPUTS
    assert peak < 1_000_000


def test_wrong_top_level_shape_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match=r"^object_info: expected object, got list$"):
        catalog_from(["not", "an", "object"], {}, None)
