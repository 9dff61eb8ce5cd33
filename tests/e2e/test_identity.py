"""Keys to agents and teams, sessions with and without a header, tags."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import Stack


def client(stack: Stack, key: str = "sk-tw-support", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0,
                         default_headers=headers)


def test_growing_history_is_one_derived_session(stack: Stack) -> None:
    c = client(stack)
    history = [{"role": "system", "content": "You are a planner."},
               {"role": "user", "content": "Plan a trip to Rome"}]
    sessions = set()
    for step in range(4):
        raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=history)
        sessions.add(raw.headers["x-tollway-session"])
        history += [{"role": "assistant", "content": raw.parse().choices[0].message.content},
                    {"role": "user", "content": f"and step {step}?"}]
    assert len(sessions) == 1
    other = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Something else entirely"}])
    assert other.headers["x-tollway-session"] not in sessions
    # The same conversation from another agent is another session.
    research = client(stack, key="sk-tw-research").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=history[:2])
    assert research.headers["x-tollway-session"] not in sessions
    view = stack.admin.get(f"/admin/sessions/{sessions.pop()}").json()
    assert view["steps"] and len(view["steps"]) == 4
    assert [s["step"] for s in view["steps"]] == [1, 2, 3, 4]


def test_session_header_and_tags(stack: Stack) -> None:
    c = client(stack, **{"x-tollway-session": "ticket-4711", "x-tollway-tags": "prod, triage"})
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tollway-session"] == "ticket-4711"
    tags = {r["key"]: r for r in stack.admin.get("/admin/spend?by=tag").json()["rows"]}
    assert set(tags) == {"prod", "triage"} and tags["prod"]["requests"] == 1
    # tollway's own headers never reach the provider
    assert not any(k.startswith("x-tollway") for k in stack.mock.requests[-1].headers)


def test_agent_header_picks_a_configured_agent(stack: Stack) -> None:
    c = client(stack, **{"x-tollway-agent": "helper"})
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-tollway-agent"] == "helper"
    with pytest.raises(openai.BadRequestError) as e:
        client(stack, **{"x-tollway-agent": "mallory"}).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "unknown_agent"


def test_anonymous_and_x_api_key(stack: Stack) -> None:
    import httpx

    r = httpx.post(stack.url + "/v1/chat/completions", headers={"x-api-key": "sk-tw-research"},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert r.headers["x-tollway-agent"] == "research-agent"
    r = httpx.post(stack.url + "/v1/chat/completions",
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200 and r.headers["x-tollway-agent"] == "anonymous"
    agents = {row["key"] for row in stack.admin.get("/admin/spend").json()["rows"]}
    assert agents == {"research-agent", "anonymous"}
