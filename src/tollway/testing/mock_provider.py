"""In-process fake of the OpenAI and Anthropic HTTP APIs.

The gateway's tests, the benchmark and the keyless "demo" provider all need an upstream that
speaks both dialects byte-for-byte like the real services, answers deterministically and costs
almost nothing per request. The dialect-specific bodies live in ``mock_openai`` and
``mock_anthropic``, what they share with the server in ``mock_common``; this module holds the
server and the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import signal
import threading
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tollway.testing import mock_anthropic, mock_bedrock, mock_gemini, mock_openai
from tollway.testing.local_server import LocalServer

# Re-exported: they were defined here before ``mock_common`` existed, and tests import them
# from this module.
from tollway.testing.mock_common import DEFAULT_REPLY_PREFIX as DEFAULT_REPLY_PREFIX
from tollway.testing.mock_common import JSON_TYPE as JSON_TYPE
from tollway.testing.mock_common import MOCK_MODELS as MOCK_MODELS
from tollway.testing.mock_common import SSE_TYPE as SSE_TYPE
from tollway.testing.mock_common import ErrorFactory as ErrorFactory
from tollway.testing.mock_common import Handler as Handler
from tollway.testing.mock_common import MockSettings as MockSettings
from tollway.testing.mock_common import Turn as Turn
from tollway.testing.mock_common import abort_connection as abort_connection
from tollway.testing.mock_common import first_words as first_words
from tollway.testing.mock_common import float_header
from tollway.testing.mock_common import mock_token_count as mock_token_count
from tollway.testing.mock_common import split_chars as split_chars
from tollway.testing.mock_common import split_pieces as split_pieces

__all__ = [
    "MOCK_MODELS",
    "MockProvider",
    "MockSettings",
    "RecordedRequest",
    "Turn",
    "main",
    "mock_token_count",
]

MAX_RECORDED = 1000


@dataclass(slots=True)
class RecordedRequest:
    """What the mock received, so tests can assert on what the gateway forwarded upstream."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    raw: bytes = b""


class MockProvider(LocalServer):
    """An aiohttp server imitating the OpenAI and Anthropic APIs for tests and demos."""

    what = "mock provider"

    def __init__(self, settings: MockSettings | None = None) -> None:
        self.settings: MockSettings = settings if settings is not None else MockSettings()
        self.requests: list[RecordedRequest] = []  # the last MAX_RECORDED
        self.received = 0  # every request, for counting what an upstream served
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
        self._dialects = (
            _Dialect(mock_openai.ROUTES, mock_openai.error_response),
            _Dialect(mock_anthropic.ROUTES, mock_anthropic.error_response),
            _Dialect({}, mock_gemini.error_response),
            _Dialect({}, mock_bedrock.error_response),
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
        self.received += 1
        recorded = self.requests
        if len(recorded) >= MAX_RECORDED:
            del recorded[: len(recorded) - MAX_RECORDED + 1]
        recorded.append(
            RecordedRequest(method, path, {k.lower(): v for k, v in headers.items()}, body, raw)
        )

        if path == "/token" and method == "POST":  # Google's OAuth, for Vertex AI
            return await mock_gemini.token(request)
        dialects = self._dialects
        assert dialects is not None, "app() builds the dialect tables"
        anthropic = path.startswith("/v1/messages") or (
            path.startswith("/v1/models") and "anthropic-version" in headers
        )
        gemini = mock_gemini.is_gemini(path)
        claude = mock_gemini.is_vertex_claude(path)  # Anthropic on Vertex AI: rawPredict
        anthropic = anthropic or claude
        bedrock = mock_bedrock.is_bedrock(path)
        dialect = (dialects[3] if bedrock else dialects[2] if gemini else
                   dialects[1] if anthropic else dialects[0])
        error = dialect.error
        route = (mock_gemini.handle if gemini and method == "POST" else
                 mock_bedrock.handle if bedrock and method == "POST" else
                 dialect.routes.get((method, "/v1/messages" if claude else path)))
        if route is None and method == "GET" and path.startswith("/v1/models/"):
            route = dialect.routes.get(("GET", "/v1/models/{id}"))
        settings = self.settings
        turn = Turn(request, body, next(self._counter), settings)
        turn.on_cancel = self._stream_cancelled
        extra = turn.extra_headers()

        latency = float_header(headers, "x-mock-latency-ms", settings.latency_ms)
        if latency > 0:
            await asyncio.sleep(latency / 1000.0)

        key = settings.require_key
        if key is not None:
            auth = headers.get("authorization", "")
            given = (auth[7:] if auth[:7].lower() == "bearer "
                     else headers.get("x-api-key") or headers.get("x-goog-api-key"))
            if given != key:
                return error(401, "Invalid API key provided.", headers=extra)

        forced = headers.get("x-mock-status")
        if claude and isinstance(body, dict):
            if body.get("anthropic_version") != "vertex-2023-10-16" or "model" in body:
                return error(400, "Vertex AI takes anthropic_version vertex-2023-10-16 "
                                  "in the body and the model in the URL", headers=extra)
            body["model"] = mock_gemini.model_of(path)[0]
            body["stream"] = path.endswith(":streamRawPredict")
        if forced is None and settings.fail_models and isinstance(body, dict):
            asked = (mock_gemini.model_of(path)[0] if gemini else
                     mock_bedrock.model_of(path) if bedrock else body.get("model"))
            failing = settings.fail_models.get(str(asked))
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

        streamed = bool(turn.body.get("stream")) or path.endswith((
            ":streamGenerateContent", ":streamRawPredict", "/converse-stream"))
        if turn.disconnect_after is not None and not streamed:
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
    raise SystemExit(main())
