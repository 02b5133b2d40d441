"""Output download: /api/view answers 302 to an unauthenticated signed URL that counts credential leaks."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest

from comfywatch.parse.cloud import parse_job_detail
from comfywatch.sim.cloud.model import SimCloud
from tests.sim_cloud import (
    KEY,
    OTHER_KEY,
    FakeClock,
    Served,
    assert_conforms,
    call,
    serve,
    submit,
)

RED = {
    "prompt": {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 16, "batch_size": 1, "color": 0xFF0000},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "comfywatch/canary"},
        },
    }
}


@pytest.fixture
async def finished() -> AsyncIterator[tuple[Served, FakeClock, str]]:
    """A simulator with one finished job; yields it, its clock and the output file name."""
    clock = FakeClock()
    sim = SimCloud(api_keys=[KEY, OTHER_KEY])
    sim.clock = clock
    async with serve(sim) as served:
        job_id = await submit(served, RED)
        clock.tick(1000)
        detail = parse_job_detail((await call(served.http, "GET", f"/api/jobs/{job_id}")).json())
        yield served, clock, detail.outputs[0].filename


async def test_view_redirects_to_a_signed_url_that_serves_a_png_without_auth(
    finished: tuple[Served, FakeClock, str],
) -> None:
    """302 to /_signed/<blob>?X-Goog-Signature=... on the same server; fetched without a key: the PNG."""
    served, _, filename = finished
    assert filename == "comfywatch_canary_00001_.png"
    redirect = await call(served.http, "GET", "/api/view", params={"filename": filename, "type": "output"})
    assert redirect.status == 302
    assert_conforms(redirect)
    location = redirect.headers["Location"]
    assert location.startswith(f"{served.base}/_signed/")
    assert "X-Goog-Signature=" in location
    image = await call(served.anon, "GET", location)
    assert image.status == 200
    assert image.headers["Content-Type"] == "image/png"
    assert image.body.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", image.body[16:24]) == (32, 16)
    snap = served.sim.snapshot()
    assert (snap["key_leaks"], snap["signed_fetches"]) == (0, 1)


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
async def test_signed_url_fetched_with_credentials_counts_a_leak(
    finished: tuple[Served, FakeClock, str], header: str
) -> None:
    """Sending X-API-Key or Authorization to the signed URL is counted in key_leaks (still served)."""
    served, _, filename = finished
    location = (await call(served.http, "GET", "/api/view", params={"filename": filename})).headers[
        "Location"
    ]
    value = KEY if header == "X-API-Key" else f"Bearer {KEY}"
    leaked = await call(served.anon, "GET", location, headers={header: value})
    assert leaked.status == 200
    assert served.sim.snapshot()["key_leaks"] == 1


async def test_following_the_redirect_with_session_headers_leaks_the_key(
    finished: tuple[Served, FakeClock, str],
) -> None:
    """A client that follows the 302 with its default headers leaks: exactly what the counter must catch."""
    served, _, filename = finished
    followed = await call(
        served.http, "GET", "/api/view", params={"filename": filename}, allow_redirects=True
    )
    assert followed.status == 200
    assert served.sim.snapshot()["key_leaks"] == 1


async def test_reject_leaks_turns_a_leak_into_an_error(finished: tuple[Served, FakeClock, str]) -> None:
    """With reject_leaks the signed URL answers 400 when credentials come along, so a leak fails loudly."""
    served, _, filename = finished
    served.sim.reject_leaks = True
    location = (await call(served.http, "GET", "/api/view", params={"filename": filename})).headers[
        "Location"
    ]
    assert (await call(served.anon, "GET", location, headers={"X-API-Key": KEY})).status == 400
    assert (await call(served.anon, "GET", location)).status == 200


async def test_tampered_or_expired_signatures_are_refused(finished: tuple[Served, FakeClock, str]) -> None:
    """A changed signature gets 403 SignatureDoesNotMatch; after 900 s the URL gets 400 ExpiredToken."""
    served, clock, filename = finished
    location = (await call(served.http, "GET", "/api/view", params={"filename": filename})).headers[
        "Location"
    ]
    tampered = location[:-4] + ("0000" if not location.endswith("0000") else "1111")
    forbidden = await call(served.anon, "GET", tampered)
    assert forbidden.status == 403
    assert b"SignatureDoesNotMatch" in forbidden.body
    clock.tick(901_000)
    expired = await call(served.anon, "GET", location)
    assert expired.status == 400
    assert b"ExpiredToken" in expired.body


async def test_view_of_unknown_or_foreign_files_is_404(finished: tuple[Served, FakeClock, str]) -> None:
    """Unknown names and another user's outputs answer 404 ErrorResponse; a wrong key answers 401."""
    served, _, filename = finished
    async with aiohttp.ClientSession(served.base, headers={"X-API-Key": OTHER_KEY}) as other:
        foreign = await call(other, "GET", "/api/view", params={"filename": filename})
    assert foreign.status == 404
    assert_conforms(foreign)
    no_key = await call(served.anon, "GET", "/api/view", params={"filename": filename})
    assert no_key.status == 401


async def test_view_with_channel_returns_the_image_directly(finished: tuple[Served, FakeClock, str]) -> None:
    """With ?channel= the Cloud answers 200 image/png itself instead of redirecting."""
    served, _, filename = finished
    direct = await call(served.http, "GET", "/api/view", params={"filename": filename, "channel": "rgb"})
    assert direct.status == 200
    assert direct.body.startswith(b"\x89PNG")
    assert_conforms(direct)
