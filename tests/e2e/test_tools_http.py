"""HTTP tools end to end: ANY /tools/<tool>/<path> through a real gateway to an in-process
mock tool server. Proxying (method, path, query, body, headers; hop-by-hop and the caller's
key dropped; the tool's credential injected; streams both ways), circuit breakers on the
memory state and on Redis, a tool's own 404, fallbacks, retries, timeouts, cost and budgets,
the loop detector, policies, approvals and key limits."""

from __future__ import annotations

import concurrent.futures
import hashlib
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import Loop, Stack, free_port
from tests.e2e.test_stream_cuts import spend_row, wait_until
from tollway.testing.mock_tools import MockTools

SUPPORT = {"Authorization": "Bearer sk-tw-support"}
SECRET = "tool-secret-123"


@pytest.fixture
def tools(bg_loop: Loop) -> Iterator[MockTools]:
    server = MockTools()
    bg_loop.run(server.start())
    yield server
    bg_loop.run(server.stop())


def build(make: Callable[..., Stack], tools: MockTools, tools_yaml: str, extra: str = "",
          **kw: str) -> Stack:
    """A gateway with `tools:` (TOOLS stands for the mock tool server's URL) and more."""
    text = "tools:\n" + tools_yaml.replace("TOOLS", tools.base_url) + extra
    return make(extra=text, **kw)


def call(s: Stack, method: str, path: str, key: str | None = "sk-tw-support",
         **kw: object) -> httpx.Response:
    headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
    if key is not None:
        headers.setdefault("Authorization", f"Bearer {key}")
    return httpx.request(method, s.url + path, headers=headers, timeout=10,
                         **kw)  # type: ignore[arg-type]


def breaker(s: Stack, target: str) -> dict:
    views = s.admin.get("/admin/breakers").json()["breakers"]
    return next((v for v in views if v["target"] == target), {"state": "closed"})


def calls(s: Stack, tool: str, outcome: str) -> float:
    return s.metric("tollway_tool_calls_total", tool=tool, outcome=outcome)


# --- proxying --------------------------------------------------------------------------

PROXY_TOOLS = f"""  echo: {{url: "TOOLS/echo", headers: {{X-Tool-Key: {SECRET},
                                         Authorization: "Bearer upstream-token"}}}}
  bare: {{url: "TOOLS/echo/"}}
  svc: {{url: "TOOLS"}}
  tiny: {{url: "TOOLS/echo", max_body_mb: 0.5}}
  small: {{url: "TOOLS/echo", max_body_mb: 1.5}}
"""


@pytest.fixture
def proxy(make_stack: Callable[..., Stack], tools: MockTools) -> Stack:
    return build(make_stack, tools, PROXY_TOOLS)


def test_request_is_proxied_intact_with_credentials_swapped(proxy: Stack,
                                                            tools: MockTools) -> None:
    body = b'{"city": "Rome", "days": 3}'
    r = call(proxy, "POST", "/tools/echo/v1/a%20b/forecast?x=1&x=2&y=%2F&empty=", content=body,
             headers={"Content-Type": "application/json", "X-Custom": "kept",
                      "Accept": "application/json", "Connection": "keep-alive, X-Hop-Named",
                      "X-Hop-Named": "dropped", "Keep-Alive": "timeout=5",
                      "Proxy-Authorization": "Basic c2VjcmV0", "TE": "trailers",
                      "x-tollway-session": "proxy-1", "x-tollway-tags": "a,b"})
    assert r.status_code == 200, r.text
    assert r.headers["x-tollway-tool"] == "echo"
    assert r.headers["x-tollway-request-id"].startswith("req_")
    assert r.headers["x-tollway-session"] == "proxy-1"
    got = r.json()
    assert got["method"] == "POST"
    assert got["raw_path"] == "/echo/v1/a%20b/forecast"
    assert got["query_string"] == "x=1&x=2&y=%2F&empty="
    assert got["body"] == body.decode() and got["size"] == len(body)
    h = got["headers"]
    assert h["content-type"] == "application/json" and h["x-custom"] == "kept"
    assert h["accept"] == "application/json"
    assert h["content-length"] == str(len(body))
    # the tool's credentials from the config, never the caller's tollway key
    assert h["authorization"] == "Bearer upstream-token" and h["x-tool-key"] == SECRET
    for dropped in ("x-hop-named", "keep-alive", "proxy-authorization", "te",
                    "x-tollway-session", "x-tollway-tags", "x-api-key"):
        assert dropped not in h, dropped
    assert "sk-tw-support" not in str(h)
    assert h["host"] == tools.base_url.removeprefix("http://")
    assert calls(proxy, "echo", "ok") == 1


def test_caller_key_is_not_forwarded_without_configured_credentials(proxy: Stack) -> None:
    for headers in ({"x-api-key": "sk-tw-support"}, {"Authorization": "Bearer sk-tw-support"}):
        r = call(proxy, "GET", "/tools/bare/anything", key=None,
                 headers={**headers, "User-Agent": "agent/1.0"})
        assert r.status_code == 200
        h = r.json()["headers"]
        assert "x-api-key" not in h and "authorization" not in h
        assert r.json()["method"] == "GET" and r.json()["size"] == 0
        # the caller's own, and nothing added on its behalf (no body: no content type)
        assert h["user-agent"] == "agent/1.0" and "content-type" not in h
    # the configured URL's trailing slash and the tool root
    assert call(proxy, "GET", "/tools/bare").json()["raw_path"] == "/echo/"
    assert call(proxy, "PUT", "/tools/bare/x/").json()["raw_path"] == "/echo/x/"


def test_other_methods_and_head(proxy: Stack) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        r = call(proxy, method, "/tools/echo/m?q=1", content=b"x" if method != "GET" else None)
        assert r.status_code == 200 and r.json()["method"] == method
    get = call(proxy, "GET", "/tools/svc/fixed")
    head = call(proxy, "HEAD", "/tools/svc/fixed")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] != "0"
    r = call(proxy, "TRACE", "/tools/echo/x")
    assert r.status_code == 405 and SECRET not in r.text


def test_dot_segments_are_refused(proxy: Stack, tools: MockTools) -> None:
    import socket

    host, port = proxy.url.removeprefix("http://").split(":")
    for path in ("/tools/echo/../status/200", "/tools/echo/a/%2e%2e/%2E%2E/fixed"):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         f"sk-tw-support\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 400"), data[:100]
        assert b"invalid_path" in data
    assert tools.requests == []


def test_streaming_response_is_relayed_as_it_comes(proxy: Stack, tools: MockTools) -> None:
    events = []
    with httpx.stream("GET", proxy.url + "/tools/svc/stream?n=3&delay_ms=400", headers=SUPPORT,
                      timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-tollway-tool"] == "svc"
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 1:
                    # the first event got here while the tool was still producing the rest
                    assert tools.finished_streams == 0
    assert events == ['{"i":0}', '{"i":1}', '{"i":2}', "[DONE]"]
    assert tools.finished_streams == 1
    assert calls(proxy, "svc", "ok") == 1


def test_tool_dying_mid_stream_is_a_failure_the_caller_sees(make_stack: Callable[..., Stack],
                                                             tools: MockTools) -> None:
    s = build(make_stack, tools,
              '  svc: {url: "TOOLS", breaker: {consecutive_failures: 1, open_s: 30}}\n')
    got = []
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
            "GET", s.url + "/tools/svc/stream?n=10&drop_after=3", headers=SUPPORT,
            timeout=10) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                got.append(line)
    assert len(got) == 3  # what came before the cut, then no clean end
    assert calls(s, "svc", "failure") == 1
    wait_until(lambda: breaker(s, "tool:svc")["state"] == "open")
    session = s.admin.get("/admin/sessions").json()["sessions"][0]["session"]
    step = s.admin.get(f"/admin/sessions/{session}").json()["steps"][0]
    assert step["status"] == 502 and step["error_code"] == "failure"


def test_large_download_is_streamed_whole(proxy: Stack) -> None:
    size = 3 * 1024 * 1024 + 17
    r = call(proxy, "GET", f"/tools/svc/download?size={size}&chunk=65536")
    assert r.status_code == 200 and len(r.content) == size
    pattern = bytes(range(256)) * 256
    assert r.content == (pattern * (size // len(pattern) + 1))[:size]
    assert calls(proxy, "svc", "ok") == 1


def test_large_and_chunked_request_bodies(proxy: Stack) -> None:
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB: over the gateway's own 1 MB body limit
    r = call(proxy, "POST", "/tools/echo/upload", content=big)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["size"] == len(big) and got["sha256"] == hashlib.sha256(big).hexdigest()
    assert got["chunked"] is False  # the declared length went up with it

    def chunks(total: int, piece: int = 64 * 1024) -> Iterator[bytes]:
        for i in range(0, total, piece):
            yield bytes([i // piece % 256]) * min(piece, total - i)

    for total in (10_000, 2 * 1024 * 1024):  # buffered, then streamed up
        r = call(proxy, "POST", "/tools/echo/upload", content=chunks(total))
        assert r.status_code == 200, r.text
        assert r.json()["size"] == total
        assert r.json()["sha256"] == hashlib.sha256(b"".join(chunks(total))).hexdigest()
    assert calls(proxy, "echo", "ok") == 3


def test_bodies_over_the_tools_limit_are_413(proxy: Stack, tools: MockTools) -> None:
    r = call(proxy, "POST", "/tools/tiny/x", content=b"x" * 600_000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert "0.5 MB" in r.json()["error"]["message"] and r.json()["error"]["tool"] == "tiny"
    r = call(proxy, "POST", "/tools/tiny/x", content=iter([b"x" * 300_000] * 2))  # chunked
    assert r.status_code == 413
    r = call(proxy, "POST", "/tools/small/x",  # chunked, found out while streaming up
             content=iter([b"y" * (256 * 1024)] * 8))
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert not any(q.path.startswith("/echo/x") and q.body for q in tools.requests)
    assert calls(proxy, "tiny", "ok") == calls(proxy, "small", "ok") == 0
    assert call(proxy, "POST", "/tools/tiny/x", content=b"x" * 1000).status_code == 200


def test_client_disconnect_mid_stream_is_still_settled(make_stack: Callable[..., Stack],
                                                       tools: MockTools) -> None:
    s = build(make_stack, tools, '  paid: {url: "TOOLS", cost_usd: 0.25}\n')
    with httpx.stream("GET", s.url + "/tools/paid/stream?n=100&delay_ms=30",
                      headers=SUPPORT, timeout=10) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                break
    wait_until(lambda: tools.cancelled_streams == 1)  # the gateway hung up on the tool
    wait_until(lambda: calls(s, "paid", "ok") == 1)
    row = spend_row(s, "agent", "support-bot")
    assert row is not None and row["cost_usd"] == pytest.approx(0.25)
    session = s.admin.get("/admin/sessions").json()["sessions"][0]["session"]
    step = s.admin.get(f"/admin/sessions/{session}").json()["steps"][0]
    assert step["status"] == 499 and step["model"] == "paid"


def test_unknown_tool_and_unreachable_tool(make_stack: Callable[..., Stack],
                                           tools: MockTools) -> None:
    dead = free_port()
    s = build(make_stack, tools, f"""  echo: {{url: "TOOLS/echo"}}
  dead: {{url: "http://127.0.0.1:{dead}/api", connect_timeout_s: 2,
         headers: {{X-Tool-Key: {SECRET}}}}}
""")
    r = call(s, "GET", "/tools/nope/x")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "unknown_tool" and "dead, echo" in err["message"]
    assert r.headers["x-tollway-request-id"].startswith("req_")
    r = call(s, "GET", "/tools/dead/x?token=abc")
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "tool_unreachable" and err["tool"] == "dead"
    assert "'dead'" in err["message"] and SECRET not in r.text
    assert r.headers["x-tollway-tool"] == "dead"
    assert calls(s, "dead", "failure") == 1


def test_slow_tool_times_out_with_504(make_stack: Callable[..., Stack],
                                      tools: MockTools) -> None:
    s = build(make_stack, tools, '  sluggish: {url: "TOOLS", timeout_s: 0.2}\n')
    r = call(s, "GET", "/tools/sluggish/slow?ms=1500")
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "tool_timeout" and "sluggish" in r.text
    assert calls(s, "sluggish", "failure") == 1
    assert call(s, "GET", "/tools/sluggish/slow?ms=0").status_code == 200


def test_unknown_key_rejected_when_configured(make_stack: Callable[..., Stack],
                                              tools: MockTools) -> None:
    s = build(make_stack, tools, '  echo: {url: "TOOLS/echo"}\n', unknown_keys="reject")
    r = call(s, "GET", "/tools/echo/x", key="sk-who-knows")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert tools.requests == []


# --- breakers, fallbacks, retries ------------------------------------------------------

def test_breaker_opens_fails_fast_half_opens_and_closes(make_any_stack: Callable[..., Stack],
                                                        tools: MockTools) -> None:
    s = build(make_any_stack, tools,
              '  flaky: {url: "TOOLS", breaker: {consecutive_failures: 3, open_s: 0.5}}\n')
    tools.settings.fail = True
    for _ in range(3):
        r = call(s, "GET", "/tools/flaky/flaky")
        assert r.status_code == 500 and r.json() == {"error": "the flaky tool is down"}
    wait_until(lambda: breaker(s, "tool:flaky")["state"] == "open")
    assert s.metric("tollway_breaker_state", target="tool:flaky") == 2
    before = tools.calls("/flaky")
    r = call(s, "GET", "/tools/flaky/flaky")
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "breaker_open" and err["tool"] == "flaky"
    assert "'flaky'" in err["message"] and "tried again in" in err["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 30
    assert tools.calls("/flaky") == before  # failed fast: the tool was not called
    assert calls(s, "flaky", "failure") == 3 and calls(s, "flaky", "breaker_open") == 1

    tools.settings.fail = False  # the tool recovers
    until = breaker(s, "tool:flaky")["until"]
    wait_until(lambda: time.time() > until)
    r = call(s, "GET", "/tools/flaky/flaky")
    assert r.status_code == 200 and tools.calls("/flaky") == before + 1  # the probe
    wait_until(lambda: breaker(s, "tool:flaky")["state"] == "closed")
    for before_state, after_state in (("closed", "open"), ("open", "half_open"),
                                      ("half_open", "closed")):
        assert s.metric("tollway_breaker_transitions_total", target="tool:flaky",
                        from_state=before_state, to_state=after_state) == 1
    assert s.metric("tollway_breaker_state", target="tool:flaky") == 0
    assert calls(s, "flaky", "ok") == 1


BREAKER_4XX = """  lookup: {url: "TOOLS", breaker: {consecutive_failures: 2, open_s: 30}}
  strict: {url: "TOOLS", fail_on_4xx: true, breaker: {consecutive_failures: 2, open_s: 30}}
  busy: {url: "TOOLS", breaker: {consecutive_failures: 5, open_s: 1}}
"""


def test_a_tools_own_404_trips_its_breaker_only_when_configured(
        make_any_stack: Callable[..., Stack], tools: MockTools) -> None:
    s = build(make_any_stack, tools, BREAKER_4XX)
    for _ in range(5):
        r = call(s, "GET", "/tools/lookup/missing")
        assert r.status_code == 404 and r.json() == {"error": "not found"}
    assert calls(s, "lookup", "tool_error") == 5
    assert breaker(s, "tool:lookup")["state"] == "closed"
    for _ in range(2):
        assert call(s, "GET", "/tools/strict/missing").status_code == 404
    wait_until(lambda: breaker(s, "tool:strict")["state"] == "open")
    r = call(s, "GET", "/tools/strict/missing")
    assert r.status_code == 503 and r.json()["error"]["code"] == "breaker_open"
    assert calls(s, "strict", "failure") == 2
    assert breaker(s, "tool:lookup")["state"] == "closed"


def test_429_retry_after_opens_the_breaker_for_that_long(make_any_stack: Callable[..., Stack],
                                                         tools: MockTools) -> None:
    s = build(make_any_stack, tools, BREAKER_4XX)
    r = call(s, "GET", "/tools/busy/status/429?retry_after=20")
    assert r.status_code == 429 and r.headers["retry-after"] == "20"
    wait_until(lambda: breaker(s, "tool:busy")["state"] == "open")
    wait_until(lambda: breaker(s, "tool:busy").get("until", 0) > time.time() + 10)
    r = call(s, "GET", "/tools/busy/fixed")
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 10


def test_fallback_answers_while_the_breaker_is_open(make_any_stack: Callable[..., Stack],
                                                    tools: MockTools) -> None:
    s = build(make_any_stack, tools, """  primary: {url: "TOOLS", fallback: backup,
            breaker: {consecutive_failures: 2, open_s: 30}}
  backup: {url: "TOOLS/echo"}
""")
    tools.settings.fail = True
    for _ in range(2):
        r = call(s, "GET", "/tools/primary/flaky?q=1")
        assert r.status_code == 500 and r.headers["x-tollway-tool"] == "primary"
        assert "x-tollway-fallback" not in r.headers
    wait_until(lambda: breaker(s, "tool:primary")["state"] == "open")
    before = tools.calls("/flaky")
    r = call(s, "GET", "/tools/primary/flaky?q=1")
    assert r.status_code == 200
    assert r.headers["x-tollway-tool"] == "backup"
    assert r.headers["x-tollway-fallback"] == "primary"
    assert r.json()["raw_path"] == "/echo/flaky" and r.json()["query_string"] == "q=1"
    assert tools.calls("/flaky") == before
    assert calls(s, "primary", "breaker_open") == 1 and calls(s, "backup", "ok") == 1
    assert s.metric("tollway_fallbacks_total", from_model="primary", to_model="backup",
                    reason="breaker_open") == 1


def test_retries_for_idempotent_methods_only(make_stack: Callable[..., Stack],
                                             tools: MockTools) -> None:
    s = build(make_stack, tools, '  retrying: {url: "TOOLS", retries: 2, breaker: false}\n')
    tools.settings.fail = True
    assert call(s, "GET", "/tools/retrying/flaky").status_code == 500
    assert tools.calls("/flaky") == 3  # one call and two retries
    assert call(s, "POST", "/tools/retrying/flaky", content=b"{}").status_code == 500
    assert tools.calls("/flaky") == 4  # never for POST
    assert call(s, "PATCH", "/tools/retrying/flaky", content=b"{}").status_code == 500
    assert tools.calls("/flaky") == 5
    tools.settings.fail = False
    tools.settings.fail_next = 1
    r = call(s, "PUT", "/tools/retrying/flaky", content=b"{}")
    assert r.status_code == 200 and tools.calls("/flaky") == 7
    assert calls(s, "retrying", "failure") == 3 and calls(s, "retrying", "ok") == 1


# --- cost, loops, policies, keys -------------------------------------------------------

def test_tool_cost_counts_toward_spend_and_budgets(make_any_stack: Callable[..., Stack],
                                                   tools: MockTools) -> None:
    s = build(make_any_stack, tools, '  paid: {url: "TOOLS", cost_usd: 0.01}\n',
              extra="budgets: {agents: {support-bot: {usd: 0.025, period: day}}}\n")
    for _ in range(2):
        assert call(s, "GET", "/tools/paid/counter").status_code == 200
    row = spend_row(s, "agent", "support-bot")
    assert row is not None and row["cost_usd"] == pytest.approx(0.02)
    assert row["requests"] == 2
    r = call(s, "GET", "/tools/paid/counter")
    assert r.status_code == 402 and r.json()["error"]["code"] == "budget_exceeded"
    assert r.json()["error"]["tool"] == "paid"
    assert tools.calls("/counter") == 2
    assert calls(s, "paid", "budget") == 1
    # another agent's budget is its own
    assert call(s, "GET", "/tools/paid/counter", key="sk-tw-research").status_code == 200
    assert s.metric("tollway_cost_usd_total", agent="support-bot", model="paid") == \
        pytest.approx(0.02)


def test_repeated_tool_call_with_the_same_result_is_halted(
        make_any_stack: Callable[..., Stack], tools: MockTools) -> None:
    s = build(make_any_stack, tools, '  svc: {url: "TOOLS"}\n',
              extra="loops: {repeated_tool_call: {threshold: 3}}\n")
    session = {"x-tollway-session": "loop-1"}
    for _ in range(3):
        assert call(s, "GET", "/tools/svc/fixed?city=Rome", headers=session).status_code == 200
    r = call(s, "GET", "/tools/svc/fixed?city=Rome", headers=session)
    assert r.status_code == 422 and r.json()["error"]["code"] == "loop_detected"
    assert "'svc'" in r.json()["error"]["message"]
    assert tools.calls("/fixed") == 3
    assert calls(s, "svc", "loop") == 1
    # other arguments, another body, another session: not the same call
    assert call(s, "GET", "/tools/svc/fixed?city=Oslo", headers=session).status_code == 200
    for body in (b'{"a": 1}', b'{"a": 2}', b'{"a": 3}', b'{"a": 4}'):
        assert call(s, "POST", "/tools/svc/fixed", headers=session,
                    content=body).status_code == 200
    assert call(s, "GET", "/tools/svc/fixed?city=Rome",
                headers={"x-tollway-session": "loop-2"}).status_code == 200
    # the same call making progress (a different result each time) is not a loop
    for _ in range(5):
        assert call(s, "GET", "/tools/svc/counter", headers=session).status_code == 200


def test_retry_storm_with_new_arguments_is_halted_by_no_progress(
        make_any_stack: Callable[..., Stack], tools: MockTools) -> None:
    """The 2.3M-call retry storm on the tool gateway: new arguments every time, the same
    error every time (with a new duration, request id and timestamp in it). With a cost per
    call, what the storm can spend is the threshold's worth of calls."""
    s = build(make_any_stack, tools, '  svc: {url: "TOOLS", cost_usd: 0.01}\n',
              extra="loops: {repeated_tool_call: {threshold: 3}, no_progress: {threshold: 4}}\n")
    session = {"x-tollway-session": "storm-1"}
    statuses = []
    for i in range(20):
        r = call(s, "GET", f"/tools/svc/timeout?q=attempt-{i}&seed={i * 7919}",
                 headers=session)
        statuses.append(r.status_code)
        if r.status_code == 422:
            break
    assert statuses == [504] * 4 + [422]  # halted at the 5th call, before it was made
    err = r.json()["error"]
    assert err["code"] == "loop_detected" and "no_progress" in err["message"]
    assert "'svc'" in err["message"] and "4 times" in err["message"]
    assert "upstream timeout after <dur>" in err["message"]  # the evidence, normalised
    assert tools.calls("/timeout") == 4
    assert calls(s, "svc", "loop") == 1
    assert s.metric("tollway_loops_detected_total", detector="no_progress") == 1
    row = spend_row(s, "session", "storm-1")
    assert row is not None and row["cost_usd"] == pytest.approx(0.04)  # 4 calls, no more
    # another session, or another tool in this one: their own runs
    assert call(s, "GET", "/tools/svc/timeout?q=x",
                headers={"x-tollway-session": "storm-2"}).status_code == 504
    assert call(s, "GET", "/tools/svc/counter", headers=session).status_code == 422  # svc
    assert call(s, "GET", "/tools/svc/timeout?q=y", headers=session).status_code == 422


def test_no_progress_never_halts_progress(make_any_stack: Callable[..., Stack],
                                          tools: MockTools) -> None:
    """A poller whose job advances (5% -> 100%, fresh times and ids each check), a tool
    answering something new each time, and acknowledgements: never halted."""
    s = build(make_any_stack, tools, '  svc: {url: "TOOLS"}\n  echo: {url: "TOOLS/echo"}\n',
              extra="loops: {no_progress: {threshold: 2}}\n")
    session = {"x-tollway-session": "benign"}
    seen = []
    for _ in range(20):
        r = call(s, "GET", "/tools/svc/job?id=build-7", headers=session)
        assert r.status_code == 200
        seen.append(r.json()["progress"])
    assert seen[0] == "5%" and seen[-1] == "100%"
    for i in range(10):
        assert call(s, "GET", f"/tools/svc/counter?i={i}", headers=session).status_code == 200
    for i in range(10):  # an HTTP 200 with an empty body: "done", nothing to compare
        assert call(s, "PUT", f"/tools/svc/status/204?file={i}",
                    headers=session).status_code == 204
    assert s.metric("tollway_loops_detected_total") == 0


def write_policy(tmp_path, text: str) -> str:  # type: ignore[no-untyped-def]
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return str(p)


def test_policy_denies_a_tool_to_an_agent(make_stack: Callable[..., Stack], tools: MockTools,
                                          tmp_path) -> None:  # type: ignore[no-untyped-def]
    policy = write_policy(tmp_path, """rules:
  - name: no-echo-for-support
    agents: [support-bot]
    deny: {tools: [echo]}
""")
    s = build(make_stack, tools, '  echo: {url: "TOOLS/echo"}\n',
              extra=f'policies: ["{policy}"]\n')
    r = call(s, "GET", "/tools/echo/x")
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy_denied"
    assert "no-echo-for-support" in r.json()["error"]["message"]
    assert tools.requests == []
    assert calls(s, "echo", "denied") == 1
    assert call(s, "GET", "/tools/echo/x", key="sk-tw-research").status_code == 200


RED_POLICY = """zones: {red: [echo]}
approvals: {timeout_s: 30}
"""


def approvals(s: Stack) -> list[dict]:
    return s.admin.get("/admin/approvals").json()["approvals"]


def test_red_zone_call_is_held_until_approved(make_stack: Callable[..., Stack],
                                              tools: MockTools,
                                              tmp_path) -> None:  # type: ignore[no-untyped-def]
    policy = write_policy(tmp_path, RED_POLICY)
    s = build(make_stack, tools, '  echo: {url: "TOOLS/echo"}\n',
              extra=f'policies: ["{policy}"]\n')
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(call, s, "POST", "/tools/echo/payments?amount=10",
                           headers={"x-tollway-session": "red-1",
                                    "X-Secret-Header": "do-not-show"},
                           content=b'{"to": "acct-1"}')
        wait_until(lambda: any(a["status"] == "pending" for a in approvals(s)))
        a = approvals(s)[0]
        assert a["tool"] == "echo" and a["agent"] == "support-bot" and a["team"] == "support"
        assert a["session"] == "red-1" and a["expires"] > time.time()
        assert a["summary"] == 'POST /payments?amount=10 {"to": "acct-1"}'
        assert "do-not-show" not in str(a)
        assert not held.done() and tools.requests == []
        d = s.admin.post(f"/admin/approvals/{a['id']}", json={"decision": "approve",
                                                              "reason": "looks fine"})
        assert d.status_code == 200 and d.json()["status"] == "approved"
        r = held.result(timeout=10)
    assert r.status_code == 200 and r.json()["raw_path"] == "/echo/payments"
    assert len(tools.requests) == 1
    assert s.metric("tollway_approvals_total", tool="echo", decision="approved") == 1


def test_red_zone_call_rejected_is_never_made(make_stack: Callable[..., Stack],
                                              tools: MockTools,
                                              tmp_path) -> None:  # type: ignore[no-untyped-def]
    policy = write_policy(tmp_path, RED_POLICY)
    s = build(make_stack, tools, '  echo: {url: "TOOLS/echo"}\n',
              extra=f'policies: ["{policy}"]\n')
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(call, s, "DELETE", "/tools/echo/accounts/7")
        wait_until(lambda: any(a["status"] == "pending" for a in approvals(s)))
        a = approvals(s)[0]
        d = s.admin.post(f"/admin/approvals/{a['id']}", json={"decision": "reject",
                                                              "reason": "no deletions"})
        assert d.status_code == 200 and d.json()["status"] == "rejected"
        r = held.result(timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy_denied"
    assert "no deletions" in r.json()["error"]["message"]
    assert tools.requests == []
    assert calls(s, "echo", "rejected") == 1


KEYS = """agents:
  support-bot: {team: support, keys: [sk-tw-support]}
  limited:
    team: support
    keys:
      - {key: sk-weather-only, tools: ["weather"]}
      - {key: sk-expired, expires: "2020-01-01T00:00:00Z"}
"""


def test_key_limits_and_expiry(make_stack: Callable[..., Stack], tools: MockTools) -> None:
    s = build(make_stack, tools, """  weather: {url: "TOOLS/echo"}
  echo: {url: "TOOLS/echo"}
""", extra=KEYS)
    assert call(s, "GET", "/tools/weather/today", key="sk-weather-only").status_code == 200
    r = call(s, "GET", "/tools/echo/x", key="sk-weather-only")
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy_denied"
    assert "'echo'" in r.json()["error"]["message"]
    r = call(s, "GET", "/tools/weather/today", key="sk-expired")
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"
    assert len(tools.requests) == 1
    assert call(s, "GET", "/tools/echo/x").status_code == 200  # an unlimited key
