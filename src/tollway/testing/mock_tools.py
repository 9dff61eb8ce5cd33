"""In-process fake HTTP tool server for tests and demos of tollway's HTTP tools.

Endpoints (every one records the request it received in ``MockTools.requests``):

- ``ANY /echo[/...]``: the request as JSON: method, path (decoded and raw), raw query,
  query (as a dict of lists), headers (lower-cased names), body (text, when it is small),
  size, sha256 and whether it came chunked.
- ``GET /stream?n=5&delay_ms=0&drop_after=-1``: ``n`` server-sent events written one by
  one, each one flushed on its own (chunked transfer encoding); with ``drop_after`` the
  connection is cut after that many events. A reader that goes away is counted in
  ``cancelled_streams``.
- ``GET /download?size=1048576&chunk=65536``: ``size`` bytes (a repeating pattern) streamed in
  ``chunk``-sized pieces, without a Content-Length.
- ``ANY /status/{code}``: answers ``code``; ``?retry_after=N`` adds a ``Retry-After`` header.
- ``ANY /flaky``: 200 ``{"ok": true}`` unless ``settings.fail`` is set (or
  ``settings.fail_next`` is positive: it counts down), then ``settings.fail_status`` (500 by
  default).
- ``ANY /missing``: a tool's own "not found": 404 ``{"error": "not found"}``.
- ``GET /slow?ms=N``: answers after ``N`` milliseconds.
- ``ANY /fixed``: the same result every time.
- ``ANY /counter``: a different result every time (a counter).
- ``ANY /timeout``: 504 with the same error every time, but with a new duration, request
  id and timestamp in it (what a retry storm keeps getting back).
- ``ANY /job?id=J``: a job's status, 5 points further each call until 100% (then "done"),
  with a fresh check time and request id (a poller making progress).

``settings.latency_ms`` delays every answer.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import itertools
import random
import uuid
from dataclasses import dataclass

import orjson
from aiohttp import web

from tollway.testing.local_server import LocalServer

__all__ = ["MockTools", "MockToolsSettings", "RecordedToolRequest"]

MAX_RECORDED = 1000
_ECHO_BODY_MAX = 64 * 1024


@dataclass
class MockToolsSettings:
    """Knobs shared by every request; tests may change them while the server runs."""

    fail: bool = False  # /flaky answers fail_status
    fail_next: int = 0  # /flaky answers fail_status this many more times, then recovers
    fail_status: int = 500
    latency_ms: float = 0.0


@dataclass(slots=True)
class RecordedToolRequest:
    method: str
    path: str  # decoded
    raw_path: str  # as sent
    query_string: str  # raw, as sent
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    # Chunked transfer encoding was used to send the body (a streamed upload).
    chunked: bool = False


class MockTools(LocalServer):
    """An aiohttp server imitating a few HTTP tools."""

    what = "mock tools"

    def __init__(self, settings: MockToolsSettings | None = None) -> None:
        self.settings = settings if settings is not None else MockToolsSettings()
        self.requests: list[RecordedToolRequest] = []
        self.cancelled_streams = 0
        self.finished_streams = 0
        self._counter = itertools.count(1)
        self._jobs: dict[str, int] = {}
        self._rng = random.Random(13)
        super().__init__()

    # -- lifecycle -----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_route("*", "/echo", self._echo)
        r.add_route("*", "/echo/{tail:.*}", self._echo)
        r.add_get("/stream", self._stream)
        r.add_get("/download", self._download)
        r.add_route("*", "/status/{code:\\d{3}}", self._status)
        r.add_route("*", "/flaky", self._flaky)
        r.add_route("*", "/missing", self._missing)
        r.add_get("/slow", self._slow)
        r.add_route("*", "/fixed", self._fixed)
        r.add_route("*", "/counter", self._count)
        r.add_route("*", "/timeout", self._timeout)
        r.add_route("*", "/job", self._job)
        return app

    def calls(self, path: str) -> int:
        """How many requests reached this path."""
        return sum(1 for r in self.requests if r.path == path)

    # -- handlers ------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> RecordedToolRequest:
        body = await request.read() if request.body_exists else b""
        rec = RecordedToolRequest(
            request.method, request.path, request.rel_url.raw_path,
            request.rel_url.raw_query_string,
            {k.lower(): v for k, v in request.headers.items()}, body,
            chunked="chunked" in request.headers.get("Transfer-Encoding", "").lower())
        if len(self.requests) >= MAX_RECORDED:
            del self.requests[: len(self.requests) - MAX_RECORDED + 1]
        self.requests.append(rec)
        if self.settings.latency_ms > 0:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        return rec

    async def _echo(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        query: dict[str, list[str]] = {}
        for k, v in request.query.items():
            query.setdefault(k, []).append(v)
        return _json({
            "method": rec.method, "path": rec.path, "raw_path": rec.raw_path,
            "query_string": rec.query_string,
            "query": query, "headers": rec.headers,
            "body": (rec.body.decode("utf-8", "replace") if len(rec.body) <= _ECHO_BODY_MAX
                     else None),
            "size": len(rec.body), "sha256": hashlib.sha256(rec.body).hexdigest(),
            "chunked": rec.chunked})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        n = int(request.query.get("n", "5"))
        delay = float(request.query.get("delay_ms", "0")) / 1000
        drop_after = int(request.query.get("drop_after", "-1"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            for i in range(n):
                if i == drop_after and request.transport is not None:
                    request.transport.abort()  # the tool dies mid-stream
                    return response
                await response.write(b"data: " + orjson.dumps({"i": i}) + b"\n\n")
                if delay:
                    await asyncio.sleep(delay)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.cancelled_streams += 1
            raise
        self.finished_streams += 1
        return response

    async def _download(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        size = int(request.query.get("size", str(1024 * 1024)))
        chunk = max(1, int(request.query.get("chunk", "65536")))
        pattern = (bytes(range(256)) * (chunk // 256 + 1))[:chunk]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        while sent < size:
            piece = pattern[: min(chunk, size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def _status(self, request: web.Request) -> web.Response:
        await self._record(request)
        code = int(request.match_info["code"])
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return _json({"status": code}, code, headers)

    async def _flaky(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.settings.fail_next > 0:
            self.settings.fail_next -= 1
            return _json({"error": "the flaky tool is down"}, self.settings.fail_status)
        if self.settings.fail:
            return _json({"error": "the flaky tool is down"}, self.settings.fail_status)
        return _json({"ok": True})

    async def _missing(self, request: web.Request) -> web.Response:
        await self._record(request)
        return _json({"error": "not found"}, 404)

    async def _slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await asyncio.sleep(float(request.query.get("ms", "0")) / 1000)
        return _json({"slow": True})

    async def _fixed(self, request: web.Request) -> web.Response:
        await self._record(request)
        return _json({"answer": 42})

    async def _count(self, request: web.Request) -> web.Response:
        await self._record(request)
        return _json({"n": next(self._counter)})


    async def _timeout(self, request: web.Request) -> web.Response:
        await self._record(request)
        return _json({"error": f"upstream timeout after {self._rng.randint(30000, 30999)} ms "
                               f"(req {self._rng.getrandbits(48):012x})",
                      "request_id": str(uuid.uuid4()), "at": _now()}, 504)

    async def _job(self, request: web.Request) -> web.Response:
        await self._record(request)
        job = request.query.get("id", "job-1")
        done = self._jobs[job] = min(100, self._jobs.get(job, 0) + 5)
        return _json({"job_id": job, "status": "done" if done == 100 else "running",
                      "progress": f"{done}%", "checked_at": _now(),
                      "request_id": str(uuid.uuid4())})


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None,
          ) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")
