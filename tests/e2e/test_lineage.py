"""Agents, not requests: sessions and hand-offs derived from the conversation, no header.

The incidents of issue 13, replayed through the official SDKs with nothing but base_url and
a virtual key, on both state backends: the $47,000 ping-pong between two agents (before:
it ran until max_steps stopped it at step 301), identical batch runs (before: all in one
session, runs 6 and 7 halted as a loop), Responses chains (before: a new session per call);
and the benign shapes that must stay whole: a 60-turn conversation, a hand-off linked to its
parent, three legitimate hand-offs.
"""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import wait_until

PING_PONG = """
loops:
  ping_pong: {max_rounds: 3, action: halt}
budgets:
  agents:
    support-bot: {usd: 5}
    research-agent: {usd: 5}
"""
BATCH = """
loops:
  repeated_request: {threshold: 6, window_s: 300}
  max_steps: {limit: 50}
"""
TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Look a fact up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"]}}}]


def oai(s: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0)


def session_of(raw: object) -> str:
    return raw.headers["x-tollway-session"]  # type: ignore[attr-defined,no-any-return]


def view(s: Stack, session: str) -> dict:  # type: ignore[type-arg]
    return s.admin.get(f"/admin/sessions/{session}").json()  # type: ignore[no-any-return]


def test_headerless_ping_pong_is_halted_within_its_rounds(
        make_any_stack: Callable[..., Stack]) -> None:
    s = make_any_stack(extra=PING_PONG)
    agents = {"A": oai(s, "sk-tw-support"), "B": oai(s, "sk-tw-research")}
    history = {"A": [{"role": "system", "content": "You are agent A. Verify what B says."}],
               "B": [{"role": "system", "content": "You are agent B. Check A's claims."}]}
    message = "Is the invoice for order 4471 correct? Please double-check the totals."
    sent = 0
    turn = "A"
    with pytest.raises(openai.UnprocessableEntityError) as halted:
        while sent < 40:
            history[turn].append({"role": "user", "content": message})
            r = agents[turn].chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=history[turn])
            sent += 1
            message = r.parse().choices[0].message.content
            history[turn].append({"role": "assistant", "content": message})
            turn = "B" if turn == "A" else "A"
    assert halted.value.code == "loop_detected" and "ping_pong" in halted.value.message
    assert sent <= 2 * 3 + 1  # halted within its configured rounds (before: step 301)
    rows = {r["key"]: r for r in s.admin.get("/admin/spend", params={"by": "agent"}).json()[
        "rows"]}
    assert all(r["cost_usd"] <= 5 for r in rows.values())
    # The two sessions are linked both ways in the lineage graph.
    sessions = [x["session"] for x in s.admin.get("/admin/sessions").json()["sessions"]]
    assert len(sessions) == 2
    a, b = (view(s, x) for x in sessions)
    assert b["session"] in a["children"] or a["session"] in b["children"]


def test_identical_batch_runs_are_separate_sessions_never_a_loop(
        make_any_stack: Callable[..., Stack]) -> None:
    s = make_any_stack(extra=BATCH)
    c = oai(s, "sk-tw-support")
    task = [{"role": "system", "content": "You are a ReAct agent."},
            {"role": "user", "content": "What is the population of Lyon?"}]
    runs = []
    for _ in range(7):  # a batch job: the same task, fresh state each time
        msgs = list(task)
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                          messages=msgs, tools=TOOLS)
        first = raw.parse().choices[0].message
        call = first.tool_calls[0]
        msgs += [first.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "about 520,000"}]
        raw2 = c.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                           messages=msgs, tools=TOOLS)
        assert raw2.parse().choices[0].finish_reason == "stop"
        assert session_of(raw) == session_of(raw2)  # one run: the second continues the first
        runs.append(session_of(raw))
    assert len(set(runs)) == 7  # before: one session, and runs 6 and 7 got 422
    for run in runs:
        assert len(view(s, run)["steps"]) == 2


def test_a_re_sent_opening_with_no_progress_is_still_a_repeat(
        make_any_stack: Callable[..., Stack]) -> None:
    s = make_any_stack(extra="loops: {repeated_request: {threshold: 3, window_s: 300}}")
    c = oai(s, "sk-tw-support")
    msgs = [{"role": "user", "content": "Summarise the report."}]
    sessions = set()
    with pytest.raises(openai.UnprocessableEntityError) as e:
        for _ in range(5):
            sessions.add(session_of(c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=msgs)))
    assert e.value.code == "loop_detected" and len(sessions) == 1


def test_a_responses_chain_is_one_session(make_any_stack: Callable[..., Stack]) -> None:
    s = make_any_stack()
    c = oai(s, "sk-tw-support")
    raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input="Plan a trip to Rome")
    sessions = {session_of(raw)}
    previous = raw.parse().id
    for step in range(4):  # as the Agents SDK chains: only the new items each time
        raw = c.responses.with_raw_response.create(model="gpt-4o-mini",
                                                   previous_response_id=previous,
                                                   input=f"and day {step + 2}?")
        sessions.add(session_of(raw))
        previous = raw.parse().id
    assert len(sessions) == 1  # before: a new derived session for every chained call
    assert len(view(s, sessions.pop())["steps"]) == 5


def test_a_sixty_turn_conversation_is_one_session(make_any_stack: Callable[..., Stack]) -> None:
    s = make_any_stack()
    c = oai(s, "sk-tw-support")
    msgs: list[dict] = [{"role": "system", "content": "You are a patient tutor."}]  # type: ignore[type-arg]
    sessions = set()
    for turn in range(60):
        msgs.append({"role": "user", "content": f"Question {turn}: what comes after {turn}?"})
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
        sessions.add(session_of(raw))
        msgs.append({"role": "assistant", "content": raw.parse().choices[0].message.content})
    assert len(sessions) == 1


def test_a_hand_off_to_an_anthropic_agent_is_linked(make_any_stack: Callable[..., Stack],
                                                    ) -> None:
    s = make_any_stack()
    planner = oai(s, "sk-tw-support").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Draft the migration plan "
                                        "for the billing database, step by step."}])
    plan = planner.parse().choices[0].message.content
    worker = anthropic.Anthropic(base_url=s.url, api_key="sk-tw-research", max_retries=0)
    raw = worker.messages.with_raw_response.create(
        model="claude-sonnet", max_tokens=100,
        messages=[{"role": "user", "content": f"Please verify: {plan}"}])
    parent, child = session_of(planner), session_of(raw)
    assert parent != child
    wait_until(lambda: view(s, child).get("steps") is not None)
    assert view(s, child)["parents"] == [parent]
    assert view(s, parent)["children"] == [child]


def test_three_legitimate_hand_offs_are_not_a_loop(make_any_stack: Callable[..., Stack],
                                                   ) -> None:
    s = make_any_stack(extra=PING_PONG)
    planner, coder = oai(s, "sk-tw-support"), oai(s, "sk-tw-research")
    work = "Write the release notes for version 2.4, with the breaking changes first."
    for step in range(3):  # planner -> coder -> planner -> coder ... three times, then done
        p = planner.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{work} (part {step})"}])
        coder.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": f"Implement: {p.choices[0].message.content}"}])
