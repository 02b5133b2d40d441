"""One catalogue read holds a bounded number of model file names, whatever the server lists: the folders after
the one that reaches the catalogue's total are not requested."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import structlog

from comfywatch.checks import catalog as catalog_check
from comfywatch.checks.context import TargetContext
from comfywatch.parse.catalog import MAX_MODELS, MAX_MODELS_TOTAL
from comfywatch.parse.text import TRUNCATIONS, Cut


class _Library:
    """A server whose every model folder lists as many files as the catalogue keeps of one."""

    def __init__(self, folders: int) -> None:
        self.folders = tuple(f"f{n:02}" for n in range(folders))
        self.requested: list[str] = []

    async def object_info_response(self) -> object:
        return object()

    def decode_object_info(self, response: object) -> dict[str, Any]:
        return {}

    async def model_folders(self) -> tuple[str, ...]:
        return self.folders

    async def model_files(self, folder: str) -> tuple[str, ...]:
        self.requested.append(folder)
        return tuple(f"{folder}-{n:05}" for n in range(MAX_MODELS))


async def test_folders_past_the_catalogue_total_are_not_requested() -> None:
    """64 full folders would be 640,000 names (some 200 MB at 256 characters each): the read stops asking once
    MAX_MODELS_TOTAL are in, says so in one warning and one counted cut, and the catalogue holds that many."""
    library = _Library(64)
    ctx = cast(TargetContext, SimpleNamespace(local_api=lambda: library, config=SimpleNamespace(name="gpu")))
    cuts = TRUNCATIONS[Cut.MODEL_FILES]
    with structlog.testing.capture_logs() as logs:
        observation = await catalog_check.observe(ctx, None)
    assert TRUNCATIONS[Cut.MODEL_FILES] == cuts + 1
    full = MAX_MODELS_TOTAL // MAX_MODELS
    assert library.requested == list(library.folders[:full])
    assert sum(observation.catalog.model_counts.values()) == MAX_MODELS_TOTAL
    capped = [entry for entry in logs if entry["event"] == "catalog_models_capped"]
    assert capped == [{"event": "catalog_models_capped", "log_level": "warning", "target": "gpu",
                       "files": MAX_MODELS_TOTAL, "folders_not_read": 64 - full}]

