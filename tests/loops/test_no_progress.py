"""The no-progress detector's two halves without a gateway: what two results must share to be
"the same" (tollway.loops.results), and the run read from a conversation in each dialect
(stages/guard/loops.py)."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from typing import Any

import pytest

from tollway.loops.results import NORMALISED_MAX, fingerprint, normalise
from tollway.stages.guard import loops


def no_progress(endpoint: str, body: dict[str, Any], threshold: int) -> loops.NoProgress | None:
    return loops.no_progress(loops.answered(endpoint, body), threshold)

_rng = random.Random(7)


def noisy_timeout() -> str:
    return (f"timeout after {_rng.randint(30000, 30999)} ms "
            f"(req {_rng.getrandbits(32):08x}, trace {uuid.uuid4()}, "
            f"at 2025-03-0{_rng.randint(1, 9)}T10:{_rng.randint(10, 59)}:00Z, "
            f"attempt {_rng.randint(1, 9)})")


@pytest.mark.parametrize("a, b", [
    ("timeout after 30012 ms (req 7f3a9c2e)", "timeout after 30055 ms (req 91bc22d1)"),
    ("timeout after 30012 ms (req 7f3a…)", "timeout after 30055 ms (req 91bc…)"),
    (noisy_timeout(), noisy_timeout()),
    ('{"error": "rate limited", "request_id": "r-1", "retry_after_ms": 1200}',
     '{"error": "rate limited", "request_id": "r-2", "retry_after_ms": 800}'),
    ("connection refused to 10.0.0.5:443 (attempt 3)",
     "connection refused to 10.0.0.6:443 (attempt 4)"),
    ("job_8f2a1 failed at 1712345678: sha 4bf92f3577b34da6", "job_9c1b2 failed at 1712345999: "
     "sha 00f067aa0ba902b7"),
    ("Date: Mon, 01 Jan 2024 10:00:00 GMT: 503", "Date: Tue, 02 Jan 2024 11:00:01 GMT: 503"),
    # compact JSON: the ids and times inside other keys' strings are found too
    ('{"error":"timeout after 30265 ms (req af6d4a6f188a)","userId":7,"at":"2026-12-07T13:51Z"}',
     '{"error":"timeout after 30931 ms (req cd50af1ffe0d)","userId":9,"at":"2026-12-08T01:02Z"}'),
])
def test_noise_is_normalised_away(a: str, b: str) -> None:
    assert fingerprint(a).digest == fingerprint(b).digest, (normalise(a), normalise(b))


@pytest.mark.parametrize("a, b", [
    ('{"status": "running", "progress": "5%"}', '{"status": "running", "progress": "100%"}'),
    ("processed 1200 of 5000 rows", "processed 1300 of 5000 rows"),
    ('{"n": 1}', '{"n": 2}'),
    ("timeout after 30012 ms", "not found: report Q3"),
    ("HTTP 500", "HTTP 503"),
])
def test_what_moves_is_kept(a: str, b: str) -> None:
    assert fingerprint(a).digest != fingerprint(b).digest


def test_acknowledgements_and_errors() -> None:
    for ack in ("ok", "", "{}", '{"saved": true}', "File written successfully."):
        assert fingerprint(ack).ack, ack
    for not_ack in ("status: running", "null", '{"ok": false}', "No results found",
                    "Error: ok button missing", "[]"):
        assert not fingerprint(not_ack).ack, not_ack
    assert not fingerprint("ok", error=True).ack  # an error is never an acknowledgement


def test_long_results_compare_their_tail_as_it_is() -> None:
    head = "x " * (NORMALISED_MAX // 2)
    assert fingerprint(head + "at 1712345678").digest != fingerprint(
        head + "at 1712345999").digest  # past the normalised part: any change is progress
    assert fingerprint(head + "tail").digest == fingerprint(head + "tail").digest


# --- the run read from a conversation -------------------------------------------------------

def chat(results: list[tuple[str, str]]) -> dict[str, Any]:
    """A chat conversation: one tool call per turn, new arguments each time."""
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i, (tool, result) in enumerate(results):
        msgs.append({"role": "assistant", "content": None, "tool_calls": [{
            "id": f"c{i}", "type": "function",
            "function": {"name": tool, "arguments": json.dumps({"q": f"try {i}"})}}]})
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": result})
    return {"messages": msgs}


def test_a_storm_with_new_arguments_is_seen_at_the_threshold() -> None:
    storm = [("fetch", noisy_timeout()) for _ in range(5)]
    assert no_progress("chat", chat(storm[:4]), 5) is None
    found = no_progress("chat", chat(storm), 5)
    assert found is not None and found.tool == "fetch" and found.times == 5
    assert "timeout after <dur>" in found.result
    assert "the last 5 times" in found.evidence()


def test_progress_ends_the_run() -> None:
    poller = [("job_status", json.dumps({"job": "j-1", "progress": f"{p}%",
                                         "checked_at": f"2025-01-01T10:00:{p % 60:02d}Z"}))
              for p in range(5, 101, 5)]
    assert no_progress("chat", chat(poller), 3) is None
    research = [("search", f"results for topic {i}: paper {i * 7}") for i in range(40)]
    assert no_progress("chat", chat(research), 2) is None
    writes = [("write_file", "ok") for _ in range(20)]  # acknowledgements
    assert no_progress("chat", chat(writes), 3) is None
    # a storm that recovered, then another tool: not reported on every later request
    recovered = [("fetch", noisy_timeout()) for _ in range(2)] + [("fetch", "the report")] + [
        ("search", f"hit {i}") for i in range(6)]
    assert no_progress("chat", chat(recovered), 2) is None
    # another tool in between does not end a tool's run
    mixed = list(itertools.chain.from_iterable(
        [("fetch", noisy_timeout()), ("log", f"noted {i}")] for i in range(4)))
    assert no_progress("chat", chat([*mixed, ("fetch", noisy_timeout())]), 5) is not None


def test_anthropic_and_responses_dialects() -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    items: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i in range(3):
        msgs.append({"role": "assistant", "content": [
            {"type": "text", "text": "retrying"},
            {"type": "tool_use", "id": f"t{i}", "name": "deploy", "input": {"n": i}}]})
        msgs.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"t{i}", "is_error": True,
             "content": [{"type": "text", "text": noisy_timeout()}]}]})
        items += [{"type": "function_call", "call_id": f"f{i}", "name": "deploy",
                   "arguments": json.dumps({"n": i})},
                  {"type": "function_call_output", "call_id": f"f{i}",
                   "output": noisy_timeout()}]
    found = no_progress("messages", {"messages": msgs}, 3)
    assert found is not None and found.tool == "deploy" and found.times == 3
    found = no_progress("responses", {"input": items}, 3)
    assert found is not None and found.times == 3
    # is_error: even "ok" counts as a repeated result
    errors = [{"role": "assistant", "content": [
        {"type": "tool_use", "id": f"e{i}", "name": "x", "input": {}}]} for i in range(3)]
    convo: list[Any] = []
    for i, m in enumerate(errors):
        convo += [m, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"e{i}", "is_error": True, "content": "ok"}]}]
    assert no_progress("messages", {"messages": convo}, 3) is not None


def test_parallel_calls_of_one_turn_count_as_the_newest() -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "go"}, {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": f"p{i}", "type": "function",
             "function": {"name": "fetch", "arguments": f'{{"i": {i}}}'}} for i in range(3)]}]
    msgs += [{"role": "tool", "tool_call_id": f"p{i}", "content": noisy_timeout()}
             for i in range(3)]
    found = no_progress("chat", {"messages": msgs}, 3)
    assert found is not None and found.times == 3
