"""Reading a request body whole, with every way it can fail turned into a GatewayError the
endpoint renders in its own dialect."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from tollway.errors import GatewayError

CLIENT_GONE = 499  # nginx's "client closed request": recorded, never sent


class BodyTimeout(asyncio.TimeoutError):
    """What a body's reader gets when the body took longer than server.body_timeout_s from
    the end of the headers (ingress/server.py sets it on the body's stream). A TimeoutError,
    so that aiohttp, draining a body nobody read, stops quietly."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body was not received within {timeout_s:g}s")
        self.timeout_s = timeout_s


def body_timeout(exc: BodyTimeout) -> GatewayError:
    return GatewayError(408, "body_timeout", f"the request body was not received within "
                        f"{exc.timeout_s:g}s (server.body_timeout_s)",
                        headers={"Connection": "close"})


class ClientGone(GatewayError):
    """The client went away before its body was read: nothing to answer, nothing to log."""

    def __init__(self) -> None:
        super().__init__(CLIENT_GONE, "client_closed_request",
                         "the client closed the connection before sending its whole body")


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body. 408 when it took longer than server.body_timeout_s, 413 past
    `max_bytes` (the app's client_max_size), 400 when its framing is broken (a bad chunk
    size), ClientGone when the client disconnected."""
    try:
        return await request.read()
    except BodyTimeout as exc:
        raise body_timeout(exc) from exc
    except web.HTTPRequestEntityTooLarge as exc:
        raise GatewayError(413, "request_too_large",
                           f"the request body is larger than the gateway's limit of "
                           f"{max_bytes} bytes (server.max_body_mb)") from exc
    except ConnectionError as exc:
        raise ClientGone from exc
    except (RequestPayloadError, HttpProcessingError) as exc:
        if request.transport is None or request.transport.is_closing():
            raise ClientGone from exc  # EOF in the middle of the body: the client left
        raise GatewayError(400, "malformed_body",
                           "the request body's framing is broken (chunked encoding or "
                           "Content-Length)") from exc
