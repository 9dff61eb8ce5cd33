"""Guards across processes: two `tollway serve` processes sharing one real redis-server,
driven with the official SDK. Budgets, rate limits and the kill switch must hold across
them, and Redis going away mid-run must be survived in both failure modes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import RedisServer, free_port
from tests.e2e.test_guards import burst
from tests.e2e.test_stream_cuts import wait_until
from tests.test_serve import wait_http

MSG = [{"role": "user", "content": "Summarise the quarterly report"}]


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tollway.testing.mock_provider",
                             "--port", str(port), "--latency-ms", "15"],
                            stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v1/models")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


class Gateways:
    def __init__(self, tmp: Path, mock: str, redis_url: str, extra: str, n: int = 2,
                 on_failure: str = "fail_open") -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.admin_urls: list[str] = []  # each one's admin listener
        for i in range(n):
            port, admin_port = free_port(), free_port()
            cfg = tmp / f"gw{i}.yaml"
            cfg.write_text(f"""
server: {{host: 127.0.0.1, port: {port}, admin_key: adm, log_level: warning,
          admin: {{port: {admin_port}}}}}
state:
  backend: redis
  on_failure: {on_failure}
  redis: {{url: "{redis_url}", timeout_ms: 200, retry_interval_s: 0.1}}
providers:
  up: {{kind: openai, base_url: "{mock}/v1", api_key: sk-up}}
models:
  gpt-4o-mini: {{provider: up, price: {{input: 0.15, output: 0.60}}}}
agents:
  support-bot: {{team: support, keys: [sk-tw-support]}}
{extra}
""")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "tollway", "serve", "-c", str(cfg)],
                env={**os.environ}, stderr=subprocess.DEVNULL))
            self.urls.append(f"http://127.0.0.1:{port}")
            self.admin_urls.append(f"http://127.0.0.1:{admin_port}")
        for url in self.urls + self.admin_urls:
            wait_http(url + "/healthz")

    def client(self, i: int, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.urls[i] + "/v1", api_key="sk-tw-support",
                             max_retries=0, **kw)  # type: ignore[arg-type]

    def admin(self, i: int, method: str, path: str, **kw: object) -> httpx.Response:
        return httpx.request(method, self.admin_urls[i] + path, timeout=10,
                             headers={"Authorization": "Bearer adm"}, **kw)  # type: ignore[arg-type]

    def spend(self, by: str, key: str, i: int = 0) -> float:
        rows = self.admin(i, "GET", "/admin/spend", params={"by": by}).json()["rows"]
        return next((r["cost_usd"] for r in rows if r["key"] == key), 0.0)

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(20)


@pytest.fixture
def gateways(tmp_path: Path, mock_url: str, redis_server: RedisServer,
             ) -> Iterator[Callable[..., Gateways]]:
    made: list[Gateways] = []

    def make(extra: str = "", **kw: object) -> Gateways:
        g = Gateways(tmp_path, mock_url, redis_server.url, extra, **kw)  # type: ignore[arg-type]
        made.append(g)
        return g
    yield make
    for g in made:
        g.close()


def test_budget_holds_across_two_processes(gateways: Callable[..., Gateways]) -> None:
    g = gateways("budgets: {agents: {support-bot: {usd: 0.01, period: day}}}")

    statuses = asyncio.run(burst(g.urls))
    assert statuses.count(200) > 10 and statuses.count(402) > 10, statuses
    assert set(statuses) == {200, 402}

    def recorded() -> int:  # steps are recorded just after their answers went out
        rows = g.admin(0, "GET", "/admin/spend", params={"by": "agent"}).json()["rows"]
        return next((r["requests"] for r in rows if r["key"] == "support-bot"), 0)
    wait_until(lambda: recorded() == 200)
    total = g.spend("agent", "support-bot", 0)
    assert total == g.spend("agent", "support-bot", 1)  # one shared ledger
    assert 0 < total <= 0.01


def test_rate_limit_is_shared(gateways: Callable[..., Gateways]) -> None:
    g = gateways("rate_limits: {agents: {support-bot: {rpm: 10}}}")
    outcomes = []
    for i in range(12):
        try:
            g.client(i % 2).chat.completions.create(model="gpt-4o-mini", messages=MSG)
            outcomes.append(200)
        except openai.RateLimitError:
            outcomes.append(429)
    assert outcomes.count(200) == 10 and outcomes.count(429) == 2


def test_kill_switch_reaches_every_replica(gateways: Callable[..., Gateways]) -> None:
    g = gateways("")
    c1 = g.client(1, default_headers={"x-tollway-session": "s-kill"})
    c1.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert g.admin(0, "POST", "/admin/sessions/s-kill/kill").status_code == 200
    with pytest.raises(openai.PermissionDeniedError):
        c1.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    g.admin(0, "POST", "/admin/agents/support-bot/pause")
    with pytest.raises(openai.PermissionDeniedError):
        g.client(1).chat.completions.create(model="gpt-4o-mini", messages=MSG)


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_redis_stopped_and_restarted(gateways: Callable[..., Gateways], redis_server: RedisServer,
                                     mode: str) -> None:
    g = gateways("budgets: {session: {usd: 5}}", n=1, on_failure=mode)
    session = f"outage-{mode}"
    c = g.client(0, default_headers={"x-tollway-session": session})
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    # Its record goes out after the answer: let it land before Redis goes, or it is queued
    # and counted again after the restart.
    wait_until(lambda: _steps(g, session) == 1)
    redis_server.stop()
    try:
        if mode == "fail_open":
            for _ in range(3):  # served unguarded; the spend is kept for later
                c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        else:
            with pytest.raises(openai.InternalServerError) as e:
                c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
            assert e.value.status_code == 503 and e.value.code == "state_unavailable"
        assert httpx.get(g.urls[0] + "/readyz").status_code == 503
        assert "tollway_state_errors_total{" in httpx.get(g.urls[0] + "/metrics").text
    finally:
        redis_server.start()
    # Back without a gateway restart: ready again, and what was incurred meanwhile is
    # written. (The restarted throwaway Redis kept nothing: the steps before are gone.)
    wait_until(lambda: httpx.get(g.urls[0] + "/readyz").status_code == 200, timeout=15)
    c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    # A refusal that reached no upstream has nothing to settle: while Redis is down it is
    # not queued (issue 12: refusals must not pile up and hold back recovery).
    expected = 3 + 1 if mode == "fail_open" else 1
    wait_until(lambda: _steps(g, session) == expected, timeout=15)
    assert g.spend("session", session) > 0


def _steps(g: Gateways, session: str) -> int:
    r = g.admin(0, "GET", f"/admin/sessions/{session}")
    return len(r.json()["steps"]) if r.status_code == 200 else -1


def test_cache_entry_stored_by_one_is_served_by_the_other(
        gateways: Callable[..., Gateways]) -> None:
    g = gateways("cache: {exact: {enabled: true, ttl_s: 60}}")
    first = g.client(0).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, temperature=0)
    assert first.headers["x-tollway-cache"] == "miss"

    def served_by_the_other() -> bool:
        r = g.client(1).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MSG, temperature=0)
        return r.headers["x-tollway-cache"] == "exact" and (
            r.parse().choices[0].message.content == first.parse().choices[0].message.content)
    wait_until(served_by_the_other)
