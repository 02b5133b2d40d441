"""Control of running simulators: the admin HTTP API (its own port) and the in-process :class:`SimHandle`.

The admin port stays reachable while a ``down`` fault has closed the simulated server's port, and HTTP
faults never apply to it. Routes (``target`` is a target index, or absent/``null`` for the root server):

- ``GET /_sim/state?target=i``: the target's state (faults, queue and history ids, files, job counters...).
- ``POST /_sim/faults`` ``{"target": i|null, "faults": [...], "slow_ms": n}``: replace the fault set
  (``restart`` in it is performed once). 400 ``{"error"}`` for unknown faults or targets.
- ``POST /_sim/restart`` ``{"target": i|null}``: the one-shot restart.
- ``POST /_sim/submit`` ``{"target": i|null, "job_ms": n?, "client_id": s?}``: queue one background job now;
  answers ``{"prompt_id", "number", "node_errors"}``.
- ``GET /_sim/info``: ``{"url", "admin_url", "targets", "mode"}``.

In Cloud mode (``cloud=True``) the state is ``SimCloud.snapshot()``, faults go to ``SimCloud.set_faults``
except ``down``, which closes the port here like for the local sim (:func:`cloud_faults` lists them all);
``restart``/``submit`` answer 400.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from comfywatch.sim.cloud.app import create_cloud_app
from comfywatch.sim.cloud.jobs import FAULTS as CLOUD_FAULTS
from comfywatch.sim.cloud.model import SimCloud
from comfywatch.sim.faults import DEFAULT_SLOW_MS, FAULT_DESCRIPTIONS, Fault
from comfywatch.sim.local.app import Listener, SimCluster
from comfywatch.sim.local.server import SimOptions, SimServer

__all__ = ["ADMIN_PREFIX", "HANDLE_KEY", "SimHandle", "cloud_faults", "create_admin_app", "start_sim"]

ADMIN_PREFIX = "/_sim"


def cloud_faults() -> dict[str, str]:
    """Every fault name Cloud mode accepts, with its description: ``down`` (handled here) and the Cloud's own."""
    return {Fault.DOWN.value: FAULT_DESCRIPTIONS[Fault.DOWN], **CLOUD_FAULTS}


class _BadRequestError(ValueError):
    """A request the sim cannot act on (the admin API answers 400)."""


class SimHandle:
    """A running simulator: its URLs, state and fault switches.

    ``url`` is the root server (``http://host:port``), ``target_url(i)`` a prefixed one, ``admin_url`` the
    admin API. Use ``async with await start_sim(...) as sim:`` or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        cluster: SimCluster | None,
        cloud: SimCloud | None,
        listener: Listener,
        admin: Listener,
    ) -> None:
        self.cluster = cluster
        self.cloud = cloud
        self._listener = listener
        self._admin = admin
        self._cloud_down = False

    @property
    def url(self) -> str:
        """Base URL of the root simulated server (no trailing slash)."""
        return f"http://{self._listener.host}:{self._listener.port}"

    @property
    def admin_url(self) -> str:
        """Base URL of the admin API (no trailing slash)."""
        return f"http://{self._admin.host}:{self._admin.port}"

    @property
    def targets(self) -> int:
        """How many prefixed targets (``/t/0`` ...) are served besides the root."""
        return self.cluster.targets if self.cluster is not None else 0

    def target_url(self, target: int | None) -> str:
        """Base URL of a target: ``url`` for ``None``, ``url/t/{i}`` otherwise."""
        if target is None:
            return self.url
        self._local().server(target)  # validates the index
        return f"{self.url}/t/{target}"

    def _local(self) -> SimCluster:
        if self.cluster is None:
            raise _BadRequestError("not available for the simulated Cloud")
        return self.cluster

    def server(self, target: int | None = None) -> SimServer:
        """The simulated server of a local target, for tests that need more than :meth:`state`."""
        return self._local().server(target)

    def state(self, target: int | None = None) -> dict[str, Any]:
        """The state the admin API serves for ``target`` (``None``: root)."""
        if self.cloud is not None:
            return {**self.cloud.snapshot(), "listening": self._listener.listening}
        cluster = self._local()
        state = cluster.server(target).snapshot()
        state["target"] = target
        state["listening"] = cluster.listening
        return state

    async def set_faults(self, faults: Iterable[str], target: int | None = None, slow_ms: int | None = None) -> None:
        """Replace the faults of ``target``; ``ValueError`` for unknown fault names (nothing changes)."""
        wanted = list(faults)
        if self.cloud is not None:
            if target is not None:
                raise _BadRequestError("the simulated Cloud has no targets")
            self.cloud.set_faults([f for f in wanted if f != Fault.DOWN])
            if slow_ms is not None:
                self.cloud.slow_ms = slow_ms
            if Fault.DOWN in wanted:
                await self._listener.stop()
            else:
                await self._listener.reopen()
            return
        await self._local().set_faults(target, wanted, slow_ms)

    async def deploy(self, target: int | None = None, *, remove: Iterable[str] = (),
                     options: Mapping[str, Mapping[str, list[Any]]] | None = None,
                     models: Mapping[str, list[str]] | None = None,
                     broken: Mapping[str, str] | None = None, reset: bool = False) -> None:
        """Change what ``target`` offers, as a deploy would (see ``SimServer.deploy``)."""
        self._local().server(target).deploy(remove, options, models, broken, reset=reset)

    async def restart(self, target: int | None = None) -> None:
        """Perform the one-shot ``restart`` fault on ``target``."""
        await self._local().restart(target)

    async def submit(
        self, target: int | None = None, job_ms: float | None = None, client_id: str | None = None
    ) -> dict[str, Any]:
        """Queue one background ("other user") job on ``target`` now."""
        return self._local().server(target).submit_background(job_ms, client_id)

    async def close(self) -> None:
        """Stop the simulator and the admin API."""
        if self.cluster is not None:
            await self.cluster.close()
        else:
            await self._listener.close()
        await self._admin.close()

    async def __aenter__(self) -> SimHandle:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


HANDLE_KEY = web.AppKey("comfywatch_sim_handle", SimHandle)


def _target(value: Any) -> int | None:
    if value is None or value in ("", "null", "root"):
        return None
    if isinstance(value, bool):
        raise _BadRequestError(f"bad target: {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _BadRequestError(f"bad target: {value!r}") from None


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except json.JSONDecodeError as ex:
        raise _BadRequestError(f"body is not JSON: {ex}") from None
    if not isinstance(data, dict):
        raise _BadRequestError("body must be a JSON object")
    return data


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except (_BadRequestError, ValueError, KeyError) as ex:
        message = ex.args[0] if isinstance(ex, KeyError) and ex.args else str(ex)
        return web.json_response({"error": message}, status=400)
    return response


async def _state(request: web.Request) -> web.StreamResponse:
    handle = request.app[HANDLE_KEY]
    return web.json_response(handle.state(_target(request.rel_url.query.get("target"))))


async def _faults(request: web.Request) -> web.StreamResponse:
    handle = request.app[HANDLE_KEY]
    body = await _body(request)
    faults = body.get("faults", [])
    if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
        raise _BadRequestError("faults must be a list of fault names")
    slow_ms = body.get("slow_ms")
    if slow_ms is not None and (isinstance(slow_ms, bool) or not isinstance(slow_ms, int) or slow_ms < 0):
        raise _BadRequestError("slow_ms must be a non-negative integer")
    target = _target(body.get("target"))
    await handle.set_faults(faults, target, slow_ms)
    return web.json_response(handle.state(target))


async def _restart(request: web.Request) -> web.StreamResponse:
    handle = request.app[HANDLE_KEY]
    target = _target((await _body(request)).get("target"))
    await handle.restart(target)
    return web.json_response(handle.state(target))


def _string_lists(value: Any, what: str) -> dict[str, list[str]]:
    def strings(items: Any) -> bool:
        return isinstance(items, list) and all(isinstance(item, str) for item in items)

    if not isinstance(value, dict) or not all(isinstance(k, str) and strings(v) for k, v in value.items()):
        raise _BadRequestError(f"{what} must map names to lists of strings")
    return value


async def _deploy(request: web.Request) -> web.StreamResponse:
    handle = request.app[HANDLE_KEY]
    body = await _body(request)
    remove = body.get("remove", [])
    if not isinstance(remove, list) or not all(isinstance(r, str) for r in remove):
        raise _BadRequestError("remove must be a list of node class names")
    raw_options = body.get("options", {})
    if not isinstance(raw_options, dict):
        raise _BadRequestError("options must map node classes to {input: [choices]}")
    options = {name: _string_lists(inputs, "options") for name, inputs in raw_options.items()}
    models = _string_lists(body.get("models", {}), "models")
    broken = body.get("broken", {})
    if not isinstance(broken, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in broken.items()):
        raise _BadRequestError("broken must map custom node packs to their import error")
    reset = body.get("reset", False)
    if not isinstance(reset, bool):
        raise _BadRequestError("reset must be true or false")
    target = _target(body.get("target"))
    await handle.deploy(target, remove=remove, options=options, models=models, broken=broken, reset=reset)
    return web.json_response(handle.state(target))


async def _submit(request: web.Request) -> web.StreamResponse:
    handle = request.app[HANDLE_KEY]
    body = await _body(request)
    job_ms = body.get("job_ms")
    if job_ms is not None and (isinstance(job_ms, bool) or not isinstance(job_ms, (int, float)) or job_ms < 0):
        raise _BadRequestError("job_ms must be a non-negative number")
    client_id = body.get("client_id")
    if client_id is not None and not isinstance(client_id, str):
        raise _BadRequestError("client_id must be a string")
    result = await handle.submit(_target(body.get("target")), job_ms, client_id)
    return web.json_response(result)


async def _info(request: web.Request) -> web.StreamResponse:
    handle = request.app[HANDLE_KEY]
    mode = "cloud" if handle.cloud is not None else "local"
    return web.json_response(
        {"url": handle.url, "admin_url": handle.admin_url, "targets": handle.targets, "mode": mode}
    )


def create_admin_app(handle: SimHandle | None = None) -> web.Application:
    """The admin API application; ``handle`` may be attached later (``app[HANDLE_KEY] = handle``)."""
    app = web.Application(middlewares=[_errors])
    if handle is not None:
        app[HANDLE_KEY] = handle
    app.router.add_get(f"{ADMIN_PREFIX}/state", _state)
    app.router.add_post(f"{ADMIN_PREFIX}/faults", _faults)
    app.router.add_post(f"{ADMIN_PREFIX}/restart", _restart)
    app.router.add_post(f"{ADMIN_PREFIX}/deploy", _deploy)
    app.router.add_post(f"{ADMIN_PREFIX}/submit", _submit)
    app.router.add_get(f"{ADMIN_PREFIX}/info", _info)
    return app


async def start_sim(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    admin_port: int = 0,
    faults: Iterable[str] = (),
    slow_ms: int = DEFAULT_SLOW_MS,
    targets: int = 0,
    load_per_min: float = 0.0,
    job_ms: float = 1000.0,
    exec_ms: float = 4.0,
    jobs_api: bool = False,
    history_max: int = 10000,
    max_files: int = 1000,
    cloud: bool = False,
    cloud_api_keys: Sequence[str] = (),
) -> SimHandle:
    """Start a simulated ComfyUI 0.3.64 (or, with ``cloud=True``, Comfy Cloud) plus its admin API.

    ``faults`` apply to every target from the start; ``targets=N`` adds ``/t/0`` ... ``/t/{N-1}``;
    ``load_per_min`` submits background jobs of ``job_ms`` to every target; ``exec_ms`` is the
    simulated run time of a posted prompt. Raises ``ValueError`` for bad options (unknown faults...).
    """
    wanted = list(faults)
    if targets < 0 or load_per_min < 0 or job_ms < 0 or exec_ms < 0 or slow_ms < 0:
        raise ValueError("targets, load_per_min, job_ms, exec_ms and slow_ms must not be negative")
    cluster: SimCluster | None = None
    cloud_sim: SimCloud | None = None
    if cloud:
        cloud_sim = SimCloud(api_keys=list(cloud_api_keys), faults=[f for f in wanted if f != Fault.DOWN])
        cloud_sim.slow_ms = slow_ms
        listener = Listener(create_cloud_app(cloud_sim))
        await listener.start(host, port)
        if Fault.DOWN in wanted:
            await listener.stop()
    else:
        options = SimOptions(
            exec_ms=exec_ms,
            job_ms=job_ms,
            load_per_min=load_per_min,
            jobs_api=jobs_api,
            history_max=history_max,
            max_files=max_files,
            slow_ms=slow_ms,
        )
        cluster = SimCluster(options, targets=targets, faults=wanted)
        await cluster.start(host, port)
        listener = cluster.listener
    admin_app = create_admin_app()
    admin = Listener(admin_app)
    handle = SimHandle(cluster=cluster, cloud=cloud_sim, listener=listener, admin=admin)
    admin_app[HANDLE_KEY] = handle
    try:
        await admin.start(host, admin_port)
    except BaseException:
        await handle.close()
        raise
    return handle
