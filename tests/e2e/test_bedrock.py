"""Amazon Bedrock (Converse) end to end: credentials from the AWS chain (the environment
here), every request SigV4-signed, the official OpenAI and Anthropic SDKs through tollway to
the mock's Converse dialect, whole and streamed (the binary event stream decoded with its
CRCs checked), tool round trips, usage and cost, errors in the client's dialect, a
fallback to Gemini, and no credentials at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Stack
from tollway.testing.mock_bedrock import ACCESS_KEY, SECRET_KEY
from tollway.testing.mock_common import mock_token_count

MODELS = """  nova: {provider: br, model: amazon.nova-lite-v1:0, price: {input: 0.06, output: 0.24}}
  claude-br: {provider: br, model: "anthropic.claude-sonnet-4-5-20250929-v1:0",
              price: {input: 3, output: 15}, fallbacks: [gemini-flash]}
  gemini-flash: {provider: gem, model: gemini-2.5-flash}
"""
PROVIDERS = ('  br: {kind: bedrock, region: eu-west-1, base_url: "MOCK"}\n'
             '  gem: {kind: gemini, base_url: "MOCK", api_key: gk-test-key-123456}\n')
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield


def bedrock_stack(make: Callable[..., Stack]) -> Stack:
    return make(providers_extra=PROVIDERS, models_extra=MODELS)


def oai(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)


def test_converse_whole_and_streamed_through_the_openai_sdk(
        make_stack: Callable[..., Stack], aws_env: None) -> None:
    s = bedrock_stack(make_stack)
    c = oai(s)
    r = c.chat.completions.create(model="nova", max_tokens=40, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi Nova"}])
    assert r.choices[0].message.content.endswith("Hi Nova")  # type: ignore[union-attr]
    sent = s.mock.requests[-1]
    assert sent.path == "/model/amazon.nova-lite-v1:0/converse"  # signed and verified
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/eu-west-1/bedrock/aws4_request" in sent.headers["authorization"]
    assert "mock-secret-access-key" not in str(sent.headers)
    assert sent.json["system"] == [{"text": "Be brief."}]
    assert sent.json["inferenceConfig"] == {"maxTokens": 40}
    chunks = list(c.chat.completions.create(
        model="nova", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream from Nova"}]))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.endswith("Stream from Nova")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == mock_token_count(text)
    assert s.mock.requests[-1].path.endswith("/converse-stream")
    rows = s.admin.get("/admin/spend", params={"by": "model"}).json()["rows"]
    nova = next(r for r in rows if r["key"] == "nova")
    assert nova["requests"] == 2 and nova["cost_usd"] > 0


def test_tool_round_trip_and_claude_on_bedrock_through_the_anthropic_sdk(
        make_stack: Callable[..., Stack], aws_env: None) -> None:
    s = bedrock_stack(make_stack)
    c = oai(s)
    first = c.chat.completions.create(
        model="nova", tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        extra_headers={"x-mock-tool-arguments": '{"city": "Oslo"}'})
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city":"Oslo"}')
    second = c.chat.completions.create(
        model="nova", tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Oslo?"},
                  first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
                  {"role": "tool", "tool_call_id": call.id, "content": "4C, rain"}])
    assert second.choices[0].finish_reason == "stop"
    assert s.mock.requests[-1].json["messages"][-1] == {"role": "user", "content": [
        {"toolResult": {"toolUseId": call.id, "content": [{"text": "4C, rain"}],
                        "status": "success"}}]}
    streamed = list(c.chat.completions.create(
        model="nova", stream=True, tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Weather in Bergen?"}],
        extra_headers={"x-mock-tool-arguments": '{"city": "Bergen"}'}))
    args = "".join(t.function.arguments or "" for ch in streamed if ch.choices
                   for t in ch.choices[0].delta.tool_calls or ())
    assert args == '{"city":"Bergen"}'  # put together from the event stream's deltas
    a = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0)
    with a.messages.stream(model="claude-br", max_tokens=64,
                           messages=[{"role": "user", "content": "Claude on Bedrock"}]) as st:
        assert "".join(st.text_stream).endswith("Claude on Bedrock")
    assert "anthropic.claude-sonnet" in s.mock.requests[-1].path


def test_errors_fallback_and_missing_credentials(
        make_stack: Callable[..., Stack], aws_env: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = bedrock_stack(make_stack)
    with pytest.raises(openai.RateLimitError) as e:
        oai(s).chat.completions.create(model="nova", messages=[
            {"role": "user", "content": "x"}], extra_headers={"x-mock-status": "429"})
    assert "Injected failure" in str(e.value)
    with pytest.raises(anthropic.RateLimitError):
        anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0
                            ).messages.create(model="nova", max_tokens=8, messages=[
                                {"role": "user", "content": "x"}],
                                extra_headers={"x-mock-status": "429"})
    with pytest.raises(openai.BadRequestError) as bad:
        oai(s).chat.completions.create(model="nova", seed=3,
                                       messages=[{"role": "user", "content": "x"}])
    assert bad.value.body["param"] == "seed"  # type: ignore[index]
    s.mock.settings.fail_models = {"anthropic.claude-sonnet-4-5-20250929-v1:0": 503}
    r = oai(s).chat.completions.with_raw_response.create(
        model="claude-br", messages=[{"role": "user", "content": "fall back"}])
    assert r.headers["x-tollway-model"] == "gemini-flash"  # Bedrock down: Gemini answered


def test_no_aws_credentials_is_a_502_naming_it(make_stack: Callable[..., Stack],
                                               monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Any) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s = bedrock_stack(make_stack)
    with pytest.raises(openai.APIStatusError) as e:
        oai(s).chat.completions.create(model="nova", messages=[
            {"role": "user", "content": "x"}])
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_auth"  # type: ignore[index]
