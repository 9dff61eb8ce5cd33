"""Deployment order per balance strategy."""

from __future__ import annotations

import random

from tollway.config import load_config_text
from tollway.providers.registry import build_providers, build_registry
from tollway.routing.balance import order

CFG = """
providers: {a: {kind: openai, base_url: "http://a/v1"}, b: {kind: openai, base_url: "http://b/v1"},
            c: {kind: openai, base_url: "http://c/v1"}}
models:
  m:
    deployments: [{provider: a, weight: 1}, {provider: b, weight: 1}, {provider: c, weight: 2}]
    balance: {balance}
"""


def route(balance: str):  # type: ignore[no-untyped-def]
    cfg = load_config_text(CFG.replace("{balance}", balance), "g", {})
    return build_registry(cfg, build_providers(cfg, None)).routes["m"]


def test_every_order_lists_all_deployments_once() -> None:
    for balance in ("weighted", "least_inflight", "latency"):
        r = route(balance)
        got = order(r, random.Random(1))
        assert sorted(d.provider.name for d in got) == ["a", "b", "c"]


def test_weighted_follows_weights() -> None:
    r, rng = route("weighted"), random.Random(3)
    firsts = [order(r, rng)[0].provider.name for _ in range(4000)]
    assert 1800 <= firsts.count("c") <= 2200  # weight 2 of 4


def test_least_inflight_prefers_the_idle_one() -> None:
    r = route("least_inflight")
    a, b, c = r.deployments
    a.inflight, b.inflight, c.inflight = 5, 1, 3
    assert order(r, random.Random(0))[0] is b
    b.inflight = 9
    assert order(r, random.Random(0))[0] is c


def test_latency_prefers_the_fastest_after_trying_each() -> None:
    r = route("latency")
    a, b, c = r.deployments
    a.observe_latency(0.2)
    b.observe_latency(0.05)
    assert order(r, random.Random(0))[0] is c  # never measured: tried first
    c.observe_latency(0.5)
    assert order(r, random.Random(0))[0] is b
    for _ in range(20):
        b.observe_latency(1.0)  # b got slow: the EWMA follows
    assert order(r, random.Random(0))[0] is a
