"""The official openai SDK, pointed at the gateway by base_url, sees the provider's behaviour
unchanged, and the gateway attributes tokens and cost to the right agent and session."""

from __future__ import annotations

import base64

import openai
import pytest

from tests.conftest import Stack

MESSAGES = [{"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is the capital of France?"}]
TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Look something up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


def client(stack: Stack, key: str = "sk-tw-support") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


def aclient(stack: Stack, key: str = "sk-tw-support") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)


def cost(prompt: int, completion: int, pin: float = 0.15, pout: float = 0.60) -> float:
    return (prompt * pin + completion * pout) / 1e6


def test_chat_non_streaming_attributes_cost(stack: Stack) -> None:
    raw = client(stack).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES)
    r = raw.parse()
    assert r.choices[0].message.content.startswith("This is tollway's demo model answering")
    assert r.usage is not None and r.usage.prompt_tokens > 0
    expected = cost(r.usage.prompt_tokens, r.usage.completion_tokens)
    assert float(raw.headers["x-tollway-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    assert raw.headers["x-tollway-agent"] == "support-bot"
    assert raw.headers["x-tollway-model"] == "gpt-4o-mini"
    assert raw.headers["x-tollway-request-id"].startswith("req_")
    session = raw.headers["x-tollway-session"]

    spend = stack.admin.get("/admin/spend", params={"by": "agent"}).json()
    row = next(r for r in spend["rows"] if r["key"] == "support-bot")
    assert row["requests"] == 1
    assert row["input_tokens"] == r.usage.prompt_tokens
    assert row["output_tokens"] == r.usage.completion_tokens
    assert row["cost_usd"] == pytest.approx(expected)
    team = stack.admin.get("/admin/spend", params={"by": "team"}).json()
    assert next(r for r in team["rows"] if r["key"] == "support")["cost_usd"] == pytest.approx(
        expected)
    steps = stack.admin.get(f"/admin/sessions/{session}").json()
    assert steps["agent"] == "support-bot" and steps["steps"][0]["model"] == "gpt-4o-mini"
    assert steps["steps"][0]["status"] == 200
    # No budget, token limit or rule needed a count: the upstream's usage is billed and the
    # prompt was never tokenised (tests/e2e/test_guards.py: counted when a budget needs it).
    assert steps["steps"][0]["prompt_tokens_counted"] == 0

    assert stack.metric("tollway_cost_usd_total", agent="support-bot") == pytest.approx(expected)
    assert stack.metric("tollway_tokens_total", agent="support-bot", type="output") == (
        r.usage.completion_tokens)
    assert stack.metric("tollway_requests_total", agent="support-bot", status="200") == 1
    assert stack.metric("tollway_inflight_requests") == 0


def test_upstream_key_comes_from_config_not_client(stack: Stack) -> None:
    client(stack).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    seen = stack.mock.requests[-1]
    assert seen.headers["authorization"] == "Bearer sk-upstream-openai"
    assert "sk-tw-support" not in str(seen.headers)


def test_streaming_strips_injected_usage(stack: Stack) -> None:
    chunks = list(client(stack).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True))
    # What the client sees is what the provider sends without include_usage: no usage chunk,
    # no usage fields.
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("This is")
    forwarded = stack.mock.requests[-1].json
    assert forwarded["stream_options"] == {"include_usage": True}
    # ...and the gateway still read the usage.
    spend = stack.admin.get("/admin/spend", params={"by": "model"}).json()
    row = next(r for r in spend["rows"] if r["key"] == "gpt-4o-mini")
    assert row["output_tokens"] > 0 and row["cost_usd"] > 0
    assert stack.metric("tollway_time_to_first_token_seconds_count", model="gpt-4o-mini") == 1
    assert stack.metric("tollway_usage_counted_total") == 0


def test_streaming_keeps_usage_the_client_asked_for(stack: Stack) -> None:
    chunks = list(client(stack).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    spend = stack.admin.get("/admin/spend", params={"by": "agent"}).json()
    row = next(r for r in spend["rows"] if r["key"] == "support-bot")
    assert row["output_tokens"] == chunks[-1].usage.completion_tokens
    assert row["cost_usd"] == pytest.approx(
        cost(chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens))


def test_tool_calls_non_streaming_and_streaming(stack: Stack) -> None:
    c = client(stack)
    r = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    follow = [*MESSAGES, r.choices[0].message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": "Paris"}]
    r2 = c.chat.completions.create(model="gpt-4o-mini", messages=follow, tools=TOOLS)
    assert r2.choices[0].finish_reason == "stop"

    stream = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS,
                                       stream=True)
    args = ""
    name = None
    for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or []:
            name = tc.function.name or name
            args += tc.function.arguments or ""
    assert name == "lookup" and args.startswith("{")
    # Derived without any header: the first two calls are one run (the second continues the
    # first's answer, by its tool-call id); the third sends the opening again after that run
    # went on, so it is a new run (issue 13: batch runs of one task are separate sessions).
    sessions = stack.admin.get("/admin/sessions").json()["sessions"]
    steps = sorted((s["session"], s["steps"]) for s in sessions)
    assert [n for _, n in steps] == [2, 1] and steps[1][0] == steps[0][0] + "-2"


def test_unknown_fields_and_aliases_pass_through(stack: Stack) -> None:
    raw = client(stack).chat.completions.with_raw_response.create(
        model="fast", messages=MESSAGES, extra_body={"vendor_flag": {"x": [1, 2]}},
        temperature=0.2)
    assert raw.headers["x-tollway-model"] == "fast"
    forwarded = stack.mock.requests[-1].json
    assert forwarded["model"] == "gpt-4.1-nano"  # the provider's own id
    assert forwarded["vendor_flag"] == {"x": [1, 2]} and forwarded["temperature"] == 0.2


def test_unchanged_body_is_forwarded_byte_for_byte(stack: Stack) -> None:
    import httpx

    body = b'{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"hi"}],"z":1}'
    r = httpx.post(stack.url + "/v1/chat/completions", content=body,
                   headers={"Authorization": "Bearer sk-tw-support",
                            "Content-Type": "application/json"})
    assert r.status_code == 200
    assert stack.mock.requests[-1].raw == body


async def test_async_client_streams_and_counts(stack: Stack) -> None:
    c = aclient(stack, key="sk-tw-research")
    r = await c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    text = ""
    async for chunk in await c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                        stream=True):
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert text == r.choices[0].message.content
    spend = stack.admin.get("/admin/spend", params={"by": "agent"}).json()
    row = next(r for r in spend["rows"] if r["key"] == "research-agent")  # a hashed key
    assert row["requests"] == 2 and row["output_tokens"] == 2 * r.usage.completion_tokens


def test_completions_embeddings_responses(stack: Stack) -> None:
    c = client(stack)
    comp = c.completions.create(model="gpt-4o-mini", prompt="Say hello", max_tokens=5)
    assert comp.choices[0].text and comp.usage.completion_tokens <= 5
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="gpt-4o-mini", prompt="Say hello", stream=True) if ch.choices)
    assert streamed

    emb = c.embeddings.create(model="gpt-4o-mini", input=["one", "two"])
    assert len(emb.data) == 2 and emb.usage.prompt_tokens > 0
    emb_b64 = c.embeddings.create(model="gpt-4o-mini", input="one", encoding_format="base64")
    assert isinstance(emb_b64.data[0].embedding, str)
    base64.b64decode(emb_b64.data[0].embedding)

    resp = c.responses.create(model="gpt-4o-mini", input="Tell me a fact")
    assert resp.output_text and resp.usage.output_tokens > 0
    events = list(c.responses.create(model="gpt-4o-mini", input="Tell me a fact", stream=True))
    assert events[-1].type == "response.completed"

    by_model = stack.admin.get("/admin/spend", params={"by": "model"}).json()["rows"]
    row = next(r for r in by_model if r["key"] == "gpt-4o-mini")
    # completions x2, embeddings x2, responses x2 all metered
    assert row["requests"] == 6
    expected_out = (comp.usage.completion_tokens + resp.usage.output_tokens * 2)
    assert row["output_tokens"] >= expected_out


def test_models_list(stack: Stack) -> None:
    ids = [m.id for m in client(stack).models.list()]
    assert ids == ["gpt-4o-mini", "fast", "claude-sonnet", "unreachable"]
