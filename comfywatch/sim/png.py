"""A tiny PNG encoder for solid-colour images (stdlib ``zlib`` only, no PIL).

The simulated ComfyUI only ever produces images filled with one colour (``EmptyImage`` →
``ImageScale`` → ``PreviewImage``/``SaveImage``), so one scanline is built once and fed to the
compressor row by row: a 16384² image never exists in memory uncompressed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

__all__ = ["PNG_MAGIC", "encode_solid_png", "rgb_of"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Rows are handed to zlib in batches of about this many bytes: fewer calls, bounded memory.
_BATCH_BYTES = 1 << 20


def rgb_of(color: int) -> tuple[int, int, int]:
    """Split ComfyUI's 24-bit ``color`` input (``0xRRGGBB``, as ``EmptyImage`` reads it) into channels."""
    return (color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def encode_solid_png(
    width: int,
    height: int,
    color: int,
    *,
    text: Mapping[str, str] | None = None,
    compress_level: int = 4,
) -> bytes:
    """Encode an 8-bit RGB PNG of ``width`` x ``height`` filled with ``color`` (``0xRRGGBB``).

    ``text`` adds ``tEXt`` chunks before the image data, as ComfyUI does with the ``prompt`` (and
    ``workflow``) metadata of saved and previewed images.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    r, g, b = rgb_of(color)
    # Filter type 0 (None) per scanline, then the pixels.
    row = b"\x00" + bytes((r, g, b)) * width
    compressor = zlib.compressobj(compress_level)
    parts: list[bytes] = []
    rows_per_batch = max(1, _BATCH_BYTES // len(row))
    batch = row * min(rows_per_batch, height)
    remaining = height
    while remaining > 0:
        take = min(rows_per_batch, remaining)
        parts.append(compressor.compress(batch if take == rows_per_batch else row * take))
        remaining -= take
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [PNG_MAGIC, _chunk(b"IHDR", header)]
    for key, value in (text or {}).items():
        chunks.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace")))
    chunks.append(_chunk(b"IDAT", b"".join(parts)))
    chunks.append(_chunk(b"IEND", b""))
    return b"".join(chunks)
