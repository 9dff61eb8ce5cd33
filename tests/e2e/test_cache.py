"""The exact cache through the official SDKs, on the memory state and on Redis: hits with a
fresh id and zero billed tokens, streamed and not; what is never stored; scopes; purge."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import wait_until

CACHE = "cache: {exact: {enabled: true, ttl_s: 60}}"
MSG = [{"role": "user", "content": "List three primary colours"}]


@pytest.fixture
def cached(make_any_stack) -> Stack:  # type: ignore[no-untyped-def]
    return make_any_stack(extra=CACHE)  # type: ignore[no-any-return]


def oa(s: Stack, key: str = "sk-tw-support", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0,
                         default_headers=headers)


def calls(s: Stack) -> int:
    return len(s.mock.requests)


def test_non_streamed_hit(cached: Stack) -> None:
    s = cached
    first = oa(s).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, temperature=0)
    assert first.headers["x-tollway-cache"] == "miss"
    wait_until(lambda: s.metric("tollway_cache_requests_total", result="miss") == 1)
    n = calls(s)

    def hit() -> bool:
        r = oa(s).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MSG, temperature=0)
        return r.headers["x-tollway-cache"] == "exact"
    wait_until(hit)  # the entry is stored just after the first answer went out
    second = oa(s).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, temperature=0)
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.id != a.id and b.id.startswith("chatcmpl-cache")
    assert b.usage.prompt_tokens == 0 and b.usage.completion_tokens == 0
    original = json.loads(second.headers["x-tollway-cache-original-usage"])
    assert original["output"] == a.usage.completion_tokens
    assert float(second.headers["x-tollway-cost-usd"]) == 0
    assert calls(s) == n  # no upstream call for hits
    assert s.metric("tollway_cache_savings_usd_total", model="gpt-4o-mini") > 0
    # A different question, or another agent (scope: agent), misses.
    other = oa(s, key="sk-tw-research").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, temperature=0)
    assert other.headers["x-tollway-cache"] == "miss"


def test_streamed_hit_is_replayed_as_sse(cached: Stack) -> None:
    s = cached
    text = "".join(c.choices[0].delta.content or "" for c in oa(s).chat.completions.create(
        model="gpt-4o-mini", messages=MSG, temperature=0, stream=True) if c.choices)
    n = calls(s)

    def replay() -> str | None:
        with oa(s).chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=MSG, temperature=0, stream=True) as r:
            if r.headers["x-tollway-cache"] != "exact":
                list(r.iter_lines())
                return None
            return "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
    got: list[str] = []
    wait_until(lambda: bool(got.append(replay() or "") or got[-1]))
    assert got[-1] == text
    assert calls(s) == n + len(got) - 1  # only the misses while storing went upstream


def test_anthropic_hits_streamed_and_not(cached: Stack) -> None:
    s = cached
    # (this anthropic SDK has no temperature parameter: opt in with the header instead)
    c = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-support", max_retries=0,
                            default_headers={"x-tollway-cache": "store"})
    first = c.messages.create(model="claude-sonnet", max_tokens=100,
                              messages=MSG)

    def hit() -> bool:
        r = c.messages.with_raw_response.create(model="claude-sonnet", max_tokens=100,
                                                messages=MSG)
        m = r.parse()
        return r.headers["x-tollway-cache"] == "exact" and m.usage.output_tokens == 0 and (
            m.content[0].text == first.content[0].text and m.id != first.id)
    wait_until(hit)
    with c.messages.stream(model="claude-sonnet", max_tokens=100, messages=MSG) as st:
        text = "".join(st.text_stream)

    def stream_hit() -> bool:
        with c.messages.stream(model="claude-sonnet", max_tokens=100, messages=MSG) as st2:
            again = "".join(st2.text_stream)
            final = st2.get_final_message()
        return again == text and final.usage.output_tokens == 0
    wait_until(stream_hit)


def test_what_is_never_cached(cached: Stack) -> None:
    s = cached
    c = oa(s)
    for _ in range(2):  # sampling: not cached by default
        r = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG,
                                                        temperature=0.7)
        assert r.headers["x-tollway-cache"] == "miss"
    for _ in range(2):  # errors are never stored
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="gpt-4o-mini", messages=MSG, temperature=0,
                                      extra_headers={"x-mock-status": "500"})
    before = calls(s)
    for _ in range(2):  # cut streams are never stored
        with pytest.raises(openai.APIError):
            for _chunk in c.chat.completions.create(
                    model="gpt-4o-mini", messages=MSG, temperature=0, stream=True,
                    extra_headers={"x-mock-disconnect-after": "3"}):
                pass
    assert calls(s) == before + 2
    # no-store answers are not kept; no-cache skips the lookup
    for _ in range(2):
        r = oa(s, **{"x-tollway-cache": "no-store"}).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "private"}],
            temperature=0)
        assert r.headers["x-tollway-cache"] == "miss"
    assert s.metric("tollway_cache_requests_total", result="hit") == 0


def test_opt_in_header_and_purge(cached: Stack) -> None:
    s = cached
    c = oa(s, **{"x-tollway-cache": "store"})
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG, temperature=1)

    def hit() -> bool:
        r = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG,
                                                        temperature=1)
        return r.headers["x-tollway-cache"] == "exact"
    wait_until(hit)
    r = s.admin.post("/admin/cache/purge", params={"model": "gpt-4o-mini"})
    assert r.status_code == 200 and r.json()["purged"] >= 1
    again = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG,
                                                        temperature=1)
    assert again.headers["x-tollway-cache"] == "miss"
    assert s.admin.post("/admin/cache/purge", params={"model": "gpt-*"}).status_code == 400
    assert httpx.post(s.admin_url + "/admin/cache/purge").status_code == 401
