"""What the mock provider's server and its dialects share: the settings, one request's Turn,
token counting and stream splitting.

A module of its own so the dialect modules (``mock_openai``, ``mock_anthropic``) and the
server that dispatches to them (``mock_provider``) all import it and none imports another.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

#: Model ids listed by ``GET /v1/models``; any other model name is accepted and echoed back.
MOCK_MODELS: tuple[str, ...] = ("mock-gpt", "mock-embedding", "mock-claude")

DEFAULT_REPLY_PREFIX = "This is tollway's demo model answering: "
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"

_WORD_RE = re.compile(r"\S+\s*")

Handler = Callable[["Turn"], Awaitable[web.StreamResponse]]
ErrorFactory = Callable[..., web.Response]


def mock_token_count(text: str) -> int:
    """Count "tokens" as whitespace-separated words, so tests can predict usage exactly."""
    n = len(text.split())
    return n if n or not text else 1


@dataclass
class MockSettings:
    """Knobs shared by every request; tests may mutate them while the server runs."""

    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    chunks: int = 8
    reply: str | None = None
    require_key: str | None = None
    #: model id -> status: requests for these models fail (a deployment that is down).
    fail_models: dict[str, int] = field(default_factory=dict)
    #: merged into every chat completion's usage: a broken upstream's counts, for tests.
    usage_override: dict[str, Any] | None = None


def split_pieces(text: str, n: int) -> list[str]:
    """Split text into at most n word-aligned pieces whose concatenation is exactly ``text``."""
    if not text:
        return []
    words = _WORD_RE.findall(text)
    if not words:
        return [text]
    lead = len(text) - len(text.lstrip())
    if lead:
        words[0] = text[:lead] + words[0]
    k = max(1, min(n, len(words)))
    if k == len(words):
        return words
    size = len(words)
    return ["".join(words[i * size // k : (i + 1) * size // k]) for i in range(k)]


def split_chars(text: str, n: int) -> list[str]:
    """Split text (e.g. tool-call arguments JSON) into at most n character pieces."""
    if not text:
        return []
    k = max(1, min(n, len(text)))
    size = len(text)
    return [text[i * size // k : (i + 1) * size // k] for i in range(k)]


def first_words(text: str, n: int) -> str:
    """Return the first n words, whitespace-normalised."""
    return " ".join(text.split()[:n])


def float_header(headers: Any, name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        return default


class Turn:
    """One request's resolved controls plus the helpers every dialect handler needs."""

    __slots__ = (
        "body",
        "chunk_delay",
        "chunks",
        "created",
        "disconnect_after",
        "no_usage",
        "on_cancel",
        "preamble",
        "reply_override",
        "request",
        "seq",
        "settings",
        "tool_args",
    )

    def __init__(self, request: web.Request, body: Any, seq: int, settings: MockSettings) -> None:
        headers = request.headers
        self.request = request
        self.body: dict[str, Any] = body if isinstance(body, dict) else {}
        self.seq = seq
        self.created = int(time.time())
        self.settings = settings
        self.reply_override: str | None = headers.get("x-mock-reply", settings.reply)
        self.chunk_delay = float_header(headers, "x-mock-chunk-delay-ms", settings.chunk_delay_ms)
        self.chunks = max(1, int(settings.chunks))
        raw = headers.get("x-mock-disconnect-after")
        self.disconnect_after: int | None = int(raw) if raw and raw.strip().isdigit() else None
        self.no_usage = headers.get("x-mock-no-usage", "").lower() in ("1", "true", "yes")
        # A tool call's arguments (JSON), and text the model says before it (a preamble).
        self.tool_args: str | None = headers.get("x-mock-tool-arguments")
        self.preamble: str | None = headers.get("x-mock-preamble")
        self.on_cancel: Callable[[], None] | None = None

    @property
    def model(self) -> str:
        """The requested model, echoed back like the real services do."""
        model = self.body.get("model")
        return model if isinstance(model, str) else "mock-model"

    def reply(self, last_user_text: str, limit: Any) -> tuple[str, bool]:
        """Return (reply text, truncated?) honouring the override and a max-tokens limit."""
        if self.reply_override is not None:
            text = self.reply_override
        else:
            text = (DEFAULT_REPLY_PREFIX + first_words(last_user_text, 12)).rstrip()
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            words = text.split()
            if len(words) > limit:
                return " ".join(words[:limit]), True
        return text, False

    def tool_arguments(self, last_user_text: str) -> str:
        """The arguments of the single tool call the mock makes: x-mock-tool-arguments, else
        derived from the last user text."""
        if self.tool_args is not None:
            return self.tool_args
        return orjson.dumps({"query": first_words(last_user_text, 5)}).decode()

    async def send_events(self, events: Iterable[bytes]) -> web.StreamResponse:
        """Send SSE events honouring chunk delay and disconnect-after.

        Without delay or disconnect the whole stream goes out as one body, which keeps the
        benchmark's upstream cost negligible.
        """
        headers = {"cache-control": "no-cache", **self.extra_headers()}
        delay = self.chunk_delay / 1000.0
        cut = self.disconnect_after
        if delay <= 0 and cut is None:
            return web.Response(
                body=b"".join(events),
                content_type=None,
                headers={"content-type": SSE_TYPE, **headers},
            )
        resp = web.StreamResponse(headers={"content-type": SSE_TYPE, **headers})
        request = self.request
        try:
            await resp.prepare(request)
            for i, event in enumerate(events):
                if cut is not None and i >= cut:
                    break
                if i and delay > 0:
                    await asyncio.sleep(delay)
                await resp.write(event)
            if cut is not None:
                await abort_connection(request)
                return resp
            await resp.write_eof()
        except ConnectionError:
            if self.on_cancel is not None:
                self.on_cancel()  # the client went away mid-stream
        return resp

    def json(self, payload: Any, status: int = 200) -> web.Response:
        """A compact orjson response carrying the dialect's request-id header."""
        return web.Response(
            body=orjson.dumps(payload),
            status=status,
            content_type=JSON_TYPE,
            headers=self.extra_headers(),
        )

    def extra_headers(self) -> dict[str, str]:
        """Request-id headers both SDKs surface as ``_request_id``."""
        rid = f"req_mock{self.seq}"
        return {"x-request-id": rid, "request-id": rid}


async def abort_connection(request: web.Request) -> None:
    """Flush what was written, then reset the TCP connection without a terminating chunk."""
    transport = request.transport
    if transport is None:
        return
    for _ in range(200):  # bounded: loopback buffers drain within a few loop turns
        if transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.001)
    # No SO_LINGER reset: a plain close keeps already-sent events readable, so tests that count
    # the events received before the cut stay deterministic.
    transport.abort()
