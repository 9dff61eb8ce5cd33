"""The HTTP server under the app: aiohttp's, with a deadline on each request's headers and
one on its body, and its malformed-request log rate-limited.

aiohttp has no header timeout, and bounds a body only as far as a handler bounds its own
reads: a client that sends its headers or its body a byte at a time holds a connection, a
parser and a task for as long as it likes (the keep-alive timer does not run while a
request is being read, and by default it is an hour). So each connection notes when it
started waiting for a request's headers (when it opened, or when a later request's first
byte arrived) and when those headers were complete; one watcher per server looks at every
connection a few times a second, closes one whose headers are overdue, and fails a body
that is overdue, so that the handler reading it answers 408 in its own dialect. A timer per
request would do the same at ~10 µs of CPU per request (asyncio.timeout, call_later and
their cancellation, even on uvloop); this costs two clock reads per request.

It is a subclass of aiohttp's RequestHandler, served by a Server subclass that
GatewayRunner swaps in: `tollway serve` (one process, or each of --workers N) and the test
stacks run the app through it. It leans on a few of RequestHandler's private attributes
(_request_count, _messages, _request_in_progress, _current_request); the raw-socket tests
in tests/e2e/test_ingress.py are what would notice a change in them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from tollway.aio import cancel
from tollway.config.server import ServerConfig
from tollway.ingress.body import BodyTimeout
from tollway.ingress.protocol_log import ProtocolLog


class TimedConnection(RequestHandler):
    """A connection whose requests must have their headers within `header_timeout` and
    their bodies within `body_timeout` of the headers."""

    __slots__ = ("_body_since", "_deadlines", "_headers_since")

    def __init__(self, manager: DeadlineServer, **kwargs: Any) -> None:
        super().__init__(manager, logger=manager.protocol_log, **kwargs)  # type: ignore[arg-type]
        self._deadlines = manager
        self._headers_since: float | None = None  # waiting for a request's headers since
        self._body_since: float | None = None  # the last request's headers were complete at

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._headers_since = asyncio.get_running_loop().time()  # the first one's are due

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a request's headers are complete
            self._headers_since = None
            self._body_since = asyncio.get_running_loop().time()
            self._fail_broken_body()
        elif (self._headers_since is None and data and not self._messages
              and not self._request_in_progress):
            # the first bytes of the next request on a kept-alive connection
            self._headers_since = asyncio.get_running_loop().time()

    def check(self, now: float) -> None:
        """Close the connection if a request's headers are overdue; fail its body if that
        is overdue (the handler reading it gets BodyTimeout)."""
        since = self._headers_since
        d = self._deadlines
        if since is not None and now - since > d.header_timeout:
            if self._messages or self._request_in_progress:
                return  # a request was parsed meanwhile
            peer = self.transport.get_extra_info("peername") if self.transport else None
            d.protocol_log.note("header_timeout", f"closed a connection from "
                                f"{peer[0] if peer else '?'} whose request headers took "
                                f"longer than {d.header_timeout:g}s "
                                "(server.header_timeout_s)")
            self.force_close()
            return
        since = self._body_since
        if since is not None and now - since > d.body_timeout:
            self._body_since = None
            body = self._body_in_flight()
            if body is not None:
                body.set_exception(BodyTimeout(d.body_timeout))

    def _body_in_flight(self) -> StreamReader | None:
        """The body the parser is feeding, if it is not complete yet."""
        if self._current_request is not None:
            payload = self._current_request.content
        elif self._messages and not isinstance(self._messages[-1][0], _ErrInfo):
            payload = self._messages[-1][1]
        else:
            return None
        return None if payload.is_eof() else payload

    def _fail_broken_body(self) -> None:
        """A framing error in the middle of a body (a bad chunk size) makes aiohttp's parser
        queue a 400 and drop the body without a word: the handler reading it would wait
        until its deadline. Hand it the parser's error instead, so that it answers 400 in
        its own dialect at once."""
        last = self._messages[-1][0] if self._messages else None
        if not isinstance(last, _ErrInfo) or last.exc is None:
            return
        if self._current_request is not None:
            body = self._current_request.content
        elif len(self._messages) > 1:
            body = self._messages[-2][1]
        else:
            return
        if not body.is_eof():
            body.set_exception(last.exc)


class DeadlineServer(web.Server):
    """aiohttp's Server, serving each connection as a TimedConnection and checking their
    deadlines every `interval` seconds."""

    header_timeout: float
    body_timeout: float
    interval: float
    protocol_log: ProtocolLog

    def __call__(self) -> RequestHandler:
        kwargs = {k: v for k, v in self._kwargs.items() if k != "logger"}
        return TimedConnection(self, loop=self._loop, **kwargs)

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            now = loop.time()
            for conn in self.connections:
                if isinstance(conn, TimedConnection):
                    conn.check(now)


class GatewayRunner(web.AppRunner):
    """web.AppRunner whose server has the deadlines and the rate-limited log."""

    def __init__(self, app: web.Application, server: ServerConfig, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.cfg = server
        self.protocol_log = ProtocolLog(logging.getLogger("aiohttp.server"))
        self._watcher: asyncio.Task[None] | None = None

    async def _make_server(self) -> web.Server:
        built = await super()._make_server()
        # The app builds a plain Server (with its request factory and handler arguments);
        # the same object, given the class that serves its connections with deadlines.
        built.__class__ = DeadlineServer
        assert isinstance(built, DeadlineServer)
        cfg = self.cfg
        built.header_timeout = cfg.header_timeout_s
        built.body_timeout = cfg.body_timeout_s
        # Deadlines are kept to within a quarter of the shorter one, 0.25 s at most.
        built.interval = min(0.25, cfg.header_timeout_s / 4, cfg.body_timeout_s / 4)
        built.protocol_log = self.protocol_log
        self._watcher = asyncio.create_task(built.watch())
        return built

    async def _cleanup_server(self) -> None:
        await cancel(self._watcher)
        await super()._cleanup_server()
