"""The status page sits behind the same web config as ``/metrics``: basic auth guards every one of its routes,
and the headers the web config adds (a strict Content-Security-Policy here) come with its pages too."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import bcrypt
import pytest

from tests.helpers import running_daemon

USER = "viewer"
PASSWORD = "correct horse battery staple"
ROUTES = ("/", "/targets/unreachable", "/api/v1/status", "/api/v1/targets/unreachable", "/static/status.css",
          "/static/status.js", "/static/favicon.svg", "/metrics")
CSP = "default-src 'self'"


def _config(tmp_path: Path) -> str:
    web_config = tmp_path / "web-config.yml"
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web_config.write_text(
        f"basic_auth_users:\n  {USER}: {password_hash}\n"
        f'http_server_config:\n  headers:\n    Content-Security-Policy: "{CSP}"\n', encoding="utf-8")
    return (f'[server]\nweb_config_file = "{web_config}"\n'
            '[[targets]]\nname = "unreachable"\nurl = "http://127.0.0.1:9"\n  [targets.canary]\n  enabled = false\n')


@pytest.mark.parametrize("route", ROUTES)
async def test_every_status_route_needs_the_password(tmp_path: Path, route: str) -> None:
    async with running_daemon(_config(tmp_path), tmp_path) as (_, base), aiohttp.ClientSession() as session:
        async with session.get(base + route) as response:
            assert response.status == 401
            assert "unreachable" not in await response.text()
        wrong = {"Authorization": aiohttp.encode_basic_auth(USER, "wrong")}
        async with session.get(base + route, headers=wrong) as response:
            assert response.status == 401
        right = {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}
        async with session.get(base + route, headers=right) as response:
            assert response.status == 200
            assert response.headers["Content-Security-Policy"] == CSP
            body = await response.read()
            assert body


async def test_the_pages_are_read_only(tmp_path: Path) -> None:
    """Nothing on the page changes state: other methods than GET (and HEAD) are not routed."""
    right = {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}
    async with running_daemon(_config(tmp_path), tmp_path) as (_, base), aiohttp.ClientSession() as session:
        for route in ROUTES[:4]:
            for method in ("POST", "PUT", "DELETE"):
                async with session.request(method, base + route, headers=right) as response:
                    assert response.status == 405, (method, route)
