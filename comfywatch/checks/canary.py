"""``canary``: submit a tiny workflow end to end and time every phase.

One run: open a WebSocket with a fresh clientId -> wait for its ``status`` frame -> ``POST /prompt`` with
that client_id -> follow *our* prompt's events -> confirm via ``/history/{id}`` -> fetch and verify the
output (``/view`` for images, the echoed text) -> delete our history entry. If the WebSocket cannot be
opened (a proxy dropping ``Upgrade``) the run falls back to polling ``/history/{id}`` and says so.
When the run ends without knowing the prompt's fate (timeout, transport failure, a partly rejected
workflow) it cancels only its own prompt (delete if pending, targeted interrupt if running), waits for it to
leave the queue, then deletes its history entry. A local ComfyUI is sent the prompt id the canary chose, so
that cleanup also runs when ``POST /prompt`` fails after the prompt may have been queued (a timed-out or
502 answer). ``total`` runs from submit to the verified output.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import struct
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from websockets.asyncio.client import ClientConnection

from comfywatch.checks import CANARY_CLIENT_PREFIX, CheckFailed, CheckSkipped
from comfywatch.checks.context import TargetContext
from comfywatch.clients.http import HttpResult, RequestFailed
from comfywatch.clients.ws import WebSocketServer, close_within, connect
from comfywatch.errors import Failure, ParseError, Reason, classify_exception
from comfywatch.parse.canary_events import Progress, PromptFollower
from comfywatch.parse.history import HistoryEntry, Outcome
from comfywatch.parse.nodeerrors import summarise_prompt_error
from comfywatch.parse.prompt import PromptAccepted, ws_event
from comfywatch.redact import target_scope
from comfywatch.state import TargetState
from comfywatch.workflows import CanaryWorkflow, fill_text, render_workflow

__all__ = ["CanaryResult", "CanaryRunner", "apply_result", "check_outcome", "png_size"]

log = structlog.get_logger("comfywatch.canary")

#: ComfyUI sends the first ``status`` frame right after the upgrade; a socket silent for this long (or a
#: quarter of the run's budget, if less) is treated as broken and the run falls back to polling.
STATUS_FRAME_WAIT = 2.0
#: After this long without an event for our prompt, ask the server whether it still has it (then doubling).
SILENCE_CHECK_FIRST = 1.0
SILENCE_CHECK_MAX = 30.0
#: How long a cancelled canary waits for its prompt to leave the queue before deleting its history entry.
#: With the socket close (1 s) and the delete (3 s) a run ends within its timeout + 8 s: inside the
#: daemon's budget for the check (timeout + 10 s), so the result is always recorded.
CANCEL_WAIT = 4.0
#: Failures after which the server is known to be done with the prompt (unless the raiser says otherwise).
_PROMPT_OVER = frozenset({Reason.EXECUTION_ERROR, Reason.OOM, Reason.INTERRUPTED, Reason.LOST})
#: Submit failures that prove the request never reached the server: nothing can have been queued.
_NEVER_SENT = frozenset({Reason.DNS, Reason.TLS})
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class CanaryResult:
    canary: str
    ok: bool = False
    skipped: bool = False
    reason: Reason | None = None
    detail: str = ""
    prompt_id: str | None = None
    phases: dict[str, float] = field(default_factory=dict)
    server_seconds: float | None = None
    websocket_ok: bool | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def failure(self) -> Reason | None:
        """Why a run that was not skipped failed (``None`` when it succeeded or was skipped)."""
        if self.ok or self.skipped:
            return None
        return self.reason or Reason.INVALID_RESPONSE

    def as_dict(self) -> dict[str, Any]:
        return {
            "canary": self.canary, "ok": self.ok, "skipped": self.skipped,
            "reason": None if self.reason is None else str(self.reason), "detail": self.detail,
            "phases": {k: round(v, 6) for k, v in self.phases.items()},
            "server_seconds": self.server_seconds, "websocket_ok": self.websocket_ok,
            "problems": self.problems,
        }


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, or None when *data* is not one."""
    if len(data) < 24 or not data.startswith(_PNG_MAGIC) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


class CanaryApi(WebSocketServer, Protocol):
    """What the canary needs from a server: a local ComfyUI (:class:`~comfywatch.clients.local.LocalApi`) or
    Comfy Cloud."""

    #: Whether the server queues a prompt under an id sent with it (so the canary knows its id before any answer).
    takes_prompt_id: bool

    @property
    def secret_forms(self) -> tuple[str, ...]:
        """What the server is sent that it could echo (:func:`comfywatch.redact.secret_forms`)."""
        ...

    async def busy(self) -> tuple[int, int]: ...
    async def submit(self, prompt: Mapping[str, Any], client_id: str, *, prompt_id: str | None = None,
                     timeout: float | None = None) -> PromptAccepted: ...
    async def history_entry(self, prompt_id: str, *, timeout: float | None = None) -> HistoryEntry | None: ...
    async def in_flight(self, prompt_id: str) -> bool: ...
    async def view(self, filename: str, subfolder: str, kind: str) -> HttpResult: ...
    async def cancel_own(self, prompt_id: str) -> None: ...
    async def delete_history(self, prompt_ids: Sequence[str]) -> None: ...


class _Failed(Exception):
    def __init__(self, reason: Reason, detail: str, *, over: bool | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        #: Whether the server is known to be done with the prompt (no cancel needed); by reason by default.
        self.over = reason in _PROMPT_OVER if over is None else over


class CanaryRunner:
    """Runs one canary workflow against one local ComfyUI; never two runs at once."""

    def __init__(
        self,
        api: CanaryApi,
        workflow: CanaryWorkflow,
        *,
        timeout: float,
        when_busy: str = "skip",
        ssl_context: ssl.SSLContext | bool = True,
        on_result: Callable[[CanaryResult], None] | None = None,
        on_accepted: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        #: Called with each accepted prompt id (and with the id it chose when a failed submit may have queued
        #: it): the daemon marks it as already counted, so the jobs check never counts a canary as a user's
        #: job (/api/jobs lists carry no client_id).
        self.on_accepted = on_accepted
        self.workflow = workflow
        self.timeout = timeout
        self.when_busy = when_busy
        self.ssl_context = ssl_context
        self.on_result = on_result
        self._lock = asyncio.Lock()

    async def run(self) -> CanaryResult:
        if self._lock.locked():
            return CanaryResult(self.workflow.name, skipped=True, detail="previous run still going")
        # What the run keeps of the server's answers and events has the target's own secrets masked (a server may
        # echo what it was sent); the scope's context is the run's task's own.
        async with self._lock:
            with target_scope(self.api.secret_forms):
                result = await self._run()
        if self.on_result is not None:
            self.on_result(result)
        return result

    async def _run(self) -> CanaryResult:
        result = CanaryResult(self.workflow.name)
        prompt, values = render_workflow(self.workflow.template)
        started = time.perf_counter()
        deadline = started + self.timeout
        # "total" is what its metric says: submit -> output verified (the path a user's prompt takes). The
        # busy check and the WebSocket set-up before it are preparation; a run that fails before submitting
        # reports the time to that failure instead.
        measured_from = started
        ws: ClientConnection | None = None
        follower: PromptFollower | None = None
        accepted_at: float | None = None
        finished = False  # the server is done with our prompt (no cancel needed)
        # The prompt to clean up when the submit failed after the request may have queued it: without an
        # answer there is no accepted id, only the one we sent.
        unanswered_id: str | None = None
        try:
            if self.when_busy == "skip":
                # Bounded by the canary's own deadline: a slow server must not stretch a run past it.
                async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                    running, pending = await self.api.busy()
                if running or pending:
                    result.skipped = True
                    result.detail = f"queue busy ({running} running, {pending} pending)"
                    return result
            client_id = CANARY_CLIENT_PREFIX + uuid.uuid4().hex
            ws = await self._open_ws(client_id, deadline, result)
            submit_start = time.perf_counter()
            if submit_start >= deadline:
                raise TimeoutError  # never submit a prompt we no longer have time to follow
            measured_from = submit_start
            own_id = str(uuid.uuid4()) if self.api.takes_prompt_id else None
            try:
                accepted = await self.api.submit(prompt, client_id, prompt_id=own_id,
                                                 timeout=max(0.1, deadline - submit_start))
            except RequestFailed as failed:
                if own_id is not None and _may_have_queued(failed):
                    unanswered_id = own_id
                    if self.on_accepted is not None:
                        self.on_accepted(own_id)
                raise self._submit_failure(failed, result) from None
            accepted_at = time.perf_counter()
            result.phases["submit"] = accepted_at - submit_start
            result.prompt_id = accepted.prompt_id
            if self.on_accepted is not None:
                self.on_accepted(accepted.prompt_id)
            if accepted.node_errors:
                # 200 with node_errors: ComfyUI queued only the valid outputs. A canary that runs part of
                # its workflow proves nothing about the rest; report it (and cancel what was queued).
                raise self._partial_failure(accepted.node_errors, result)
            follower = PromptFollower(accepted.prompt_id)
            entry = await self._await_completion(ws, follower, deadline, result)
            # Over if the events said so, or history gave a verdict: an unknown one proves nothing, so the
            # prompt is still cancelled if the run fails.
            finished = entry is None or entry.outcome is not Outcome.UNKNOWN
            fetch_start = time.perf_counter()
            # The prompt is done; give the fetch at least a second even if that was at the deadline.
            async with asyncio.timeout(max(1.0, deadline - fetch_start)):
                await self._fetch(entry, follower, values, deadline, accepted_at, result)
            result.phases["fetch"] = time.perf_counter() - fetch_start
            result.ok = True
        except _Failed as failed:
            result.reason, result.detail = failed.reason, failed.detail
            over = failed.over or (follower is not None and follower.finished)
            finished = finished or over
        except RequestFailed as failed:
            result.reason, result.detail = failed.failure.reason, failed.failure.detail
        except TimeoutError:
            result.reason, result.detail = Reason.TIMEOUT, f"no result within {self.timeout:g}s"
        finally:
            # Closing the socket and cleaning up come after "total": bookkeeping, not the prompt's path.
            result.phases["total"] = time.perf_counter() - measured_from
            if follower is not None and accepted_at is not None:
                _follower_phases(result, follower, accepted_at)
                if result.server_seconds is None:
                    result.server_seconds = follower.server_seconds
            if ws is not None:
                await close_within(ws)
            own = result.prompt_id or unanswered_id
            if own is not None:
                await self._cleanup(result, own, cancel=not finished)
        if result.ok:
            log.debug("canary_ok", canary=result.canary, total=round(result.phases["total"], 4))
        return result

    # ----------------------------------------------------------------------------------------------------

    async def check(self, ctx: TargetContext) -> None:
        """One scheduled run, under the check contract: a success only when the output was verified."""
        check_outcome(await self.run())

    def _submit_failure(self, failed: RequestFailed, result: CanaryResult) -> _Failed:
        # errors.classify_status decides what a refusal is, as for every request; a validation refusal also
        # names the nodes ComfyUI rejected.
        if failed.failure.reason is Reason.VALIDATION and isinstance(failed.body, dict):
            try:
                rejection = summarise_prompt_error(failed.body)
            except ParseError:
                return _Failed(Reason.VALIDATION, failed.failure.detail)
            result.problems = [node.line for node in rejection.nodes][:20]
            if not result.problems:
                result.problems = [f"{rejection.error_type}: {rejection.message}"[:200]]
            log.warning("canary_rejected", canary=result.canary, error_type=rejection.error_type,
                        nodes=result.problems)
            return _Failed(Reason.VALIDATION, f"{rejection.error_type}: {rejection.message}"[:200])
        return _Failed(failed.failure.reason, failed.failure.detail)

    def _partial_failure(self, node_errors: dict[str, Any], result: CanaryResult) -> _Failed:
        try:
            rejection = summarise_prompt_error({"node_errors": node_errors})
            result.problems = [node.line for node in rejection.nodes][:20]
        except ParseError:
            result.problems = [f"node_errors for nodes {', '.join(sorted(node_errors))[:160]}"]
        log.warning("canary_rejected", canary=result.canary, error_type="partially_accepted",
                    nodes=result.problems)
        return _Failed(Reason.VALIDATION, f"queued with node_errors on {len(node_errors)} node(s): "
                       "only part of the workflow would run")

    async def _open_ws(
        self, client_id: str, deadline: float, result: CanaryResult
    ) -> ClientConnection | None:
        timeout = max(0.1, min(10.0, deadline - time.perf_counter()))
        try:
            ws = await connect(self.api, client_id, tls=self.ssl_context, open_timeout=timeout)
        except Exception as exc:  # any failure to upgrade means: poll instead, and report it
            failure = classify_exception(exc)
            log.warning("canary_websocket_unavailable", canary=result.canary, reason=str(failure.reason),
                        detail=failure.detail)
            result.websocket_ok = False
            return None
        try:
            # Registration is complete once the server sent our first status frame: only then POST, or
            # the first events could be sent before the server knows our socket.
            remaining = max(0.0, deadline - time.perf_counter())
            async with asyncio.timeout(min(STATUS_FRAME_WAIT, remaining / 4)):
                while True:
                    event = ws_event(await ws.recv())
                    if event is not None and event.type == "status":
                        break
        except Exception:
            result.websocket_ok = False
            await close_within(ws)
            log.warning("canary_websocket_silent", canary=result.canary)
            return None
        result.websocket_ok = True
        return ws

    async def _await_completion(
        self, ws: ClientConnection | None, follower: PromptFollower, deadline: float, result: CanaryResult
    ) -> HistoryEntry | None:
        """Wait until the prompt is over: its events on the WebSocket, else polling. ``None`` means the
        events said how it ended; an entry means history did (the socket could not tell)."""
        if ws is not None:
            try:
                entry = await self._follow(ws, follower, deadline)
            except (TimeoutError, _Failed):
                raise
            except Exception:
                # The socket died mid-run (server restart, proxy timeout): keep going by polling.
                result.websocket_ok = False
                log.warning("canary_websocket_closed", canary=result.canary)
            else:
                if entry is not None:
                    return entry
                if follower.state is Progress.FAILED:
                    raise _Failed(follower.failure or Reason.EXECUTION_ERROR, follower.failure_detail)
                return None
        # _poll stops itself at the deadline; the grace only caps a request still in flight then (the queue
        # read has the client's own timeout), so that the cleanup still fits in the daemon's check budget.
        async with asyncio.timeout(max(0.0, deadline - time.perf_counter()) + 0.5):
            return await self._poll(follower, deadline)

    async def _follow(
        self, ws: ClientConnection, follower: PromptFollower, deadline: float
    ) -> HistoryEntry | None:
        """Feed our prompt's events to *follower* until it is finished.

        A prompt can also vanish without a single event for us: deleted from the queue by someone else
        (ComfyUI then only broadcasts ``status``), or a Cloud job that ends ``lost``. So when our prompt has
        been silent for a while (1 s, doubling up to 30 s) ask the server whether it is still queued or
        running; gone from the queue and from history is ``lost``, found in history ends the wait.
        """
        interval = SILENCE_CHECK_FIRST
        checked_at = time.perf_counter()
        while not follower.finished:
            now = time.perf_counter()
            if now >= deadline:
                raise TimeoutError
            # Our prompt's last event (or the last check) starts the silence; the timer below is armed once
            # per silence window, not once per frame: a run receives a dozen frames in a few milliseconds.
            check_at = max(follower.last_activity or checked_at, checked_at) + interval
            if now >= check_at:
                entry = await self._check_vanished(follower, deadline)
                if entry is not None:
                    return entry
                interval = min(interval * 2, SILENCE_CHECK_MAX)
                checked_at = time.perf_counter()
                continue
            try:
                # Cancelling recv() loses no message (websockets' asyncio implementation).
                async with asyncio.timeout(min(deadline, check_at) - now):
                    await _feed_until_finished(ws, follower)
            except TimeoutError:
                continue
        return None

    async def _check_vanished(self, follower: PromptFollower, deadline: float) -> HistoryEntry | None:
        """``None`` while the prompt is queued or running (or the server cannot say); its history entry if it
        finished without us hearing; :class:`_Failed` ``lost`` when it is in neither."""
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter()) + 0.5):
                if await self.api.in_flight(follower.prompt_id):
                    return None
                entry = await self.api.history_entry(follower.prompt_id,
                                                     timeout=max(0.1, deadline - time.perf_counter()))
        except RequestFailed:
            return None  # cannot tell now: keep following the socket
        if entry is None:
            raise _Failed(Reason.LOST, "prompt vanished from queue and history without an event (deleted "
                          "by someone else, or the job was lost)")
        # Written before the prompt ended: it is still the server's, keep following the socket.
        return entry if entry.finished else None

    async def _poll(self, follower: PromptFollower, deadline: float) -> HistoryEntry | None:
        """Poll /history/{id} with back-off; ``lost`` when the prompt is in neither queue nor history."""
        delay = 0.05
        last_failure: Failure | None = None
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                if last_failure is not None:
                    raise _Failed(last_failure.reason, last_failure.detail)
                raise TimeoutError
            try:
                entry = await self.api.history_entry(follower.prompt_id, timeout=min(remaining, 5.0))
                if entry is not None and entry.finished:
                    return entry
                # An unfinished entry proves the server still has the prompt: poll on, never "lost".
                if entry is None and not await self.api.in_flight(follower.prompt_id):
                    # Finished between the two reads? Look once more before calling it lost.
                    entry = await self.api.history_entry(follower.prompt_id, timeout=min(remaining, 5.0))
                    if entry is not None and entry.finished:
                        return entry
                    if entry is None:
                        raise _Failed(Reason.LOST, "prompt vanished from queue and history (server restarted?)")
                last_failure = None
            except RequestFailed as failed:
                last_failure = failed.failure
            await asyncio.sleep(min(delay, max(0.0, deadline - time.perf_counter())))
            delay = min(delay * 2, 2.0)

    async def _fetch(
        self, entry: HistoryEntry | None, follower: PromptFollower, values: dict[str, str], deadline: float,
        accepted_at: float, result: CanaryResult,
    ) -> None:
        """Confirm success in ``/history/{id}`` and verify the output; raises :class:`_Failed`.

        When the WebSocket already delivered images, they are fetched while history is read: independent
        requests, and overlapping them keeps the ``fetch`` phase to one round trip. Outputs with nothing to
        fetch (text) are checked after history, in this task: a task of their own would only cost its start.
        """
        verifying: asyncio.Task[None] | None = None
        if entry is None and _images(follower.outputs):
            verifying = asyncio.create_task(self._verify(follower.outputs, values, deadline))
        try:
            if entry is None:
                entry = await self._history_entry(follower.prompt_id, deadline)
            if entry is None:
                raise _Failed(Reason.LOST, "finished but no history entry (server restarted?)")
            result.server_seconds = entry.server_seconds or follower.server_seconds
            if follower.started_at is None and result.server_seconds is not None:
                # Polling fallback: only the server's clock saw the execution.
                waited = time.perf_counter() - accepted_at
                result.phases["execute"] = result.server_seconds
                result.phases["queue"] = max(0.0, waited - result.server_seconds)
            if entry.outcome is not Outcome.SUCCESS:
                # History is the authority: its verdict wins over whatever the output check found. Only a
                # recognised failure proves the prompt over; after an unknown one the prompt is cancelled.
                unfinished = "" if entry.finished else " (not finished)"
                raise _Failed(entry.failure_reason or Reason.EXECUTION_ERROR,
                              f"history says {entry.outcome}{unfinished}", over=entry.outcome is Outcome.FAILED)
            if verifying is None:
                await self._verify(follower.outputs or entry.outputs, values, deadline)
            else:
                await verifying
        finally:
            if verifying is not None:
                if not verifying.done():
                    verifying.cancel()
                    await asyncio.wait([verifying])
                if not verifying.cancelled():
                    verifying.exception()  # retrieved: an unused failure is not "never retrieved"

    async def _history_entry(self, prompt_id: str, deadline: float) -> HistoryEntry | None:
        # The end marker is sent after the history entry is written, so one read is enough.
        return await self.api.history_entry(prompt_id, timeout=max(0.1, deadline - time.perf_counter()))

    async def _verify(self, outputs: dict[str, Any], values: dict[str, str], deadline: float) -> None:
        expect = self.workflow.expect
        images = _images(outputs)
        texts = [str(text) for text in _listed(outputs, "text") if isinstance(text, str | int | float)]
        if expect.any_output and not outputs:
            raise _Failed(Reason.OUTPUT_INVALID, "no output")
        if expect.images is not None and len(images) != expect.images:
            raise _Failed(Reason.OUTPUT_INVALID, f"expected {expect.images} images, got {len(images)}")
        for image in images[:4]:
            filename, subfolder, kind = image.get("filename"), image.get("subfolder", ""), image.get("type")
            if not isinstance(filename, str) or not isinstance(kind, str):
                raise _Failed(Reason.OUTPUT_INVALID, "image output without filename/type")
            if kind == "output" and expect.images is not None:
                # Canaries must never leave files in output/; the built-ins use temp/ only.
                log.warning("canary_wrote_output", canary=self.workflow.name)
            fetched = await self.api.view(filename, str(subfolder or ""), kind)
            if not fetched.body:
                # Whatever its type says, an image of no bytes is no output.
                raise _Failed(Reason.OUTPUT_INVALID, f"/view returned an empty {fetched.content_type[:40]} body")
            size = png_size(fetched.body)
            if fetched.content_type.startswith("image/png") or size is not None:
                if size is None:
                    raise _Failed(Reason.OUTPUT_INVALID, "/view did not return a PNG")
            elif not fetched.content_type.startswith("image/"):
                raise _Failed(Reason.OUTPUT_INVALID, f"/view returned {fetched.content_type[:40]}")
            if expect.image_size is not None:
                wanted = f"{expect.image_size[0]}x{expect.image_size[1]}"
                if size is None:
                    # Only a PNG's size is read: an image of another type cannot prove the expected size.
                    raise _Failed(Reason.OUTPUT_INVALID, f"cannot read the size of a "
                                  f"{fetched.content_type[:40]} image, expected a {wanted} PNG")
                if size != expect.image_size:
                    raise _Failed(Reason.OUTPUT_INVALID, f"image is {size[0]}x{size[1]}, expected {wanted}")
        if expect.text_equals_placeholder is not None:
            wanted = fill_text(expect.text_equals_placeholder, values)
            if wanted not in texts:
                raise _Failed(Reason.OUTPUT_INVALID, "text output does not echo the input")
        if expect.text_matches is not None and not any(re.search(expect.text_matches, t) for t in texts):
            raise _Failed(Reason.OUTPUT_INVALID, "no text output matches the configured pattern")

    async def _cleanup(self, result: CanaryResult, prompt_id: str, *, cancel: bool) -> None:
        """Cancel our prompt *prompt_id* if it may still be queued or running, then delete its history entry."""
        if cancel:
            try:
                async with asyncio.timeout(CANCEL_WAIT):
                    await self._cancel_and_wait(prompt_id)
            except (RequestFailed, TimeoutError):
                log.info("canary_cancel_failed", canary=result.canary)
        try:
            async with asyncio.timeout(3.0):
                await self.api.delete_history([prompt_id])
        except (RequestFailed, TimeoutError):
            log.info("canary_cleanup_failed", canary=result.canary)

    async def _cancel_and_wait(self, prompt_id: str) -> None:
        # Only our own prompt: deleted if pending, targeted interrupt if running. A real interrupt lands at
        # the next node boundary (seconds later) and only then writes the history entry, so wait
        # for the prompt to leave the queue before deleting that entry. One more cancel covers a prompt
        # that went from pending to running between reading the queue and deleting it.
        await self.api.cancel_own(prompt_id)
        delay, again = 0.05, True
        while await self.api.in_flight(prompt_id):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            if again:
                await self.api.cancel_own(prompt_id)
                again = False


def _may_have_queued(failed: RequestFailed) -> bool:
    """Whether a failed ``POST /prompt`` may still have queued the prompt: anything but a request that never
    left (DNS, TLS) or an answer refusing it (4xx). A 5xx from a proxy, a timed-out or cut answer, or a 200
    that would not decode can each hide a queued prompt."""
    status = failed.failure.status
    if status is not None and 400 <= status < 500:
        return False
    return failed.failure.reason not in _NEVER_SENT


def _listed(outputs: dict[str, Any], key: str) -> list[Any]:
    """The items of every output node's *key* list (``images``, ``text``), in order. A server's answer is
    untrusted: a *key* that is not a list lists nothing."""
    return [item for output in outputs.values() if isinstance(output, dict)
            if isinstance(items := output.get(key), list) for item in items]


def _images(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The image records among a prompt's outputs."""
    return [image for image in _listed(outputs, "images") if isinstance(image, dict)]


async def _feed_until_finished(ws: ClientConnection, follower: PromptFollower) -> None:
    """Feed every message to *follower* until its prompt is over."""
    while not follower.finished:
        message = await ws.recv()
        follower.feed_message(message, time.perf_counter())


def _follower_phases(result: CanaryResult, follower: PromptFollower, accepted_at: float) -> None:
    """``queue`` and ``execute`` as seen on the WebSocket, for failed runs too (kept if already set)."""
    if follower.started_at is None:
        return
    result.phases.setdefault("queue", max(0.0, follower.started_at - accepted_at))
    end = follower.succeeded_at or follower.ended_at or time.perf_counter()
    result.phases.setdefault("execute", max(0.0, end - follower.started_at))


def apply_result(state: TargetState, result: CanaryResult) -> None:
    """Record a finished run in the target's state (the exporter renders it)."""
    canary = state.canary(result.canary)
    if result.skipped:
        canary.skipped += 1
        return
    canary.runs += 1
    canary.success = 1.0 if result.ok else 0.0
    canary.phases = dict(result.phases)
    canary.server_seconds = result.server_seconds
    if result.websocket_ok is not None:
        canary.websocket_ok = 1.0 if result.websocket_ok else 0.0
    reason = result.failure
    if reason is None:
        canary.last_success_ts = time.time()
        canary.duration.observe(result.phases.get("total", 0.0))
        canary.last_reason = None
    else:
        canary.failures[reason] = canary.failures.get(reason, 0) + 1
        if canary.last_reason != reason:
            log.warning("canary_failed", target=state.name, canary=result.canary, reason=str(reason),
                        detail=result.detail, problems=result.problems[:10])
        canary.last_reason = reason
    canary.record_run(time.time())


def check_outcome(result: CanaryResult) -> None:
    """End the daemon's canary check as its run ended: a success only when the output was verified."""
    if result.skipped:
        raise CheckSkipped(result.detail)
    if result.failure is not None:
        raise CheckFailed(result.failure, result.detail)
