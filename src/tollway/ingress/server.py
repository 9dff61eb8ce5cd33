"""The HTTP server under the app: aiohttp's, with a deadline on each request's headers and
its malformed-request log rate-limited.

aiohttp bounds a request's body only as far as the handler reads it (the handler has
server.body_timeout_s for that) and has no header timeout: a client that sends its headers
a byte at a time holds a connection, a parser and a task for as long as it likes (its
keep-alive timer does not run while a request is being read, and by default it is an
hour). So each connection gets a timer when it opens, and again when the first byte of a
later request arrives on it; the timer is cancelled when a request's headers are complete
and, if it fires first, the connection is closed. It is a subclass of aiohttp's
RequestHandler, served by a Server subclass that GatewayRunner swaps in; `tollway serve`
(one process or each of --workers N) and the test stacks run the app through it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from tollway.config.server import ServerConfig
from tollway.ingress.protocol_log import ProtocolLog

log = logging.getLogger("tollway.ingress")


class HeaderDeadline(RequestHandler):
    """A connection whose requests must finish their headers within `header_timeout`."""

    __slots__ = ("_deadline", "_header_timeout", "_protocol_log")

    def __init__(self, manager: web.Server, *, header_timeout: float,
                 protocol_log: ProtocolLog, **kwargs: Any) -> None:
        super().__init__(manager, logger=protocol_log, **kwargs)  # type: ignore[arg-type]
        self._header_timeout = header_timeout
        self._protocol_log = protocol_log
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # the first request's headers are due from the connection on

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        body = self._body_in_flight()
        super().data_received(data)
        if self._request_count != parsed:
            self._disarm()  # a request's headers are complete; its body has its own deadline
            if body is not None:
                self._fail_body(body)
        elif (self._deadline is None and data and not self._messages
              and not self._request_in_progress):
            self._arm()  # the first bytes of the next request on a kept-alive connection

    def _body_in_flight(self) -> StreamReader | None:
        """The body the parser is feeding, if it is not complete yet."""
        if self._messages:
            payload = self._messages[-1][1]
        elif self._current_request is not None:
            payload = self._current_request.content
        else:
            return None
        return None if payload.is_eof() else payload

    def _fail_body(self, body: StreamReader) -> None:
        """A framing error in the middle of a body (a bad chunk size) makes aiohttp's parser
        queue a 400 and drop the body without a word: the handler reading it would wait
        until its deadline. Hand the handler the parser's error instead, so that it answers
        400 in its own dialect at once."""
        for msg, _ in reversed(self._messages):
            if isinstance(msg, _ErrInfo) and msg.exc is not None:
                body.set_exception(msg.exc)
                return

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = asyncio.get_running_loop().call_later(self._header_timeout,
                                                               self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._messages or self._request_in_progress:
            return  # a request was parsed meanwhile
        peer = self.transport.get_extra_info("peername") if self.transport else None
        self._protocol_log.note("header_timeout", f"closed a connection from "
                                f"{peer[0] if peer else '?'} whose request headers took "
                                f"longer than {self._header_timeout:g}s "
                                "(server.header_timeout_s)")
        self.force_close()


class DeadlineServer(web.Server):
    """aiohttp's Server, serving each connection with a HeaderDeadline handler."""

    header_timeout: float
    protocol_log: ProtocolLog

    def __call__(self) -> RequestHandler:
        kwargs = {k: v for k, v in self._kwargs.items() if k != "logger"}
        return HeaderDeadline(self, loop=self._loop, header_timeout=self.header_timeout,
                              protocol_log=self.protocol_log, **kwargs)


class GatewayRunner(web.AppRunner):
    """web.AppRunner whose server has the header deadline and the rate-limited log."""

    def __init__(self, app: web.Application, server: ServerConfig, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout = server.header_timeout_s
        self.protocol_log = ProtocolLog(logging.getLogger("aiohttp.server"))

    async def _make_server(self) -> web.Server:
        built = await super()._make_server()
        # The app builds a plain Server (with its request factory and handler arguments);
        # the same object, given the class that hands its connections a HeaderDeadline.
        built.__class__ = DeadlineServer
        assert isinstance(built, DeadlineServer)
        built.header_timeout = self.header_timeout
        built.protocol_log = self.protocol_log
        return built
