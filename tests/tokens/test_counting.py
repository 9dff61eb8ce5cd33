"""Offline encodings, per-family choice, the per-message memo and the Anthropic estimate."""

from __future__ import annotations

import pytest

from tollway.tokens import encodings
from tollway.tokens.counter import TokenCounter
from tollway.tokens.encodings import EncodingUnavailable, encoding_name_for_model, get_encoding


def test_official_files_load_offline_and_encode_like_tiktoken() -> None:
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert get_encoding("o200k_harmony").n_vocab == 201088


def test_a_tampered_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(encodings.OFFICIAL_SHA256, "cl100k_base", "0" * 64)
    with pytest.raises(EncodingUnavailable, match="not the official"):
        encodings._read_packaged("cl100k_base")


@pytest.mark.parametrize("model,enc", [
    ("gpt-4o-mini", "o200k_base"), ("gpt-4.1", "o200k_base"), ("gpt-5", "o200k_base"),
    ("o3-mini", "o200k_base"), ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("text-embedding-3-small", "cl100k_base"), ("openai/gpt-oss-120b", "o200k_harmony"),
    ("llama-3-70b", "o200k_base"),
])
def test_encoding_per_family(model: str, enc: str) -> None:
    assert encoding_name_for_model(model) == enc


def test_history_is_not_retokenised() -> None:
    c = TokenCounter()
    history = [{"role": "system", "content": "You are an agent."}]
    for step in range(50):
        history.append({"role": "user", "content": f"step {step}: " + "lorem ipsum " * 40})
        c.count_prompt("o200k_base", history, [])
        history.append({"role": "assistant", "content": f"done {step}"})
    # Each distinct message was encoded once (system, 50 user, 49 assistant); every later
    # step found the earlier ones in the memo.
    assert c.misses == 1 + 50 + 49
    assert c.hits == sum(2 * k + 2 for k in range(50)) - c.misses


def test_counts_match_a_direct_encoding() -> None:
    c = TokenCounter()
    msgs = [{"role": "user", "content": "hello world"}]
    # 3 per message + 3 reply priming + the content
    assert c.count_prompt("o200k_base", msgs, []) == 3 + 3 + 2


def test_tool_calls_and_parts_are_counted() -> None:
    c = TokenCounter()
    plain = c.count_prompt("o200k_base", [{"role": "assistant", "content": None}], [])
    with_call = c.count_prompt("o200k_base", [{"role": "assistant", "content": None,
                                               "tool_calls": [{"id": "c1", "type": "function",
                                                               "function": {
                                                                   "name": "lookup",
                                                                   "arguments": '{"q": "x"}'}}]}],
                               [])
    parts = c.count_prompt("o200k_base", [{"role": "user", "content": [
        {"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": "x"}}]}],
        [])
    assert with_call > plain and parts > 700


def test_estimate_calibrates_towards_real_usage() -> None:
    c = TokenCounter()
    assert c.estimate("claude", 1.1, 100) == 110
    for _ in range(60):
        c.calibrate("claude", 1.1, 100, 130)
    assert c.factor("claude", 1.1) == pytest.approx(1.3, abs=0.01)
    c.calibrate("claude", 1.1, 100, 0)  # a zero (cache hit) does not move it
    assert c.factor("claude", 1.1) == pytest.approx(1.3, abs=0.01)
