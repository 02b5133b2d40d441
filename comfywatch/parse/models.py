"""``GET /models`` (the model folders) and ``GET /models/{folder}`` (the files in one), bounded.

Folder names go into a request path and the ``folder`` label: only short plain names are kept (ComfyUI's are
``checkpoints``, ``loras``, ``vae`` ...). File names are only counted and fingerprinted, never exported.
"""

from __future__ import annotations

import re
from typing import Final

from comfywatch.parse.catalog import MAX_FOLDERS, MAX_MODELS
from comfywatch.parse.shape import as_list
from comfywatch.parse.text import bounded

__all__ = ["parse_model_files", "parse_model_folders"]

_FOLDER: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def parse_model_folders(body: object) -> tuple[str, ...]:
    """The folder names of ``/models``, sorted, at most :data:`~comfywatch.parse.catalog.MAX_FOLDERS` (the
    catalogue's bound) of the first twice as many listed; names that are not plain short words are left out.

    Raises:
        ParseError: the answer is not a JSON list.
    """
    # Twice the bound is read so that duplicates and unusable names do not leave the list short; the rest would
    # cost a regular expression and a set entry each (a real server lists two dozen).
    items = as_list(body, "$")[: MAX_FOLDERS * 2]
    names = {item for item in items if isinstance(item, str) and _FOLDER.fullmatch(item)}
    return tuple(sorted(names)[:MAX_FOLDERS])


def parse_model_files(body: object) -> tuple[str, ...]:
    """The file names of ``/models/{folder}``, cleaned, sorted, at most
    :data:`~comfywatch.parse.catalog.MAX_MODELS` (as many as the catalogue keeps of a folder).

    Raises:
        ParseError: the answer is not a JSON list.
    """
    items = as_list(body, "$")
    # Twice the bound is read so that duplicates do not leave the folder short.
    names = {bounded(item) for item in items[: MAX_MODELS * 2] if isinstance(item, str)}
    return tuple(sorted(names)[:MAX_MODELS])
