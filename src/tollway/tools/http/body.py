"""Request bodies: small ones read whole (digested, retryable), big or chunked ones streamed
up as they arrive; `max_body_mb` enforced either way (413)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from tollway.errors import GatewayError
from tollway.ingress.body import BodyTimeout, body_timeout
from tollway.tools.http.tool import HttpTool

BUFFER_MAX = 1 << 20  # request bodies up to this are read whole (digested, retryable)


@dataclass(slots=True)
class _Body:
    data: bytes | None  # the whole body; None when it is streamed
    prefix: bytes = b""  # streamed: what was already read while deciding
    length: int | None = None  # streamed: the declared Content-Length, if any

    @property
    def streamed(self) -> bool:
        return self.data is None


class _Upload:
    """A streamed request body on its way up; knows why it stopped, if it did."""

    def __init__(self, request: web.Request, body: _Body, max_bytes: int) -> None:
        self.request = request
        self.body = body
        self.max_bytes = max_bytes
        self.too_large = False
        self.client_failed = False
        self.client_error: BaseException | None = None
        self.started = False

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        sent = len(self.body.prefix)
        if self.body.prefix:
            yield self.body.prefix
        while True:
            try:
                chunk = await self.request.content.readany()
            except Exception as exc:
                self.client_failed = True
                self.client_error = exc
                raise
            if not chunk:
                return
            sent += len(chunk)
            if sent > self.max_bytes:
                self.too_large = True
                raise _TooLarge
            yield chunk


    def refusal(self) -> GatewayError:
        """The answer when the caller's side of the upload failed: too slow, or cut."""
        if isinstance(self.client_error, BodyTimeout):
            return body_timeout(self.client_error)
        return GatewayError(400, "incomplete_body",
                            "the request body ended before it was complete")


class _TooLarge(Exception):
    pass


def _too_large(tool: HttpTool) -> GatewayError:
    return GatewayError(413, "body_too_large", f"the request body is larger than the "
                        f"{tool.cfg.max_body_mb:g} MB tool {tool.name!r} accepts (max_body_mb)")


async def _read_body(request: web.Request, tool: HttpTool) -> _Body:
    """Small bodies whole; big or chunked ones are left to stream (what was read to decide
    is kept as their prefix). Either way the whole body is due within
    server.body_timeout_s of the headers (ingress/server.py): 408 when it is late."""
    if not request.body_exists:
        return _Body(b"")
    declared = request.content_length
    if declared is not None and declared > tool.max_bytes:
        raise _too_large(tool)
    if declared is not None and declared > BUFFER_MAX:
        return _Body(None, length=declared)
    buf = bytearray()
    try:
        while len(buf) <= BUFFER_MAX:
            chunk = await request.content.readany()
            if not chunk:
                if len(buf) > tool.max_bytes:
                    raise _too_large(tool)
                return _Body(bytes(buf))
            buf += chunk
    except BodyTimeout as exc:
        raise body_timeout(exc) from exc
    except (ConnectionError, aiohttp.ClientPayloadError, HttpProcessingError,
            RequestPayloadError) as exc:
        raise GatewayError(400, "incomplete_body", "the request body ended before it was "
                           "complete") from exc
    if len(buf) > tool.max_bytes:
        raise _too_large(tool)
    return _Body(None, prefix=bytes(buf), length=declared)

