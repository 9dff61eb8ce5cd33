"""An OpenAI client on an Anthropic model and an Anthropic client on an OpenAI model: the
official SDKs cannot tell, streamed or not, with tool calls."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from tests.conftest import Stack

OA_TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Look something up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
AN_TOOLS = [{"name": "lookup", "description": "Look something up",
             "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
Q = "What is the tallest mountain in Europe"


def oa(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-tw-support", max_retries=0)


def an(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="sk-tw-support", max_retries=0)


def test_openai_client_on_anthropic_model(stack: Stack) -> None:
    c = oa(stack)
    raw = c.chat.completions.with_raw_response.create(
        model="claude-sonnet", max_tokens=300,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": Q}])
    r = raw.parse()
    assert r.object == "chat.completion" and r.model == "claude-sonnet"
    assert r.choices[0].message.content.startswith("This is tollway's demo model")
    assert r.choices[0].finish_reason == "stop"
    seen = stack.mock.requests[-1]
    assert seen.path == "/v1/messages" and seen.json["system"] == "Be brief."
    assert seen.json["model"] == "claude-sonnet-4-5" and seen.json["max_tokens"] == 300
    cost = (r.usage.prompt_tokens * 3 + r.usage.completion_tokens * 15) / 1e6
    assert float(raw.headers["x-tollway-cost-usd"]) == pytest.approx(cost, abs=1e-8)

    # streamed, with the usage the client asked for
    chunks = list(c.chat.completions.create(model="claude-sonnet", max_tokens=300, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": Q}]))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_openai_client_tool_calls_on_anthropic_model(stack: Stack) -> None:
    c = oa(stack)
    msgs: list = [{"role": "user", "content": Q}]
    r = c.chat.completions.create(model="claude-sonnet", messages=msgs, tools=OA_TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    assert json.loads(call.function.arguments)["query"]
    msgs += [r.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "Mont Blanc, 4805 m"}]
    r2 = c.chat.completions.create(model="claude-sonnet", messages=msgs, tools=OA_TOOLS)
    assert r2.choices[0].finish_reason == "stop"
    sent = stack.mock.requests[-1].json["messages"]
    assert sent[-1]["content"][0]["type"] == "tool_result"  # translated to Anthropic's shape

    with c.chat.completions.stream(model="claude-sonnet", messages=msgs[:1],
                                   tools=OA_TOOLS) as s:
        final = s.get_final_completion()
    tc = final.choices[0].message.tool_calls[0]
    assert tc.function.name == "lookup" and json.loads(tc.function.arguments)["query"]


def test_anthropic_client_on_openai_model(stack: Stack) -> None:
    c = an(stack)
    raw = c.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=300, system="Be brief.",
        messages=[{"role": "user", "content": Q}])
    m = raw.parse()
    assert m.type == "message" and m.model == "gpt-4o-mini"
    assert m.content[0].text.startswith("This is tollway's demo model")
    assert m.stop_reason == "end_turn"
    seen = stack.mock.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen.headers["authorization"] == "Bearer sk-upstream-openai"
    with c.messages.stream(model="gpt-4o-mini", max_tokens=300,
                           messages=[{"role": "user", "content": Q}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == m.content[0].text
    assert final.usage.output_tokens == m.usage.output_tokens
    rows = stack.admin.get("/admin/spend?by=model").json()["rows"]
    assert next(r for r in rows if r["key"] == "gpt-4o-mini")["output_tokens"] == (
        2 * m.usage.output_tokens)


def test_anthropic_client_tool_use_on_openai_model(stack: Stack) -> None:
    c = an(stack)
    msgs: list = [{"role": "user", "content": Q}]
    m = c.messages.create(model="gpt-4o-mini", max_tokens=300, tools=AN_TOOLS, messages=msgs)
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "lookup" and use.input["query"]
    msgs += [{"role": "assistant", "content": [b.model_dump() for b in m.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                           "content": "Mont Blanc"}]}]
    done = c.messages.create(model="gpt-4o-mini", max_tokens=300, tools=AN_TOOLS,
                             messages=msgs)
    assert done.stop_reason == "end_turn"
    assert stack.mock.requests[-1].json["messages"][-1]["role"] == "tool"
    with c.messages.stream(model="gpt-4o-mini", max_tokens=300, tools=AN_TOOLS,
                           messages=msgs[:1]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].input["query"]


def test_errors_are_translated(stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError):
        oa(stack).chat.completions.create(model="claude-sonnet", messages=[
            {"role": "user", "content": Q}], extra_headers={"x-mock-status": "429"})
    with pytest.raises(anthropic.InternalServerError) as e:
        an(stack).messages.create(model="gpt-4o-mini", max_tokens=10, messages=[
            {"role": "user", "content": Q}], extra_headers={"x-mock-status": "500"})
    assert e.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as e2:
        oa(stack).chat.completions.create(model="claude-sonnet", n=2, messages=[
            {"role": "user", "content": Q}])
    assert e2.value.code == "untranslatable"
