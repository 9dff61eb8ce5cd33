"""Tool calls with no session header belong to the session whose answer emitted them.

Before: every headerless call through /tools or MCP landed in one `tools-<agent>` session
whose budget never reset (at $0.10 a call, the 6th call of the day was refused 402 "...set
max_tokens to reserve less"). Now the gateway finds the model answer that emitted the call
(its call id in x-tollway-call-id, else its tool and arguments, else its arguments alone)
and the call joins that answer's session; a call no answer emitted lands in the agent's
bucket of the day. A sub-agent handed its task through a tool call's arguments is linked to
the session that emitted it. Official OpenAI, Anthropic and MCP clients, both backends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_mcp import Agent, agents, mcp_server, servers  # noqa: F401
from tests.e2e.test_tools_http import build, tools  # noqa: F401
from tollway.testing.mock_mcp import MockMcpServer
from tollway.testing.mock_tools import MockTools

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}}}}}]
ARGS = {"city": "Paris", "days": 3}
TOOLS_YAML = "  weather: {url: \"TOOLS/echo\", cost_usd: 0.10}\n"


def oai(s: Stack, key: str = "sk-tw-support") -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0)


def emit(s: Stack, args: dict[str, Any], stream: bool = False, **kw: Any) -> tuple[str, str]:
    """Ask the model, which calls get_weather with `args`: (the answer's session, call id)."""
    client = oai(s)
    extra = {"x-mock-tool-arguments": json.dumps(args)}
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}],
                tools=WEATHER, stream=True, extra_headers=extra, **kw) as r:  # type: ignore
            session = r.headers["x-tollway-session"]
            ids = [c.id for chunk in r.parse() for ch in chunk.choices
                   for c in ch.delta.tool_calls or () if c.id]
        return session, ids[0]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather?"}],
        tools=WEATHER, extra_headers=extra, **kw)  # type: ignore[arg-type]
    call = raw.parse().choices[0].message.tool_calls[0]  # type: ignore[index]
    return raw.headers["x-tollway-session"], call.id


def tool_call(s: Stack, query: str = "", body: Any = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    h = {"Authorization": "Bearer sk-tw-support", **(headers or {})}
    if body is None:
        return httpx.get(f"{s.url}/tools/weather/forecast{query}", headers=h, timeout=10)
    return httpx.post(f"{s.url}/tools/weather/forecast", json=body, headers=h, timeout=10)


def steps(s: Stack, session: str) -> list[dict[str, Any]]:
    return s.admin.get(f"/admin/sessions/{session}").json()[  # type: ignore[no-any-return]
        "steps"]


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


@pytest.fixture
def weather(make_any_stack: Callable[..., Stack], tools: MockTools) -> Stack:  # noqa: F811
    return build(make_any_stack, tools, TOOLS_YAML)


def test_an_emitted_call_joins_the_session_of_the_answer(weather: Stack) -> None:
    s = weather
    session, _ = emit(s, ARGS)
    # The agent runs the call through the tool gateway, no header: by its query string...
    r = tool_call(s, "?city=Paris&days=3")
    assert r.status_code == 200 and r.headers["x-tollway-session"] == session
    # ... or a JSON body; key order and "3" vs 3 do not matter
    r = tool_call(s, body={"days": "3", "city": "Paris"})
    assert r.headers["x-tollway-session"] == session
    assert [st["endpoint"] for st in steps(s, session)] == ["chat", "tool", "tool"]
    # a call no answer emitted lands in the agent's bucket of the day
    r = tool_call(s, "?city=Oslo&days=3")
    assert r.headers["x-tollway-session"] == f"tools-support-bot-{today()}"


def test_a_streamed_call_and_the_call_id_header(weather: Stack) -> None:
    s = weather
    session, call_id = emit(s, {"city": "Lyon"}, stream=True)
    r = tool_call(s, "?city=Lyon")  # the arguments were read from the stream's deltas
    assert r.headers["x-tollway-session"] == session
    other, other_id = emit(s, {"city": "Nice"})
    # the call id says it exactly, whatever the arguments the agent finally sent
    r = tool_call(s, "?city=Nice&units=metric", headers={"x-tollway-call-id": other_id})
    assert r.headers["x-tollway-session"] == other
    # the header naming a session still wins
    r = tool_call(s, "?city=Lyon", headers={"x-tollway-session": "mine"})
    assert r.headers["x-tollway-session"] == "mine"
    assert call_id and session != other


def test_another_agents_call_is_not_joined(weather: Stack) -> None:
    s = weather
    session, _ = emit(s, ARGS)
    r = httpx.get(f"{s.url}/tools/weather/forecast?city=Paris&days=3", timeout=10,
                  headers={"Authorization": "Bearer sk-tw-research"})
    assert r.headers["x-tollway-session"] == f"tools-research-agent-{today()}"
    assert r.headers["x-tollway-session"] != session


def test_tool_budget_refusal_says_what_applies(make_any_stack: Callable[..., Stack],
                                               tools: MockTools) -> None:  # noqa: F811
    s = build(make_any_stack, tools, TOOLS_YAML, "budgets: {session: {usd: 0.5}}\n")
    codes = [tool_call(s, f"?n={i}") for i in range(6)]
    assert [r.status_code for r in codes] == [200] * 5 + [402]
    err = codes[-1].json()["error"]
    assert err["code"] == "budget_exceeded"
    assert f"tools-support-bot-{today()}" in err["message"]
    assert "tool 'weather' costs $0.1000" in err["message"]
    assert "max_tokens" not in err["message"]
    # a call the model emitted is its run's, whose session budget is its own
    session, _ = emit(s, ARGS)
    r = tool_call(s, "?city=Paris&days=3")
    assert r.status_code == 200 and r.headers["x-tollway-session"] == session


def test_mcp_call_joins_the_emitting_session(make_any_stack: Callable[..., Stack],
                                             mcp_server: MockMcpServer,  # noqa: F811
                                             agents: Callable[..., Agent]) -> None:  # noqa: F811
    s = make_any_stack(extra=servers(mcp_server.url))
    echo = [{"type": "function", "function": {"name": "echo", "parameters": {
        "type": "object", "properties": {"text": {"type": "string"}}}}}]
    raw = oai(s).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}],
        tools=echo, extra_headers={"x-mock-tool-arguments": '{"text": "hello there"}'})
    session = raw.headers["x-tollway-session"]
    a = agents(s)
    assert not a.call("echo", {"text": "hello there"}).is_error
    assert not a.call("echo", {"text": "something else"}).is_error
    tool_steps = [st for st in steps(s, session) if st["endpoint"] == "tool"]
    assert [st["model"] for st in tool_steps] == ["files/echo"]
    sessions = {x["session"] for x in s.admin.get("/admin/sessions").json()["sessions"]}
    assert any(x.startswith("mcp-") for x in sessions)  # the other: the MCP session's


def test_an_anthropic_streamed_call(weather: Stack) -> None:
    s = weather
    client = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0)
    with client.messages.with_streaming_response.create(
            model="claude-sonnet", max_tokens=100, stream=True,
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
            extra_headers={"x-mock-tool-arguments": '{"city": "Bergen"}'}) as r:
        session = r.headers["x-tollway-session"]
        assert b"input_json_delta" in r.read()
    assert tool_call(s, "?city=Bergen").headers["x-tollway-session"] == session


def test_a_task_handed_through_a_tool_call_links_the_sub_agent(
        make_any_stack: Callable[..., Stack]) -> None:
    s = make_any_stack()
    task = ("Research the European e-bike market and list the five largest brands "
            "by 2025 revenue")
    delegate = [{"type": "function", "function": {"name": "delegate", "parameters": {
        "type": "object", "properties": {"task": {"type": "string"}}}}}]
    raw = oai(s).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Plan the report"}],
        tools=delegate, extra_headers={"x-mock-tool-arguments": json.dumps({"task": task})})
    lead = raw.headers["x-tollway-session"]
    sub = oai(s, "sk-tw-research").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": "You research."},
                                       {"role": "user", "content": task}])
    child = sub.headers["x-tollway-session"]
    assert child != lead
    view = s.admin.get(f"/admin/sessions/{child}").json()
    assert view["parents"] == [lead]
    assert child in s.admin.get(f"/admin/sessions/{lead}").json()["children"]



def test_a_redacted_call_still_joins_the_answer_that_emitted_it(
        make_stack: Callable[..., Stack], tools: MockTools, tmp_path: Any) -> None:  # noqa: F811
    """Guardrails rewrite the arguments the tool receives; the call is found by the
    arguments the model emitted."""
    policy = tmp_path / "g.yaml"
    policy.write_text("guardrails:\n  - {name: mails, on: [tool_args], detectors: [pii], "
                      "entities: [EMAIL_ADDRESS], action: redact}\n")
    s = build(make_stack, tools, TOOLS_YAML, extra=f'policies: ["{policy}"]\n')
    args = {"city": "Paris", "notify": "jane.doe@acme.com"}
    session, _ = emit(s, args)
    r = tool_call(s, body=args)
    assert r.status_code == 200 and r.headers["x-tollway-session"] == session
    assert "jane.doe@acme.com" not in tools.requests[-1].body.decode()  # redacted upstream
