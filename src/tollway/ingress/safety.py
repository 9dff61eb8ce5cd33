"""The last resort: a handler that raised anyway answers a 500 in its endpoint's dialect with
a request id, instead of aiohttp's plain-text page.

Every input is meant to be refused before it can do this (the fuzz test of every endpoint
never reaches it); it is here so that a bug is one logged traceback and one well-formed
500, whatever the client's SDK expects to parse.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from tollway.errors import GatewayError

log = logging.getLogger("tollway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Render = Callable[[web.Request, GatewayError], web.StreamResponse]

_ids = itertools.count(1)
_prefix = os.urandom(4).hex()


def last_resort(handler: Handler, render: Render) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception:
            request_id = f"err_{_prefix}{next(_ids):08x}"
            log.exception("request %s to %s failed inside the gateway", request_id,
                          request.path)
            if request.writer.output_size:  # an answer was under way: all we can do is cut it
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)  # never written: the connection is gone
            err = GatewayError(500, "internal_error", "internal gateway error; see the log "
                               f"for request {request_id}",
                               headers={"x-tollway-request-id": request_id})
            return render(request, err)
    return guarded
