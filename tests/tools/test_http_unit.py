"""The HTTP tool proxy's pure parts: upstream URLs, header filtering both ways, outcomes."""

from __future__ import annotations

from multidict import CIMultiDict

from tollway.config.tools import HttpToolConfig
from tollway.tools.gate import FAILURE, OK, TOOL_ERROR
from tollway.tools.http.body import _Body
from tollway.tools.http.relay import _outcome
from tollway.tools.http.tool import HttpTool, _downstream_headers, _upstream_headers
from tollway.wire import retry_after as _retry_after


def tool(url: str, **kw: object) -> HttpTool:
    return HttpTool.build("t", HttpToolConfig(url=url, **kw))  # type: ignore[arg-type]


def test_upstream_url_joins_paths_and_queries_as_sent() -> None:
    t = tool("https://api.example.com/v1/")
    assert str(t.url("", "")) == "https://api.example.com/v1/"
    assert str(t.url("/a%20b/c", "x=%2F&x=2")) == "https://api.example.com/v1/a%20b/c?x=%2F&x=2"
    assert str(tool("http://h:8080").url("", "")) == "http://h:8080/"
    assert str(tool("http://h:8080").url("/x", "")) == "http://h:8080/x"
    keyed = tool("http://h/api?version=2")
    assert str(keyed.url("/q", "city=Rome")) == "http://h/api/q?version=2&city=Rome"
    assert str(keyed.url("", "")) == "http://h/api?version=2"


def test_target_is_built_from_the_config() -> None:
    t = tool("http://h", cost_usd=0.5, fail_on_4xx=True, breaker=False)
    assert t.target.name == "t" and t.target.server == "http"
    assert t.target.cost_usd == 0.5 and t.target.fail_on_error is True
    assert t.target.breaker is None and t.target.target == "tool:t"
    assert tool("http://h").target.breaker is not None
    assert tool("http://h", max_body_mb=2).max_bytes == 2 * 1024 * 1024


def test_request_headers_drop_hop_by_hop_keys_and_ours_and_add_the_tools() -> None:
    client = CIMultiDict([
        ("Host", "gw"), ("Content-Length", "3"), ("Connection", "keep-alive, X-Named"),
        ("X-Named", "1"), ("Keep-Alive", "5"), ("TE", "trailers"), ("Upgrade", "h2c"),
        ("Proxy-Authorization", "x"), ("Transfer-Encoding", "chunked"), ("Expect", "100"),
        ("Authorization", "Bearer sk-virtual"), ("x-api-key", "sk-virtual"),
        ("X-Tollway-Session", "s"), ("Accept", "a/b"), ("X-Multi", "1"), ("X-Multi", "2"),
        ("Cookie", "c=1")])
    t = tool("http://h", headers={"Authorization": "Bearer real", "X-Key": "k"})
    out = _upstream_headers(client, t, _Body(b"abc"))
    assert sorted(k for k, _ in out.items()) == sorted(
        ["Accept", "X-Multi", "X-Multi", "Cookie", "Authorization", "X-Key"])
    assert out.getall("X-Multi") == ["1", "2"] and out["Authorization"] == "Bearer real"
    streamed = _upstream_headers(client, tool("http://h"), _Body(None, length=5_000_000))
    assert streamed["Content-Length"] == "5000000" and "Authorization" not in streamed


def test_response_headers_drop_hop_by_hop_and_spoofed_tollway_ones() -> None:
    up = CIMultiDict([("Content-Type", "text/plain"), ("Content-Length", "9"),
                      ("Transfer-Encoding", "chunked"), ("Connection", "close, X-Gone"),
                      ("X-Gone", "1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                      ("x-tollway-tool", "spoofed"), ("Content-Encoding", "gzip")])
    out = _downstream_headers(up)
    assert sorted(k for k, _ in out.items()) == sorted(
        ["Content-Type", "Set-Cookie", "Set-Cookie", "Content-Encoding"])


def test_outcomes() -> None:
    assert _outcome(200, False) == OK and _outcome(304, False) == OK
    assert _outcome(404, False) == TOOL_ERROR and _outcome(404, True) == FAILURE
    assert _outcome(429, False) == FAILURE  # overloaded is not the tool's answer
    assert _outcome(500, False) == FAILURE and _outcome(503, True) == FAILURE
    assert _retry_after({"Retry-After": "7"}) == 7.0
    assert _retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert _retry_after({}) is None
