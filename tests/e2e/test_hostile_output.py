"""What a hostile server sends never reaches the user's terminal or output documents as it was sent.

``comfywatch doctor`` and ``comfywatch canary`` run as real processes against servers that (a) put terminal
escapes and other characters a terminal interprets into the strings they return, and (b) echo the request's
``Authorization`` header back in a ``/prompt`` 400. Their text output must hold no character a terminal would
act on, their ``--json`` must stay valid JSON, and no form of the credentials (clear, Basic's base64,
percent-encoded) may appear in either.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from aiohttp import web

from comfywatch.sim.admin import start_sim
from tests.e2e.doctor_setups import ProxyOptions, proxy_app, serve
from tests.e2e.test_doctor import Run, doctor
from tests.faults.hostile import Fault, HostileServer, Mode
from tests.fixtures import load_json
from tests.integration.test_canary_cli import cli

pytestmark = pytest.mark.e2e

FORGED = "\x1b[2J\x1b[1;31mFAKE: all checks passed"
#: Characters a terminal acts on (C0 but for none, DEL, C1 such as CSI) or that reorder what it shows
#: (bidi embeddings, overrides and isolates), and lone surrogates, which no terminal encoding can carry.
UNPRINTABLE = [chr(c) for c in (*range(0x00, 0x0A), *range(0x0B, 0x20), *range(0x7F, 0xA0),
                                 *range(0x202A, 0x202F), *range(0x2066, 0x206A))] + ["\ud800", "\udfff"]
USER = "monitor"
#: Changes under percent-encoding ("/", "ö", '"', " ") and under JSON escaping ('"', "ö").
PASSWORD = 'Pa55/wörd "9q'
BASIC_TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode("ascii")


def unprintable_in(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if c in UNPRINTABLE})


def hostile_system_stats() -> bytes:
    """ComfyUI 0.3.64's /system_stats with a version that clears the screen and forges a verdict, and other
    strings carrying C1 controls, bidi overrides and a lone surrogate."""
    body = load_json("system_stats_api_prefix.json")
    body["system"]["comfyui_version"] = "0.3.64" + FORGED
    body["system"]["python_version"] = "3.12.3\x9b2J\u202e (main) \ud800"
    body["system"]["pytorch_version"] = "2.8.0\r\n\u2066✓ all good\u2069\x07"
    body["devices"][0]["name"] = "cuda:0 \x1b]0;owned\x07 RTX\x7f 4090\u202d"
    return json.dumps(body).encode()


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    server = await HostileServer().start()
    try:
        yield server
    finally:
        await server.close()


def _report(run: Run) -> dict[str, Any]:
    assert run.code in {0, 1}, run
    return run.report()  # valid JSON, or the assertion says what came instead


async def test_doctor_prints_nothing_a_terminal_would_interpret(hostile: HostileServer) -> None:
    """Server strings with ESC, CSI, OSC, CR/LF, BEL, DEL, bidi overrides and a lone surrogate: the text report
    holds none of them (the forged verdict cannot start a line of its own) and --json is valid JSON."""
    await hostile.set_fault(Fault(Mode.ANSWER, routes=("system_stats",), body=hostile_system_stats()))
    text = await doctor("--url", hostile.url, "--no-canary", "--timeout", "2")
    as_json = await doctor("--url", hostile.url, "--no-canary", "--timeout", "2", "--json")
    assert text.code == 1 and "Traceback" not in text.stderr, text  # the WebSocket check fails: no /ws
    assert unprintable_in(text.stdout) == [], text
    version_line = next(line for line in text.stdout.splitlines() if "server.version" in line)
    assert "ComfyUI 0.3.64" in version_line and "FAKE: all checks passed" in version_line, text
    assert not any(line.startswith(("FAKE", "✓ all good")) for line in text.stdout.splitlines()), text
    device = next(c for c in _report(as_json)["targets"][0]["checks"] if c["id"] == "server.device")
    assert "RTX" in device["summary"], as_json


async def test_canary_prints_nothing_a_terminal_would_interpret(hostile: HostileServer) -> None:
    """A /prompt 400 whose node_errors carry terminal escapes: the canary's phase table holds none of them,
    --json is valid JSON."""
    rejection = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation" + FORGED,
                  "details": "", "extra_info": {}},
        "node_errors": {"2": {"errors": [{"type": "required_input_missing", "message": "Required input is missing",
                                          "details": "images" + FORGED + "\u202e\ud800",
                                          "extra_info": {"input_name": "images"}}],
                              "dependent_outputs": ["2"], "class_type": "PreviewImage\x9b2J"}},
    }
    await hostile.set_fault(Fault(Mode.ANSWER, routes=("prompt",), status=400,
                                  body=json.dumps(rejection).encode()))
    (code, out, err), (json_code, json_out, _) = [
        await cli("--url", hostile.url, "--timeout", "10"),
        await cli("--url", hostile.url, "--timeout", "10", "--json"),
    ]
    assert code == 1 and out.startswith("canary preview-image: FAILED (validation)"), out + err
    assert "FAKE: all checks passed" in out, out  # the text is kept, only what a terminal acts on goes
    assert unprintable_in(out) == [], out
    assert json_code == 1
    assert json.loads(json_out)["reason"] == "validation", json_out


# ---------------------------------------------------------------------------------------------------------
# Echoed credentials.


def echo_authorization_app(upstream: str) -> web.Application:
    """An authenticating proxy in front of *upstream* whose /prompt rejects every workflow with a 400 that
    quotes the request's Authorization header: as sent, its bare token, and the user:password it decodes to
    (clear and percent-encoded)."""
    app = proxy_app(upstream, ProxyOptions(basic_auth=(USER, PASSWORD)))

    @web.middleware
    async def echo(request: web.Request,
                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.method != "POST" or not request.path.endswith("/prompt"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Basic ")
        _, _, password = base64.b64decode(token).decode().partition(":")

        def error(details: str) -> dict[str, Any]:
            return {"type": "value_not_in_list", "message": "Value not in list", "details": details,
                    "extra_info": {}}

        errors = [error(f"sent {header}"), error(f"token {token}"), error(f"password {password}"),
                  error(f"as in the URL {quote(password, safe='')}")]
        return web.json_response(status=400, data={
            "error": {"type": "prompt_outputs_failed_validation", "message": f"Prompt outputs failed validation "
                      f"for {token}", "details": "", "extra_info": {}},
            "node_errors": {"2": {"errors": errors, "dependent_outputs": ["2"], "class_type": "PreviewImage"}},
        })

    app.middlewares.append(echo)
    return app


@dataclass(frozen=True)
class Output:
    """What one command printed, and how it exited."""

    code: int
    stdout: str
    stderr: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def echoed() -> dict[str, Output]:
    """The canary and doctor, text and --json, run once against the echoing proxy with the credentials in the
    URL (percent-encoded, as a URL carries them)."""
    async with await start_sim() as sim, serve(echo_authorization_app(sim.url)) as url:
        with_userinfo = url.replace("http://", f"http://{USER}:{quote(PASSWORD, safe='')}@")
        canary_text = await cli("--url", with_userinfo, "--timeout", "10")
        canary_json = await cli("--url", with_userinfo, "--timeout", "10", "--json")
        doctor_text = await doctor("--url", with_userinfo, "--timeout", "10")
        doctor_json = await doctor("--url", with_userinfo, "--timeout", "10", "--json")
    return {"canary text": Output(*canary_text), "canary --json": Output(*canary_json),
            "doctor text": Output(doctor_text.code, doctor_text.stdout, doctor_text.stderr),
            "doctor --json": Output(doctor_json.code, doctor_json.stdout, doctor_json.stderr)}


def leaks(outputs: dict[str, Output], forms: dict[str, str]) -> str:
    """Every output (stdout and stderr) holding one of *forms*, with what it printed; empty when none does."""
    found = {name: [form for form, value in forms.items() if value in out.stdout + out.stderr]
             for name, out in outputs.items()}
    return "\n\n".join(f"--- {name}: {', '.join(hit)}\n{outputs[name].stdout}{outputs[name].stderr}"
                       for name, hit in found.items() if hit)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_echoing_rejection_is_reported(echoed: dict[str, Output]) -> None:
    """The canary fails with reason validation and lists the node's errors, their echo masked; doctor's
    canary.run fails the same way."""
    canary = echoed["canary text"]
    assert canary.code == 1 and canary.stdout.startswith("canary preview-image: FAILED (validation)"), canary
    assert "value_not_in_list: sent Basic ***; " in canary.stdout, canary
    assert json.loads(echoed["canary --json"].stdout)["reason"] == "validation", echoed["canary --json"]
    report = json.loads(echoed["doctor --json"].stdout)
    canary_check = next(c for c in report["targets"][0]["checks"] if c["id"] == "canary.run")
    assert canary_check["status"] == "fail" and "validation" in canary_check["summary"], echoed["doctor --json"]
    assert "✗ canary.run" in echoed["doctor text"].stdout, echoed["doctor text"]


@pytest.mark.asyncio(loop_scope="module")
async def test_no_output_holds_the_password_clear_or_percent_encoded(echoed: dict[str, Output]) -> None:
    """Neither the password nor its percent-encoded form appear in any output, logs on stderr included."""
    assert leaks(echoed, {"clear": PASSWORD, "percent-encoded": quote(PASSWORD, safe="")}) == ""


@pytest.mark.asyncio(loop_scope="module")
async def test_no_output_holds_the_basic_token(echoed: dict[str, Output]) -> None:
    """Basic's base64 of user:password, echoed without its scheme, appears in no output either."""
    assert leaks(echoed, {"base64": BASIC_TOKEN}) == ""
