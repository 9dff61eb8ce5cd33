"""In-process fake of the OpenAI and Anthropic HTTP APIs.

The gateway's tests, the benchmark and the keyless "demo" provider all need an upstream that
speaks both dialects byte-for-byte like the real services, answers deterministically and costs
almost nothing per request. The dialect-specific bodies live in ``mock_openai`` and
``mock_anthropic``; this module holds the server, the shared turn logic and the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import re
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tollway.testing.local_server import LocalServer

__all__ = [
    "MOCK_MODELS",
    "MockProvider",
    "MockSettings",
    "RecordedRequest",
    "Turn",
    "main",
    "mock_token_count",
]

#: Model ids listed by ``GET /v1/models``; any other model name is accepted and echoed back.
MOCK_MODELS: tuple[str, ...] = ("mock-gpt", "mock-embedding", "mock-claude")

DEFAULT_REPLY_PREFIX = "This is tollway's demo model answering: "
MAX_RECORDED = 1000
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


@dataclass(slots=True)
class RecordedRequest:
    """What the mock received, so tests can assert on what the gateway forwarded upstream."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    raw: bytes = b""


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


def _float_header(headers: Any, name: str, default: float) -> float:
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
        "reply_override",
        "request",
        "seq",
        "settings",
    )

    def __init__(self, request: web.Request, body: Any, seq: int, settings: MockSettings) -> None:
        headers = request.headers
        self.request = request
        self.body: dict[str, Any] = body if isinstance(body, dict) else {}
        self.seq = seq
        self.created = int(time.time())
        self.settings = settings
        self.reply_override: str | None = headers.get("x-mock-reply", settings.reply)
        self.chunk_delay = _float_header(headers, "x-mock-chunk-delay-ms", settings.chunk_delay_ms)
        self.chunks = max(1, int(settings.chunks))
        raw = headers.get("x-mock-disconnect-after")
        self.disconnect_after: int | None = int(raw) if raw and raw.strip().isdigit() else None
        self.no_usage = headers.get("x-mock-no-usage", "").lower() in ("1", "true", "yes")
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

    @staticmethod
    def tool_arguments(last_user_text: str) -> str:
        """The deterministic arguments of the single tool call the mock makes."""
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


class MockProvider(LocalServer):
    """An aiohttp server imitating the OpenAI and Anthropic APIs for tests and demos."""

    what = "mock provider"

    def __init__(self, settings: MockSettings | None = None) -> None:
        self.settings: MockSettings = settings if settings is not None else MockSettings()
        self.requests: list[RecordedRequest] = []
        #: Streams whose client (the gateway) went away before the end: proof it cancelled.
        self.cancelled_streams = 0
        self._counter = itertools.count(1)
        super().__init__()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._dialects: tuple[_Dialect, _Dialect] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        """Build the aiohttp application (one catch-all route, dispatched by a dict)."""
        from tollway.testing import mock_anthropic, mock_openai

        self._dialects = (
            _Dialect(mock_openai.ROUTES, mock_openai.error_response),
            _Dialect(mock_anthropic.ROUTES, mock_anthropic.error_response),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app


    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Run the server on its own event loop in a daemon thread (for sync SDK clients)."""
        ready: concurrent.futures.Future[str] = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            try:
                ready.set_result(loop.run_until_complete(self.start(host, port)))
            except BaseException as exc:  # surface bind errors to the caller
                ready.set_exception(exc)
                loop.close()
                return
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="tollway-mock-provider", daemon=True)
        self._thread.start()
        return str(ready.result(timeout=10))

    def stop_thread(self) -> None:
        """Stop a server started with :meth:`start_in_thread` and join its thread."""
        loop, thread = self._thread_loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._thread = self._thread_loop = None

    # -- request handling ----------------------------------------------------------------------

    def _stream_cancelled(self) -> None:
        self.cancelled_streams += 1

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Record, authenticate, inject faults, then hand the turn to the dialect handler."""
        path = request.path
        method = request.method
        raw = await request.read() if request.body_exists else b""
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad_json = True
        headers = request.headers
        recorded = self.requests
        if len(recorded) >= MAX_RECORDED:
            del recorded[: len(recorded) - MAX_RECORDED + 1]
        recorded.append(
            RecordedRequest(method, path, {k.lower(): v for k, v in headers.items()}, body, raw)
        )

        dialects = self._dialects
        assert dialects is not None, "app() builds the dialect tables"
        anthropic = path.startswith("/v1/messages") or (
            path.startswith("/v1/models") and "anthropic-version" in headers
        )
        dialect = dialects[1] if anthropic else dialects[0]
        error = dialect.error
        route = dialect.routes.get((method, path))
        if route is None and method == "GET" and path.startswith("/v1/models/"):
            route = dialect.routes.get(("GET", "/v1/models/{id}"))
        settings = self.settings
        turn = Turn(request, body, next(self._counter), settings)
        turn.on_cancel = self._stream_cancelled
        extra = turn.extra_headers()

        latency = _float_header(headers, "x-mock-latency-ms", settings.latency_ms)
        if latency > 0:
            await asyncio.sleep(latency / 1000.0)

        key = settings.require_key
        if key is not None:
            auth = headers.get("authorization", "")
            given = auth[7:] if auth[:7].lower() == "bearer " else headers.get("x-api-key")
            if given != key:
                return error(401, "Invalid API key provided.", headers=extra)

        forced = headers.get("x-mock-status")
        if forced is None and settings.fail_models and isinstance(body, dict):
            failing = settings.fail_models.get(str(body.get("model")))
            forced = str(failing) if failing else None
        if forced is not None and forced.isdigit() and int(forced) >= 400:
            status = int(forced)
            if status in (429, 503, 529):
                extra["retry-after"] = headers.get("x-mock-retry-after", "1")
            return error(
                status, f"Injected failure with status {status} (x-mock-status).", headers=extra
            )

        if route is None:
            return dialects[0].error(404, f"Invalid URL ({method} {path})", headers=extra)
        if bad_json:
            return error(400, "We could not parse the JSON body of your request.", headers=extra)
        if body is not None and not isinstance(body, dict):
            return error(400, "The request body must be a JSON object.", headers=extra)

        if turn.disconnect_after is not None and not turn.body.get("stream"):
            await abort_connection(request)
            return web.Response(status=204)  # never reaches the client
        return await route(turn)


@dataclass(frozen=True, slots=True)
class _Dialect:
    """A dialect's route table and error-body factory."""

    routes: dict[tuple[str, str], Handler]
    error: ErrorFactory


# -- command line ------------------------------------------------------------------------------


async def _serve(provider: MockProvider, host: str, port: int) -> None:
    url = await provider.start(host, port)
    print(url, flush=True)  # the benchmark waits for this line before sending traffic
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await provider.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the mock standalone: ``python -m tollway.testing.mock_provider --port 9000``."""
    parser = argparse.ArgumentParser(
        prog="python -m tollway.testing.mock_provider",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--reply", default=None)
    parser.add_argument("--require-key", default=None)
    args = parser.parse_args(argv)
    settings = MockSettings(
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        chunks=args.chunks,
        reply=args.reply,
        require_key=args.require_key,
    )
    provider = MockProvider(settings)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(provider, args.host, args.port))
    else:
        uvloop.run(_serve(provider, args.host, args.port))
    return 0


if __name__ == "__main__":
    # Import the canonical module so the dialect modules and this entry point share one copy.
    from tollway.testing.mock_provider import main as _main

    raise SystemExit(_main())
