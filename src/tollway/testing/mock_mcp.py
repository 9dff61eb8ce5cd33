"""An MCP server built with the official `mcp` SDK, served over Streamable HTTP in-process.

The gateway's MCP tests need a real server on the other side of /mcp/<server>: this one is
the SDK's own (`MCPServer`, FastMCP's successor in mcp 2.x) behind uvicorn, on a free
loopback port, in a thread with its own event loop, so tests drive it with the SDK's client
exactly as an agent would. Its tools are deterministic; `McpSettings` (shared, mutable while
the server runs) makes them fail in each of the ways a gateway must tell apart:

- `flaky` returns "ok", an `isError` result ("error"), or a JSON-RPC internal error
  ("raise"), as `McpSettings.flaky` says;
- `http_status` makes the HTTP server itself answer a tool's calls with that status (a 5xx
  from a crashed server or a proxy in front of it) before the SDK sees them;
- `slow` sleeps `McpSettings.slow_s` first (timeouts);
- `not_found` is always the tool's own "not found" error (`isError: true`);
- `query_db` is always the tool's own timeout error, with a new duration and request id in
  it each time (a retry storm's answer); `job_status` advances 5 points a call (progress).

Every request that reaches the HTTP server is recorded (method, headers, JSON body), and
every tool counts its calls, so tests can tell a call the gateway stopped from one that got
through. `pip install mcp` (the test extra) provides the SDK and uvicorn.
"""

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["McpSettings", "MockMcpServer", "RecordedMcpRequest"]


@dataclass
class McpSettings:
    """Knobs the tools read on every call; tests may change them while the server runs."""

    flaky: str = "ok"  # "ok" | "error" (isError result) | "raise" (JSON-RPC -32603)
    http_status: dict[str, int] = field(default_factory=dict)  # tool -> HTTP status
    slow_s: float = 0.0  # how long `slow` takes, and `chatty` between its notifications
    progress_steps: int = 2  # progress notifications `chatty` sends before its result


@dataclass(slots=True)
class RecordedMcpRequest:
    method: str
    headers: dict[str, str]  # lower-case names
    body: Any  # the parsed JSON body of a POST, else None


class _EventStore:
    """The smallest resumability store: every event of every stream, in memory."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []  # (event id, stream id, message)
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: str, message: Any) -> str:
        event_id = f"{next(self._ids)}"
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: Any) -> str | None:
        from mcp.server.streamable_http import EventMessage

        found = [i for i, (eid, _, _) in enumerate(self.events) if eid == last_event_id]
        if not found:
            return None
        stream = self.events[found[0]][1]
        for eid, sid, message in self.events[found[0] + 1:]:
            if sid == stream and message is not None:
                await send_callback(EventMessage(message, eid))
        return stream


class MockMcpServer:
    """`start()` serves the SDK's Streamable HTTP app and returns its URL; `stop()` ends it.

    json_response: answer each POST with one JSON body instead of an SSE stream.
    resumable: keep events for Last-Event-ID replays, so a tool may close its response
    stream mid-call (`poll`) and the client resumes it with a GET.
    """

    def __init__(self, settings: McpSettings | None = None, *, json_response: bool = False,
                 resumable: bool = False, name: str = "files") -> None:
        self.settings = settings or McpSettings()
        self.json_response = json_response
        self.resumable = resumable
        self.name = name
        self.calls: Counter[str] = Counter()  # tool -> calls that reached the tool
        self.requests: list[RecordedMcpRequest] = []
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # --- the MCP server ----------------------------------------------------------------
    def _build(self) -> Any:
        from mcp.server.mcpserver import Context, MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp.shared.exceptions import MCPError

        s = self.settings
        calls = self.calls
        mcp = MCPServer(self.name, log_level="WARNING")

        @mcp.tool()
        def echo(text: str) -> str:
            """Return the text unchanged."""
            calls["echo"] += 1
            return text

        @mcp.tool()
        def add(a: int, b: int) -> int:
            """Add two integers."""
            calls["add"] += 1
            return a + b

        @mcp.tool()
        def flaky() -> str:
            """Succeed or fail as the test says."""
            calls["flaky"] += 1
            if s.flaky == "error":
                raise ToolError("flaky failed (its own error)")
            if s.flaky == "raise":
                raise MCPError(code=-32603, message="flaky crashed the server")
            return "ok"

        @mcp.tool()
        def flaky_backup() -> str:
            """The fallback of flaky."""
            calls["flaky_backup"] += 1
            return "from the backup"

        @mcp.tool()
        def not_found(id: str) -> str:
            """Always the tool's own error: there is no such record."""
            calls["not_found"] += 1
            raise ToolError(f"record {id!r} not found")

        @mcp.tool()
        def query_db(sql: str) -> str:
            """Always times out, saying so with a new duration and request id each time."""
            calls["query_db"] += 1
            raise ToolError(f"database timeout after {30000 + calls['query_db'] * 37} ms "
                            f"(req {uuid.uuid4().hex[:12]})")

        @mcp.tool()
        def job_status(job: str) -> str:
            """A job 5 points further on each call, checked at a fresh time."""
            calls["job_status"] += 1
            done = min(100, 5 * calls["job_status"])
            return (f"job {job}: {done}% (checked {time.strftime('%H:%M:%S')}, "
                    f"req {uuid.uuid4().hex[:12]})")

        @mcp.tool()
        def delete_file(path: str) -> str:
            """Pretend to delete a file."""
            calls["delete_file"] += 1
            return f"deleted {path}"

        @mcp.tool()
        async def slow(text: str) -> str:
            """Answer after McpSettings.slow_s seconds."""
            calls["slow"] += 1
            await asyncio.sleep(s.slow_s)
            return text

        @mcp.tool()
        async def chatty(text: str, ctx: Context) -> str:
            """Send progress notifications on the response stream before the result (when
            the call asks for progress)."""
            calls["chatty"] += 1
            for i in range(s.progress_steps):
                if i:
                    await asyncio.sleep(s.slow_s)
                await ctx.report_progress(i + 1, s.progress_steps, f"step {i + 1} of {text}")
            return f"done: {text}"

        @mcp.tool()
        async def poll(text: str, ctx: Context) -> str:
            """Close the response stream (the client resumes it with a GET), then answer."""
            calls["poll"] += 1
            await ctx.close_sse_stream()
            await asyncio.sleep(0.2)
            return f"polled: {text}"

        return mcp

    def _app(self) -> Any:
        mcp = self._build()
        store = _EventStore() if self.resumable else None
        inner = mcp.streamable_http_app(json_response=self.json_response, event_store=store,
                                        retry_interval=50 if store else None)
        settings = self.settings
        requests = self.requests

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            """Records each request, and answers a tool's calls with a configured status."""
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
                if message["type"] == "http.disconnect":
                    return
            raw = b"".join(chunks)
            try:
                body = json.loads(raw) if raw else None
            except (ValueError, RecursionError):
                body = None
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            requests.append(RecordedMcpRequest(scope["method"], headers, body))
            if isinstance(body, dict) and body.get("method") == "tools/call":
                params = body.get("params")
                # malformed params are the real server's to refuse (the fuzzer sends them)
                tool = params.get("name") if isinstance(params, dict) else None
                status = settings.http_status.get(tool)
                if status:
                    await send({"type": "http.response.start", "status": status,
                                "headers": [(b"content-type", b"text/plain")]})
                    await send({"type": "http.response.body",
                                "body": f"injected HTTP {status} for {tool}".encode()})
                    return
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": raw, "more_body": False}
                return await receive()

            await inner(scope, replay, send)

        return app

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> str:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=1, ws="none")
        self._server = server = uvicorn.Server(config)

        def run() -> None:
            asyncio.run(server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=run, name="mock-mcp", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the mock MCP server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}/mcp"
        return self.url

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(5)
        if self._thread.is_alive():
            self._server.force_exit = True
            with contextlib.suppress(Exception):
                self._thread.join(5)
        self._server = self._thread = None

    def tool_calls(self, method: str = "tools/call") -> list[Any]:
        """The JSON bodies of the recorded requests for `method`."""
        return [r.body for r in self.requests
                if isinstance(r.body, dict) and r.body.get("method") == method]
