"""A gateway on a real Redis Cluster, driven with the official OpenAI SDK.

Seeded from a node that does not own the gateway's slot (so every first command is
redirected): spend recorded equals what the mock upstream served; the admin API (spend,
sessions, kill switch, cache purge) and /readyz work; the audit stream and the semantic
cache's shared feed live on the cluster too. Then a failover under traffic: the primary
that owns the slot is SIGKILLed, its replica promoted; requests keep being served
(fail_open), /readyz says 503 for as long as the slot has no primary and 200 again after,
without a restart, and every request the upstream served is recorded exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_semantic_cache import ASKED, PARAPHRASE, SEMANTIC, ask, stored
from tests.e2e.test_stream_cuts import wait_until
from tests.redis_cluster import LocalCluster
from tollway.config.model import RedisConfig
from tollway.observe.audit import RedisSink, verify
from tollway.testing import mock_provider

GUARDED = """budgets: {agents: {support-bot: {usd: 100, period: day}}}
rate_limits: {agents: {support-bot: {rpm: 100000}}}"""
SLOT_KEY = "{tollway}:probe"


def on_cluster(make_stack: Callable[..., Stack], seed: LocalCluster | str, extra: str = "",
               **kw: Any) -> Stack:
    url = seed if isinstance(seed, str) else seed.primaries_by_slot()[1].url
    return make_stack(extra=extra, backend="redis", redis_url=url, redis_extra="cluster: true",
                      **kw)


def client(s: Stack, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="sk-tw-support", max_retries=0,
                         default_headers=headers)


def chat_served(s: Stack) -> int:
    return sum(1 for r in s.mock.requests if r.path == "/v1/chat/completions")


def agent_row(s: Stack) -> dict[str, Any] | None:
    r = s.admin.get("/admin/spend", params={"by": "agent"})
    assert r.status_code == 200, r.text
    return next((row for row in r.json()["rows"] if row["key"] == "support-bot"), None)


def test_openai_sdk_on_a_cluster_seeded_from_another_node(
        make_stack: Callable[..., Stack], redis_cluster: LocalCluster, tmp_path: Path) -> None:
    seed = redis_cluster.primaries_by_slot()[1]
    assert seed != redis_cluster.owner(SLOT_KEY)
    s = on_cluster(make_stack, seed.url, GUARDED + "\ncache: {exact: {enabled: true}}\n"
                   "audit: {enabled: true, sink: redis}")
    assert httpx.get(s.url + "/readyz").json() == {"status": "ready", "state": "redis"}
    c = client(s, **{"x-tollway-session": "cl-1"})
    expected = 0.0
    for i in range(6):
        r = c.chat.completions.create(model="gpt-4o-mini",
                                      messages=[{"role": "user", "content": f"question {i}"}])
        assert r.usage is not None
        expected += (r.usage.prompt_tokens * 0.15 + r.usage.completion_tokens * 0.60) / 1e6
        chunks = list(c.chat.completions.create(
            model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"streamed question {i}"}]))
        usage = chunks[-1].usage
        assert usage is not None
        expected += (usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.60) / 1e6
    assert chat_served(s) == 12
    wait_until(lambda: (agent_row(s) or {}).get("requests") == 12)
    row = agent_row(s)
    assert row is not None and row["cost_usd"] == pytest.approx(expected, rel=1e-9)
    session = s.admin.get("/admin/sessions/cl-1")
    assert session.status_code == 200 and len(session.json()["steps"]) == 12
    owner = redis_cluster.owner(SLOT_KEY)
    assert all(n.call("DBSIZE") == 0 for n in redis_cluster.primaries_by_slot()
               if n != owner)  # every key in the one slot

    # Kill switch and flags, across the cluster.
    assert s.admin.post("/admin/sessions/cl-1/kill").status_code == 200
    with pytest.raises(openai.PermissionDeniedError):
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user",
                                                                   "content": "again"}])
    assert s.admin.get("/admin/flags").json()["session"] == ["cl-1"]

    # The exact cache: stored, served, purged (SCAN on the node that owns the slot).
    c2 = client(s, **{"x-tollway-session": "cl-2"})

    def cached() -> str:
        raw = c2.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", temperature=0,
            messages=[{"role": "user", "content": "a cacheable question"}])
        return raw.headers["x-tollway-cache"]
    assert cached() == "miss"
    wait_until(lambda: cached() == "exact")
    purged = s.admin.post("/admin/cache/purge")
    assert purged.status_code == 200 and purged.json()["purged"] >= 1
    assert cached() == "miss"

    # The audit stream is on the cluster, one intact chain.
    sink = RedisSink(RedisConfig(url=seed.url, cluster=True), 10_000)
    try:
        def exported() -> bytes:
            out = BytesIO()
            sink.export(out)
            return out.getvalue()
        wait_until(lambda: exported().count(b'"kind":"step"') >= 12)
        path = tmp_path / "audit.jsonl"
        path.write_bytes(exported())
        ok, report = verify([str(path)])
        assert ok, report
    finally:
        sink.close()


def test_semantic_cache_feed_shared_on_a_cluster(
        make_stack: Callable[..., Stack], redis_cluster: LocalCluster) -> None:
    """Two gateways seeded from different nodes, neither the owner: one stores, the other
    serves the paraphrase from the shared stream."""
    one, other = redis_cluster.primaries_by_slot()[1:]
    a = on_cluster(make_stack, one.url, SEMANTIC)
    b = on_cluster(make_stack, other.url, SEMANTIC)
    first = ask(a, ASKED)
    assert first.headers["x-tollway-cache"] == "miss"
    stored(a)
    stored(b)  # followed from the stream
    r = ask(b, PARAPHRASE)
    assert r.headers["x-tollway-cache"] == "semantic"
    assert r.parse().choices[0].message.content == first.parse().choices[0].message.content


class Traffic:
    """Worker threads sending chat requests through the gateway until stopped; each in its
    own session, keeping the request ids of the answers it got. Each answer takes the mock
    `latency_ms`: steady traffic the gateway keeps up with, as a production gateway does,
    not a saturating loop (replaying queued records shares the gateway's one core with
    serving: a saturated gateway serves unguarded faster than it can replay)."""

    def __init__(self, s: Stack, workers: int = 3, latency_ms: int = 25) -> None:
        self.latency_ms = latency_ms
        self.s = s
        self.stop = threading.Event()
        self.ids: list[list[str]] = [[] for _ in range(workers)]
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(workers)]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    @property
    def served(self) -> int:
        return sum(len(ids) for ids in self.ids)

    def _run(self, i: int) -> None:
        c = client(self.s, **{"x-tollway-session": f"fo-{i}",
                               "x-mock-latency-ms": str(self.latency_ms)})
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                raw = c.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"w{i} #{n}"}])
                self.ids[i].append(raw.headers["x-tollway-request-id"])
            except openai.APIError as exc:
                self.failures.append(repr(exc))


def test_failover_under_traffic_loses_and_doubles_nothing(
        make_stack: Callable[..., Stack], make_cluster: Callable[..., LocalCluster],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mock_provider, "MAX_RECORDED", 1_000_000)  # count every request
    cluster = make_cluster(replicas=1)
    owner = cluster.owner(SLOT_KEY)
    (replica,) = cluster.replicas_of(owner)
    seed = cluster.primaries_by_slot()[1]
    s = on_cluster(make_stack, seed.url, GUARDED, state_extra="session_steps: 5000")

    with Traffic(s) as traffic:
        wait_until(lambda: traffic.served >= 40)
        before = traffic.served
        killed = time.monotonic()
        cluster.kill(owner)
        # Down for as long as the slot has no primary: /readyz says so, the admin API says
        # 503 (not 500), and requests are still served (fail_open).
        wait_until(lambda: httpx.get(s.url + "/readyz").status_code == 503)
        spend_down = s.admin.get("/admin/spend")
        assert spend_down.status_code in (200, 503), spend_down.text
        cluster_ok = time.monotonic()
        wait_until(lambda: cluster.owner(SLOT_KEY) == replica, timeout=30)
        promoted_s = time.monotonic() - cluster_ok
        wait_until(lambda: httpx.get(s.url + "/readyz").status_code == 200, timeout=30)
        down_s = time.monotonic() - killed
        during = traffic.served - before
        at_recovery = traffic.served
        wait_until(lambda: traffic.served >= at_recovery + 40)  # and it carries on
    assert not traffic.failures, traffic.failures[:5]
    assert during > 0  # served while the slot had no primary

    served_ids = [rid for ids in traffic.ids for rid in ids]
    assert len(served_ids) == chat_served(s)
    wait_until(lambda: s.on_loop(lambda: s.gateway.state.ledger.pending) == 0, timeout=15)

    def recorded_ids() -> list[str]:
        out: list[str] = []
        for i in range(len(traffic.ids)):
            r = s.admin.get(f"/admin/sessions/fo-{i}")
            if r.status_code == 200:
                out += [step["request_id"] for step in r.json()["steps"]]
        return out
    # Records go out just after their answers: wait for the last ones to land.
    wait_until(lambda: len(recorded_ids()) >= len(served_ids), timeout=15)
    recorded = Counter(recorded_ids())
    doubled = sorted(rid for rid, n in recorded.items() if n > 1)
    missing = sorted(set(served_ids) - set(recorded))
    extra = sorted(set(recorded) - set(served_ids))
    assert (missing, doubled, extra) == ([], [], []), (
        f"{len(served_ids)} served, {sum(recorded.values())} recorded; promoted after "
        f"{promoted_s:.1f}s")
    row = agent_row(s)
    assert row is not None and row["requests"] == len(served_ids)
    print(f"failover: {len(served_ids)} served, {during} while down; promoted after "
          f"{promoted_s:.2f}s; kill to ready {down_s:.2f}s")
