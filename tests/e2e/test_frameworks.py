"""Real agent frameworks, pointed at the gateway by base_url and a key only, no tollway header:
the benign half of issue 13's incidents, on both state backends.

- A LangGraph ReAct agent running one task 7 times with fresh state (a batch job, an eval
  harness): before, all 7 runs landed in one derived session and runs 6 and 7 were refused
  422 `repeated_request`; now each run is its own session, none is halted.
- The OpenAI Agents SDK with `auto_previous_response_id=True` (each call carries
  `previous_response_id` and only the new items): before, a new session per call; now the
  run is one session, so its budget, max_steps and trace cover all of it.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Stack

# What the default gateway.yaml switches on, and a session budget the runs stay within.
GUARDS = """
loops:
  repeated_tool_call: {threshold: 4}
  no_progress: {threshold: 6}
  repeated_request: {threshold: 6, window_s: 300}
  ping_pong: {max_rounds: 10}
  max_steps: {limit: 50}
budgets:
  session: {usd: 1}
"""
TASK = "Look up the status of order 4471 and tell me whether it has shipped."


def sessions(s: Stack) -> dict[str, dict[str, Any]]:
    rows = s.admin.get("/admin/sessions").json()["sessions"]
    return {r["session"]: r for r in rows}


def test_langgraph_batch_runs_are_separate_sessions_never_a_loop(
        make_any_stack: Callable[..., Stack]) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent

    s = make_any_stack(extra=GUARDS)

    @tool
    def order_status(order_id: str) -> str:
        """The shipping status of an order."""
        return f"Order {order_id}: shipped on 2025-06-02 by DHL, tracking 00340434161094042557"

    model = ChatOpenAI(model="gpt-4o-mini", base_url=s.url + "/v1", api_key="sk-tw-support",
                       max_retries=0)
    with warnings.catch_warnings():  # its new home is langchain.agents; the same graph
        warnings.simplefilter("ignore")
        agent = create_react_agent(model, [order_status])
    answers = []
    for _ in range(7):  # fresh state each time: the same task, from the top
        out = agent.invoke({"messages": [("user", TASK)]})
        answers.append(out["messages"][-1].content)
    assert len(answers) == 7 and all(answers)  # none refused
    runs = sessions(s)
    assert len(runs) == 7  # before: 1, with runs 6 and 7 halted
    assert all(r["steps"] == 2 for r in runs.values())  # the tool call, then the answer
    assert s.metric("tollway_loops_detected_total", detector="repeated_request",
                    agent="support-bot") == 0


def test_agents_sdk_chained_responses_are_one_session(
        make_any_stack: Callable[..., Stack]) -> None:
    from agents import Agent, Runner, function_tool, set_tracing_disabled
    from agents.models.openai_responses import OpenAIResponsesModel
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # its traces would go to OpenAI's servers
    s = make_any_stack(extra=GUARDS)

    @function_tool
    def order_status(order_id: str) -> str:
        """The shipping status of an order."""
        return f"Order {order_id}: shipped on 2025-06-02"

    async def run() -> list[Any]:
        client = AsyncOpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)
        agent = Agent(name="support", instructions="Answer order questions.",
                      tools=[order_status],
                      model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client))
        results = []
        for _ in range(2):  # two runs of one task, each chained call by call
            results.append(await Runner.run(agent, TASK, auto_previous_response_id=True))
        await client.close()
        return results

    results = asyncio.run(run())
    assert all(r.final_output for r in results)
    # each call after the first carried only previous_response_id and the new items
    chained = [r for r in s.mock.requests if (r.json or {}).get("previous_response_id")]
    assert len(chained) == 2
    runs = sessions(s)
    assert len(runs) == 2  # before: 4, a session per call
    assert all(r["steps"] == 2 for r in runs.values())


@pytest.fixture(autouse=True)
def _quiet_frameworks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither framework may phone home from a test."""
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
