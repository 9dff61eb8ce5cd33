"""What a stream that did not end well is billed: what the upstream produced, no more, no less.

Measured before: a stream whose upstream failed before its first byte was billed its prompt
as input (the same failure not streamed recorded $0), and a stream the client left was
recorded about 5% under what the upstream had sent (the bytes still in the socket when the
gateway closed it were never counted).
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import orjson
import pytest
from aiohttp import web

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import MSG, wait_until
from tollway.testing.local_server import LocalServer

AUTH = {"Authorization": "Bearer sk-tw-support", "Content-Type": "application/json"}


def _steps(s: Stack) -> list[dict]:  # type: ignore[type-arg]
    sessions = s.admin.get("/admin/sessions").json()["sessions"]
    return [st for se in sessions
            for st in s.admin.get(f"/admin/sessions/{se['session']}").json()["steps"]]


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_failing_before_its_first_byte_costs_nothing(stack: Stack,
                                                                   stream: bool) -> None:
    stack.mock.settings.fail_models = {"gpt-4o-mini": 500}
    r = httpx.post(stack.url + "/v1/chat/completions", headers=AUTH, content=orjson.dumps(
        {"model": "gpt-4o-mini", "messages": MSG, "stream": stream}))
    assert r.status_code == 500
    wait_until(lambda: len(_steps(stack)) == 1)
    step = _steps(stack)[0]
    assert step["cost_usd"] == 0 and step["input_tokens"] == 0 and step["output_tokens"] == 0


class BurstUpstream(LocalServer):
    """An OpenAI-style upstream that sends one event, waits for the test's word, then sends the
    rest of a long answer at once (megabytes: it arrives as many network reads) with its usage,
    and keeps the connection open."""

    what = "burst upstream"

    def __init__(self, events: int) -> None:
        super().__init__()
        self.events = events
        self.go = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def event(delta: dict, **extra: object) -> bytes:  # type: ignore[type-arg]
            return b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk",
                                             "created": 1, "model": "m", "choices": [
                                                 {"index": 0, "delta": delta,
                                                  "finish_reason": None}], **extra}) + b"\n\n"
        await resp.write(event({"role": "assistant", "content": "Once"}))
        await self.go.wait()
        burst = b"".join(event({"content": f" word{i}"}) for i in range(self.events))
        usage = {"prompt_tokens": 7, "completion_tokens": 2 * self.events + 1,
                 "total_tokens": 2 * self.events + 8}
        burst += (b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk",
                                            "created": 1, "model": "m", "choices": [],
                                            "usage": usage}) + b"\n\ndata: [DONE]\n\n")
        with contextlib.suppress(ConnectionError):
            await resp.write(burst)
            await asyncio.sleep(30)  # keeps the connection open: the gateway closes it
        return resp


def test_a_client_that_leaves_pays_for_what_the_upstream_sent(make_stack, bg_loop) -> None:  # type: ignore[no-untyped-def]
    """The client leaves after the first event; then the upstream's rest arrives at once.
    All of it had arrived before the gateway closed the upstream: all of it is paid for,
    at the upstream's own usage."""
    events = 20_000
    upstream = BurstUpstream(events)
    url = bg_loop.run(upstream.start())
    s = make_stack(providers_extra=f"  burst: {{kind: openai, base_url: \"{url}/v1\", "
                                   "api_key: k}\n",
                   models_extra="  bursty: {provider: burst, model: m, "
                                "price: {input: 1, output: 1}}\n")
    try:
        body = {"model": "bursty", "messages": MSG, "stream": True}
        with httpx.Client(timeout=10) as h, h.stream(
                "POST", s.url + "/v1/chat/completions", content=orjson.dumps(body),
                headers=AUTH) as r:
            assert r.status_code == 200
            next(r.iter_lines())
        s.loop.loop.call_soon_threadsafe(upstream.go.set)
        wait_until(lambda: len(_steps(s)) == 1)
        step = _steps(s)[0]
        assert step["status"] == 499
        assert step["usage_source"] == "upstream" and step["output_tokens"] == 2 * events + 1
    finally:
        bg_loop.run(upstream.stop())
