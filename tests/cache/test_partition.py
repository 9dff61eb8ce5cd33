"""What the semantic cache compares, and what must be identical for it to compare at all."""

from __future__ import annotations

from tollway.cache.partition import partition, split_last_turn

SYSTEM = {"role": "system", "content": "Be brief."}


def chat(text: object, **kw: object) -> dict[str, object]:
    return {"model": "m", "messages": [SYSTEM, {"role": "user", "content": text}], **kw}


def key(body: dict[str, object], scope: str = "agent=a", stream: bool = False) -> str:
    split = split_last_turn("chat", body)
    assert split is not None
    return partition(scope, "m", "chat", split[1], stream, "wordllama")


def test_last_user_turn_and_the_rest() -> None:
    text, rest = split_last_turn("chat", chat("Hello there"))  # type: ignore[misc]
    assert text == "Hello there" and rest["messages"] == [SYSTEM]
    parts = [{"type": "text", "text": "Line one"}, {"type": "text", "text": "line two"}]
    assert split_last_turn("chat", chat(parts))[0] == "Line one\nline two"  # type: ignore[index]
    assert split_last_turn("completions", {"prompt": "Say hi"})[0] == "Say hi"  # type: ignore[index]


def test_no_semantic_key_for_anything_but_plain_user_text() -> None:
    image = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": "data:,"}}]
    tool = {"model": "m", "messages": [{"role": "tool", "tool_call_id": "1", "content": "42"}]}
    named = {"model": "m", "messages": [{"role": "user", "name": "x", "content": "hi"}]}
    for body in (chat(image), chat(""), chat("   "), tool, named, {"model": "m"},
                 {"model": "m", "messages": []}, chat(None)):
        assert split_last_turn("chat", body) is None
    blocks = [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]
    assert split_last_turn("messages", {"messages": [{"role": "user", "content": blocks}]}) is None
    assert split_last_turn("completions", {"prompt": ["a", "b"]}) is None


def test_partition_is_everything_but_the_last_turn() -> None:
    base = key(chat("How do I reset my password?"))
    assert key(chat("How can I reset my password?")) == base
    assert key(chat("x", user="someone", metadata={"a": 1}, stream_options={})) == base
    for other in (key(chat("x"), scope="agent=b"), key(chat("x"), stream=True),
                  key(chat("x", temperature=0.5)), key(chat("x", tools=[{"type": "function"}])),
                  key({"model": "m", "messages": [{"role": "system", "content": "Be long."},
                                                  {"role": "user", "content": "x"}]}),
                  key({"model": "m", "messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "yo"},
                                                  {"role": "user", "content": "x"}]})):
        assert other != base
    assert base.startswith("agent=a|m|")
