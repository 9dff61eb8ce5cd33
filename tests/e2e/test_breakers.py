"""Circuit breakers per deployment against the mock's injected failures, on the memory state
and on Redis: open, skip, half-open probe, close; fallback on an open breaker; load
balancing across deployments."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_stream_cuts import wait_until

MODELS = """  primary: {provider: oai, model: gpt-4o, fallbacks: [cheap],
            breaker: {consecutive_failures: 3, open_s: 0.5, half_open_probes: 1}}
  solo: {provider: oai, model: gpt-4.1, breaker: {consecutive_failures: 2, open_s: 30}}
  cheap: {provider: oai, model: gpt-4o-mini}
  pooled:
    deployments: [{provider: oai, model: dep-a, weight: 3}, {provider: oai, model: dep-b}]
    balance: weighted
    breaker: {consecutive_failures: 2, open_s: 30}
"""
MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def breaker_stack(make_any_stack) -> Stack:  # type: ignore[no-untyped-def]
    return make_any_stack(models_extra=MODELS)  # type: ignore[no-any-return]


def oa(s: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0)


def upstream_calls(s: Stack, model: str) -> int:
    return sum(1 for r in s.mock.requests if isinstance(r.json, dict) and
               r.json.get("model") == model)


def breaker(s: Stack, target: str) -> dict:
    views = s.admin.get("/admin/breakers").json()["breakers"]
    return next((v for v in views if v["target"] == target), {"state": "closed"})


def test_breaker_opens_half_opens_and_closes(breaker_stack: Stack) -> None:
    s = breaker_stack
    s.mock.settings.fail_models = {"gpt-4o": 500}
    for _ in range(3):  # each fails on primary and is answered by the fallback
        raw = oa(s).chat.completions.with_raw_response.create(model="primary", messages=MSG)
        assert raw.headers["x-tollway-model"] == "cheap"
    wait_until(lambda: breaker(s, "oai/gpt-4o")["state"] == "open")
    assert s.metric("tollway_breaker_state", target="oai/gpt-4o") == 2
    before = upstream_calls(s, "gpt-4o")
    raw = oa(s).chat.completions.with_raw_response.create(model="primary", messages=MSG)
    assert raw.headers["x-tollway-model"] == "cheap"
    assert upstream_calls(s, "gpt-4o") == before  # skipped while open: no call at all
    assert s.metric("tollway_fallbacks_total", from_model="primary",
                    reason="breaker_open") == 1

    s.mock.settings.fail_models = {}  # the deployment recovers
    until = breaker(s, "oai/gpt-4o")["until"]
    wait_until(lambda: time.time() > until)
    raw = oa(s).chat.completions.with_raw_response.create(model="primary", messages=MSG)
    assert raw.headers["x-tollway-model"] == "primary"  # the probe went through and won
    wait_until(lambda: breaker(s, "oai/gpt-4o")["state"] == "closed")
    for before_state, after_state in (("closed", "open"), ("open", "half_open"),
                                      ("half_open", "closed")):
        assert s.metric("tollway_breaker_transitions_total", target="oai/gpt-4o",
                        from_state=before_state, to_state=after_state) == 1


def test_open_breaker_without_fallback_is_503(breaker_stack: Stack) -> None:
    s = breaker_stack
    s.mock.settings.fail_models = {"gpt-4.1": 503}
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            oa(s).chat.completions.create(model="solo", messages=MSG)
    wait_until(lambda: breaker(s, "oai/gpt-4.1")["state"] == "open")
    r = httpx.post(s.url + "/v1/chat/completions", headers={"Authorization": "Bearer x"},
                   json={"model": "solo", "messages": MSG})
    assert r.status_code == 503 and r.json()["error"]["code"] == "breaker_open"
    assert 1 <= int(r.headers["retry-after"]) <= 30
    assert "oai/gpt-4.1" in r.json()["error"]["message"]


def test_deployments_share_load_and_fail_over(breaker_stack: Stack) -> None:
    s = breaker_stack
    with httpx.Client(base_url=s.url, headers={"Authorization": "Bearer x"}) as h:
        for _ in range(200):
            assert h.post("/v1/chat/completions", json={"model": "pooled",
                                                        "messages": MSG}).status_code == 200
    a, b = upstream_calls(s, "dep-a"), upstream_calls(s, "dep-b")
    assert a + b == 200 and 120 <= a <= 180  # weight 3:1
    s.mock.settings.fail_models = {"dep-a": 500}
    with httpx.Client(base_url=s.url, headers={"Authorization": "Bearer x"}) as h:
        for _ in range(20):  # dep-a fails, dep-b answers every one of them
            assert h.post("/v1/chat/completions", json={"model": "pooled",
                                                        "messages": MSG}).status_code == 200
    wait_until(lambda: breaker(s, "oai/dep-a")["state"] == "open")
