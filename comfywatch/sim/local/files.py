"""The simulated output and temp folders, and the PNG files nodes write into them."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from comfywatch.sim.png import encode_solid_png

__all__ = ["EAGER_PNG_PIXELS", "FileStore", "StoredImage"]

#: Images up to this size are PNG-encoded by the node that saves them; larger ones when first viewed.
EAGER_PNG_PIXELS = 512 * 512


@dataclass(frozen=True)
class StoredImage:
    """A PNG "written" by PreviewImage/SaveImage.

    Small images are encoded when written, during the node's run, as ComfyUI does; a large one only when
    ``/view`` asks for it, so a 16384² image never costs its compressed size per file kept.
    """

    width: int
    height: int
    color: int
    text: tuple[tuple[str, str], ...]
    mtime: float
    encoded: bytes | None = field(default=None, repr=False, compare=False)

    def png(self) -> bytes:
        """The PNG bytes of this file."""
        if self.encoded is not None:
            return self.encoded
        return encode_solid_png(self.width, self.height, self.color, text=dict(self.text))


class FileStore:
    """An in-memory output or temp folder: ``(subfolder, filename) -> StoredImage``, newest last.

    Deviation: only the newest ``max_files`` are kept (real folders grow forever); ``writes`` still
    counts every file ever written.
    """

    def __init__(self, max_files: int) -> None:
        self.files: OrderedDict[tuple[str, str], StoredImage] = OrderedDict()
        self.counters: dict[tuple[str, str], int] = {}
        self.max_files = max_files
        self.writes = 0

    def next_counter(self, subfolder: str, prefix: str) -> int:
        """ComfyUI's ``get_save_image_path`` counter: one more than the highest used for the prefix."""
        value = self.counters.get((subfolder, prefix), 0) + 1
        self.counters[(subfolder, prefix)] = value
        return value

    def write(self, subfolder: str, filename: str, image: StoredImage) -> None:
        """Store a file, evicting the oldest beyond the cap."""
        self.files[(subfolder, filename)] = image
        self.files.move_to_end((subfolder, filename))
        self.writes += 1
        while len(self.files) > self.max_files:
            self.files.popitem(last=False)

    def clear(self) -> None:
        """Empty the folder (ComfyUI wipes temp/ at start-up)."""
        self.files.clear()
        self.counters.clear()

    def names(self) -> list[str]:
        """``subfolder/filename`` of every stored file, oldest first."""
        return [f"{sub}/{name}" if sub else name for sub, name in self.files]
