"""Step traces and the audit log through a multi-step agent run with the OpenAI SDK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import orjson
import pytest

from tests.e2e.test_stream_cuts import wait_until

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "description": "d",
                                           "parameters": {"type": "object", "properties": {}}}}]


def run_agent(url: str) -> list[int]:
    c = openai.OpenAI(base_url=url + "/v1", api_key="sk-tw-support", max_retries=0,
                      default_headers={"x-tollway-session": "run-1"})
    history: list[dict[str, object]] = [{"role": "user", "content": "Where is order 42?"}]
    first = c.chat.completions.create(model="gpt-4o-mini", messages=history, tools=TOOLS,
                                      temperature=0)  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    history += [first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "shipped"}]
    statuses = []
    for _ in range(3):  # the last two are the same request: an exact cache hit
        r = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=history, temperature=0)  # type: ignore[arg-type]
        statuses.append(r.status_code)
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="gpt-4o-mini", messages=history)  # type: ignore[arg-type]
    return statuses


def test_session_steps_totals_and_audit(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    audit = tmp_path / "audit" / "tollway.jsonl"
    s = make_stack(extra=f"""
trace: {{content: true, max_chars: 50}}
audit: {{enabled: true, path: "{audit}"}}
cache: {{exact: {{enabled: true}}}}
rate_limits: {{agents: {{support-bot: {{rpm: 4, burst: 1.0}}}}}}
routing: [{{name: tools-to-fast, when: {{tools: true}}, to: fast}}]
""")
    run_agent(s.url)
    view = s.admin.get("/admin/sessions/run-1").json()
    steps = view["steps"]
    assert [st["step"] for st in steps] == [1, 2, 3, 4, 5]
    one, two, three, four, five = steps
    assert one["requested_model"] == "gpt-4o-mini" and one["model"] == "fast"
    assert one["rule"] == "tools-to-fast" and one["tool_calls"] == ["lookup_order"]
    assert one["prompt"] == "Where is order 42?" and one["completion"] == ""
    assert two["model"] == "gpt-4o-mini" and two["tool_calls"] == [] and two["cache"] == "miss"
    assert two["prompt"] == "shipped" and len(two["completion"]) <= 50 and two["completion"]
    assert four["cache"] == "exact" and three["status"] == 200
    assert four["cost_usd"] == 0 and four["ttft_s"] is None
    assert two["cost_usd"] > 0 and two["latency_s"] > 0 and two["input_tokens"] > 0
    assert five["status"] == 429 and five["guard"] == "rate:agent_rpm"
    assert all(st["guard"] == "allowed" for st in steps[:4])
    assert view["steps"] and view["cost_usd"] == pytest.approx(sum(st["cost_usd"]
                                                                   for st in steps))
    found = s.admin.get("/admin/sessions", params={"agent": "support-bot", "since": "1h",
                                                   "sort": "cost"}).json()
    rows = found["sessions"] if isinstance(found, dict) else found
    assert any(r["session"] == "run-1" for r in rows)
    # The audit log has every step and the admin action, in one verifiable chain.
    assert s.admin.post("/admin/sessions/run-1/kill").status_code == 200

    def lines() -> list[dict[str, object]]:
        return [orjson.loads(x) for x in audit.read_bytes().splitlines()] if audit.exists() \
            else []
    wait_until(lambda: len(lines()) >= 6)
    recs = lines()
    kinds = [r["kind"] for r in recs]
    assert kinds.count("step") == 5 and kinds[-1] == "admin"
    assert recs[-1]["data"]["action"] == "kill"  # type: ignore[index]
    out = subprocess.run([sys.executable, "-m", "tollway", "audit", "verify", str(audit)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "6 records" in out.stdout


def test_no_content_unless_asked(make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack()
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0,
                      default_headers={"x-tollway-session": "quiet"})
    c.chat.completions.create(model="gpt-4o-mini",
                              messages=[{"role": "user", "content": "secret plans"}])
    step = s.admin.get("/admin/sessions/quiet").json()["steps"][0]
    assert step["prompt"] is None and step["completion"] is None
