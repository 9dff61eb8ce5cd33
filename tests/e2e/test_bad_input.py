"""The malformed requests of issue 12, one by one: each is a 4xx in its endpoint's dialect
naming what is wrong, nothing reaches an upstream, and nothing is logged with a traceback.
(tests/e2e/test_fuzz.py looks for more of them.)"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from tests.conftest import Stack
from tollway.testing.mock_mcp import MockMcpServer

KEY = {"Authorization": "Bearer sk-tw-support", "Content-Type": "application/json"}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def mcp() -> Iterator[MockMcpServer]:
    server = MockMcpServer(json_response=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gw(make_stack: Callable[..., Stack], mcp: MockMcpServer,
       caplog: pytest.LogCaptureFixture) -> Iterator[Stack]:
    stack = make_stack(extra=f'mcp_servers:\n  files: {{url: "{mcp.url}"}}\n')
    yield stack
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def post(s: Stack, path: str, body: bytes, headers: dict[str, str] | None = None,
         ) -> httpx.Response:
    return httpx.post(s.url + path, content=body, headers={**KEY, **(headers or {})},
                      timeout=10)


def deep(n: int, inner: bytes = b"1") -> bytes:
    return b"[" * n + inner + b"]" * n


def test_messages_that_is_not_an_array(gw: Stack) -> None:
    r = post(gw, "/v1/messages", orjson.dumps(
        {"model": "claude-sonnet", "max_tokens": 5, "messages": 5}))
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "'messages' must be an array of messages, not an integer"}}


def test_a_field_of_the_wrong_type_is_named_in_param(gw: Stack) -> None:
    msgs = [*HELLO, {"role": "assistant", "content": "hi"}, *HELLO,
            {"role": "user", "content": 7}]
    r = post(gw, "/v1/chat/completions", orjson.dumps({"model": "gpt-4o-mini",
                                                      "messages": msgs}))
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "messages[3].content"
    assert err["code"] == "invalid_type" and err["type"] == "invalid_request_error"
    assert gw.mock.requests == []


def test_content_nested_300_deep(gw: Stack) -> None:
    """orjson reads it (its limit is 1,024) and cannot write it (254): refused at parse."""
    body = (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x", '
            b'"extra": ' + deep(300) + b"}]}")
    r = post(gw, "/v1/chat/completions", body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "nesting_too_deep"
    assert r.json()["error"]["param"] == "messages[0].extra"
    for model in ("gpt-4o-mini", "claude-sonnet"):  # past orjson's own limit, both dialects
        r = post(gw, "/v1/messages", b'{"model": "' + model.encode() + b'", "x": '
                 + deep(1500) + b"}")
        assert r.status_code == 400 and "nested deeper than 100" in r.json()["error"]["message"]
    assert gw.mock.requests == []


def test_stream_options_of_the_wrong_type_for_an_anthropic_model(gw: Stack) -> None:
    r = post(gw, "/v1/chat/completions", orjson.dumps(
        {"model": "claude-sonnet", "messages": HELLO, "stream": True, "stream_options": 5}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"


def test_tool_call_arguments_nested_past_what_can_be_written(gw: Stack) -> None:
    """A string the body's depth check cannot see inside: still no 500 when translated."""
    args = deep(300).decode()
    msgs = [*HELLO, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"}]
    for model in ("claude-sonnet", "gpt-4o-mini"):
        r = post(gw, "/v1/chat/completions", orjson.dumps({"model": model, "messages": msgs}))
        assert r.status_code == 200, r.text


def test_mcp_bodies_that_are_not_json_rpc(gw: Stack, mcp: MockMcpServer) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    cases = [
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", '
         b'"arguments": {"text": "\\ud800"}}}', -32700),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": ' + deep(1500) + b"}",
         -32700),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"a": ' + deep(150)
         + b"}}", -32700),
        (b"\xff\xfe", -32700),
        (b"", -32700),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": [1], "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', -32600),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}, 5]', -32600),
        (b"[]", -32600),
    ]
    for body, code in cases:
        r = post(gw, "/mcp/files", body, headers)
        assert r.status_code == 400, body
        msg = r.json()
        assert msg["jsonrpc"] == "2.0" and msg["error"]["code"] == code, (body, msg)
    assert mcp.requests == []  # none reached the server


def test_admin_bodies_and_paths(gw: Stack) -> None:
    for body in (b'{"decision": ' + deep(1500) + b"}", b'{"decision": ' + deep(300) + b"}",
                 b'{"decision": "approve", "reason": "\\ud800"}', b"[1]",
                 b'{"decision": "approve", "reason": {"a": 1}}', b"", b"\xff"):
        r = gw.admin.post("/admin/approvals/a1", content=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["type"] == "admin_error"
    r = gw.admin.get("/admin/no/such%0Athing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "admin_error"
    r = httpx.post(gw.url + "/mcp/a/b", content=b"{}", headers=KEY)
    assert r.status_code == 404 and r.json()["jsonrpc"] == "2.0"
