"""Every endpoint, fuzzed: no 5xx, an error body in the endpoint's own dialect, and no
error-level log record with a traceback, whatever the body, query or path.

One gateway serves the whole module, with models on an OpenAI-kind and an Anthropic-kind
mock provider (so the translation paths are fuzzed too), HTTP tools on a mock tool server
and an MCP server built with the official SDK. Example counts are bounded so the module runs
in well under a minute; FUZZ_SCALE=N multiplies them for a longer hunt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Loop, Stack
from tests.e2e import fuzz_inputs as fz
from tests.e2e import fuzz_mcp_admin as fm
from tollway.testing.mock_bedrock import ACCESS_KEY, SECRET_KEY
from tollway.testing.mock_mcp import MockMcpServer
from tollway.testing.mock_tools import MockTools

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
KEY = {"Authorization": "Bearer sk-tw-support"}
ADMIN = {"Authorization": "Bearer admin-secret"}
MCP_HEADERS = {**KEY, "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}


def fuzz(examples: int) -> Any:
    return settings(max_examples=examples * SCALE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


class Tracebacks(logging.Handler):
    """Error-level records that carry a traceback, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.stack_info:
            self.records.append(record)

    def check(self) -> None:
        found, self.records = self.records, []
        assert not found, "\n".join(
            f"{r.name}: {r.getMessage()}\n{self.format(r)}" for r in found)


class Fuzzed:
    def __init__(self, stack: Stack, logs: Tracebacks) -> None:
        self.stack = stack
        self.logs = logs
        self.http = httpx.Client(base_url=stack.url, timeout=30)
        self.admin_http = httpx.Client(base_url=stack.admin_url, timeout=30)  # admin listener
        self.mcp_session = self._mcp_session()

    def _mcp_session(self) -> str:
        """An initialised MCP session, so that fuzzed calls reach the server's tools."""
        r = self.http.post("/mcp/files", headers=MCP_HEADERS, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "fuzz", "version": "1"}}})
        assert r.status_code == 200, r.text
        sid = r.headers["mcp-session-id"]
        r = self.http.post("/mcp/files", headers={**MCP_HEADERS, "Mcp-Session-Id": sid},
                           json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert r.status_code == 202, r.text
        return sid

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, Any] | None = None,
             params: dict[str, str] | None = None) -> httpx.Response:
        http = self.admin_http if path.startswith("/admin/") else self.http
        r = http.request(method, path, content=body, params=params,
                              headers={"Content-Type": "application/json", **(headers or {})})
        assert r.status_code < 500, f"{r.status_code} {r.text[:500]}"
        self.logs.check()
        return r


# Every stage that reads the body is in the chain: budgets (max_tokens), loop detectors
# (tool calls), the exact and semantic caches (the whole body, the last turn), routing
# (tools, stream) and traces (the last message).
EVERY_STAGE = """budgets: {agents: {support-bot: {usd: 1000, period: day}}}
loops: {repeated_tool_call: {threshold: 3}, repeated_request: {threshold: 1000}}
cache: {exact: {enabled: true, when: always}, semantic: {enabled: true, ttl_s: 60}}
routing: [{name: sem, when: {model: [gpt-4o-mini, claude-sonnet]}, semantic_cache: true}]
trace: {content: true}
"""


# Guardrails on every place, redacting what they can rewrite (prompts, tool arguments) and
# flagging the rest, so a fuzzed body goes through the rewriting and on to the other stages.
GUARDRAILS = """guardrails:
  - {name: g-in, on: [prompt, tool_args], detectors: [pii, secrets, injection, custom],
     action: redact}
  - {name: g-out, on: [answer, tool_results], detectors: [pii, secrets, injection, custom],
     action: flag}
"""


@pytest.fixture(scope="module")
def fuzzed(bg_loop: Loop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    tools = MockTools()
    bg_loop.run(tools.start())
    mcp = MockMcpServer(json_response=True)
    mcp.start()
    policy = tmp_path_factory.mktemp("fuzz") / "guardrails.yaml"
    policy.write_text(GUARDRAILS)
    extra = (f'tools:\n  echo: {{url: "{tools.base_url}/echo"}}\n'
             f'mcp_servers:\n  files: {{url: "{mcp.url}"}}\n' + EVERY_STAGE
             + f'policies: ["{policy}"]\n'
             + 'guardrails: {custom: {patterns: {word: "fuzz+"}, deny: [secret]}}\n')
    # Gemini and Bedrock too: the chat pivot's translations get the same hostile bodies
    env = pytest.MonkeyPatch()
    env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    stack = Stack(bg_loop, extra=extra, providers_extra=(
        '  gem: {kind: gemini, base_url: "MOCK", api_key: gk-fuzz-key-000000}\n'
        '  br: {kind: bedrock, region: eu-west-1, base_url: "MOCK"}\n'), models_extra=(
        "  gemini-flash: {provider: gem, model: gemini-2.5-flash}\n"
        "  nova: {provider: br, model: amazon.nova-lite-v1:0}\n"))
    logs = Tracebacks()
    root = logging.getLogger()
    root.addHandler(logs)
    f = Fuzzed(stack, logs)
    try:
        yield f
    finally:
        root.removeHandler(logs)
        f.http.close()
        f.admin_http.close()
        stack.close()
        mcp.stop()
        bg_loop.run(tools.stop())
        env.undo()
    logs.check()


# --- dialect shapes ---------------------------------------------------------------------------

def openai_error(r: httpx.Response) -> dict[str, Any]:
    err = r.json()["error"]
    assert {"message", "type", "code", "param"} <= set(err), err
    assert isinstance(err["message"], str) and isinstance(err["type"], str), err
    return err


def anthropic_error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert body["type"] == "error", body
    err = body["error"]
    assert isinstance(err["type"], str) and isinstance(err["message"], str), err
    return err


def rpc_errors(r: httpx.Response) -> list[dict[str, Any]]:
    body = r.json()
    out = body if isinstance(body, list) else [body]
    for msg in out:
        assert msg["jsonrpc"] == "2.0" and "id" in msg, msg
        assert isinstance(msg["error"]["code"], int), msg
        assert isinstance(msg["error"]["message"], str), msg
    return out


def admin_error(r: httpx.Response) -> dict[str, Any]:
    err = r.json()["error"]
    assert err["type"] == "admin_error" and isinstance(err["message"], str), err
    return err


ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
             "embeddings": "/v1/embeddings", "responses": "/v1/responses",
             "messages": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}
SHAPE = {"chat": openai_error, "completions": openai_error, "embeddings": openai_error,
         "responses": openai_error, "messages": anthropic_error,
         "count_tokens": anthropic_error}
PAIRS = [(e, m) for e in ENDPOINTS
         for m in ("gpt-4o-mini", "claude-sonnet", "gemini-flash", "nova")]


def answer(f: Fuzzed, endpoint: str, body: bytes, anthropic_headers: bool) -> None:
    headers = {**KEY, **({"anthropic-version": "2023-06-01"} if anthropic_headers else {})}
    r = f.send("POST", ENDPOINTS[endpoint], body, headers)
    if r.status_code >= 400:
        SHAPE[endpoint](r)


# --- model endpoints ------------------------------------------------------------------------

@pytest.mark.parametrize(("endpoint", "model"), PAIRS)
@fuzz(30)
@given(data=st.data())
def test_model_endpoints_with_fields_of_the_right_type(fuzzed: Fuzzed, endpoint: str,
                                                       model: str, data: st.DataObject) -> None:
    """Requests that mostly pass validation: every stage and the translations see them."""
    body = data.draw(fz.mutated(endpoint, model, "right"))
    answer(fuzzed, endpoint, body, data.draw(st.booleans()))


@pytest.mark.parametrize(("endpoint", "model"), PAIRS)
@fuzz(25)
@given(data=st.data())
def test_model_endpoints_with_fields_of_the_wrong_type(fuzzed: Fuzzed, endpoint: str,
                                                       model: str, data: st.DataObject) -> None:
    body = data.draw(fz.mutated(endpoint, model, "wrong"))
    answer(fuzzed, endpoint, body, data.draw(st.booleans()))


@pytest.mark.parametrize(("endpoint", "model"), PAIRS)
@fuzz(12)
@given(data=st.data())
def test_model_endpoints_with_hostile_values(fuzzed: Fuzzed, endpoint: str, model: str,
                                             data: st.DataObject) -> None:
    """Nesting past every limit, lone surrogates, numbers no double holds, in any field."""
    body = data.draw(fz.mutated(endpoint, model, "hostile"))
    answer(fuzzed, endpoint, body, False)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@fuzz(40)
@given(data=st.data())
def test_model_endpoints_with_garbage(fuzzed: Fuzzed, endpoint: str,
                                      data: st.DataObject) -> None:
    model = data.draw(st.sampled_from(["gpt-4o-mini", "claude-sonnet"]))
    answer(fuzzed, endpoint, data.draw(fz.garbage(model)), False)


@fuzz(30)
@given(name=fm.path_names, anthropic_style=st.booleans())
def test_model_list(fuzzed: Fuzzed, name: str, anthropic_style: bool) -> None:
    headers = {**KEY, **({"anthropic-version": "2023-06-01"} if anthropic_style else {})}
    assert fuzzed.send("GET", "/v1/models", headers=headers).status_code == 200
    r = fuzzed.send("GET", f"/v1/models/{quote(name, safe='')}", headers=headers)
    if r.status_code >= 400:
        openai_error(r)


HEADERS = ["Authorization", "x-api-key", "x-tollway-session", "x-tollway-parent-session",
           "x-tollway-tags", "x-tollway-agent", "x-tollway-cache", "anthropic-version",
           "Mcp-Session-Id"]
#: header values as bytes: printable ASCII, and bytes that are not UTF-8 (aiohttp keeps them
#: as lone surrogates in the str it hands over)
header_bytes = st.binary(max_size=20).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128).strip())


@fuzz(80)
@given(target=st.sampled_from(["chat", "messages", "mcp", "tools"]),
       headers=st.dictionaries(st.sampled_from(HEADERS), header_bytes, max_size=4),
       bearer=st.booleans())
def test_header_values(fuzzed: Fuzzed, target: str, headers: dict[str, bytes],
                       bearer: bool) -> None:
    """The headers tollway reads, with any bytes in them: keys, sessions, tags, agents."""
    sent: dict[str, Any] = {**KEY, **headers}
    if bearer and "Authorization" in headers:
        sent["Authorization"] = (b"Bearer " + headers["Authorization"]).strip()
    if target == "mcp":
        sent.setdefault("Accept", "application/json, text/event-stream")
        r = fuzzed.send("POST", "/mcp/files", fz.encode(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
             "params": {"name": "echo", "arguments": {"text": "x"}}}), sent)
        if r.status_code >= 400:
            rpc_errors(r)
    elif target == "tools":
        r = fuzzed.send("POST", "/tools/echo/x", b"{}", sent)
        if r.status_code >= 400:
            assert isinstance(r.json()["error"]["code"], str)
    else:
        model = "claude-sonnet" if target == "messages" else "gpt-4o-mini"
        body = fz.encode(fz.BUILDERS[target](model))
        r = fuzzed.send("POST", ENDPOINTS[target], body, sent)
        if r.status_code >= 400:
            SHAPE[target](r)


# --- tools and MCP ----------------------------------------------------------------------------

@fuzz(80)
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]),
       tool=st.one_of(st.just("echo"), fm.path_names), tail=st.lists(fm.tool_paths, max_size=3),
       query=st.dictionaries(st.text(max_size=5), fm.query_values, max_size=3),
       body=st.one_of(st.none(), fz.garbage()))
def test_http_tools(fuzzed: Fuzzed, method: str, tool: str, tail: list[str],
                    query: dict[str, str], body: bytes | None) -> None:
    path = "/".join(["/tools", *(quote(p, safe="") for p in (tool, *tail))])
    r = fuzzed.send(method, path, body if method not in ("GET", "OPTIONS") else None, KEY,
                    query)
    if r.status_code >= 400:  # the echo tool answers 200 to everything: this is ours
        err = r.json()["error"]
        assert isinstance(err["message"], str) and isinstance(err["code"], str), err


@fuzz(150)
@given(body=fm.mcp_bodies(), server=st.sampled_from(["files", "files", "files", "nope"]),
       session=st.one_of(st.just("ours"), st.none(), st.text(st.characters(
           codec="ascii", min_codepoint=33, max_codepoint=126), max_size=8)))
def test_mcp(fuzzed: Fuzzed, body: bytes, server: str, session: str | None) -> None:
    if session == "ours":
        session = fuzzed.mcp_session
    headers = {**MCP_HEADERS, **({"Mcp-Session-Id": session} if session else {})}
    r = fuzzed.send("POST", f"/mcp/{quote(server, safe='')}", body, headers)
    if r.status_code >= 400:
        rpc_errors(r)


@fuzz(20)
@given(body=st.one_of(fm.mcp_bodies(), st.just(b"")))
@example(body=b'{"method": "tools/call", "params": 1.5}')  # found by the fuzzer once
def test_mcp_delete(fuzzed: Fuzzed, body: bytes) -> None:
    r = fuzzed.send("DELETE", "/mcp/files", body, {**MCP_HEADERS, "Mcp-Session-Id": "nope"})
    if r.status_code >= 400 and r.content:
        rpc_errors(r)


# --- admin ------------------------------------------------------------------------------------

def _decision() -> st.SearchStrategy[bytes]:
    valid = st.fixed_dictionaries({"decision": st.one_of(st.sampled_from(["approve", "reject"]),
                                                         fz.wrong)},
                                  optional={"reason": fz.wrong, "by": fz.wrong})
    return st.one_of(valid.map(fz.encode), fz.garbage())


def _new_key() -> st.SearchStrategy[bytes]:
    fields = ("expires", "expires_in_s", "models", "tools", "budget_usd_day", "rpm", "label")
    valid = st.fixed_dictionaries(
        {"agent": st.one_of(st.sampled_from(["support-bot", "helper"]), fz.wrong)},
        optional={f: fz.wrong for f in fields})
    return st.one_of(valid.map(fz.encode), fz.garbage())


ADMIN_GETS = ["/admin/approvals", "/admin/breakers", "/admin/flags", "/admin/spend",
              "/admin/sessions", "/admin/keys"]


@fuzz(120)
@given(data=st.data())
def test_admin_api(fuzzed: Fuzzed, data: st.DataObject) -> None:
    query = data.draw(st.dictionaries(st.sampled_from(
        ["by", "since", "limit", "sort", "agent", "status", "scope", "model", "x"]),
        fm.query_values, max_size=3))
    name = quote(data.draw(fm.path_names), safe="")
    kind = data.draw(st.integers(0, 7))
    if kind == 0:
        r = fuzzed.send("GET", data.draw(st.sampled_from(ADMIN_GETS)), None, ADMIN, query)
    elif kind == 1:
        r = fuzzed.send("GET", f"/admin/sessions/{name}", None, ADMIN, query)
    elif kind == 2:
        r = fuzzed.send("POST", f"/admin/approvals/{name}", data.draw(_decision()), ADMIN)
    elif kind == 3:
        r = fuzzed.send("POST", "/admin/cache/purge", data.draw(st.one_of(
            st.none(), fz.garbage())), ADMIN, query)
    elif kind == 4:
        action = quote(data.draw(st.one_of(st.sampled_from(["kill", "revive", "pause",
                                                            "resume"]), fm.path_names)), safe="")
        scope = data.draw(st.sampled_from(["sessions", "agents"]))
        r = fuzzed.send("POST", f"/admin/{scope}/fz-{name}/{action}",
                        data.draw(st.one_of(st.none(), fz.garbage())), ADMIN)
    elif kind == 6:
        r = fuzzed.send("POST", "/admin/keys", data.draw(_new_key()), ADMIN)
    elif kind == 7:
        method, tail = data.draw(st.sampled_from([("POST", "/rotate"), ("POST", "/revoke"),
                                                  ("DELETE", ""), ("GET", "")]))
        r = fuzzed.send(method, f"/admin/keys/{name}{tail}",
                        data.draw(st.one_of(st.none(), fz.garbage())), ADMIN)
    else:
        r = fuzzed.send(data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"])),
                        f"/admin/{name}", data.draw(st.one_of(st.none(), fz.garbage())), ADMIN)
    if r.status_code >= 400:
        admin_error(r)


def test_fuzzed_gateway_still_serves(fuzzed: Fuzzed) -> None:
    """After all that, a plain request still works and nothing leaked a connection."""
    body = orjson.dumps(fz.chat("gpt-4o-mini"))
    assert fuzzed.send("POST", "/v1/chat/completions", body, KEY).status_code == 200
    assert fuzzed.stack.upstream_connections_in_use() == 0
