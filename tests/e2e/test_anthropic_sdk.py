"""The official anthropic SDK through the gateway: messages, streams, tools, count_tokens."""

from __future__ import annotations

import anthropic
import pytest

from tests.conftest import Stack

TOOLS = [{"name": "lookup", "description": "Look something up",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]


def client(stack: Stack, key: str = "sk-tw-research") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0)


def price(u: anthropic.types.Usage) -> float:
    return (u.input_tokens * 3 + u.output_tokens * 15) / 1e6


def test_messages_non_streaming(stack: Stack) -> None:
    raw = client(stack).messages.with_raw_response.create(
        model="claude-sonnet", max_tokens=200, system="Be brief.",
        messages=[{"role": "user", "content": "Name three rivers in Europe"}])
    m = raw.parse()
    assert m.content[0].text.startswith("This is tollway's demo model answering")
    assert float(raw.headers["x-tollway-cost-usd"]) == pytest.approx(price(m.usage), abs=1e-8)
    seen = stack.mock.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == "sk-upstream-anthropic"
    assert seen.json["model"] == "claude-sonnet-4-5"  # alias resolved to the provider's id
    row = stack.admin.get("/admin/spend", params={"by": "agent"}).json()["rows"][0]
    assert row["key"] == "research-agent" and row["input_tokens"] == m.usage.input_tokens


def test_messages_streaming_reads_usage_from_events(stack: Stack) -> None:
    with client(stack).messages.stream(
            model="claude-sonnet", max_tokens=200,
            messages=[{"role": "user", "content": "Name three rivers in Europe"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.startswith("This is")
    rows = stack.admin.get("/admin/spend", params={"by": "model"}).json()["rows"]
    row = next(r for r in rows if r["key"] == "claude-sonnet")
    assert row["input_tokens"] == final.usage.input_tokens
    assert row["output_tokens"] == final.usage.output_tokens
    assert row["cost_usd"] == pytest.approx(price(final.usage))
    assert stack.metric("tollway_usage_counted_total") == 0
    assert stack.metric("tollway_time_to_first_token_seconds_count", model="claude-sonnet") == 1


def test_tool_use_round_trip_streamed_and_not(stack: Stack) -> None:
    c = client(stack)
    msgs = [{"role": "user", "content": "Find the population of Lyon"}]
    m = c.messages.create(model="claude-sonnet", max_tokens=200, tools=TOOLS, messages=msgs)
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "lookup"
    msgs += [{"role": "assistant", "content": [b.model_dump() for b in m.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                           "content": "about 520,000"}]}]
    done = c.messages.create(model="claude-sonnet", max_tokens=200, tools=TOOLS, messages=msgs)
    assert done.stop_reason == "end_turn"
    with c.messages.stream(model="claude-sonnet", max_tokens=200, tools=TOOLS,
                           messages=msgs[:1]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].input["query"]
    # The second call continues the first's answer (its tool_use id): one run. The third
    # sends the opening again after that run went on: a new run (issue 13).
    sessions = stack.admin.get("/admin/sessions").json()["sessions"]
    assert sorted(s["steps"] for s in sessions) == [1, 2]


def test_count_tokens_is_free(stack: Stack) -> None:
    n = client(stack).messages.count_tokens(
        model="claude-sonnet", messages=[{"role": "user", "content": "count me please"}])
    assert n.input_tokens > 0
    rows = stack.admin.get("/admin/spend", params={"by": "agent"}).json()["rows"]
    assert rows[0]["cost_usd"] == 0 and rows[0]["input_tokens"] == 0


def test_anthropic_estimate_calibrates_from_usage(stack: Stack) -> None:
    c = client(stack)
    long = "word " * 400
    gw = stack.gateway
    before = stack.on_loop(lambda: gw.counter.factor("claude-sonnet", 1.1))
    c.messages.create(model="claude-sonnet", max_tokens=10,
                      messages=[{"role": "user", "content": long}])
    after = stack.on_loop(lambda: gw.counter.factor("claude-sonnet", 1.1))
    # The mock counts one token per word, o200k counts one per "word "; the factor moves to ~1.
    assert before == 1.1 and after == pytest.approx(1.0, abs=0.05)


def test_models_list_in_anthropic_shape(stack: Stack) -> None:
    ids = [m.id for m in client(stack).models.list()]
    assert "claude-sonnet" in ids
