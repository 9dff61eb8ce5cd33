"""The Responses API to every provider: the official OpenAI SDK's `responses.create`, whole
and streamed, with function tools and a tool round trip, through tollway to the mock's
Anthropic, Gemini and Bedrock dialects; usage and cost attributed; what only OpenAI's own
servers have (`previous_response_id`, built-in tools) is a 400 naming it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_bedrock import PROVIDERS
from tollway.testing.mock_bedrock import ACCESS_KEY, SECRET_KEY

MODELS = """  nova: {provider: br, model: amazon.nova-lite-v1:0, price: {input: 0.06, output: 0.24}}
  gemini-flash: {provider: gem, model: gemini-2.5-flash, price: {input: 0.3, output: 2.5}}
"""
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]
TARGETS = ["claude-sonnet", "gemini-flash", "nova"]


@pytest.fixture
def stack(make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    yield make_stack(providers_extra=PROVIDERS, models_extra=MODELS)


def client(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)


@pytest.mark.parametrize("model", TARGETS)
def test_responses_whole_and_streamed(stack: Stack, model: str) -> None:
    c = client(stack)
    r = c.responses.create(model=model, instructions="Be brief.", input="Hello there",
                           max_output_tokens=64)
    assert r.status == "completed" and r.output_text.endswith("Hello there")
    assert r.usage is not None and r.usage.output_tokens > 0 and r.usage.input_tokens > 0
    events = list(c.responses.create(model=model, input="Stream this", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.endswith("Stream this")
    done = events[-1].response  # type: ignore[union-attr]
    assert done.output_text == text and done.usage is not None
    assert [e.sequence_number for e in events] == list(range(len(events)))
    rows = stack.admin.get("/admin/spend", params={"by": "model"}).json()["rows"]
    assert next(row for row in rows if row["key"] == model)["requests"] == 2


@pytest.mark.parametrize("model", TARGETS)
def test_responses_tool_round_trip(stack: Stack, model: str) -> None:
    c = client(stack)
    first = c.responses.create(model=model, input="Weather in Lima?", tools=TOOLS,  # type: ignore[arg-type]
                               extra_headers={"x-mock-tool-arguments": '{"city": "Lima"}'})
    call = next(o for o in first.output if o.type == "function_call")
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Lima"}')  # type: ignore[union-attr]
    second = c.responses.create(model=model, tools=TOOLS, input=[  # type: ignore[arg-type]
        {"role": "user", "content": "Weather in Lima?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,  # type: ignore[union-attr]
         "arguments": call.arguments},  # type: ignore[union-attr]
        {"type": "function_call_output", "call_id": call.call_id,  # type: ignore[union-attr]
         "output": "19C, clear"}])
    assert second.status == "completed" and second.output_text
    streamed = list(c.responses.create(
        model=model, input="Weather in Quito?", tools=TOOLS, stream=True,  # type: ignore[arg-type]
        extra_headers={"x-mock-tool-arguments": '{"city": "Quito"}'}))
    done = [e for e in streamed if e.type == "response.function_call_arguments.done"]
    assert [json.loads(e.arguments) for e in done] == [{"city": "Quito"}]  # type: ignore[union-attr]


def test_what_only_openai_keeps_is_named(stack: Stack) -> None:
    c = client(stack)
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="gemini-flash", input="x", previous_response_id="resp_1")
    assert e.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="claude-sonnet", input="x",
                           tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert e.value.body["param"] == "tools[0]"  # type: ignore[index]
