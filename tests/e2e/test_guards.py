"""Budgets, rate limits, backpressure, loop halting and the kill switch, end to end with the
official SDKs against the mock provider, on the memory state and on a real Redis. Several
gateway processes sharing one Redis are in tests/e2e/test_guards_redis.py."""

from __future__ import annotations

import asyncio
import threading

import httpx
import openai
import orjson
import pytest

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import wait_until
from tollway.tokens.encodings import get_encoding

MSG = [{"role": "user", "content": "Summarise the quarterly report"}]
TOOLS = [{"type": "function", "function": {
    "name": "fetch_report", "parameters": {"type": "object",
                                           "properties": {"q": {"type": "string"}}}}}]


@pytest.fixture
def make_guarded(make_any_stack):  # type: ignore[no-untyped-def]
    """Every guard test runs on both state backends."""
    return make_any_stack


def oa(stack: Stack, key: str = "sk-tw-support", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0,
                         default_headers=headers)


async def burst(urls: list[str], n: int = 200) -> list[int]:
    """n concurrent ~$0.0003-worst-case requests spread over gateways; their statuses."""
    clients = [openai.AsyncOpenAI(base_url=u + "/v1", api_key="sk-tw-support", max_retries=0)
               for u in urls]

    async def one(i: int) -> int:
        try:
            await clients[i % len(clients)].chat.completions.create(
                model="gpt-4o-mini", max_tokens=500,
                messages=[{"role": "user", "content": f"task {i}: " + "word " * 200}])
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code
    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        for c in clients:
            await c.close()


def spend(stack: Stack, by: str, key: str) -> float:
    rows = stack.admin.get("/admin/spend", params={"by": by}).json()["rows"]
    return next((r["cost_usd"] for r in rows if r["key"] == key), 0.0)


# --- budgets ------------------------------------------------------------------------------

def test_session_budget_refuses_with_402_and_tells_remaining(make_guarded) -> None:  # type: ignore[no-untyped-def]
    # gpt-4o-mini: $0.15 / $0.60 per 1M; max_tokens 1000 reserves ~$0.0006 per request.
    s = make_guarded(extra="budgets: {session: {usd: 0.002}}")
    s.mock.settings.reply = "word " * 900  # the answers really cost about what is reserved
    c = oa(s, **{"x-tollway-session": "job-1"})
    remaining = []
    with pytest.raises(openai.APIStatusError) as e:
        for _ in range(20):
            raw = c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MSG, max_tokens=1000)
            remaining.append(float(raw.headers["x-tollway-budget-remaining-usd"]))
    assert e.value.status_code == 402 and e.value.code == "budget_exceeded"
    assert "session 'job-1'" in e.value.message and "max_tokens" in e.value.message
    assert remaining == sorted(remaining, reverse=True) and len(remaining) >= 2
    assert spend(s, "session", "job-1") <= 0.002
    assert s.metric("tollway_budget_rejections_total", scope="session") == 1
    # another session is not affected
    oa(s, **{"x-tollway-session": "job-2"}).chat.completions.create(
        model="gpt-4o-mini", messages=MSG, max_tokens=1000)


def test_prompt_is_counted_before_forwarding_when_a_budget_needs_it(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="budgets: {agents: {support-bot: {usd: 10, period: day}}}")
    text = "count these words " * 50
    oa(s).chat.completions.create(model="gpt-4o-mini", max_tokens=5,
                                  messages=[{"role": "user", "content": text}])
    rows = s.admin.get("/admin/sessions").json()["sessions"]
    steps = s.admin.get(f"/admin/sessions/{rows[0]['session']}").json()["steps"]
    # The text's o200k tokens, plus the message's and the reply's framing (3 + 3)
    expected = len(get_encoding("o200k_base").encode_ordinary(text)) + 6
    assert steps[0]["prompt_tokens_counted"] == expected


def test_concurrent_requests_cannot_overshoot(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="budgets: {agents: {support-bot: {usd: 0.01, period: day}}}")
    s.mock.settings.latency_ms = 20  # keep many in flight at once

    statuses = asyncio.run(burst([s.url]))
    assert statuses.count(200) > 10 and statuses.count(402) > 10
    assert set(statuses) == {200, 402}
    wait_until(lambda: s.admin.get("/admin/spend").json()["rows"][0]["requests"] == 200)
    total = spend(s, "agent", "support-bot")
    assert 0 < total <= 0.01
    soft = s.metric("tollway_budget_soft_limit_total", scope="agent")
    assert soft == 1  # warned once, not on every request
    assert s.metric("tollway_budget_remaining_usd", scope="agent", name="support-bot") >= 0


def test_runaway_stream_is_ended_cleanly_at_the_budget(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="budgets: {session: {usd: 0.0005}, default_output_tokens: 50}")
    s.mock.settings.reply = " ".join(f"token{i}" for i in range(3000))
    s.mock.settings.chunks = 300
    s.mock.settings.chunk_delay_ms = 1
    c = oa(s, **{"x-tollway-session": "runaway"})
    got = ""
    with pytest.raises(openai.APIError) as e:
        for chunk in c.chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                               stream=True):
            got += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert "budget exceeded mid-stream" in str(e.value.message)
    assert got  # it streamed until the budget said stop
    wait_until(lambda: spend(s, "session", "runaway") > 0)
    view = s.admin.get("/admin/sessions/runaway").json()
    step = view["steps"][-1]
    assert step["status"] == 402 and step["usage_source"] == "counted"
    # recorded exactly: the prompt as counted plus every token generated, priced
    assert step["cost_usd"] == pytest.approx(
        (step["input_tokens"] * 0.15 + step["output_tokens"] * 0.60) / 1e6)
    # and no more than one network chunk past the budget
    assert step["cost_usd"] <= 0.0005 + 0.60 / 1e6 * 40
    assert s.upstream_connections_in_use() == 0


# --- rate limits --------------------------------------------------------------------------

def test_rpm_limit_429_with_headers(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="rate_limits: {agents: {support-bot: {rpm: 3}}}")
    c = oa(s)
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    h = e.value.response.headers
    assert int(h["retry-after"]) >= 1 and h["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(h["retry-after-ms"]) <= 20_000
    assert s.metric("tollway_ratelimit_rejections_total", limit="agent_rpm") == 1
    # other agents have their own allowance
    oa(s, key="sk-tw-research").chat.completions.create(model="gpt-4o-mini", messages=MSG)


def test_sdk_backs_off_on_its_own(make_guarded) -> None:  # type: ignore[no-untyped-def]
    # 600 rpm with a burst of 1% (6 requests): the 7th waits ~0.1s; the SDK retries after
    # retry-after-ms and succeeds.
    s = make_guarded(extra="rate_limits: {agents: {support-bot: {rpm: 600, burst: 0.01}}}")
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=5)
    for _ in range(10):
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert s.metric("tollway_ratelimit_rejections_total", limit="agent_rpm") >= 1
    assert s.metric("tollway_requests_total", status="200") == 10


def test_tpm_limit_counts_prompt_then_reconciles(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="rate_limits: {models: {gpt-4o-mini: {tpm: 600}}}")
    c = oa(s)
    big = [{"role": "user", "content": "word " * 250}]  # ~255 tokens counted
    c.chat.completions.create(model="gpt-4o-mini", messages=big)
    c.chat.completions.create(model="gpt-4o-mini", messages=big)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=big)
    assert "model_tpm" in e.value.message
    huge = [{"role": "user", "content": "word " * 1000}]
    with pytest.raises(openai.RateLimitError) as e2:
        c.chat.completions.create(model="gpt-4o-mini", messages=huge)
    assert "alone" in e2.value.message


# --- backpressure -------------------------------------------------------------------------

def test_backpressure_queue_then_503(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(models_extra=(
        "  slow: {provider: oai, model: gpt-4o-mini, "
        "concurrency: {max: 1, queue: 1, queue_timeout_s: 5}}\n"))
    s.mock.settings.latency_ms = 400
    results: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        r = httpx.post(s.url + "/v1/chat/completions", timeout=10, json={
            "model": "slow", "messages": MSG}, headers={"Authorization": "Bearer sk-tw-support"})
        with lock:
            results.append(r.status_code)
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["code"] == "overloaded"

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 200, 503]  # one runs, one waits its turn, one is refused
    assert s.metric("tollway_backpressure_rejections_total", target="model:slow") == 1
    assert s.metric("tollway_queue_wait_seconds_count", target="model:slow") == 2


# --- loops ---------------------------------------------------------------------------------

def test_ping_pong_between_two_agents_is_halted(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="loops: {ping_pong: {max_rounds: 3}}\n"
                         "budgets: {session: {usd: 0.05}}")
    agents = [oa(s, key="sk-tw-support", **{"x-tollway-session": "task-42"}),
              oa(s, key="sk-tw-research", **{"x-tollway-session": "task-42"})]
    history = [{"role": "user", "content": "Please review this draft"}]
    turns = 0
    with pytest.raises(openai.UnprocessableEntityError) as e:
        for turn in range(50):
            r = agents[turn % 2].chat.completions.create(model="gpt-4o-mini",
                                                         messages=history)
            history.append({"role": "user", "content": r.choices[0].message.content})
            turns += 1
    assert e.value.code == "loop_detected" and "ping_pong" in e.value.message
    assert turns == 7  # 3 full rounds (6 hand-offs) pass; the 7th hand-off is one too many
    assert spend(s, "session", "task-42") < 0.05
    assert s.metric("tollway_loops_detected_total", detector="ping_pong") == 1


def test_parent_session_links_two_agents(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="loops: {ping_pong: {max_rounds: 1}}")
    a = oa(s, key="sk-tw-support", **{"x-tollway-session": "root"})
    b = oa(s, key="sk-tw-research", **{"x-tollway-session": "child",
                                        "x-tollway-parent-session": "root"})
    a.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    b.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    a.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    with pytest.raises(openai.UnprocessableEntityError):
        b.chat.completions.create(model="gpt-4o-mini", messages=MSG)


def tool_turn(history: list, call_id: str, args: str, result: str) -> None:
    history.append({"role": "assistant", "content": None, "tool_calls": [{
        "id": call_id, "type": "function",
        "function": {"name": "fetch_report", "arguments": args}}]})
    history.append({"role": "tool", "tool_call_id": call_id, "content": result})


def test_same_failing_tool_call_is_halted_at_n(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="loops: {repeated_tool_call: {threshold: 3}}")
    c = oa(s)
    history = list(MSG)
    made = 0
    with pytest.raises(openai.UnprocessableEntityError) as e:
        for i in range(10):
            c.chat.completions.create(model="gpt-4o-mini", messages=history, tools=TOOLS)
            made += 1
            tool_turn(history, f"call_{i}", '{"q": "Q3"}', "Error: report service timeout")
    assert made == 3  # the request carrying the 3rd identical failure is refused
    assert "fetch_report" in e.value.message and "3 times" in e.value.message
    assert len(s.mock.requests) == 3


def test_no_false_halt_on_progress(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="loops: {repeated_tool_call: {threshold: 3}, "
                         "repeated_request: {threshold: 3}}")
    c = oa(s)
    history = list(MSG)
    for i in range(8):  # same tool, different arguments
        c.chat.completions.create(model="gpt-4o-mini", messages=history, tools=TOOLS)
        tool_turn(history, f"a{i}", f'{{"q": "Q{i}"}}', "ok")
    history = list(MSG)
    for i in range(8):  # same arguments, but the result changes (polling a job)
        c.chat.completions.create(model="gpt-4o-mini", messages=history, tools=TOOLS)
        tool_turn(history, f"b{i}", '{"q": "job"}', f"status: {i * 10}% done")
    assert s.metric("tollway_loops_detected_total") == 0


def test_repeated_request_and_max_steps(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="loops: {repeated_request: {threshold: 3, window_s: 60},"
                         " max_steps: {limit: 5}}")
    c = oa(s, **{"x-tollway-session": "retry-storm"})
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert "repeated_request" in e.value.message
    c2 = oa(s, **{"x-tollway-session": "long-run"})
    for i in range(5):
        c2.chat.completions.create(model="gpt-4o-mini",
                                   messages=[{"role": "user", "content": f"step {i}"}])
    with pytest.raises(openai.UnprocessableEntityError) as e2:
        c2.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert "max_steps" in e2.value.message


def test_alert_only_lets_requests_through(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="loops: {repeated_request: {threshold: 2, action: alert}}")
    c = oa(s)
    for _ in range(4):
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert s.metric("tollway_loops_detected_total", detector="repeated_request") == 3


# --- kill switch --------------------------------------------------------------------------

def test_kill_session_and_pause_agent(make_guarded) -> None:  # type: ignore[no-untyped-def]
    stack = make_guarded()
    c = oa(stack, **{"x-tollway-session": "doomed"})
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert stack.admin.post("/admin/sessions/doomed/kill").json()["denied"] is True
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert e.value.code == "policy_denied" and "doomed" in e.value.message
    oa(stack, **{"x-tollway-session": "other"}).chat.completions.create(
        model="gpt-4o-mini", messages=MSG)
    stack.admin.post("/admin/agents/support-bot/pause")
    with pytest.raises(openai.PermissionDeniedError):
        oa(stack).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert stack.admin.get("/admin/flags").json() == {"session": ["doomed"],
                                                      "agent": ["support-bot"]}
    stack.admin.post("/admin/agents/support-bot/resume")
    stack.admin.post("/admin/sessions/doomed/revive")
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert httpx.post(stack.admin_url + "/admin/sessions/x/kill").status_code == 401


def test_session_cost_histogram(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(state_extra="session_idle_s: 0.2")
    oa(s, **{"x-tollway-session": "short"}).chat.completions.create(
        model="gpt-4o-mini", messages=MSG)
    wait_until(lambda: s.metric("tollway_session_cost_usd_count") == 1)
    assert s.metric("tollway_session_cost_usd_sum") > 0


def test_anthropic_dialect_errors_for_guards(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra="budgets: {session: {usd: 0.00001}}")
    r = httpx.post(s.url + "/v1/messages", headers={"x-api-key": "sk-tw-support"},
                   content=orjson.dumps({"model": "claude-sonnet", "max_tokens": 500,
                                         "messages": MSG}))
    assert r.status_code == 402
    assert r.json()["error"]["type"] == "billing_error"
