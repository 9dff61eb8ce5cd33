"""Gemini as an upstream, end to end: the official OpenAI and Anthropic SDKs through tollway to
the mock provider's Gemini dialect (written from Google's generateContent reference).
Streamed and not, tool round trips, thinking tokens, usage and cost attributed, errors in
the client's dialect, a 400 for what cannot be translated, a fallback from a failing Gemini
model to an OpenAI one, a routing rule that sends cheap traffic to Gemini, a cut stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Stack
from tollway.testing.mock_common import DEFAULT_REPLY_PREFIX, mock_token_count

PROVIDER = '  gem: {kind: gemini, base_url: "MOCK", api_key: gk-test-key-123456}\n'
MODELS = ("  gemini-flash: {provider: gem, model: gemini-2.5-flash,\n"
          "                 price: {input: 0.30, output: 2.50, cached_input: 0.075}}\n")
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def gemini_stack(make: Callable[..., Stack], **kw: Any) -> Stack:
    return make(providers_extra=PROVIDER, models_extra=MODELS + kw.pop("models", ""), **kw)


def oai(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0,
                         timeout=30)


def upstream(s: Stack) -> Any:
    return s.mock.requests[-1]


def spend(s: Stack, model: str) -> dict[str, Any]:
    rows = s.admin.get("/admin/spend", params={"by": "model"}).json()["rows"]
    return next(r for r in rows if r["key"] == model)


def test_openai_client_to_gemini_whole_answer(make_stack: Callable[..., Stack]) -> None:
    s = gemini_stack(make_stack)
    r = oai(s).chat.completions.with_raw_response.create(
        model="gemini-flash", max_tokens=50, temperature=0.2, stop=["END"],
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Say hello to the world"}])
    answer = r.parse()
    assert answer.choices[0].message.content.endswith("Say hello to the world")
    assert answer.model == "gemini-flash" and answer.choices[0].finish_reason == "stop"
    sent = upstream(s)
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == "gk-test-key-123456"
    assert "authorization" not in sent.headers
    assert sent.json["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent.json["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50,
                                             "stopSequences": ["END"]}
    u = answer.usage
    assert u is not None and (u.prompt_tokens, u.completion_tokens) == (7, 11)
    row = spend(s, "gemini-flash")
    assert (row["input_tokens"], row["output_tokens"]) == (7, 11)
    assert row["cost_usd"] == pytest.approx((7 * 0.30 + 11 * 2.50) / 1e6)
    assert r.headers["x-tollway-model"] == "gemini-flash"


@pytest.mark.parametrize("asked", [True, False])
def test_openai_client_stream_from_gemini(make_stack: Callable[..., Stack],
                                          asked: bool) -> None:
    s = gemini_stack(make_stack)
    stream = oai(s).chat.completions.create(
        model="gemini-flash", stream=True, messages=[{"role": "user", "content": "Stream hi"}],
        **({"stream_options": {"include_usage": True}} if asked else {}))
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("Stream hi")
    assert upstream(s).path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert upstream(s).headers.get("x-goog-api-key")
    usage = [c.usage for c in chunks if c.usage is not None]
    assert (len(usage) == 1) is asked  # stripped unless asked for
    row = spend(s, "gemini-flash")
    assert row["output_tokens"] == mock_token_count(text) and row["requests"] == 1


def test_tool_round_trip_through_gemini(make_stack: Callable[..., Stack]) -> None:
    s = gemini_stack(make_stack)
    c = oai(s)
    first = c.chat.completions.create(
        model="gemini-flash", tools=TOOLS, tool_choice="auto",  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        extra_headers={"x-mock-tool-arguments": '{"city": "Paris"}'})
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city":"Paris"}')
    decl = upstream(s).json["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "get_weather" and decl["parameters"]["required"] == ["city"]
    assert upstream(s).json["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    second = c.chat.completions.create(
        model="gemini-flash", tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Paris?"},
                  first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
                  {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}])
    assert second.choices[0].finish_reason == "stop"
    contents = upstream(s).json["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}}]}
    # streamed, the call arrives as one tool-call delta
    chunks = list(c.chat.completions.create(
        model="gemini-flash", stream=True, tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        extra_headers={"x-mock-tool-arguments": '{"city": "Rome"}'}))
    calls = [t for ch in chunks if ch.choices for t in ch.choices[0].delta.tool_calls or ()]
    assert [(t.function.name, t.function.arguments) for t in calls] == [
        ("get_weather", '{"city":"Rome"}')]


def test_thinking_tokens_are_output_and_thoughts_are_not_the_answer(
        make_stack: Callable[..., Stack]) -> None:
    s = gemini_stack(make_stack)
    r = oai(s).chat.completions.create(model="gemini-flash", reasoning_effort="low",
                                       messages=[{"role": "user", "content": "Think, then hi"}])
    assert upstream(s).json["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 1024}}
    assert "(thinking)" not in (r.choices[0].message.content or "")
    u = r.usage
    assert u is not None and u.completion_tokens_details is not None
    assert u.completion_tokens_details.reasoning_tokens == 7
    assert u.completion_tokens == 9 + 7
    assert spend(s, "gemini-flash")["output_tokens"] == 16


def test_anthropic_client_to_gemini(make_stack: Callable[..., Stack]) -> None:
    s = gemini_stack(make_stack)
    c = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0)
    m = c.messages.create(model="gemini-flash", max_tokens=64, system="Be brief.",
                          messages=[{"role": "user", "content": "Hello from Claude's SDK"}])
    assert m.content[0].type == "text" and m.content[0].text.endswith("Claude's SDK")  # type: ignore[union-attr]
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens == mock_token_count(
        DEFAULT_REPLY_PREFIX + "Hello from Claude's SDK")
    assert upstream(s).json["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    with c.messages.stream(model="gemini-flash", max_tokens=64,
                           messages=[{"role": "user", "content": "Stream to Claude"}]) as st:
        text = "".join(st.text_stream)
        final = st.get_final_message()
    assert text.endswith("Stream to Claude")
    assert final.usage.output_tokens == mock_token_count(text)
    tool = c.messages.create(
        model="gemini-flash", max_tokens=64,
        tools=[{"name": "lookup", "input_schema": {"type": "object",
                                                    "properties": {"q": {"type": "string"}}}}],
        messages=[{"role": "user", "content": "Look it up"}],
        extra_headers={"x-mock-tool-arguments": '{"q": "tollway"}'})
    block = next(b for b in tool.content if b.type == "tool_use")
    assert (block.name, block.input) == ("lookup", {"q": "tollway"})  # type: ignore[union-attr]
    assert tool.stop_reason == "tool_use"


def test_errors_in_each_clients_dialect(make_stack: Callable[..., Stack]) -> None:
    s = gemini_stack(make_stack)
    with pytest.raises(openai.RateLimitError) as e:
        oai(s).chat.completions.create(model="gemini-flash", messages=[
            {"role": "user", "content": "x"}], extra_headers={"x-mock-status": "429"})
    assert e.value.body["code"] == "RESOURCE_EXHAUSTED"  # type: ignore[index]
    c = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0)
    with pytest.raises(anthropic.RateLimitError):
        c.messages.create(model="gemini-flash", max_tokens=8, messages=[
            {"role": "user", "content": "x"}], extra_headers={"x-mock-status": "429"})
    with pytest.raises(openai.BadRequestError) as bad:
        oai(s).chat.completions.create(model="gemini-flash", logit_bias={"1": 2},
                                       messages=[{"role": "user", "content": "x"}])
    assert bad.value.body["param"] == "logit_bias"  # type: ignore[index]
    assert bad.value.body["code"] == "untranslatable"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match=r"dialect_mismatch|cannot answer"):
        oai(s).embeddings.create(model="gemini-flash", input="x")


def test_fallback_from_gemini_to_openai_mid_incident(make_stack: Callable[..., Stack]) -> None:
    s = gemini_stack(make_stack, models="  flash-first: {provider: gem, model: gemini-2.0-flash,"
                                        " fallbacks: [gpt-4o-mini]}\n")
    s.mock.settings.fail_models = {"gemini-2.0-flash": 503}  # Gemini is down
    r = oai(s).chat.completions.with_raw_response.create(
        model="flash-first", messages=[{"role": "user", "content": "still there?"}])
    assert r.status_code == 200 and r.headers["x-tollway-model"] == "gpt-4o-mini"
    assert [q.path for q in s.mock.requests[-2:]] == [
        "/v1beta/models/gemini-2.0-flash:generateContent", "/v1/chat/completions"]
    s.mock.settings.fail_models = {}
    r = oai(s).chat.completions.with_raw_response.create(
        model="flash-first", messages=[{"role": "user", "content": "back?"}])
    assert r.headers["x-tollway-model"] == "flash-first"


def test_routing_rule_sends_cheap_traffic_to_gemini(make_stack: Callable[..., Stack]) -> None:
    s = gemini_stack(make_stack, extra="""routing:
  - name: small-prompts-to-gemini
    when: {model: gpt-4o-mini, prompt_tokens: {max: 1000}}
    to: gemini-flash
""")
    r = oai(s).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "short question"}])
    assert r.headers["x-tollway-route"] == "small-prompts-to-gemini"
    assert r.headers["x-tollway-model"] == "gemini-flash"
    assert upstream(s).path.startswith("/v1beta/models/gemini-2.5-flash")
    assert spend(s, "gemini-flash")["requests"] == 1


def test_a_cut_gemini_stream_ends_with_an_error(make_stack: Callable[..., Stack]) -> None:
    s = gemini_stack(make_stack)
    got = []
    with pytest.raises(openai.APIError, match=r"dropped the stream|ended the stream"):
        for ch in oai(s).chat.completions.create(
                model="gemini-flash", stream=True, messages=[{"role": "user", "content": "cut"}],
                extra_headers={"x-mock-disconnect-after": "2"}):
            got.append(ch)
    assert spend(s, "gemini-flash")["requests"] == 1  # what was generated is still metered


def test_anthropic_count_tokens_asks_geminis_count_tokens(
        make_stack: Callable[..., Stack]) -> None:
    s = gemini_stack(make_stack)
    c = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0)
    counted = c.messages.count_tokens(model="gemini-flash", system="Be brief.", messages=[
        {"role": "user", "content": "How many tokens is this?"}])
    sent = upstream(s)
    assert sent.path == "/v1beta/models/gemini-2.5-flash:countTokens"
    request = sent.json["generateContentRequest"]
    assert request["model"] == "models/gemini-2.5-flash"
    assert request["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert counted.input_tokens == mock_token_count("How many tokens is this?") + \
        mock_token_count("Be brief.")
    assert spend(s, "gemini-flash")["cost_usd"] == 0  # counting is free
