"""What each simulated node class does when it runs: its outputs, UI results, files and WebSocket frames."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from comfywatch.sim.local.failures import (
    EXECUTE_FRAMES,
    REGEX_TRACEBACK_TAIL,
    RUNTIME_TRACEBACK_TAIL,
    NodeFailure,
    full_type_name,
)
from comfywatch.sim.local.files import EAGER_PNG_PIXELS, FileStore, StoredImage
from comfywatch.sim.local.hub import Hub
from comfywatch.sim.local.jobs import QueueItem
from comfywatch.sim.local.progress import Progress
from comfywatch.sim.png import encode_solid_png

__all__ = ["NodeHost", "run_node"]

# Binary WebSocket event types (comfy/protocol.py).
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_PNG_FORMAT = 2


class NodeHost(Protocol):
    """What a running node uses of its server: the folders, the WebSocket hub and the prompt's client."""

    @property
    def temp(self) -> FileStore: ...

    @property
    def output(self) -> FileStore: ...

    @property
    def hub(self) -> Hub: ...

    @property
    def client_id(self) -> str | None: ...

    def object_suffix(self, node_id: str, class_type: str) -> str:
        """PreviewImage's random file-name suffix for this node."""


@dataclass(frozen=True)
class SimImage:
    """An IMAGE value flowing between simulated nodes (a batch of solid-colour frames)."""

    width: int
    height: int
    batch: int
    color: int

    def __str__(self) -> str:
        return f"tensor of shape torch.Size([{self.batch}, {self.height}, {self.width}, 3])"


@dataclass
class _NodeContext:
    node_id: str
    prompt_id: str
    progress: Progress
    item: QueueItem


_NodeResult = tuple[tuple[Any, ...], dict[str, Any] | None]
_Runner = Callable[[NodeHost, _NodeContext, dict[str, Any]], Awaitable[_NodeResult]]


async def run_node(
    server: NodeHost,
    class_type: str,
    node_id: str,
    prompt_id: str,
    inputs: dict[str, Any],
    progress: Progress,
    item: QueueItem,
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Run one node: ``(outputs, ui)``, or ``NodeFailure`` where the real node raises."""
    runner = _NODE_RUNNERS.get(class_type)
    if runner is None:
        raise NodeFailure("RuntimeError", f"{class_type} is not simulated\n", EXECUTE_FRAMES + RUNTIME_TRACEBACK_TAIL)
    return await runner(server, _NodeContext(node_id, prompt_id, progress, item), inputs)


def _save_images(image: SimImage, store: FileStore, kind: str, prefix: str, item: QueueItem) -> dict[str, Any]:
    subfolder, _, name = prefix.replace("\\", "/").rpartition("/")
    if ".." in subfolder.split("/") or subfolder.startswith("/"):
        raise NodeFailure(
            "Exception",
            f"**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: "
            f"{subfolder}\n         output_dir: /opt/ComfyUI/output\n",
            EXECUTE_FRAMES,
        )
    text = [("prompt", json.dumps(item.prompt))]
    pnginfo = item.extra_data.get("extra_pnginfo")
    if isinstance(pnginfo, dict):
        text.extend((key, json.dumps(value)) for key, value in pnginfo.items())
    for key, _ in text:
        try:
            # PIL's PngInfo.add_text encodes tEXt keys as strict latin-1: the node raises there.
            key.encode("latin-1")
        except UnicodeEncodeError as ex:
            raise NodeFailure("UnicodeEncodeError", f"{ex}\n", EXECUTE_FRAMES) from ex
    images = []
    encoded: bytes | None = None
    if image.width * image.height <= EAGER_PNG_PIXELS:
        # Every image of the batch is the same solid colour with the same metadata: one encoding.
        encoded = encode_solid_png(image.width, image.height, image.color, text=dict(text))
    for _ in range(image.batch):
        counter = store.next_counter(subfolder, name)
        filename = f"{name}_{counter:05}_.png"
        store.write(
            subfolder,
            filename,
            StoredImage(image.width, image.height, image.color, tuple(text), time.time(), encoded),
        )
        images.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return {"images": images}


async def _run_empty_image(server: NodeHost, ctx: _NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    return (SimImage(inputs["width"], inputs["height"], inputs["batch_size"], inputs["color"]),), None


async def _run_image_scale(server: NodeHost, ctx: _NodeContext, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], None]:
    image: SimImage = inputs["image"]
    width, height = inputs["width"], inputs["height"]
    if width == 0 and height == 0:
        return (image,), None
    if width == 0:
        width = max(1, round(image.width * height / image.height))
    elif height == 0:
        height = max(1, round(image.height * width / image.width))
    return (SimImage(width, height, image.batch, image.color),), None


async def _run_preview_image(
    server: NodeHost, ctx: _NodeContext, inputs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    prefix = "ComfyUI_temp_" + server.object_suffix(ctx.node_id, "PreviewImage")
    return (), _save_images(inputs["images"], server.temp, "temp", prefix, ctx.item)


async def _run_save_image(
    server: NodeHost, ctx: _NodeContext, inputs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (), _save_images(inputs["images"], server.output, "output", str(inputs["filename_prefix"]), ctx.item)


async def _run_save_image_websocket(
    server: NodeHost, ctx: _NodeContext, inputs: dict[str, Any]
) -> tuple[tuple[Any, ...], None]:
    image: SimImage = inputs["images"]
    hub, sid = server.hub, server.client_id
    png = encode_solid_png(image.width, image.height, image.color, compress_level=1)
    for step in range(image.batch):
        # ProgressBar.update_absolute -> progress registry (progress_state, maybe the type-4 preview),
        # then main.py's hook sends "progress" and, for clients without metadata support, type 1.
        ctx.progress.update(ctx.node_id, step, image.batch)
        hub.send_sync("progress_state", ctx.progress.payload(), sid)
        progress = {"value": step, "max": image.batch, "prompt_id": ctx.prompt_id, "node": ctx.node_id}
        if hub.supports_metadata(sid):
            metadata = json.dumps(
                {
                    "node_id": ctx.node_id,
                    "prompt_id": ctx.prompt_id,
                    "display_node_id": ctx.node_id,
                    "parent_node_id": None,
                    "real_node_id": ctx.node_id,
                    "image_type": "image/png",
                }
            ).encode()
            frame = PREVIEW_IMAGE_WITH_METADATA.to_bytes(4, "big") + len(metadata).to_bytes(4, "big") + metadata + png
            hub.send_bytes_sync(frame, sid)
            hub.send_sync("progress", progress, sid)
        else:
            hub.send_sync("progress", progress, sid)
            frame = PREVIEW_IMAGE.to_bytes(4, "big") + _PNG_FORMAT.to_bytes(4, "big") + png
            hub.send_bytes_sync(frame, sid)
    return (), None


async def _run_primitive_string(
    server: NodeHost, ctx: _NodeContext, inputs: dict[str, Any]
) -> tuple[tuple[Any, ...], None]:
    return (inputs["value"],), None


async def _run_preview_any(
    server: NodeHost, ctx: _NodeContext, inputs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    source = inputs["source"]
    value = "None"
    if isinstance(source, str):
        value = source
    elif isinstance(source, (int, float, bool)):
        value = str(source)
    elif source is not None:
        try:
            value = json.dumps(source)
        except TypeError:
            value = str(source)
    return (), {"text": [value]}


async def _run_regex_replace(
    server: NodeHost, ctx: _NodeContext, inputs: dict[str, Any]
) -> tuple[tuple[Any, ...], None]:
    flags = 0
    if inputs.get("case_insensitive"):
        flags |= re.IGNORECASE
    if inputs.get("multiline"):
        flags |= re.MULTILINE
    if inputs.get("dotall"):
        flags |= re.DOTALL
    try:
        result = re.sub(
            inputs["regex_pattern"],
            inputs["replace"],
            inputs["string"],
            count=inputs.get("count") or 0,
            flags=flags,
        )
    except re.error as ex:
        tail = [
            '  File "/usr/lib/python3.11/re/_parser.py", line 874, in _parse\n'
            '    raise source.error("missing ), unterminated subpattern",\n'
        ]
        raise NodeFailure(full_type_name(type(ex)), f"{ex}\n", EXECUTE_FRAMES + REGEX_TRACEBACK_TAIL + tail) from ex
    return (result,), None


async def _run_empty_latent(
    server: NodeHost, ctx: _NodeContext, inputs: dict[str, Any]
) -> tuple[tuple[Any, ...], None]:
    return ({"samples": f"latent {inputs['batch_size']}x4x{inputs['height'] // 8}x{inputs['width'] // 8}"},), None


_NODE_RUNNERS: dict[str, _Runner] = {
    "EmptyImage": _run_empty_image,
    "ImageScale": _run_image_scale,
    "PreviewImage": _run_preview_image,
    "SaveImage": _run_save_image,
    "SaveImageWebsocket": _run_save_image_websocket,
    "PrimitiveString": _run_primitive_string,
    "PreviewAny": _run_preview_any,
    "RegexReplace": _run_regex_replace,
    "EmptyLatentImage": _run_empty_latent,
}
