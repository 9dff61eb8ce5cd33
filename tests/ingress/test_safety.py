"""The last resort: a handler that raises answers a 500 in its path's dialect, with a request
id, and the traceback is logged once; HTTP exceptions pass through as aiohttp's own."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tollway.app import render_error
from tollway.ingress.safety import last_resort


async def _broken(request: web.Request) -> web.Response:
    raise KeyError("a bug")


async def _refused(request: web.Request) -> web.Response:
    raise web.HTTPForbidden()


@pytest.mark.parametrize(("path", "check"), [
    ("/v1/models", lambda b: b["error"]["code"] == "internal_error"
     and b["error"]["type"] == "server_error"),
    ("/v1/messages/x", lambda b: b["type"] == "error" and b["error"]["type"] == "api_error"),
    ("/mcp/files", lambda b: b["jsonrpc"] == "2.0" and b["id"] is None
     and b["error"]["data"]["tollway_code"] == "internal_error"),
    ("/admin/spend", lambda b: b["error"]["type"] == "admin_error"),
])
async def test_an_unexpected_exception_is_a_500_in_the_dialect(
        path: str, check: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = web.Application()
    app.router.add_route("*", path, last_resort(_broken, render_error))
    app.router.add_route("*", "/forbidden", last_resort(_refused, render_error))
    async with TestClient(TestServer(app)) as client:
        r = await client.get(path)
        assert r.status == 500
        body = await r.json()
        assert check(body), body
        rid = r.headers["x-tollway-request-id"]
        assert rid in str(body)
        assert (await client.get("/forbidden")).status == 403
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and rid in errors[0].getMessage() and errors[0].exc_info
