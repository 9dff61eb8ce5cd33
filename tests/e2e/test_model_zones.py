"""Risk zones on model answers, through the official OpenAI and Anthropic SDKs, on the memory
state and on Redis: a red-zone tool call a model emits is held for a human's approval (found
with GET /admin/approvals, decided with POST /admin/approvals/{id}); approved, the agent gets
the call unchanged; rejected, a refusal it can read (whole answers) or `policy_denied`
(streams). In a stream only the call is held: the text before it reaches the agent before
anyone approves. Yellow-zone calls are flagged; a cached red call is held again."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import wait_until

POLICY = """zones:
  red: [delete_environment, "payments/*"]
  yellow: [read_secrets]
approvals: {timeout_s: 30}
"""
TOOLS = [{"type": "function", "function": {
    "name": n, "parameters": {"type": "object", "properties": {"env": {"type": "string"}}}}}
    for n in ("delete_environment", "read_secrets", "list_environments")]
ANTHROPIC_TOOLS = [{"name": n, "input_schema": {"type": "object"}}
                   for n in ("delete_environment", "list_environments")]
MSG = [{"role": "user", "content": "Clean up the staging environment"}]
PREAMBLE = "Staging is unused since March, so I will delete it now."
ARGS = '{"env": "staging"}'


@pytest.fixture
def zoned(make_any_stack: Callable[..., Stack], tmp_path: Path) -> Stack:
    policy = tmp_path / "zones.yaml"
    policy.write_text(POLICY)
    return make_any_stack(extra=f'policies: ["{policy}"]\n')


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2) as p:
        yield p


def coder(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0,
                         timeout=30)


def call_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def pending(s: Stack) -> list[dict[str, Any]]:
    rows = s.admin.get("/admin/approvals", params={"status": "pending"}).json()["approvals"]
    return [r for r in rows if r["origin"] == "model"]


def the_pending(s: Stack) -> dict[str, Any]:
    wait_until(lambda: len(pending(s)) == 1)
    return pending(s)[0]


def decide(s: Stack, approval: dict[str, Any], decision: str, reason: str = "") -> None:
    r = s.admin.post(f"/admin/approvals/{approval['id']}",
                     json={"decision": decision, **({"reason": reason} if reason else {})})
    assert r.status_code == 200, r.text


def ask(s: Stack, tool: str = "delete_environment", **kw: Any) -> Any:
    return coder(s).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, tools=TOOLS, tool_choice=call_tool(tool),  # type: ignore[arg-type]
        extra_headers={"x-mock-tool-arguments": ARGS, **kw.pop("headers", {})}, **kw)


# --- whole answers ------------------------------------------------------------------------

def test_red_call_is_held_then_delivered_when_approved(zoned: Stack, pool) -> None:  # type: ignore[no-untyped-def]
    s = zoned
    held = pool.submit(ask, s)
    a = the_pending(s)
    assert a["tool"] == "delete_environment" and a["agent"] == "support-bot"
    assert a["team"] == "support" and a["session"]
    assert "delete_environment" in a["summary"] and '"staging"' in a["summary"]
    assert not held.done() and len(s.mock.requests) == 1  # the model answered; we hold it
    decide(s, a, "approve")
    raw = held.result(timeout=15)
    call = raw.parse().choices[0].message.tool_calls[0]
    assert call.function.name == "delete_environment" and call.function.arguments == ARGS
    assert raw.headers["x-tollway-policy"] == "approved:delete_environment"
    assert s.metric("tollway_approvals_total", tool="delete_environment",
                    decision="approved") == 1
    assert s.metric("tollway_model_tool_calls_flagged_total", tool="delete_environment",
                    action="red") == 1
    flags = step_flags(s, raw.headers["x-tollway-session"])
    assert "model_tool_call:red:delete_environment" in flags
    assert f"approved:{a['id']}" in flags


def test_red_call_rejected_becomes_a_refusal_the_agent_reads(zoned: Stack, pool) -> None:  # type: ignore[no-untyped-def]
    s = zoned
    held = pool.submit(ask, s)
    decide(s, the_pending(s), "reject", "staging is still in use")
    raw = held.result(timeout=15)
    choice = raw.parse().choices[0]
    assert not choice.message.tool_calls and choice.finish_reason == "stop"
    assert "delete_environment was not delivered" in (choice.message.content or "")
    assert "staging is still in use" in (choice.message.content or "")
    assert raw.headers["x-tollway-policy"] == "rejected:delete_environment"
    assert s.metric("tollway_approvals_total", tool="delete_environment",
                    decision="rejected") == 1


def test_yellow_call_is_flagged_not_held(zoned: Stack) -> None:
    s = zoned
    raw = ask(s, "read_secrets")
    assert raw.parse().choices[0].message.tool_calls[0].function.name == "read_secrets"
    assert raw.headers["x-tollway-policy"] == "flagged:read_secrets"
    assert "model_tool_call:yellow:read_secrets" in step_flags(
        s, raw.headers["x-tollway-session"])
    green = ask(s, "list_environments")  # green: untouched, no header
    assert "x-tollway-policy" not in green.headers
    assert pending(s) == []
    # a stream: its headers are gone by the time the call starts; the step says it
    with coder(s).chat.completions.create(
            model="gpt-4o-mini", messages=MSG, tools=TOOLS, stream=True,  # type: ignore[arg-type]
            tool_choice=call_tool("read_secrets")) as st:
        names = [c.function.name for ch in st for c in (ch.choices[0].delta.tool_calls or [])
                 if ch.choices and c.function and c.function.name]
    assert names == ["read_secrets"]
    assert s.metric("tollway_model_tool_calls_flagged_total", action="yellow") == 2


def test_a_cached_red_call_is_held_again(make_any_stack: Callable[..., Stack], tmp_path: Path,
                                         pool) -> None:  # type: ignore[no-untyped-def]
    policy = tmp_path / "zones.yaml"
    policy.write_text(POLICY)
    s = make_any_stack(extra=f'policies: ["{policy}"]\n'
                       "cache: {exact: {enabled: true, ttl_s: 60}}\n")
    first = pool.submit(ask, s, temperature=0)
    decide(s, the_pending(s), "approve")
    assert first.result(timeout=15).headers["x-tollway-cache"] == "miss"
    wait_until(lambda: s.loop.run(s.gateway.state.cache.size("c:")) == 1)  # stored
    again = pool.submit(ask, s, temperature=0)
    a = the_pending(s)  # the hit went through the policy's hook: held like a fresh answer
    decide(s, a, "reject")
    raw = again.result(timeout=15)
    assert raw.headers["x-tollway-cache"] == "exact"
    assert not raw.parse().choices[0].message.tool_calls
    assert len(s.mock.requests) == 1


# --- streams ------------------------------------------------------------------------------

def stream_until_text(s: Stack, want: str) -> tuple[Any, Iterator[Any], str]:
    """Open a stream whose model says `want`, then calls delete_environment; read until all
    of the text has arrived (the call is held by then)."""
    st = coder(s).chat.completions.create(
        model="gpt-4o-mini", messages=MSG, tools=TOOLS, stream=True,  # type: ignore[arg-type]
        tool_choice=call_tool("delete_environment"),
        extra_headers={"x-mock-tool-arguments": ARGS, "x-mock-preamble": want})
    it = iter(st)
    text = ""
    while text != want:
        chunk = next(it)
        for c in chunk.choices:
            assert not c.delta.tool_calls  # nothing of the call before it is approved
            text += c.delta.content or ""
    return st, it, text


def test_streamed_text_goes_first_then_the_approved_call(zoned: Stack) -> None:
    s = zoned
    st, it, text = stream_until_text(s, PREAMBLE)
    assert text == PREAMBLE  # the agent has the text, and the approval is still open:
    a = the_pending(s)
    assert a["status"] == "pending" and "streamed" in a["summary"]
    decide(s, a, "approve")
    rest = list(it)
    st.close()
    calls = [c for ch in rest for choice in ch.choices for c in choice.delta.tool_calls or []]
    assert calls[0].function.name == "delete_environment"
    assert "".join(c.function.arguments or "" for c in calls) == ARGS  # unchanged
    assert rest[-1].choices == [] or rest[-1].choices[0].finish_reason == "tool_calls"


def test_streamed_call_rejected_ends_with_policy_denied(zoned: Stack) -> None:
    s = zoned
    st, it, text = stream_until_text(s, PREAMBLE)
    assert text == PREAMBLE
    decide(s, the_pending(s), "reject", "not today")
    with pytest.raises(openai.APIError) as e:
        for chunk in it:
            for c in chunk.choices:
                assert not c.delta.tool_calls
    st.close()
    assert "red zone" in str(e.value) and "not today" in str(e.value)
    assert s.metric("tollway_approvals_total", tool="delete_environment",
                    decision="rejected") == 1


def test_anthropic_stream_holds_the_tool_use_block_only(zoned: Stack) -> None:
    s = zoned
    c = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0, timeout=30)
    with c.messages.stream(
            model="claude-sonnet", max_tokens=256, messages=MSG,  # type: ignore[arg-type]
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "tool", "name": "delete_environment"},
            extra_headers={"x-mock-tool-arguments": ARGS,
                           "x-mock-preamble": PREAMBLE}) as st:
        events = iter(st)
        text = ""
        while text != PREAMBLE:
            ev = next(events)
            assert ev.type != "content_block_start" or ev.content_block.type == "text"
            if ev.type == "text":
                text += ev.text
        decide(s, the_pending(s), "approve")
        for _ in events:
            pass
        message = st.get_final_message()
    blocks = [b for b in message.content if b.type == "tool_use"]
    assert blocks[0].name == "delete_environment" and blocks[0].input == {"env": "staging"}
    assert message.content[0].type == "text" and message.content[0].text == PREAMBLE


def test_anthropic_whole_answer_rejected(zoned: Stack, pool) -> None:  # type: ignore[no-untyped-def]
    s = zoned
    c = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0, timeout=30)
    held = pool.submit(c.messages.create, model="claude-sonnet", max_tokens=256, messages=MSG,
                       tools=ANTHROPIC_TOOLS,
                       tool_choice={"type": "tool", "name": "delete_environment"},
                       extra_headers={"x-mock-tool-arguments": ARGS})
    decide(s, the_pending(s), "reject")
    m = held.result(timeout=15)
    assert m.stop_reason == "end_turn" and all(b.type == "text" for b in m.content)
    assert "delete_environment was not delivered" in m.content[-1].text  # type: ignore[union-attr]


def step_flags(s: Stack, session: str) -> list[str]:
    def steps() -> list[dict[str, Any]]:
        view = s.admin.get(f"/admin/sessions/{session}")
        return view.json()["steps"] if view.status_code == 200 else []
    wait_until(lambda: bool(steps()))
    return [f for st in steps() for f in st["flags"]]


def test_in_the_chain_only_when_needed_and_free_without_tools(
        make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    """No policies and no runtime keys (which may come with limits at any time): no policy
    stage. Zones only: the stage, and a hook only for requests that offer tools (a request
    without tools pays nothing per chunk)."""
    from types import SimpleNamespace

    from tollway.exchange import Caller

    plain = make_stack(identity_extra="runtime_keys: false")
    assert "policy" not in plain.gateway.runtime.chain.names  # type: ignore[union-attr]
    policy = tmp_path / "zones.yaml"
    policy.write_text(POLICY)
    s = make_stack(extra=f'policies: ["{policy}"]\n')
    chain = s.gateway.runtime.chain  # type: ignore[union-attr]
    stage = chain.stages[chain.names.index("policy")]
    route = s.gateway.runtime.registry.routes["gpt-4o-mini"]  # type: ignore[union-attr]

    def hooks(body: dict[str, Any]) -> list[Any]:
        ex = SimpleNamespace(target=SimpleNamespace(route=route, requested="gpt-4o-mini"),
                             caller=Caller("support-bot", "support"), body=body, hooks=[])
        s.loop.run(stage.on_request(ex))
        return ex.hooks
    assert hooks({"messages": MSG}) == []
    assert len(hooks({"messages": MSG, "tools": TOOLS})) == 1
    # Runtime keys on (the default) put the stage in the chain; a caller whose key has no
    # limits gets no hook, tools or not.
    s = make_stack()
    chain = s.gateway.runtime.chain  # type: ignore[union-attr]
    stage = chain.stages[chain.names.index("policy")]
    assert hooks({"messages": MSG}) == [] and hooks({"messages": MSG, "tools": TOOLS}) == []


def test_an_unanswered_approval_times_out_as_rejected(make_any_stack: Callable[..., Stack],
                                                       tmp_path: Path) -> None:
    policy = tmp_path / "zones.yaml"
    policy.write_text(POLICY.replace("timeout_s: 30", "timeout_s: 0.3"))
    s = make_any_stack(extra=f'policies: ["{policy}"]\n')
    raw = ask(s)  # nobody answers
    content = raw.parse().choices[0].message.content or ""
    assert "was not given within 0.3s" in content
    with pytest.raises(openai.APIError) as e:
        for _ in coder(s).chat.completions.create(
                model="gpt-4o-mini", messages=MSG, tools=TOOLS, stream=True,  # type: ignore[arg-type]
                tool_choice=call_tool("delete_environment")):
            pass
    assert "red zone" in str(e.value) and "was not given within 0.3s" in str(e.value)
    assert s.metric("tollway_approvals_total", tool="delete_environment",
                    decision="expired") == 2
