"""Streams cut short by either side: the client sees a clean end in its dialect, and the
tokens produced so far are still accounted."""

from __future__ import annotations

import time
from collections.abc import Callable

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import Stack

MSG = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper please"}]


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Wait for a condition the gateway reaches asynchronously (not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def spend_row(stack: Stack, by: str, key: str) -> dict | None:
    rows = stack.admin.get("/admin/spend", params={"by": by}).json()["rows"]
    return next((r for r in rows if r["key"] == key), None)


def test_upstream_drops_openai_stream(stack: Stack) -> None:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-tw-support", max_retries=0)
    got = ""
    with pytest.raises(openai.APIError) as e:
        for chunk in c.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                               extra_headers={"x-mock-disconnect-after": "4"}):
            got += chunk.choices[0].delta.content or ""
    assert "dropped" in str(e.value.message) or "ended" in str(e.value.message)
    assert got  # the chunks before the cut arrived
    row = spend_row(stack, "agent", "support-bot")
    assert row is not None and row["output_tokens"] > 0 and row["cost_usd"] > 0
    assert stack.metric("tollway_usage_counted_total", model="gpt-4o-mini") == 1
    assert stack.metric("tollway_stream_interruptions_total", side="upstream") == 1
    session = stack.admin.get("/admin/sessions").json()["sessions"][0]["session"]
    step = stack.admin.get(f"/admin/sessions/{session}").json()["steps"][0]
    assert step["status"] == 502 and step["usage_source"] == "counted"
    assert stack.upstream_connections_in_use() == 0


def test_upstream_drops_anthropic_stream(stack: Stack) -> None:
    c = anthropic.Anthropic(base_url=stack.url, api_key="sk-tw-support", max_retries=0)
    with pytest.raises(anthropic.APIError):
        with c.messages.stream(model="claude-sonnet", max_tokens=300, messages=MSG,
                               extra_headers={"x-mock-disconnect-after": "5"}) as s:
            for _ in s.text_stream:
                pass
    row = spend_row(stack, "model", "claude-sonnet")
    # input tokens come from message_start (authoritative), output is counted
    assert row is not None and row["input_tokens"] > 0 and row["output_tokens"] > 0


def test_stream_without_usage_is_counted(stack: Stack) -> None:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-tw-support", max_retries=0)
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True,
        extra_headers={"x-mock-no-usage": "1"}) if ch.choices)
    assert text
    row = spend_row(stack, "agent", "support-bot")
    assert row is not None and row["output_tokens"] > 0
    assert stack.metric("tollway_usage_counted_total") == 1


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MSG, "stream": True}),
    ("/v1/messages", {"model": "claude-sonnet", "max_tokens": 500, "messages": MSG,
                      "stream": True}),
])
def test_client_disconnect_cancels_upstream_and_accounts(stack: Stack, path: str,
                                                         body: dict) -> None:
    stack.mock.settings.chunk_delay_ms = 40
    stack.mock.settings.chunks = 50
    stack.mock.settings.reply = " ".join(f"word{i}" for i in range(200))
    with httpx.Client(timeout=10) as h, h.stream(
            "POST", stack.url + path, content=orjson.dumps(body),
            headers={"Authorization": "Bearer sk-tw-support",
                     "Content-Type": "application/json"}) as r:
        assert r.status_code == 200
        seen = 0
        for line in r.iter_lines():
            if "delta" in line:
                seen += 1
            if seen >= 3:
                break
    # The client is gone: the gateway must notice, stop the upstream and account.
    wait_until(lambda: stack.metric("tollway_stream_interruptions_total", side="client") == 1)
    wait_until(lambda: stack.mock.cancelled_streams == 1)
    model = body["model"]
    row = spend_row(stack, "model", model)
    assert row is not None and row["output_tokens"] >= 3 and row["cost_usd"] > 0
    session = stack.admin.get("/admin/sessions").json()["sessions"][0]["session"]
    step = stack.admin.get(f"/admin/sessions/{session}").json()["steps"][0]
    assert step["status"] == 499 and step["usage_source"] == "counted"
    assert stack.metric("tollway_inflight_requests") == 0
    assert stack.upstream_connections_in_use() == 0
