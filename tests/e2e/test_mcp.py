"""MCP through the gateway, driven by the official `mcp` SDK client against a server built
with the same SDK: tool lists filtered by policy, calls gated and counted, per-tool circuit
breakers (on the memory state and on Redis), a tool's own errors, fallbacks, loops,
timeouts and resumed streams, with the server answering JSON or SSE."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ErrorData

from tests.conftest import Loop, Stack
from tests.e2e.test_stream_cuts import wait_until
from tollway.testing.mock_mcp import MockMcpServer

BREAKER = ("{consecutive_failures: 2, open_s: 0.5, failure_rate: 1.0, min_requests: 100, "
           "window_s: 60}")

POLICY = """
rules:
  - name: support-files
    agents: [support-bot]
    allow:
      tools: ["files/echo", "files/add"]
"""


class Agent:
    """An MCP client session through the gateway, on its own event loop, so synchronous test
    code can call tools and wait_until() between calls."""

    def __init__(self, url: str, key: str, modern: bool = False) -> None:
        self.url = url
        self.key = key
        self.modern = modern  # 2026-07-28: no handshake, no session, one request per POST
        self.loop = Loop()
        self.session: ClientSession | None = None
        self._closing: asyncio.Event | None = None
        self.progress: list[tuple[float, float | None, str | None]] = []
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._main = asyncio.run_coroutine_threadsafe(self._run(ready), self.loop.loop)
        ready.result(30)

    async def _run(self, ready: concurrent.futures.Future[None]) -> None:
        self._closing = asyncio.Event()
        try:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.key}"}) as h:
                async with streamable_http_client(self.url, http_client=h) as (read, write):
                    async with ClientSession(read, write) as session:
                        if self.modern:
                            await session.discover()
                        else:
                            await session.initialize()
                        self.session = session
                        ready.set_result(None)
                        await self._closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def tools(self) -> list[str]:
        assert self.session is not None
        return sorted(t.name for t in self.loop.run(self.session.list_tools()).tools)

    def start_call(self, name: str, args: dict[str, Any] | None = None,
                   progress: bool = False) -> concurrent.futures.Future[CallToolResult]:
        assert self.session is not None

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            self.progress.append((p, total, message))

        return asyncio.run_coroutine_threadsafe(self.session.call_tool(
            name, args or {}, progress_callback=on_progress if progress else None),
            self.loop.loop)

    def call(self, name: str, args: dict[str, Any] | None = None,
             progress: bool = False) -> CallToolResult:
        return self.start_call(name, args, progress).result(30)

    def error(self, name: str, args: dict[str, Any] | None = None) -> ErrorData:
        """The JSON-RPC error a call gets."""
        with pytest.raises(MCPError) as e:
            self.call(name, args)
        return e.value.error

    def close(self) -> None:
        if not self.loop.thread.is_alive():
            return
        if self._closing is not None:
            self.loop.loop.call_soon_threadsafe(self._closing.set)
            try:
                self._main.result(15)
            except Exception:
                pass
        self.loop.close()


@pytest.fixture(params=["sse", "json"])
def mcp_server(request: pytest.FixtureRequest) -> Iterator[MockMcpServer]:
    """The SDK's server, answering POSTs with SSE streams or with JSON bodies."""
    server = MockMcpServer(json_response=request.param == "json")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def agents() -> Iterator[Callable[..., Agent]]:
    made: list[Agent] = []

    def make(stack: Stack, key: str = "sk-tw-support", server: str = "files",
             modern: bool = False) -> Agent:
        a = Agent(f"{stack.url}/mcp/{server}", key, modern)
        made.append(a)
        return a
    yield make
    for a in made:
        a.close()


def servers(url: str, body: str = "", **more: str) -> str:
    """An `mcp_servers:` section: `files` at url with `body` in its mapping, and others."""
    out = f"mcp_servers:\n  files: {{url: \"{url}\", headers: {{X-Upstream-Key: mcp-secret}}"
    out += f"{', ' + body if body else ''}}}\n"
    for name, spec in more.items():
        out += f"  {name}: {{url: \"{url}\", {spec}}}\n"
    return out


def text(result: CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def calls_of(server: MockMcpServer, tool: str) -> int:
    return sum(1 for b in server.tool_calls() if b["params"]["name"] == tool)


def breaker(stack: Stack, target: str) -> dict[str, Any]:
    views = stack.admin.get("/admin/breakers").json()["breakers"]
    return next((v for v in views if v["target"] == target), {"state": "closed"})


# --- listing and policies ---------------------------------------------------------------------
def test_tools_list_is_filtered_by_policy(make_stack: Callable[..., Stack],
                                          mcp_server: MockMcpServer, agents: Callable[..., Agent],
                                          tmp_path: Any) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    stack = make_stack(extra=servers(mcp_server.url) + f'policies: ["{policy}"]\n')
    support = agents(stack, "sk-tw-support")
    research = agents(stack, "sk-tw-research")
    assert support.tools() == ["add", "echo"]
    everything = research.tools()
    assert {"echo", "add", "delete_file", "flaky", "not_found"} <= set(everything)
    assert len(everything) == 11  # every tool of the server: nothing dropped for research

    err = support.error("delete_file", {"path": "/etc/passwd"})
    assert err.code == -32052 and err.data["tollway_code"] == "policy_denied"
    assert err.data["tool"] == "files/delete_file" and "files/delete_file" in err.message
    assert calls_of(mcp_server, "delete_file") == 0  # refused before the server saw it
    assert stack.metric("tollway_tool_calls_total", tool="files/delete_file",
                        outcome="denied") == 1
    # the other agent may
    assert text(research.call("delete_file", {"path": "/tmp/x"})) == "deleted /tmp/x"
    assert calls_of(mcp_server, "delete_file") == 1


def test_unknown_server_and_unreachable_server(make_stack: Callable[..., Stack],
                                               mcp_server: MockMcpServer) -> None:
    from tests.conftest import free_port

    stack = make_stack(extra=servers(mcp_server.url,
                                     down=f'url: "http://127.0.0.1:{free_port()}/mcp", '
                                          'connect_timeout_s: 2'))
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    r = httpx.post(f"{stack.url}/mcp/nope", json=init, headers=accept)
    assert r.status_code == 404
    body = r.json()
    assert body["id"] == 1 and body["error"]["code"] == -32059
    assert "'nope'" in body["error"]["message"] and "down, files" in body["error"]["message"]
    r = httpx.post(f"{stack.url}/mcp/down", json=init, headers=accept)
    assert r.status_code == 502
    assert r.json()["error"]["data"]["tollway_code"] == "upstream_error"
    assert "'down'" in r.json()["error"]["message"]


# --- calls ------------------------------------------------------------------------------------
def test_calls_pass_through_counted_and_charged(make_stack: Callable[..., Stack],
                                                mcp_server: MockMcpServer,
                                                agents: Callable[..., Agent]) -> None:
    stack = make_stack(extra=servers(mcp_server.url, "cost_usd: 0.01",
                                     ) + "budgets: {agents: {support-bot: {usd: 10}}}\n")
    a = agents(stack)
    r = a.call("echo", {"text": "hello, world"})
    assert text(r) == "hello, world" and not r.is_error
    assert r.structured_content == {"result": "hello, world"}
    assert text(a.call("add", {"a": 2, "b": 40})) == "42"
    # several messages in one answer: progress notifications, then the result
    r = a.call("chatty", {"text": "job"}, progress=True)
    assert text(r) == "done: job"
    if not mcp_server.json_response:  # a JSON answer has no room for notifications
        assert [m for _, _, m in a.progress] == ["step 1 of job", "step 2 of job"]

    assert stack.metric("tollway_tool_calls_total", tool="files/echo", outcome="ok") == 1
    assert stack.metric("tollway_tool_calls_total", tool="files/add", outcome="ok") == 1
    assert stack.metric("tollway_tool_calls_total", tool="files/chatty", outcome="ok") == 1
    rows = {r["key"]: r for r in stack.admin.get("/admin/spend?by=agent").json()["rows"]}
    assert rows["support-bot"]["cost_usd"] == pytest.approx(0.03)
    # the caller's key stays at the gateway; the server's own credentials are added
    for req in mcp_server.requests:
        assert "authorization" not in req.headers
        assert req.headers.get("x-upstream-key") == "mcp-secret"
    posts = [r for r in mcp_server.requests if r.method == "POST"]
    assert all("mcp-session-id" in r.headers for r in posts[1:])  # the session, both ways
    assert posts[-1].headers.get("mcp-protocol-version") == "2025-11-25"
    session_id = posts[-1].headers["mcp-session-id"]
    # the standalone GET stream, and the DELETE that ends the session, go through too
    wait_until(lambda: any(r.method == "GET" for r in mcp_server.requests))
    a.close()
    wait_until(lambda: any(r.method == "DELETE" and r.headers.get("mcp-session-id") ==
                           session_id for r in mcp_server.requests))


def test_unknown_key_is_refused_in_json_rpc(make_stack: Callable[..., Stack],
                                            mcp_server: MockMcpServer) -> None:
    stack = make_stack(extra=servers(mcp_server.url), unknown_keys="reject")
    r = httpx.post(f"{stack.url}/mcp/files", json={"jsonrpc": "2.0", "id": 7, "method": "ping"},
                   headers={"Accept": "application/json, text/event-stream",
                            "Authorization": "Bearer sk-not-a-key"})
    assert r.status_code == 401
    assert r.json()["id"] == 7 and r.json()["error"]["code"] == -32051
    assert r.json()["error"]["data"]["tollway_code"] == "invalid_api_key"
    assert mcp_server.requests == []


def test_tool_error_trips_the_breaker_only_when_configured(
        make_stack: Callable[..., Stack], mcp_server: MockMcpServer,
        agents: Callable[..., Agent]) -> None:
    stack = make_stack(extra=servers(
        mcp_server.url, f"breaker: {BREAKER}",
        strict=f"breaker: {BREAKER}, tools: {{not_found: {{fail_on_error: true}}}}"))
    lenient = agents(stack, server="files")
    for _ in range(4):  # the tool's own "not found" is an answer, not a failure
        r = lenient.call("not_found", {"id": "42"})
        assert r.is_error and "not found" in text(r)
    assert calls_of(mcp_server, "not_found") == 4
    assert stack.metric("tollway_tool_calls_total", tool="files/not_found",
                        outcome="tool_error") == 4
    assert breaker(stack, "tool:files/not_found")["state"] == "closed"

    strict = agents(stack, server="strict")
    for _ in range(2):
        assert strict.call("not_found", {"id": "42"}).is_error
    err = strict.error("not_found", {"id": "42"})
    assert err.code == -32054 and err.data["tool"] == "strict/not_found"
    assert calls_of(mcp_server, "not_found") == 6  # the third never reached the server
    assert stack.metric("tollway_tool_calls_total", tool="strict/not_found",
                        outcome="failure") == 2


# --- breakers, on both state backends ---------------------------------------------------------
@pytest.fixture
def sse_server() -> Iterator[MockMcpServer]:
    server = MockMcpServer()
    server.start()
    yield server
    server.stop()


def test_breaker_opens_fails_fast_half_opens_and_closes(
        make_any_stack: Callable[..., Stack], sse_server: MockMcpServer,
        agents: Callable[..., Agent]) -> None:
    srv = sse_server
    stack = make_any_stack(extra=servers(srv.url, f"breaker: {BREAKER}"))
    a = agents(stack)
    srv.settings.http_status = {"flaky": 500}  # the HTTP server itself fails
    err = a.error("flaky")
    assert err.code == -32057 and err.data["tool"] == "files/flaky"
    assert "500" in err.message and "files/flaky" in err.message
    srv.settings.http_status = {}
    srv.settings.flaky = "raise"  # a JSON-RPC internal error from the server
    err = a.error("flaky")
    assert err.code == -32603  # the server's own error, passed through
    assert calls_of(srv, "flaky") == 2
    wait_until(lambda: breaker(stack, "tool:files/flaky")["state"] == "open")

    srv.settings.flaky = "ok"
    err = a.error("flaky")  # fails fast, in the protocol's shape, without the server
    assert err.code == -32054 and err.data["tollway_code"] == "breaker_open"
    assert err.data["tool"] == "files/flaky" and 0 < err.data["retry_after_s"] <= 1
    assert "files/flaky" in err.message and "tried again in" in err.message
    assert calls_of(srv, "flaky") == 2
    assert a.call("echo", {"text": "other tools are fine"}).content  # per tool, not server

    def probe_succeeds() -> bool:
        try:
            return text(a.call("flaky")) == "ok"
        except MCPError as e:
            assert e.error.data["tollway_code"] == "breaker_open"
            return False

    wait_until(probe_succeeds)  # half-open after open_s: one probe, which succeeds
    assert calls_of(srv, "flaky") == 3
    wait_until(lambda: breaker(stack, "tool:files/flaky")["state"] == "closed")
    assert text(a.call("flaky")) == "ok"
    assert stack.metric("tollway_breaker_transitions_total", target="tool:files/flaky",
                        to_state="closed") == 1
    assert stack.metric("tollway_tool_calls_total", tool="files/flaky",
                        outcome="failure") == 2


def test_fallback_tool_while_breaker_open(make_any_stack: Callable[..., Stack],
                                          sse_server: MockMcpServer,
                                          agents: Callable[..., Agent]) -> None:
    srv = sse_server
    stack = make_any_stack(extra=servers(
        srv.url, f"breaker: {BREAKER}, tools: {{flaky: {{fallback: flaky_backup}}}}"))
    a = agents(stack)
    srv.settings.flaky = "raise"
    for _ in range(2):
        assert a.error("flaky").code == -32603
    wait_until(lambda: breaker(stack, "tool:files/flaky")["state"] == "open")
    assert text(a.call("flaky")) == "from the backup"
    assert calls_of(srv, "flaky") == 2 and calls_of(srv, "flaky_backup") == 1
    assert stack.metric("tollway_tool_calls_total", tool="files/flaky",
                        outcome="breaker_open") == 1
    assert stack.metric("tollway_tool_calls_total", tool="files/flaky_backup",
                        outcome="ok") == 1


# --- loops, timeouts, resumed streams ---------------------------------------------------------
def test_repeated_tool_call_is_halted(make_stack: Callable[..., Stack],
                                      mcp_server: MockMcpServer,
                                      agents: Callable[..., Agent]) -> None:
    stack = make_stack(extra=servers(mcp_server.url)
                       + "loops: {repeated_tool_call: {threshold: 3}}\n")
    a = agents(stack)
    for _ in range(3):
        assert text(a.call("echo", {"text": "again"})) == "again"
    err = a.error("echo", {"text": "again"})
    assert err.code == -32053 and err.data["tollway_code"] == "loop_detected"
    assert "files/echo" in err.message
    assert calls_of(mcp_server, "echo") == 3
    assert text(a.call("echo", {"text": "something new"})) == "something new"
    # another MCP session is another gateway session: it starts afresh
    assert text(agents(stack).call("echo", {"text": "again"})) == "again"
    assert stack.metric("tollway_tool_calls_total", tool="files/echo", outcome="loop") == 1


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_no_progress_halts_a_retry_storm_not_a_poller(make_stack: Callable[..., Stack],
                                                      mcp_server: MockMcpServer,
                                                      agents: Callable[..., Agent],
                                                      backend: str,
                                                      request: pytest.FixtureRequest) -> None:
    kw = {"backend": "redis", "redis_url": request.getfixturevalue("redis_url")} \
        if backend == "redis" else {}
    stack = make_stack(extra=servers(mcp_server.url) + "loops: {no_progress: {threshold: 3}}\n",
                       **kw)
    a = agents(stack)
    for i in range(3):  # new SQL each time, the same timeout (new duration, new request id)
        result = a.call("query_db", {"sql": f"select {i}"})
        assert result.is_error and "database timeout after" in text(result)
    err = a.error("query_db", {"sql": "select 3"})
    assert err.code == -32053 and err.data["tollway_code"] == "loop_detected"
    assert "no_progress" in err.message and "files/query_db" in err.message
    assert "database timeout after <dur> (req <id>)" in err.message
    assert calls_of(mcp_server, "query_db") == 3
    for _ in range(8):  # a job that advances is never halted
        assert "%" in text(a.call("job_status", {"job": "j1"}))
    assert stack.metric("tollway_loops_detected_total", detector="no_progress") == 1


def test_timeout_is_a_failure_naming_the_tool(make_stack: Callable[..., Stack],
                                              mcp_server: MockMcpServer,
                                              agents: Callable[..., Agent]) -> None:
    stack = make_stack(extra=servers(mcp_server.url, "timeout_s: 0.3"))
    a = agents(stack)
    mcp_server.settings.slow_s = 2.0
    err = a.error("slow", {"text": "late"})
    assert err.code == -32058 and err.data["tool"] == "files/slow"
    assert "files/slow" in err.message
    assert stack.metric("tollway_tool_calls_total", tool="files/slow", outcome="failure") == 1
    mcp_server.settings.slow_s = 0.0
    assert text(a.call("slow", {"text": "on time"})) == "on time"


def test_client_gone_mid_stream_still_settles(make_stack: Callable[..., Stack],
                                              sse_server: MockMcpServer,
                                              agents: Callable[..., Agent]) -> None:
    """The agent abandons a call mid-stream (at 2026-07-28 that closes the POST): the call
    was made, so it is counted and charged, but it says nothing about the tool's health."""
    srv = sse_server
    srv.settings.slow_s, srv.settings.progress_steps = 0.2, 50
    stack = make_stack(extra=servers(srv.url, f"cost_usd: 0.25, breaker: {BREAKER}"))
    a = agents(stack, modern=True)
    pending = a.start_call("chatty", {"text": "long"}, progress=True)
    wait_until(lambda: len(a.progress) >= 1)  # the stream is flowing through the gateway
    pending.cancel()
    wait_until(lambda: stack.metric("tollway_tool_calls_total", tool="files/chatty",
                                    outcome="cancelled") == 1)
    rows = {r["key"]: r for r in stack.admin.get("/admin/spend?by=agent").json()["rows"]}
    assert rows["support-bot"]["cost_usd"] == pytest.approx(0.25)
    assert stack.metric("tollway_tool_calls_total", tool="files/chatty") == 1
    assert breaker(stack, "tool:files/chatty")["state"] == "closed"
    assert text(a.call("echo", {"text": "still here"})) == "still here"


@pytest.fixture
def resumable_server() -> Iterator[MockMcpServer]:
    server = MockMcpServer(resumable=True)
    server.start()
    yield server
    server.stop()


def test_resumed_stream_settles_the_call(make_stack: Callable[..., Stack],
                                         resumable_server: MockMcpServer,
                                         agents: Callable[..., Agent]) -> None:
    """The server closes the call's stream (SSE polling); the client resumes it with a GET
    and Last-Event-ID through the gateway, which settles the call from that stream."""
    server = resumable_server
    stack = make_stack(extra=servers(server.url, "cost_usd: 0.5"))
    a = agents(stack)
    assert text(a.call("poll", {"text": "x"})) == "polled: x"
    assert any(r.method == "GET" and "last-event-id" in r.headers for r in server.requests)
    assert stack.metric("tollway_tool_calls_total", tool="files/poll", outcome="ok") == 1
    rows = {r["key"]: r for r in stack.admin.get("/admin/spend?by=agent").json()["rows"]}
    assert rows["support-bot"]["cost_usd"] == pytest.approx(0.5)


def test_modern_protocol_per_request_envelope(make_stack: Callable[..., Stack],
                                              mcp_server: MockMcpServer,
                                              agents: Callable[..., Agent], tmp_path: Any) -> None:
    """2026-07-28: no initialize, no Mcp-Session-Id; each POST names its method and tool in
    headers (Mcp-Method, Mcp-Name), which a fallback must keep in step with the body."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace('"files/add"', '"files/add", "files/flaky*"'))
    stack = make_stack(extra=servers(
        mcp_server.url, f"breaker: {BREAKER}, tools: {{flaky: {{fallback: flaky_backup}}}}")
        + f'policies: ["{policy}"]\n')
    a = agents(stack, modern=True)
    assert a.tools() == ["add", "echo", "flaky", "flaky_backup"]
    assert text(a.call("add", {"a": 1, "b": 2})) == "3"
    assert a.error("delete_file", {"path": "x"}).data["tollway_code"] == "policy_denied"
    mcp_server.settings.flaky = "raise"
    for _ in range(2):
        assert a.error("flaky").code == -32603
    wait_until(lambda: breaker(stack, "tool:files/flaky")["state"] == "open")
    assert text(a.call("flaky")) == "from the backup"
    sent = mcp_server.tool_calls()[-1]
    assert sent["params"]["name"] == "flaky_backup"
    last = [r for r in mcp_server.requests if r.method == "POST"][-1]
    assert last.headers["mcp-name"] == "flaky_backup"
    assert last.headers["mcp-method"] == "tools/call"
    assert "mcp-session-id" not in last.headers


def test_sse_events_survive_any_network_split() -> None:
    """The relay rewrites whole events; the splitter must find the same events however the
    network cuts the stream, CRLF halves included."""
    from tollway.tools.mcp.events import _event_data, _Events

    stream = (b'event: message\r\nid: 1\r\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\r\n\r\n'
              b": ping\r\n\r\n"
              b'event: message\ndata: {"a":\ndata: 1}\n\n'
              b'data: {"b":2}\r\r')
    want = [b"event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}",
            b": ping", b'event: message\ndata: {"a":\ndata: 1}', b'data: {"b":2}']
    for cut in range(1, len(stream)):
        for step in (cut, 1 + cut % 7):
            ev = _Events()
            got: list[bytes] = []
            for i in range(0, len(stream), step):
                got += ev.feed(stream[i:i + step])
            last, rest = ev.finish()
            assert got + last == want and rest == b"", (cut, step)
            assert ev.saw_id
    assert _event_data(want[2]) == (b"message", b'{"a":\n1}')
    assert _event_data(want[1]) == (None, None)
