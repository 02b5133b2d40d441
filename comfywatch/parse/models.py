"""``GET /models`` (the model folders) and ``GET /models/{folder}`` (the files in one), bounded.

Folder names go into a request path and the ``folder`` label: only short plain names are kept (ComfyUI's are
``checkpoints``, ``loras``, ``vae`` ...). File names are only counted and fingerprinted, never exported.
"""

from __future__ import annotations

import re
from typing import Final

from comfywatch.parse.shape import as_list
from comfywatch.parse.text import bounded

__all__ = ["MAX_FOLDERS", "MAX_MODEL_FILES", "parse_model_files", "parse_model_folders"]

MAX_FOLDERS: Final = 64
#: Files kept per folder: a large model library has thousands.
MAX_MODEL_FILES: Final = 20_000
_FOLDER: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def parse_model_folders(body: object) -> tuple[str, ...]:
    """The folder names of ``/models``, sorted; names that are not plain short words are left out.

    Raises:
        ParseError: the answer is not a JSON list.
    """
    names = {item for item in as_list(body, "$") if isinstance(item, str) and _FOLDER.fullmatch(item)}
    return tuple(sorted(names)[:MAX_FOLDERS])


def parse_model_files(body: object) -> tuple[str, ...]:
    """The file names of ``/models/{folder}``, cleaned, sorted, at most :data:`MAX_MODEL_FILES`.

    Raises:
        ParseError: the answer is not a JSON list.
    """
    items = as_list(body, "$")
    names = {bounded(item) for item in items[: MAX_MODEL_FILES * 2] if isinstance(item, str)}
    return tuple(sorted(names)[:MAX_MODEL_FILES])
