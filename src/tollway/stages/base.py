"""Stage and Chain, in the spirit of Envoy's HTTP filters.

Request hooks run in order until one answers (a cache hit, a refusal, the forward stage).
The answer then flows back: its stream events (`on_chunk`) or its whole body (`on_body`)
through the stages that asked to see it during on_request (`ex.hooks.append(self)`), in
reverse order, before the client gets them; so a stage that does not need the answer costs
nothing per chunk. Once the outcome is known, `on_response` runs in reverse for every stage
that was entered, so the outermost stage (account) sees every outcome, including errors and
cut streams; `after` runs once the client has its answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import ClassVar

from aiohttp import web

from tollway.errors import GatewayError
from tollway.exchange import Body, Chunk, Exchange

log = logging.getLogger("tollway.chain")
_background: set[asyncio.Task[None]] = set()  # after-hooks of cancelled requests, in flight


class Stage:
    name: ClassVar[str] = "stage"

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        """Inspect or change the exchange; return a response to answer here. Append the
        stage to `ex.hooks` to see the answer on its way back."""
        return None

    def on_chunk(self, ex: Exchange, chunk: Chunk) -> Awaitable[None] | None:
        """Stream events about to be written: pass, rewrite, or raise a GatewayError to end
        the stream with an error event in the client's dialect. To hold the stream (wait for
        an approval, say), return an awaitable: the relay waits for it before writing, and
        nothing else is buffered meanwhile. A plain call on the fast path: it runs for every
        group of events."""
        return None

    async def on_body(self, ex: Exchange, body: Body) -> None:
        """A whole answer about to be sent: pass or rewrite it."""

    async def on_response(self, ex: Exchange) -> None:
        """Runs after the answer is known, before a non-streamed one is sent (so it may add
        headers); after the last byte for streams."""

    async def after(self, ex: Exchange) -> None:
        """Runs once the answer has been sent: work the client should not wait for."""


def tollway_headers(ex: Exchange) -> dict[str, str]:
    h = {"x-tollway-request-id": ex.request_id}
    if ex.run.session:
        h["x-tollway-agent"] = ex.caller.agent
        h["x-tollway-session"] = ex.run.session
    t = ex.target
    if t.route is not None:
        h["x-tollway-model"] = t.route.name
        h["x-tollway-cache"] = ex.cache.served
        if t.rule:
            h["x-tollway-route"] = t.rule
    return h


def error_response(ex: Exchange, err: GatewayError) -> web.Response:
    headers = {**tollway_headers(ex), **err.headers}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(err.retry_after)))
    ex.outcome.status = err.status
    ex.outcome.error_code = err.code
    return web.Response(status=err.status, body=ex.endpoint.dialect.error_body(err),
                        content_type="application/json", headers=headers)


class Chain:
    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self.names = [s.name for s in stages]
        self._after = {s for s in stages if type(s).after is not Stage.after}
        self._responds = {s for s in stages if type(s).on_response is not Stage.on_response}

    async def run(self, ex: Exchange) -> web.StreamResponse:
        entered: list[Stage] = []
        response: web.StreamResponse | None = None
        try:
            for stage in self.stages:
                entered.append(stage)
                response = await stage.on_request(ex)
                if response is not None:
                    break
            if response is None:
                raise GatewayError(500, "no_answer", "no stage answered the request")
        except GatewayError as err:
            response = error_response(ex, err)
        except asyncio.CancelledError:
            ex.outcome.status = ex.outcome.status or 499
            # The handler is being torn down (shutdown past its drain timeout): what was
            # incurred is still recorded, in a task of its own.
            after = [s for s in reversed(entered) if s in self._after]
            if after:
                task = asyncio.ensure_future(self._run_after(ex, after))
                _background.add(task)
                task.add_done_callback(_background.discard)
            raise
        except Exception:
            log.exception("request %s failed inside the gateway", ex.request_id)
            response = error_response(ex, GatewayError(500, "internal_error",
                                                       "internal gateway error; see the log "
                                                       f"for request {ex.request_id}"))
        finally:
            if response is not None and not ex.outcome.status:
                ex.outcome.status = response.status
            for stage in reversed(entered):
                if stage not in self._responds:
                    continue
                try:
                    await stage.on_response(ex)
                except Exception:
                    log.exception("response hook of %s failed for %s", stage.name, ex.request_id)
        if not response.prepared:
            response.headers.update(ex.response_headers)
        after = [s for s in reversed(entered) if s in self._after]
        if after:
            if not response.prepared:  # send it now; aiohttp's own prepare is then a no-op
                try:
                    await response.prepare(ex.request)
                    await response.write_eof()
                except ConnectionError:
                    ex.outcome.client_disconnected = True
            await self._run_after(ex, after)
        return response

    async def _run_after(self, ex: Exchange, stages: list[Stage]) -> None:
        for stage in stages:
            try:
                await stage.after(ex)
            except Exception:
                log.exception("after hook of %s failed for %s", stage.name, ex.request_id)
