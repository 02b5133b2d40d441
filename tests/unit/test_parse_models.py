"""The model lists: recorded answers, and hostile ones bounded."""

from __future__ import annotations

import tracemalloc

import pytest

from comfywatch.errors import ParseError
from comfywatch.parse.catalog import MAX_FOLDERS, MAX_MODELS, catalog_from
from comfywatch.parse.models import parse_model_files, parse_model_folders
from tests.fixtures import load_json


def test_recorded_folders_and_an_empty_folder() -> None:
    folders = parse_model_folders(load_json("models.json"))
    assert "checkpoints" in folders and "loras" in folders and len(folders) == 20
    assert folders == tuple(sorted(folders))
    assert parse_model_files(load_json("models_checkpoints.json")) == ()


def test_folder_names_that_could_leave_the_path_or_flood_the_label_are_dropped() -> None:
    assert parse_model_folders(["../etc", "a/b", "", "x" * 65, "ok_1", "ok.2", 7, None, ".hidden"]) == ("ok.2", "ok_1")
    assert len(parse_model_folders([f"f{i}" for i in range(200)])) == MAX_FOLDERS


def test_files_are_cleaned_deduplicated_and_bounded() -> None:
    files = parse_model_files(["b.safetensors", "a\x1b[31m.ckpt", "b.safetensors", "\ud800x", 3, "y" * 10_000])
    assert files[0] == "a [31m.ckpt" and "b.safetensors" in files and "\ufffdx" in files
    assert max(len(f) for f in files) <= 256 and len(files) == 4
    assert len(parse_model_files([f"m{i}" for i in range(MAX_MODELS + 5)])) == MAX_MODELS


def test_a_folder_keeps_no_more_files_than_the_catalogue_keeps_of_it() -> None:
    """What is read of a folder is what its catalogue holds: no names parsed, held and fingerprinted only for
    catalog_from to drop them."""
    files = parse_model_files([f"m{i:05}" for i in range(2 * MAX_MODELS)])
    assert len(files) == MAX_MODELS
    assert catalog_from({}, {"loras": files}, None).models["loras"] == files


def test_a_list_of_a_million_folders_is_not_read_whole() -> None:
    """A /models answer of a million names (2.9 million fit the body limit): the folders are taken from its
    first entries, so no set or sort of the million is built (a set of them is tens of megabytes)."""
    body = [f"f{n:07}" for n in range(1_000_000)]
    tracemalloc.start()
    try:
        folders = parse_model_folders(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert folders == tuple(body[:MAX_FOLDERS])
    assert peak < 1_000_000


@pytest.mark.parametrize("body", [{}, "checkpoints", None, 3])
def test_a_body_that_is_not_a_list_is_a_parse_error(body: object) -> None:
    with pytest.raises(ParseError):
        parse_model_folders(body)
    with pytest.raises(ParseError):
        parse_model_files(body)
