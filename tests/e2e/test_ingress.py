"""The gateway's edge, over raw sockets: malformed HTTP gets aiohttp's 400 and one warning
line per kind (never an error-level traceback), a body whose framing breaks half way gets a
400 in the endpoint's dialect, a client gone mid-body is recorded as 499, and slow clients
are cut off: headers after server.header_timeout_s (the connection is closed), bodies after
server.body_timeout_s (408 in the endpoint's dialect), with one worker or several."""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import Loop, Stack
from tests.e2e.test_stream_cuts import wait_until
from tests.test_workers import Instance, instance, mock_url  # noqa: F401  (fixtures)
from tollway.testing.mock_mcp import MockMcpServer
from tollway.testing.mock_tools import MockTools

AUTH = b"Authorization: Bearer sk-tw-support\r\n"
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n" + AUTH
BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}'


class Client:
    """One raw TCP connection to the gateway."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response (status, headers, body), read to its Content-Length."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"closed before a response: {buf!r}"
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            chunk = self.sock.recv(65536)
            assert chunk
            body += chunk
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        """Whether the server closed the connection (waits for it, up to the socket timeout)."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# --- malformed HTTP -------------------------------------------------------------------------

MALFORMED = {
    "bad request line": b"GET / HTTP/9.9\r\nHost: gw\r\n\r\n",
    "CRLF in a header": b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-A: a\rb\r\n\r\n",
    "bad chunk size": CHAT + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
    "Content-Length and Transfer-Encoding": CHAT + b"Content-Length: 5\r\n"
                                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "a 100 KB header": b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 100_000
                       + b"\r\n\r\n",
    "bad Content-Length": CHAT + b"Content-Length: 12a\r\n\r\n{}",
    "a header without a colon": b"GET /healthz HTTP/1.1\r\nHost: gw\r\nnocolon\r\n\r\n",
}


def test_malformed_http_is_a_400_and_one_warning_per_kind(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for raw in MALFORMED.values():
        for _ in range(3):
            c = Client(stack.url)
            c.send(raw)
            status, _, _ = c.response()
            assert status == 400, raw[:60]
            c.close()
    assert not tracebacks(caplog)
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    kinds = [r.fields["kind"] for r in lines]  # type: ignore[attr-defined]
    assert kinds and len(kinds) == len(set(kinds)), kinds  # one line per kind at most
    assert all(r.levelno == logging.WARNING for r in lines)
    c = Client(stack.url)  # and the gateway serves on
    c.send(CHAT + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
    assert c.response()[0] == 200


def test_a_body_whose_framing_breaks_half_way_is_a_400_in_its_dialect(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    for path, shape in ((b"/v1/chat/completions", "openai"), (b"/v1/messages", "anthropic")):
        c = Client(stack.url)
        c.send(b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\n" + AUTH
               + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"mod\r\n")
        wait_until(lambda: stack.metric("tollway_inflight_requests") == 1)  # reading the body
        c.send(b"ZZ\r\nxx\r\n")
        status, _, body = c.response()
        c.close()
        answer = orjson.loads(body)
        assert status == 400
        if shape == "openai":
            assert answer["error"]["code"] == "malformed_body"
        else:
            assert answer["type"] == "error"
            assert answer["error"]["type"] == "invalid_request_error"
    assert not tracebacks(caplog)


def test_a_client_gone_mid_body_is_recorded_as_499_without_a_traceback(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    c = Client(stack.url)
    c.send(CHAT + b"Content-Length: 1000\r\n\r\n" + BODY[:20])
    wait_until(lambda: stack.metric("tollway_inflight_requests") == 1)
    c.close()
    wait_until(lambda: stack.metric("tollway_requests_total", status="499") == 1)
    assert stack.metric("tollway_inflight_requests") == 0
    assert not tracebacks(caplog)
    assert not [r for r in caplog.records if r.levelno > logging.WARNING]


# --- slow clients ---------------------------------------------------------------------------

SLOW = "header_timeout_s: 1, body_timeout_s: 1"


@pytest.fixture
def slow(bg_loop: Loop, make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    tools = MockTools()
    bg_loop.run(tools.start())
    mcp = MockMcpServer(json_response=True)
    mcp.start()
    yield make_stack(server_extra=SLOW, extra=(
        f'tools:\n  echo: {{url: "{tools.base_url}/echo"}}\n'
        f'mcp_servers:\n  files: {{url: "{mcp.url}"}}\n'))
    mcp.stop()
    bg_loop.run(tools.stop())


def trickle(clients: list[Client], data: bytes, every_s: float, until_s: float,
            ) -> dict[int, float]:
    """Send `data` a byte at a time to each client, one byte per `every_s`, as a slowloris
    would; returns when each connection was closed by the server (seconds from the start).
    Stops after `until_s`."""
    sel = selectors.DefaultSelector()
    for i, c in enumerate(clients):
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, i)
    start = time.monotonic()
    closed: dict[int, float] = {}
    sent = 0
    while len(closed) < len(clients) and time.monotonic() - start < until_s:
        if time.monotonic() - start >= sent * every_s and sent < len(data):
            for i, c in enumerate(clients):
                if i not in closed:
                    try:
                        c.sock.send(data[sent:sent + 1])
                    except OSError:
                        closed.setdefault(i, time.monotonic() - start)
            sent += 1
        for key, _ in sel.select(timeout=0.05):
            i = key.data
            try:
                gone = clients[i].sock.recv(4096) == b""
            except OSError:
                gone = True
            if gone and i not in closed:
                closed[i] = time.monotonic() - start
                sel.unregister(clients[i].sock)
    sel.close()
    return closed


def test_headers_sent_a_byte_a_second_are_cut_off_after_the_header_timeout(
        slow: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    c = Client(slow.url)
    closed = trickle([c], CHAT + b"X-Slow: " + b"z" * 100, every_s=1.0, until_s=10)
    c.close()
    assert 0 in closed and 0.9 <= closed[0] < 2.0, closed  # the timer starts at connect
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [r.fields["kind"] for r in lines] == ["header_timeout"]  # type: ignore[attr-defined]
    assert not tracebacks(caplog)


def test_200_slow_connections_are_all_closed_within_the_timeout_and_a_second(
        slow: Stack) -> None:
    clients = [Client(slow.url) for _ in range(200)]
    try:
        closed = trickle(clients, CHAT + b"X-Slow: " + b"z" * 100, every_s=0.3, until_s=10)
    finally:
        for c in clients:
            c.close()
    assert len(closed) == 200
    assert max(closed.values()) < 1.0 + 1.0, sorted(closed.values())[-5:]
    c = Client(slow.url)  # the gateway serves on
    c.send(CHAT + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
    assert c.response()[0] == 200


STREAMED = b"Content-Length: 2000000\r\n"


def test_a_slow_body_is_408_in_the_endpoint_dialect(slow: Stack) -> None:
    admin = b"Authorization: Bearer admin-secret\r\n"
    mcp = b"Accept: application/json, text/event-stream\r\n"
    for head, check in (
            (CHAT, lambda b: b["error"]["code"] == "body_timeout"),
            (b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\n" + AUTH,
             lambda b: b["type"] == "error" and b["error"]["type"] == "timeout_error"),
            (b"POST /mcp/files HTTP/1.1\r\nHost: gw\r\n" + AUTH + mcp,
             lambda b: b["jsonrpc"] == "2.0" and b["error"]["data"]["tollway_code"]
             == "body_timeout"),
            (b"POST /admin/approvals/a1 HTTP/1.1\r\nHost: gw\r\n" + admin,
             lambda b: b["error"]["type"] == "admin_error"
             and b["error"]["code"] == "body_timeout"),
            (b"POST /tools/echo/x HTTP/1.1\r\nHost: gw\r\n" + AUTH,
             lambda b: b["error"]["code"] == "body_timeout"),
            # over 1 MiB: streamed to the tool as it arrives, and still due in time
            (b"POST /tools/echo/x HTTP/1.1\r\nHost: gw\r\n" + AUTH + STREAMED,
             lambda b: b["error"]["code"] == "body_timeout")):
        c = Client(slow.admin_url if b" /admin/" in head else slow.url)  # its own listener
        length = b"" if STREAMED in head else b"Content-Length: 100\r\n"
        c.send(head + b"Content-Type: application/json\r\n" + length + b"\r\n{")
        started = time.monotonic()
        status, _, body = c.response()
        c.close()
        assert status == 408, (head[:40], body)
        assert 1.0 <= time.monotonic() - started < 3.0
        assert check(orjson.loads(body)), body


def test_workers_cut_slow_headers_off_too(instance: Callable[..., Instance],  # noqa: F811
                                          tmp_path: Path) -> None:
    g = instance(server=", header_timeout_s: 1")
    clients = [Client(g.url) for _ in range(20)]  # new connections: both workers get some
    try:
        closed = trickle(clients, CHAT + b"X-Slow: " + b"z" * 100, every_s=0.3, until_s=10)
    finally:
        for c in clients:
            c.close()
    assert len(closed) == 20 and max(closed.values()) < 2.0, closed
    assert g.chat().status_code == 200
