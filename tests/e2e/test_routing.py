"""Routing end to end: downgrade when expensive, canary splits, fallbacks on failures."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import Stack

MSG = [{"role": "user", "content": "Classify this ticket"}]
BROKEN = """  broken: {kind: openai, base_url: "MOCK/v1", api_key: k,
          headers: {x-mock-status: "500"}}
  slow: {kind: openai, base_url: "MOCK/v1", api_key: k, timeout_s: 0.3,
         headers: {x-mock-latency-ms: "3000"}}
"""
MODELS = """  flaky: {provider: broken, model: gpt-4o, price: {input: 5, output: 15}}
  sluggish: {provider: slow, model: gpt-4o, price: {input: 5, output: 15}}
  cheap: {provider: oai, model: gpt-4o-mini, price: {input: 0.15, output: 0.6}}
  canary: {provider: oai, model: gpt-5-mini, price: {input: 0.25, output: 2}}
"""


def oa(stack: Stack, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-tw-support", max_retries=0,
                         default_headers=headers)


def test_downgrade_once_the_daily_budget_is_80_percent_spent(make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(providers_extra=BROKEN, models_extra=MODELS, extra="""
budgets: {agents: {support-bot: {usd: 0.01, period: day}}}
routing:
  - name: downgrade-when-expensive
    when: {agent: support-bot, model: gpt-4o-mini, budget_spent: {scope: agent, min: 0.8}}
    to: cheap
""")
    s.mock.settings.reply = "word " * 400  # ~$0.00025 per answer at gpt-4o-mini prices
    seen = []
    for _ in range(60):
        raw = oa(s).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MSG, max_tokens=500)
        seen.append((raw.headers["x-tollway-model"], raw.headers.get("x-tollway-route")))
        if raw.headers["x-tollway-model"] == "cheap":
            break
    assert seen[0] == ("gpt-4o-mini", None)
    assert seen[-1] == ("cheap", "downgrade-when-expensive")
    spent = next(r["cost_usd"] for r in s.admin.get("/admin/spend").json()["rows"]
                 if r["key"] == "support-bot")
    assert spent >= 0.008  # it switched only once 80% was spent
    assert s.mock.requests[-1].json["model"] == "gpt-4o-mini"  # cheap's upstream id
    assert s.metric("tollway_routing_decisions_total", rule="downgrade-when-expensive",
                    from_model="gpt-4o-mini", to_model="cheap") == 1


def test_canary_share_over_1000_requests(make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(providers_extra=BROKEN, models_extra=MODELS, extra="""
routing:
  - name: canary-gpt5
    when: {model: gpt-4o-mini}
    split: [{model: gpt-4o-mini, weight: 80}, {model: canary, weight: 20}]
""")
    import httpx

    counts: dict[str, int] = {}
    with httpx.Client(base_url=s.url, headers={"Authorization": "Bearer sk-tw-support"}) as h:
        for _ in range(1000):
            r = h.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG})
            counts[r.headers["x-tollway-model"]] = counts.get(r.headers["x-tollway-model"],
                                                              0) + 1
    assert 200 - 50 <= counts["canary"] <= 200 + 50, counts
    assert counts["canary"] + counts["gpt-4o-mini"] == 1000


@pytest.mark.parametrize("primary,reason", [("flaky", "500"), ("sluggish", "timeout")])
def test_fallback_on_500_and_timeout(make_stack, primary: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(providers_extra=BROKEN, models_extra=MODELS, extra=f"""
routing:
  - name: resilient
    when: {{model: gpt-4o}}
    to: {primary}
    fallbacks: [cheap]
""".replace("gpt-4o}", f"{primary}}}"))
    raw = oa(s).chat.completions.with_raw_response.create(model=primary, messages=MSG)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-tollway-model"] == "cheap"
    assert s.metric("tollway_fallbacks_total", from_model=primary, to_model="cheap",
                    reason=reason) == 1
    # The answer is billed at the model that answered.
    row = next(r for r in s.admin.get("/admin/spend?by=model").json()["rows"])
    assert row["key"] == "cheap"
    # streams too: retried before their first byte reached the client
    text = "".join(c.choices[0].delta.content or "" for c in oa(s).chat.completions.create(
        model=primary, messages=MSG, stream=True) if c.choices)
    assert text


def test_model_level_fallbacks_and_last_error(make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(providers_extra=BROKEN, models_extra=MODELS.replace(
        "  flaky: {provider: broken,", "  flaky: {fallbacks: [sluggish], provider: broken,"))
    with pytest.raises(openai.APIStatusError) as e:
        oa(s).chat.completions.create(model="flaky", messages=MSG)
    assert e.value.status_code == 504  # the last target's failure is what the client sees
    assert s.upstream_connections_in_use() == 0
