"""no_progress on model traffic, through the official OpenAI SDK with no tollway header, on
the memory state and on Redis: the 2.3M-call retry storm (the same tool, new arguments every
time, the same error with new ids and timings every time) is halted at its threshold, and
the benign suite (a poller whose job advances, a 40-step research agent, an agent writing
files) is never halted. The tool gateway's half is in test_tools_http.py and test_mcp.py."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import spend_row

# What the default gateway.yaml switches on.
LOOPS = ("loops: {repeated_tool_call: {threshold: 4}, no_progress: {threshold: 6}, "
         "repeated_request: {threshold: 6, window_s: 300}}\n")
TOOLS = [{"type": "function", "function": {
    "name": n, "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
    for n in ("fetch_report", "search", "job_status", "write_file")]


def agent(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)


class Run:
    """An agent's loop: ask the model (which calls `tool` with the arguments the test
    chooses, as a model trying something new would), append its call and the tool's result,
    ask again. Records each answer's cost."""

    def __init__(self, s: Stack, task: str, tool: str) -> None:
        self.client = agent(s)
        self.tool = tool
        self.history: list[dict[str, Any]] = [{"role": "user", "content": task}]
        self.costs: list[float] = []

    def step(self, arguments: dict[str, Any], result: Callable[[], str]) -> None:
        raw = self.client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=self.history, tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": self.tool}},
            extra_headers={"x-mock-tool-arguments": json.dumps(arguments)})
        self.costs.append(float(raw.headers["x-tollway-cost-usd"]))
        message = raw.parse().choices[0].message
        call = message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == self.tool  # type: ignore[union-attr]
        self.history.append(message.model_dump(exclude_none=True))
        self.history.append({"role": "tool", "tool_call_id": call.id, "content": result()})


def storm_error(rng: random.Random) -> str:
    return (f"Error: report service timeout after {rng.randint(30000, 30999)} ms "
            f"(req {rng.getrandbits(64):016x}, trace {uuid.uuid4()}, "
            f"2025-06-0{rng.randint(1, 9)}T0{rng.randint(0, 9)}:{rng.randint(10, 59)}:00Z)")


@pytest.fixture
def make_guarded(make_any_stack):  # type: ignore[no-untyped-def]
    return make_any_stack


def test_retry_storm_with_new_arguments_is_halted(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra=LOOPS)
    rng = random.Random(2300000)
    run = Run(s, "Summarise the quarterly report", "fetch_report")
    with pytest.raises(openai.UnprocessableEntityError) as e:
        for i in range(151):  # max_steps stopped the incident at step 151
            run.step({"q": f"Q3 report, attempt {i}", "region": rng.choice("ABCDEFG"),
                      "page": rng.randint(1, 99)}, lambda: storm_error(rng))
    assert len(run.costs) == 6  # the request carrying the 6th identical result is refused
    assert e.value.code == "loop_detected"
    msg = e.value.message
    assert "(no_progress)" in msg and "'fetch_report'" in msg and "the last 6 times" in msg
    assert "timeout after <dur> (req <id>, trace <id>, <time>)" in msg  # the evidence
    assert len(s.mock.requests) == 6  # the 7th never reached the provider
    row = spend_row(s, "agent", "support-bot")
    assert row is not None and row["requests"] == 7
    assert row["cost_usd"] == pytest.approx(sum(run.costs))  # the threshold's calls, no more
    assert s.metric("tollway_loops_detected_total", detector="no_progress") == 1


def test_benign_agents_are_never_halted(make_guarded) -> None:  # type: ignore[no-untyped-def]
    s = make_guarded(extra=LOOPS)
    # A poller whose job advances, 5% -> 100%, each check with a fresh time and request id.
    poller = Run(s, "Wait for build 7 and report", "job_status")
    for p in range(5, 101, 5):
        poller.step({"q": "build-7"}, lambda p=p: json.dumps({  # type: ignore[misc]
            "job": "build-7", "status": "done" if p == 100 else "running",
            "progress": f"{p}%", "checked_at": f"2025-06-01T10:{p % 60:02d}:00Z",
            "request_id": str(uuid.uuid4())}))
    # A 40-step research agent: distinct queries, distinct findings.
    research = Run(s, "Survey the literature on lighthouse automation", "search")
    for i in range(40):
        research.step({"q": f"lighthouse automation topic {i}"},
                      lambda i=i: f"Found {i + 3} papers; top: 'Keepers and lamps, vol {i}'")
    # An agent writing 20 files: "ok" every time is work, not a loop.
    writer = Run(s, "Scaffold the project", "write_file")
    for i in range(20):
        writer.step({"q": f"src/module_{i}.py"}, lambda: "ok")
    assert s.metric("tollway_loops_detected_total") == 0
    assert len(s.mock.requests) == 20 + 40 + 20
