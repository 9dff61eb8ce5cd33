"""The ledger through faults: Redis frozen (SIGSTOP) under load, in both failure modes.

The invariant: after the fault and the replay, the spend recorded equals what the upstream
served (every served request once, none twice), and nothing stays reserved. Before the
records were idempotent, a record that timed out was queued and written again after Redis
had run the first attempt it received before freezing: 8 steps counted twice in one run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import aiohttp
import httpx
import pytest

from tests.conftest import RedisServer, Stack
from tests.e2e.test_stream_cuts import wait_until

BUDGETS = """
budgets:
  global: {usd: 1000}
  agents: {support-bot: {usd: 1000}}
  session: {usd: 1000}
"""
BODY = {"model": "gpt-4o-mini", "max_tokens": 20,
        "messages": [{"role": "user", "content": "the same question every time"}]}
HEADERS = {"Authorization": "Bearer sk-tw-support"}


async def _load(url: str, workers: int, until: float, log: list[tuple[float, int]]) -> None:
    """Closed-loop clients sending the same request (so each served one costs the same)."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def worker(i: int) -> None:
            headers = {**HEADERS, "x-tollway-session": f"stall-{i}"}
            while time.monotonic() < until:
                async with session.post(url + "/v1/chat/completions", json=BODY,
                                        headers=headers) as r:
                    await r.read()
                    log.append((time.monotonic(), r.status))
        await asyncio.gather(*(worker(i) for i in range(workers)))


def _spent(s: Stack) -> tuple[float, int]:
    rows = s.admin.get("/admin/spend", params={"by": "agent"}).json()["rows"]
    row = next((r for r in rows if r["key"] == "support-bot"), None)
    return (row["cost_usd"], row["requests"]) if row else (0.0, 0)


def _reserved(s: Stack) -> list[float]:
    keys = [bc.key for bc in _checks(s)]

    async def read() -> list[float]:
        return [(await s.gateway.state.guards.budget_usage(k))[1] for k in keys]
    return s.loop.run(read())


def _checks(s: Stack) -> list:  # type: ignore[type-arg]
    from tollway.policy.admission import budget_checks

    b = s.config.budgets
    return [bc for i in range(4) for bc in budget_checks(b, "support-bot", "support",
                                                          f"stall-{i}", 0.0)]


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_frozen_redis_under_load_counts_each_served_request_once(
        make_stack: Callable[..., Stack], redis_server: RedisServer, mode: str) -> None:
    s = make_stack(backend="redis", redis_url=redis_server.url, extra=BUDGETS,
                   state_extra=f"on_failure: {mode}")
    first = httpx.post(s.url + "/v1/chat/completions", json=BODY, headers=HEADERS)
    assert first.status_code == 200
    cost = float(first.headers["x-tollway-cost-usd"])
    wait_until(lambda: _spent(s)[1] == 1)
    log: list[tuple[float, int]] = []
    start = time.monotonic()

    async def scenario() -> float:
        load = asyncio.create_task(_load(s.url, 8, start + 9.0, log))
        await asyncio.sleep(1.5)  # load running before the fault
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(2.5)  # the fault's length, not a synchronisation
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        await load
        return resumed

    resumed = asyncio.run(scenario())
    statuses = [st for _, st in log]
    assert set(statuses) <= {200, 503}, set(statuses)
    if mode == "fail_closed":
        assert 503 in statuses
        back = min(t for t, st in log if st == 200 and t > resumed)
        assert back - resumed < 2.0, f"first 200 came {back - resumed:.2f}s after Redis returned"
        assert statuses[-20:] == [200] * 20  # and it stayed back under continuous load
    else:
        assert set(statuses) == {200}  # served unguarded while Redis was frozen
    # Everything the upstream served is recorded exactly once, and nothing stays reserved.
    wait_until(lambda: httpx.get(s.url + "/readyz").status_code == 200, timeout=15)
    served = s.mock.received
    assert served == statuses.count(200) + 1
    wait_until(lambda: _spent(s)[1] >= served, timeout=15)
    total, steps = _spent(s)
    assert steps == served
    assert total == pytest.approx(served * cost, rel=1e-9)
    assert _reserved(s) == [0.0] * len(_reserved(s))
