"""The state of one simulated ComfyUI 0.3.64 server: queue, worker, history, files, WebSockets and faults.

:class:`SimServer` ties the other modules of :mod:`comfywatch.sim.local` together. Nothing here knows about
aiohttp: the HTTP layer (:mod:`comfywatch.sim.local.app`) turns requests into calls on :class:`SimServer` and
its results into responses; WebSockets are reached through the small :class:`~comfywatch.sim.local.hub.Socket`
protocol. Execution happens in simulated time: a node "runs" by sleeping, and the only real work
(:mod:`comfywatch.sim.local.nodes`) is building tiny PNGs and running ``re.sub`` for ``RegexReplace`` (so its
errors are Python's).

Behaviour mirrors ComfyUI's ``server.py``, ``execution.py`` (``validate_prompt``, ``PromptQueue``,
``PromptExecutor``), ``main.py`` (``prompt_worker``) and ``comfy_execution/progress.py``, checked event
for event against the recorded fixtures. Where the sim deviates it says so in a comment.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import json
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from comfywatch.sim.faults import DEFAULT_SLOW_MS, JOB_FAILURE_FAULTS, Fault
from comfywatch.sim.local.catalog import Catalog, InputOptions
from comfywatch.sim.local.execution import ExecutionList, cache_signatures, format_inputs, ordered_outputs
from comfywatch.sim.local.failures import (
    NodeFailure,
    fault_failure,
)
from comfywatch.sim.local.files import FileStore, StoredImage
from comfywatch.sim.local.hub import Hub, Socket
from comfywatch.sim.local.jobs import JOB_STATUSES, QueueItem, history_job, queue_job
from comfywatch.sim.local.nodes import run_node
from comfywatch.sim.local.progress import Progress
from comfywatch.sim.local.validation import MalformedRequestError, is_link, validate_prompt

__all__ = [
    "FEATURES",
    "MAXIMUM_HISTORY_SIZE",
    "SENSITIVE_EXTRA_DATA_KEYS",
    "SimOptions",
    "SimServer",
]

MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
FEATURES: dict[str, Any] = {"supports_preview_metadata": True, "max_upload_size": 104857600}

# ComfyUI's PreviewImage picks its temp suffix from this alphabet (sic: "p" twice, no "w").
_SUFFIX_ALPHABET = "abcdefghijklmnopqrstupvxyz"


class _Interrupted(Exception):
    """``comfy.model_management.InterruptProcessingException``."""


@dataclass
class _CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


@dataclass
class SimOptions:
    """Behaviour knobs of every simulated ComfyUI in a process."""

    exec_ms: float = 4.0
    job_ms: float = 1000.0
    load_per_min: float = 0.0
    jobs_api: bool = False
    history_max: int = MAXIMUM_HISTORY_SIZE
    max_files: int = 1000
    slow_ms: int = DEFAULT_SLOW_MS


@dataclass
class _Stats:
    submitted: int = 0
    background_submitted: int = 0
    finished: int = 0
    succeeded: int = 0
    failed: int = 0
    interrupted: int = 0
    restarts: int = 0
    huge_bodies_active: int = 0
    huge_body_bytes: int = 0


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class SimServer:
    """One simulated ComfyUI: its queue, history, worker, files, WebSockets and faults."""

    def __init__(self, catalog: Catalog, options: SimOptions, *, faults: Iterable[Fault] = ()) -> None:
        self.catalog = self._installed = catalog
        #: Model files by folder (``/models/{folder}``): none unless a test deploys some.
        self.models: dict[str, list[str]] = {}
        #: Custom node packs that fail to import at start, with their error (``/internal/logs/raw``).
        self.broken_packs: dict[str, str] = {}
        self.options = options
        self.faults: frozenset[Fault] = frozenset(faults) - {Fault.RESTART}
        self.slow_ms = options.slow_ms
        self.stats = _Stats()
        self.temp = FileStore(options.max_files)
        self.output = FileStore(options.max_files)
        self.hub = Hub()
        self._generation = 0
        self._changed = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._reset_state()
        if options.load_per_min > 0:
            self._load_task = asyncio.get_running_loop().create_task(self._load_loop())

    def _reset_state(self) -> None:
        self.number = 0
        self.pending: list[tuple[float, str, int, QueueItem]] = []
        self._seq = 0
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self._interrupt = False
        self._cache: dict[str, _CacheEntry] = {}
        self._object_suffixes: dict[tuple[str, str], str] = {}

    # ---- faults -------------------------------------------------------------------------------

    def set_faults(self, faults: Iterable[Fault], slow_ms: int | None = None) -> None:
        """Replace the active faults; ``restart`` in the set is performed once and not kept."""
        wanted = frozenset(faults)
        if slow_ms is not None:
            self.slow_ms = slow_ms
        if Fault.RESTART in wanted:
            self.restart()
        self.faults = wanted - {Fault.RESTART}
        self._changed.set()

    def deploy(self, remove: Iterable[str] = (), options: InputOptions | None = None,
               models: Mapping[str, list[str]] | None = None, broken: Mapping[str, str] | None = None,
               *, reset: bool = False) -> None:
        """What a deploy does to the installation (kept across restarts): node classes removed, an input's
        options changed, model folders' files replaced, custom node packs that now fail to import (by pack: the
        error its start-up log shows). *reset* first restores the installation the server started with."""
        if reset:
            self.catalog, self.models, self.broken_packs = self._installed, {}, {}
        self.catalog = self.catalog.deployed(remove, options)
        self.models.update({folder: list(files) for folder, files in (models or {}).items()})
        self.broken_packs.update(broken or {})

    def restart(self) -> None:
        """What a process restart does to ComfyUI: queue, history, counter, cache and temp/ are gone."""
        if self._worker_task is not None:
            self._worker_task.cancel()
            self._worker_task = None
        self.drop_sockets()
        self._reset_state()
        self.temp.clear()
        self.stats.restarts += 1
        self._changed.set()

    async def close(self) -> None:
        """Stop the worker, the background load and the WebSocket fan-out."""
        tasks = [t for t in (self._worker_task, self._load_task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._worker_task = self._load_task = None
        await self.hub.close()

    # ---- HTTP-facing state --------------------------------------------------------------------

    def tasks_remaining(self) -> int:
        """``queue_remaining``: pending plus running."""
        return len(self.pending) + (1 if self.running is not None else 0)

    def queue_info(self) -> dict[str, Any]:
        """``GET /prompt`` and the ``status`` frame body."""
        return {"exec_info": {"queue_remaining": self.tasks_remaining()}}

    def get_queue(self) -> dict[str, Any]:
        """``GET /queue``: running and pending 5-arrays, pending in heap order (as the real server)."""
        running = [self.running.as_list()] if self.running is not None else []
        return {
            "queue_running": copy.deepcopy(running),
            "queue_pending": [copy.deepcopy(e[3].as_list()) for e in self.pending],
        }

    def _queue_updated(self) -> None:
        self.hub.send_sync("status", {"status": self.queue_info()})

    def post_queue(self, body: Any) -> None:
        """``POST /queue``: ``clear`` wipes pending, ``delete`` removes pending ids; running is untouched."""
        try:
            # Membership then indexing, as the real handler does: a list body behaves differently from .get().
            if "clear" in body and body["clear"]:  # noqa: RUF019
                self.pending = []
                self._queue_updated()
            if "delete" in body:
                for prompt_id in body["delete"]:
                    self._delete_pending(prompt_id)
        except Exception as ex:
            raise MalformedRequestError(str(ex)) from ex

    def _delete_pending(self, prompt_id: Any) -> None:
        for index, entry in enumerate(self.pending):
            if entry[3].prompt_id == prompt_id:
                self.pending.pop(index)
                heapq.heapify(self.pending)
                self._queue_updated()
                return

    def interrupt(self, prompt_id: Any = None) -> None:
        """``POST /interrupt``: global, or only if ``prompt_id`` is the running prompt."""
        if prompt_id and (self.running is None or self.running.prompt_id != prompt_id):
            return
        self._interrupt = True
        self._changed.set()

    def get_history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        """``GET /history``: insertion order; ``max_items`` alone gives the newest N."""
        out: dict[str, Any] = {}
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        for i, key in enumerate(self.history):
            if i >= offset:
                out[key] = self.history[key]
                if max_items is not None and len(out) >= max_items:
                    break
        return out

    def get_history_item(self, prompt_id: str) -> dict[str, Any]:
        """``GET /history/{id}``: ``{}`` until the prompt finished, and for unknown ids.

        Not a copy, like :meth:`get_history`: the handler serialises it at once.
        """
        if prompt_id in self.history:
            return {prompt_id: self.history[prompt_id]}
        return {}

    def post_history(self, body: Any) -> None:
        """``POST /history``: ``clear`` and/or ``delete`` (a list of ids)."""
        try:
            # Membership then indexing, as the real handler does: a list body behaves differently from .get().
            if "clear" in body and body["clear"]:  # noqa: RUF019
                self.history = {}
            if "delete" in body:
                for prompt_id in body["delete"]:
                    self.history.pop(prompt_id, None)
        except Exception as ex:
            raise MalformedRequestError(str(ex)) from ex

    def post_prompt(self, body: Any, *, exec_ms: float | None = None) -> tuple[int, dict[str, Any]]:
        """``POST /prompt`` on a decoded JSON body: ``(status, json)``.

        Raises ``MalformedRequestError`` where the real handler raises (the server then answers 500).
        """
        try:
            return self._post_prompt(body, exec_ms)
        except MalformedRequestError:
            raise
        except Exception as ex:
            raise MalformedRequestError(f"{type(ex).__name__}: {ex}") from ex

    def _post_prompt(self, body: Any, exec_ms: float | None) -> tuple[int, dict[str, Any]]:
        # Same order of operations as server.py post_prompt: the counter moves even for rejected prompts.
        number: int | float
        if "number" in body:
            number = float(body["number"])
        else:
            number = self.number
            if "front" in body and body["front"]:  # noqa: RUF019
                number = -number
            self.number += 1
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return 400, {"error": error, "node_errors": {}}
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        partial = body.get("partial_execution_targets")
        result = validate_prompt(self.catalog, prompt, partial)
        extra_data: Any = {}
        if "extra_data" in body:
            extra_data = body["extra_data"]
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not result.ok:
            return 400, {"error": result.error, "node_errors": result.node_errors}
        if not isinstance(extra_data, dict):
            raise MalformedRequestError("extra_data must be an object")
        now_ms = int(time.time() * 1000)
        if self.options.jobs_api:
            # Newer servers (with /api/jobs) stamp queued items; 0.3.64 does not.
            extra_data["create_time"] = now_ms
        # A top-level "sim_exec_ms" (ignored by a real server) sets this prompt's simulated run time.
        sim_ms = body.get("sim_exec_ms")
        if isinstance(sim_ms, (int, float)) and not isinstance(sim_ms, bool):
            run_ms = float(sim_ms)
        else:
            run_ms = self.options.exec_ms if exec_ms is None else exec_ms
        item = QueueItem(
            number=number,
            prompt_id=prompt_id,
            prompt=prompt,
            extra_data=extra_data,
            outputs=ordered_outputs(prompt, result.good_outputs),
            exec_ms=run_ms,
            create_ms=now_ms,
        )
        self._put(item)
        self.stats.submitted += 1
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}

    def _put(self, item: QueueItem) -> None:
        self._seq += 1
        heapq.heappush(self.pending, (item.number, item.prompt_id, self._seq, item))
        # The worker is woken before the status frame is queued, so it runs first once the handler has
        # answered: ComfyUI's worker thread takes the prompt while the event-loop thread writes the response
        # (the GIL is released for the send), not after the loop got round to publishing the status frame.
        # Frames still leave in the order they were queued.
        self._ensure_worker()
        self._changed.set()
        self._queue_updated()

    def submit_background(self, job_ms: float | None = None, client_id: str | None = None) -> dict[str, Any]:
        """Queue one job from "another user" (their own client id), like ``load_per_min`` does."""
        self.stats.background_submitted += 1
        color = random.randrange(0, 1 << 24)
        prompt = {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
            },
            "2": {
                "class_type": "ImageScale",
                "inputs": {
                    "image": ["1", 0],
                    "upscale_method": "nearest-exact",
                    "width": 32,
                    "height": 32,
                    "crop": "disabled",
                },
            },
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        }
        body = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        status, response = self.post_prompt(body, exec_ms=self.options.job_ms if job_ms is None else job_ms)
        if status != 200:
            raise RuntimeError(f"background job rejected: {response}")
        return response

    def view(
        self, filename: str | None, subfolder: str | None, kind: str | None
    ) -> tuple[int, StoredImage | None, str]:
        """``GET /view``: ``(status, file, basename)``.

        404 for a missing file, 400 for a bad name or type, 403 for a subfolder escaping the folder.
        """
        if filename is None:
            return 404, None, ""
        folder_kind: str | None = None
        for annotation in ("output", "input", "temp"):
            suffix = f" [{annotation}]"
            if filename.endswith(suffix):
                filename, folder_kind = filename[: -len(suffix)], annotation
                break
        if not filename:
            return 400, None, ""
        if filename[0] == "/" or ".." in filename:
            return 400, None, ""
        if folder_kind is None:
            folder_kind = kind if kind is not None else "output"
        if folder_kind not in ("output", "input", "temp"):
            return 400, None, ""
        sub = ""
        if subfolder is not None:
            # os.path.join + commonpath in the real handler: absolute or climbing subfolders are refused.
            if subfolder.startswith(("/", "\\")):
                return 403, None, ""
            parts: list[str] = []
            for part in subfolder.replace("\\", "/").split("/"):
                if part == "..":
                    if not parts:
                        return 403, None, ""
                    parts.pop()
                elif part not in ("", "."):
                    parts.append(part)
            sub = "/".join(parts)
        basename = filename.replace("\\", "/").rsplit("/", 1)[-1]
        store = {"output": self.output, "temp": self.temp}.get(folder_kind)
        image = store.files.get((sub, basename)) if store is not None else None
        if image is None:
            return 404, None, basename
        return 200, image, basename

    # ---- WebSockets ---------------------------------------------------------------------------

    async def ws_open(self, client_id: str, socket: Socket) -> tuple[str, int]:
        """Register a socket like ``websocket_handler``: reuse replaces the old registration.

        Returns the socket id and the server generation to hand back to :meth:`ws_closed`.
        """
        sid = client_id
        if sid:
            self.hub.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.hub.sockets[sid] = socket
        self.hub.metadata[sid] = {"feature_flags": {}}
        self.hub.every_socket.add(socket)
        await self.hub.send_now("status", {"status": self.queue_info(), "sid": sid}, sid)
        if self.client_id == sid and self.last_node_id is not None:
            await self.hub.send_now("executing", {"node": self.last_node_id}, sid)
        return sid, self._generation

    async def ws_message(self, sid: str, text: str, first: bool) -> bool:
        """A text frame from the client: only a first ``feature_flags`` message means anything.

        Returns whether the frame counted as the first message (the real handler only clears its
        "first message" flag for a frame that decoded to a JSON object).
        """
        try:
            data = json.loads(text)
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        if first and data.get("type") == "feature_flags":
            flags = data.get("data", {})
            if sid in self.hub.metadata:
                self.hub.metadata[sid]["feature_flags"] = flags if isinstance(flags, dict) else {}
            await self.hub.send_now("feature_flags", dict(FEATURES), sid)
        return True

    def ws_closed(self, sid: str, socket: Socket, generation: int) -> None:
        """The socket ended. Like the real server this pops ``sid`` even if a newer socket owns it now.

        Sockets from before a restart or outage belong to the "old process" and change nothing.
        """
        if generation != self._generation:
            return
        self.hub.sockets.pop(sid, None)
        self.hub.metadata.pop(sid, None)
        self.hub.every_socket.discard(socket)

    def drop_sockets(self) -> None:
        """Abort every WebSocket, as a dying process or a network outage does."""
        self._generation += 1
        self.hub.drop_all()

    def track_socket(self, socket: Socket) -> None:
        """Remember a socket that is not registered (``ws_silent``) so restart/down can drop it."""
        self.hub.every_socket.add(socket)

    def untrack_socket(self, socket: Socket) -> None:
        """Forget an unregistered socket."""
        self.hub.every_socket.discard(socket)

    # ---- background load ----------------------------------------------------------------------

    def _load_blocked(self) -> bool:
        # "Other users" reach the server through the same network and proxy: they cannot submit while
        # it is down or answering errors, but they keep submitting to a slow, stalled or failing one.
        blocking = {
            Fault.DOWN,
            Fault.HTTP_401,
            Fault.HTTP_403,
            Fault.HTTP_429,
            Fault.HTTP_500,
            Fault.HTTP_502_HTML,
        }
        return bool(self.faults & (blocking | {Fault.GARBAGE_JSON, Fault.HUGE_BODY}))

    async def _load_loop(self) -> None:
        interval = 60.0 / self.options.load_per_min
        # Spread many targets' first jobs instead of submitting them all at once.
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            if not self._load_blocked():
                self.submit_background()
            await asyncio.sleep(interval)

    # ---- worker -------------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker_task is None or self._worker_task.done():
            self._worker_task = asyncio.get_running_loop().create_task(self._worker_loop())

    async def _worker_loop(self) -> None:
        while True:
            while not self.pending or Fault.WORKER_DEAD in self.faults:
                self._changed.clear()
                await self._changed.wait()
            item = heapq.heappop(self.pending)[3]
            self.running = item
            self._queue_updated()
            success, interrupted, history_result, messages = await self._execute(item)
            self._task_done(item, success, history_result, messages)
            self.stats.finished += 1
            if success:
                self.stats.succeeded += 1
            elif interrupted:
                self.stats.interrupted += 1
            else:
                self.stats.failed += 1
            if self.client_id is not None:
                self.hub.send_sync("executing", {"node": None, "prompt_id": item.prompt_id}, self.client_id)

    def _task_done(self, item: QueueItem, success: bool, result: dict[str, Any], messages: list[list[Any]]) -> None:
        self.running = None
        while len(self.history) >= self.options.history_max:
            self.history.pop(next(iter(self.history)))
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            item.extra_data.pop(key, None)
        entry: dict[str, Any] = {
            "prompt": item.as_list(),
            "outputs": {},
            "status": {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": messages,
            },
        }
        entry.update(result)
        self.history[item.prompt_id] = entry
        self._queue_updated()

    async def _node_wait(self, seconds: float) -> None:
        """Spend simulated execution time.

        The time behaves like sampler steps: an interrupt ends it at once (a real ``ImageScale`` would
        finish first, but long real jobs are samplers). ``stall`` freezes it until cleared or interrupted.
        """
        loop = asyncio.get_running_loop()
        remaining = seconds
        while True:
            if self._interrupt:
                raise _Interrupted
            if Fault.STALL in self.faults:
                self._changed.clear()
                await self._changed.wait()
                continue
            if remaining <= 0:
                return
            self._changed.clear()
            start = loop.time()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return
            remaining -= loop.time() - start

    def _add_message(self, messages: list[list[Any]], event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.hub.send_sync(event, data, self.client_id)

    async def _execute(self, item: QueueItem) -> tuple[bool, bool, dict[str, Any], list[list[Any]]]:
        """``PromptExecutor.execute``: returns ``(success, interrupted, history_result, messages)``."""
        prompt, prompt_id = item.prompt, item.prompt_id
        self._interrupt = False
        client_id = item.extra_data.get("client_id")
        self.client_id = client_id if isinstance(client_id, str) else None
        messages: list[list[Any]] = []
        self._add_message(messages, "execution_start", {"prompt_id": prompt_id}, broadcast=False)

        failing = bool(self.faults & set(JOB_FAILURE_FAULTS))
        signatures = cache_signatures(self.catalog, prompt)
        # The classic cache keeps only what the current prompt can use.
        self._cache = {} if failing else {s: e for s, e in self._cache.items() if s in set(signatures.values())}
        self._object_suffixes = {k: v for k, v in self._object_suffixes.items() if k[0] in prompt}
        cached_nodes = [nid for nid in prompt if signatures[nid] in self._cache]
        self._add_message(
            messages, "execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, broadcast=False
        )

        progress = Progress(prompt_id)
        values: dict[str, tuple[Any, ...]] = {nid: self._cache[signatures[nid]].outputs for nid in cached_nodes}
        ui_outputs: dict[str, dict[str, Any]] = {}
        executed: list[str] = []
        plan = ExecutionList(self.catalog, prompt, item.outputs, set(cached_nodes))
        busy_node = ExecutionList(self.catalog, prompt, item.outputs, set(cached_nodes)).busy_node()
        success, interrupted = True, False
        while True:
            node_id = plan.next_node()
            if node_id is None:
                break
            class_type = prompt[node_id]["class_type"]
            entry = self._cache.get(signatures[node_id])
            if entry is not None:
                # Cached output node: no "executing", but still "executed" with the cached UI.
                if self.client_id is not None:
                    output = entry.ui if entry.ui else None
                    self.hub.send_sync(
                        "executed",
                        {"node": node_id, "display_node": node_id, "output": output, "prompt_id": prompt_id},
                        self.client_id,
                    )
                if entry.ui:
                    ui_outputs[node_id] = entry.ui
                progress.finish(node_id)
                self.hub.send_sync("progress_state", progress.payload(), self.client_id)
                values[node_id] = entry.outputs
                plan.complete(node_id)
                continue
            progress.start(node_id)
            self.hub.send_sync("progress_state", progress.payload(), self.client_id)
            if self.client_id is not None:
                self.last_node_id = node_id
                self.hub.send_sync(
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                    self.client_id,
                )
            inputs = self._resolve_inputs(prompt[node_id], values)
            try:
                if self._interrupt:
                    raise _Interrupted
                await self._node_wait(item.exec_ms / 1000.0 if node_id == busy_node else 0.0)
                if failing and node_id == busy_node:
                    # The failure faults strike where the work is, after the node's run time.
                    raise fault_failure(self.faults)
                outputs, ui = await run_node(self, class_type, node_id, prompt_id, inputs, progress, item)
            except _Interrupted:
                mes = {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": executed[::-1],
                }
                self._add_message(messages, "execution_interrupted", mes, broadcast=True)
                success, interrupted = False, True
                break
            except NodeFailure as failure:
                self._add_message(
                    messages,
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": class_type,
                        "executed": executed[::-1],
                        "exception_message": failure.message,
                        "exception_type": failure.exception_type,
                        "traceback": failure.traceback,
                        "current_inputs": format_inputs(prompt[node_id], inputs),
                        "current_outputs": list(prompt),
                    },
                    broadcast=False,
                )
                success = False
                break
            if ui:
                ui_outputs[node_id] = ui
                if self.client_id is not None:
                    self.hub.send_sync(
                        "executed",
                        {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id},
                        self.client_id,
                    )
            progress.finish(node_id)
            self.hub.send_sync("progress_state", progress.payload(), self.client_id)
            executed.append(node_id)
            values[node_id] = outputs
            if not failing:
                self._cache[signatures[node_id]] = _CacheEntry(outputs, ui)
            plan.complete(node_id)
        if success and plan.error is not None:
            self._add_message(messages, "execution_error", plan.error_message(prompt_id, executed), broadcast=False)
            success = False
        if success:
            self._add_message(messages, "execution_success", {"prompt_id": prompt_id}, broadcast=False)
        meta = {
            nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid} for nid in ui_outputs
        }
        self.last_node_id = None
        return success, interrupted, {"outputs": ui_outputs, "meta": meta}, messages

    def _resolve_inputs(self, node: dict[str, Any], values: Mapping[str, tuple[Any, ...]]) -> dict[str, Any]:
        spec = self.catalog.specs[node["class_type"]]
        resolved: dict[str, Any] = {}
        for name in [*spec.required, *spec.optional]:
            if name in node["inputs"]:
                value = node["inputs"][name]
                resolved[name] = values[value[0]][value[1]] if is_link(value) else value
            elif name in spec.optional:
                resolved[name] = spec.default(name)
        return resolved

    def object_suffix(self, node_id: str, class_type: str) -> str:
        """PreviewImage's random file-name suffix for this node."""
        # Node objects (and so PreviewImage's random suffix) live as long as the node id keeps its class.
        key = (node_id, class_type)
        if key not in self._object_suffixes:
            self._object_suffixes[key] = "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(5))
        return self._object_suffixes[key]

    # ---- newer /api/jobs (only served with jobs_api=True) ---------------------------------------

    def list_jobs(
        self,
        statuses: Iterable[str] | None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """``get_all_jobs`` of ``comfy_execution/jobs.py``: ``(page, total)``."""
        wanted = set(JOB_STATUSES if statuses is None else statuses)
        jobs: list[dict[str, Any]] = []
        if "in_progress" in wanted and self.running is not None:
            jobs.append(queue_job(self.running, "in_progress"))
        if "pending" in wanted:
            jobs.extend(queue_job(entry[3], "pending") for entry in self.pending)
        if wanted & {"completed", "failed"}:
            for prompt_id, entry in self.history.items():
                job = history_job(prompt_id, entry)
                if job["status"] in wanted:
                    jobs.append(job)
        if sort_by == "execution_duration":

            def key(job: dict[str, Any]) -> float:
                start, end = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
                return float(end - start) if end and start else 0.0

        else:

            def key(job: dict[str, Any]) -> float:
                return float(job.get("create_time", 0))

        jobs.sort(key=key, reverse=sort_order == "desc")
        total = len(jobs)
        if offset > 0:
            jobs = jobs[offset:]
        if limit is not None:
            jobs = jobs[:limit]
        return jobs, total

    def get_job(self, prompt_id: str) -> dict[str, Any] | None:
        """``get_job``: the full job (with outputs and workflow) or ``None``."""
        if prompt_id in self.history:
            return history_job(prompt_id, self.history[prompt_id], include_outputs=True)
        if self.running is not None and self.running.prompt_id == prompt_id:
            return queue_job(self.running, "in_progress", include_workflow=True)
        for entry in self.pending:
            if entry[3].prompt_id == prompt_id:
                return queue_job(entry[3], "pending", include_workflow=True)
        return None

    def snapshot(self) -> dict[str, Any]:
        """Everything tests and the admin API look at, as plain JSON."""
        return {
            "faults": sorted(f.value for f in self.faults),
            "slow_ms": self.slow_ms,
            "queue_running": [self.running.prompt_id] if self.running is not None else [],
            "queue_pending": [e[3].prompt_id for e in sorted(self.pending)],
            "history": list(self.history),
            "number": self.number,
            "output_files": self.output.names(),
            "temp_files": self.temp.names(),
            "output_writes": self.output.writes,
            "temp_writes": self.temp.writes,
            "jobs_submitted": self.stats.submitted,
            "jobs_background_submitted": self.stats.background_submitted,
            "jobs_finished": self.stats.finished,
            "jobs_succeeded": self.stats.succeeded,
            "jobs_failed": self.stats.failed,
            "jobs_interrupted": self.stats.interrupted,
            "restarts": self.stats.restarts,
            "ws_clients": sorted(self.hub.sockets),
            "ws_connections": len(self.hub.every_socket),
            "huge_bodies_active": self.stats.huge_bodies_active,
            "huge_body_bytes": self.stats.huge_body_bytes,
            "client_id": self.client_id,
        }
