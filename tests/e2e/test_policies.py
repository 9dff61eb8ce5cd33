"""Policies on model traffic through the official SDKs: which models an agent or a key may
use, key expiry, and tool calls a model emits that the agent may not make (block or flag)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import Stack

POLICY = """
rules:
  - name: support-models
    teams: [support]
    allow: {models: ["gpt-4o-mini", "claude-*"], tools: [lookup_order, "files/read_*"]}
  - name: no-refunds
    deny: {tools: [issue_refund]}
model_tool_calls: {mode}
"""
TOOLS = [{"type": "function", "function": {"name": n, "description": "d",
                                           "parameters": {"type": "object", "properties": {}}}}
         for n in ("issue_refund", "lookup_order")]


def stack(make_stack, tmp_path: Path, mode: str = "block") -> Stack:  # type: ignore[no-untyped-def]
    f = tmp_path / "policy.yaml"
    f.write_text(POLICY.replace("{mode}", mode))
    return make_stack(extra=f"policies: [{f}]\n")  # type: ignore[no-any-return]


def oa(s: Stack, key: str = "sk-tw-support") -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0)


def test_models_an_agent_may_use(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = stack(make_stack, tmp_path)
    msgs = [{"role": "user", "content": "hi"}]
    assert oa(s).chat.completions.create(model="gpt-4o-mini", messages=msgs).choices
    with pytest.raises(openai.PermissionDeniedError) as e:
        oa(s).chat.completions.create(model="fast", messages=msgs)
    assert e.value.code == "policy_denied"
    assert "'fast' is not on the allow list of policy rule 'support-models'" in e.value.message
    # Another team is not restricted by that rule.
    assert oa(s, "sk-tw-research").chat.completions.create(model="fast", messages=msgs).choices
    assert s.metric("tollway_policy_denials_total", kind="model", agent="support-bot") == 1
    c = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0)
    assert c.messages.create(model="claude-sonnet", max_tokens=8, messages=msgs).content


def test_key_limits_and_expiry(make_stack) -> None:  # type: ignore[no-untyped-def]
    digest = hashlib.sha256(b"sk-limited").hexdigest()
    s = make_stack(unknown_keys="reject", agents_extra=f"""  limited:
    team: research
    keys:
      - {{key: "sha256:{digest}", models: ["gpt-4o-*"], tools: [weather]}}
      - {{key: sk-old, expires: "2020-01-01T00:00:00Z"}}
      - {{key: sk-later, expires: "2999-01-01T00:00:00Z"}}
""")
    msgs = [{"role": "user", "content": "hi"}]
    assert oa(s, "sk-limited").chat.completions.create(model="gpt-4o-mini",
                                                       messages=msgs).choices
    with pytest.raises(openai.PermissionDeniedError) as e:
        oa(s, "sk-limited").chat.completions.create(model="fast", messages=msgs)
    assert "this virtual key may not use model 'fast'" in e.value.message
    with pytest.raises(openai.AuthenticationError) as e2:
        oa(s, "sk-old").chat.completions.create(model="gpt-4o-mini", messages=msgs)
    assert e2.value.code == "key_expired" and "sk-old" not in e2.value.message
    assert oa(s, "sk-later").chat.completions.create(model="fast", messages=msgs).choices


def test_forbidden_tool_call_blocked_non_streamed(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = stack(make_stack, tmp_path)
    r = oa(s).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", tools=TOOLS, messages=[{"role": "user", "content": "refund me"}])
    choice = r.parse().choices[0]
    assert not choice.message.tool_calls and choice.finish_reason == "stop"
    assert "blocked tool call(s) issue_refund" in (choice.message.content or "")
    assert r.headers["x-tollway-policy"] == "blocked:issue_refund"
    assert s.metric("tollway_model_tool_calls_flagged_total", tool="issue_refund",
                    action="block") == 1
    # An allowed tool passes untouched.
    ok = oa(s).chat.completions.create(
        model="gpt-4o-mini", tools=TOOLS, messages=[{"role": "user", "content": "where?"}],
        tool_choice={"type": "function", "function": {"name": "lookup_order"}})
    assert ok.choices[0].message.tool_calls[0].function.name == "lookup_order"
    # Anthropic: the tool_use block is replaced by text and the turn ends.
    c = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0)
    m = c.messages.create(model="claude-sonnet", max_tokens=64,
                          tools=[{"name": "issue_refund", "input_schema": {"type": "object"}}],
                          messages=[{"role": "user", "content": "refund me"}])
    assert m.stop_reason == "end_turn" and all(b.type == "text" for b in m.content)
    assert "issue_refund" in m.content[-1].text  # type: ignore[union-attr]


def test_forbidden_tool_call_ends_a_stream(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = stack(make_stack, tmp_path)
    with pytest.raises(openai.APIError) as e:
        with oa(s).chat.completions.create(
                model="gpt-4o-mini", tools=TOOLS, stream=True,
                messages=[{"role": "user", "content": "refund me"}]) as st:
            for chunk in st:
                for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    assert call.function is None or call.function.name != "issue_refund"
    assert "issue_refund" in str(e.value)
    # What the model produced before the cut is still paid for.
    rows = s.admin.get("/admin/spend", params={"by": "agent"}).json()["rows"]
    assert next(r for r in rows if r["key"] == "support-bot")["requests"] == 1


def test_flag_mode_passes_and_counts(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = stack(make_stack, tmp_path, mode="flag")
    r = oa(s).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", tools=TOOLS, messages=[{"role": "user", "content": "refund me"}])
    assert r.parse().choices[0].message.tool_calls[0].function.name == "issue_refund"
    assert r.headers["x-tollway-policy"] == "flagged:issue_refund"
    assert s.metric("tollway_model_tool_calls_flagged_total", tool="issue_refund",
                    action="flag") == 1
